"""Name punctuation typed full-width (Chinese keyboards in full-width mode: ``．`` ``＇`` ``－``, or the half-width
katakana ``･``) was refused by real-name verification as invalid_real_name, although card holder names typed so were
already the same name (found by the identity audit): verification accepts what name comparison folds."""

from __future__ import annotations

import pytest

from tests.api.test_bank_cards import bind
from tests.factories_ids import make_id_number

URL = "/api/v1/me/identity"


@pytest.mark.parametrize(("typed", "holder", "masked"), [
    ("买买提．艾力", "买买提·艾力", "*****力"),
    ("买买提･艾力", "买买提·艾力", "*****力"),
    ("Conan O＇Brien", "Conan O'Brien", "C**** O******"),
    ("Jean－Luc Picard", "Jean-Luc Picard", "J******* P*****"),
], ids=["full-width stop", "half-width katakana dot", "full-width apostrophe", "full-width hyphen"])
def test_full_width_name_punctuation_is_name_punctuation(api, typed, holder, masked):
    account = api.register()
    response = api.client.post(URL, json={"real_name": typed, "id_number": make_id_number()},
                               headers=account["headers"])
    assert response.status_code == 201, response.json
    assert response.json["real_name"] == masked
    assert bind(api, account, holder_name=holder).status_code == 201


@pytest.mark.parametrize("typed", ["张三！", "张三（李）", "张三＃"], ids=["exclamation", "brackets", "hash"])
def test_other_full_width_symbols_are_still_refused(api, typed):
    response = api.client.post(URL, json={"real_name": typed, "id_number": make_id_number()},
                               headers=api.register()["headers"])
    assert (response.status_code, response.json["code"]) == (422, "invalid_real_name")
