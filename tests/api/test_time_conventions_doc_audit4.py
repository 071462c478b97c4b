"""How the API writes times, as the document says it: every time in an answer is RFC 3339 in UTC ending in ``Z``,
except a timeline entry's ``at``, the text its hash covers, which ends in ``+00:00``; statement days are China Standard
Time days and SMS texts give China Standard Time. The document said none of it: a client could not tell a time's zone
but by looking, and one that parsed ``Z`` alone failed on the timeline (found by the time audit)."""

import re

from tests.api.answer_schemas import document
from tests.api.escrow_helpers import paid_and_shipped

_WITH_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
_WITH_OFFSET = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?\+00:00")


def test_the_document_says_how_times_are_written(api):
    doc = document(api.client)
    described = doc["info"]["description"]
    for words in ("RFC 3339", "UTC", "Z", "+00:00", "China Standard Time"):
        assert words in described, words
    at = doc["components"]["schemas"]["TimelineEntryOut"]["properties"]["at"]
    assert "+00:00" in at.get("description", "") and "hash" in at["description"]


def test_times_are_written_as_the_document_says(api, clock, people):
    clock.advance(microseconds=1500)
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    trade = api.client.get(f"/api/v1/trades/{trade_id}", headers=buyer["headers"]).json
    for name in ("created_at", "paid_at", "shipped_at"):
        assert _WITH_Z.fullmatch(trade[name]), (name, trade[name])
    assert _WITH_Z.fullmatch(trade["deadlines"]["confirm_by"])
    timeline = api.client.get(f"/api/v1/trades/{trade_id}/timeline", headers=buyer["headers"]).json["data"]
    assert timeline and all(_WITH_OFFSET.fullmatch(entry["at"]) for entry in timeline), timeline
