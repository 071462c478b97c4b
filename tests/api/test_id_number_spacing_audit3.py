"""A resident ID number typed in groups (110101 19900307 123X), as ID input fields of mobile apps format it and as
card numbers are already accepted, is the same number (found by the identity audit: it was refused as a bad format)."""

from __future__ import annotations

import pytest

from tests.factories_ids import make_id_number

URL = "/api/v1/me/identity"


@pytest.mark.parametrize("group", [
    lambda n: f"{n[:6]} {n[6:14]} {n[14:]}",
    lambda n: f"{n[:6]}\u3000{n[6:14]}\u3000{n[14:]}",  # the full-width space of a Chinese keyboard
    lambda n: f" {n[:3]} {n[3:6]}  {n[6:10]} {n[10:14]} {n[14:]} ",
], ids=["6-8-4", "full-width spaces", "uneven groups"])
def test_an_id_number_typed_in_groups_is_the_number(api, group):
    account = api.register()
    number = make_id_number()
    response = api.client.post(URL, json={"real_name": "张三", "id_number": group(number)}, headers=account["headers"])
    assert response.status_code == 201, response.json
    assert response.json["id_last4"] == number[-4:]
    # The same number, typed without spaces, is the same identity: a repeat, not another one.
    again = api.client.post(URL, json={"real_name": "张三", "id_number": number}, headers=account["headers"])
    assert again.status_code == 200, again.json


def test_a_number_split_inside_by_other_characters_is_still_refused(api):
    number = make_id_number()
    response = api.client.post(URL, json={"real_name": "张三", "id_number": f"{number[:6]}/{number[6:]}"},
                               headers=api.register()["headers"])
    assert (response.status_code, response.json["code"]) == (422, "invalid_id_number")
