"""Found by a privacy audit: binding a card told a stranger whether a card number is bound to an account here."""

from tests.factories import PAYMENT_PASSWORD
from tests.factories_ids import make_card_number


def strip(body):
    return {k: v for k, v in body.items() if k != "request_id"}


def test_binding_a_card_does_not_tell_a_stranger_that_it_is_bound_here(api):
    """Binding answered 409 card_bound_to_another_account before asking the bank whether the card is the caller's:
    anyone verified could test a card number (a stolen one, say) for an account here. The bank's holder check comes
    first now, as the identity check asks the provider before saying an ID number is taken."""
    holder = api.verified(real_name="张三")
    bound = make_card_number()
    assert api.client.post("/api/v1/me/bank-cards", headers=holder["headers"], json={
        "card_number": bound, "holder_name": "张三", "bank_code": "ICBC",
        "payment_password": PAYMENT_PASSWORD}).status_code == 201
    stranger = api.verified(real_name="赵六")
    not_here = make_card_number(ending="0000")  # the sandbox bank holds it in someone else's name
    answers = [api.client.post("/api/v1/me/bank-cards", headers=stranger["headers"], json={
        "card_number": number, "holder_name": "赵六", "bank_code": "ICBC", "payment_password": PAYMENT_PASSWORD})
        for number in (bound, not_here)]
    assert [a.status_code for a in answers] == [422, 422]
    assert strip(answers[0].json) == strip(answers[1].json)
    assert answers[0].json["code"] == "card_holder_mismatch"


def test_binding_my_own_card_twice_still_says_so(api):
    me = api.verified(real_name="张三")
    number = make_card_number()
    body = {"card_number": number, "holder_name": "张三", "bank_code": "ICBC", "payment_password": PAYMENT_PASSWORD}
    assert api.client.post("/api/v1/me/bank-cards", headers=me["headers"], json=body).status_code == 201
    again = api.client.post("/api/v1/me/bank-cards", headers=me["headers"], json=body)
    assert (again.status_code, again.json["code"]) == (409, "card_already_bound")
