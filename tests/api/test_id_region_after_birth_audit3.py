"""A region code created after the holder's birth year (found by the identity audit; the earlier case "region not yet
created" of tests/api/test_identity.py asserted the opposite, and now names a county abolished before the birth year).

A resident ID number is assigned where the person was registered when it was assigned, not where they were born, and
whole districts were renumbered when they were created: everyone registered in Shanghai's Pudong New Area holds a
310115 number (Pudong since 1992), everyone in Chongqing's Yuzhong district a 500103 one (since 1997), whatever year
they were born. python-stdnum's birth-place check wants the county to exist in the birth year, so these real people
are refused as ``invalid_id_number``/``region`` (and the sandbox provider's ``ric.is_valid`` says no as well). A county
abolished before the birth year is still impossible (numbers are assigned after birth)."""

from __future__ import annotations

import pytest

from tests.factories_ids import make_id_number

URL = "/api/v1/me/identity"


@pytest.mark.parametrize(("region", "birth"), [("310115", "19800101"), ("500103", "19700101")],
                         ids=["Pudong, born 1980", "Yuzhong, born 1970"])
def test_a_district_created_after_the_birth_year_is_a_known_region(api, region, birth):
    number = make_id_number(region=region, birth=birth)
    response = api.client.post(URL, json={"real_name": "张三", "id_number": number}, headers=api.register()["headers"])
    assert response.status_code == 201, response.json
