"""The per-phone limits on codes count code requests that can be sent (README: "code sends per phone number"). One the
app got wrong in another field (a locale it does not know, a purpose misspelt, a field too many) is answered 422 naming
that field and sends nothing, so it must not use up the number's minute or hour: found by the auth audit (third
round), the corrected request that followed it was 429 rate_limited for a minute. The per-client limit counts them."""

import pytest

from tests.api.test_rate_limits import fresh_ipv6_client, limited_client  # noqa: F401 - the fixture
from tests.factories import make_phone

SMS = "/api/v1/sms-codes"


@pytest.mark.parametrize("mistake", [{"locale": "fr"}, {"purpose": "signup"}, {"device_id": "phone-1"}],
                         ids=["locale", "purpose", "extra-field"])
def test_a_code_request_refused_422_does_not_use_up_the_numbers_limits(limited_client, mistake):  # noqa: F811
    phone = make_phone()
    wrong = limited_client.post(SMS, json={"phone": phone, "purpose": "register", **mistake})
    assert (wrong.status_code, wrong.json["code"]) == (422, "validation_failed")
    fixed = limited_client.post(SMS, json={"phone": phone, "purpose": "register"})
    assert fixed.status_code == 202, fixed.json
    again = limited_client.post(SMS, json={"phone": phone, "purpose": "register"})
    assert (again.status_code, again.json["code"]) == (429, "rate_limited")  # SMS_CODE_RESEND_LIMIT: 1 per minute


def test_refused_code_requests_still_count_for_their_client(limited_client):  # noqa: F811
    client = fresh_ipv6_client()
    answers = [limited_client.post(SMS, json={"phone": make_phone(), "purpose": "register", "locale": "fr"},
                                   environ_base={"REMOTE_ADDR": client}).status_code for _ in range(4)]
    assert answers == [422, 422, 422, 429]  # SMS_CODE_LIMIT_PER_CLIENT: 3 per hour
