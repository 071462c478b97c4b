"""Evidence, the hash-chained timeline and its verifier, ratings and disputes: what the evidence audit found."""


import pytest

from tests.api.escrow_helpers import PP, act, evidence_added_as_the_timeline_is_read, paid_and_shipped, verify_cli


def test_escrow_verify_run_while_evidence_is_added_reports_no_tampering(api, app, people):
    """An operator runs ``flask escrow verify`` on a live trade: evidence committed by a party between the verifier's
    read of the trade's head and its read of the entries must not be reported as entries forged onto the chain (exit
    1, "BROKEN"), as the evidence bundle already reads both as one picture."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    with evidence_added_as_the_timeline_is_read(app, seller, trade_id) as raced:
        code, output = verify_cli(app, trade_id)
    assert raced
    assert code == 0, output
    assert "intact:" in output


def _evidence_entries(api, who, trade_id):
    body = api.client.get(f"/api/v1/trades/{trade_id}/evidence-bundle", headers=who["headers"]).json
    return [entry for entry in body["timeline"] if entry["kind"] == "evidence"]


@pytest.mark.parametrize("body", [{}, {"attachments": []}, {"text": ""}, {"text": " \n\t "},
                                  {"text": None, "attachments": []}])
def test_evidence_with_neither_text_nor_an_attachment_is_refused(api, app, people, body):
    """A piece of evidence is text or a file's hash: one with neither says nothing to the staff who decide, yet it was
    kept in the trade's chain for good and spent one of the party's ESCROW_EVIDENCE_PER_PARTY pieces (201)."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    response = act(api, buyer, trade_id, "evidence", **body)
    assert (response.status_code, response.json["code"]) == (422, "validation_failed"), response.json
    assert _evidence_entries(api, buyer, trade_id) == []
    for enough in ({"text": "photo of the box"}, {"attachments": [{"name": "box.jpg", "sha256": "a" * 64}]},
                   {"text": " ", "attachments": [{"name": "box.jpg", "sha256": "b" * 64}]}):
        assert act(api, buyer, trade_id, "evidence", **enough).status_code == 201, enough
    assert len(_evidence_entries(api, buyer, trade_id)) == 3


@pytest.mark.parametrize("score", [True, False])
def test_a_rating_score_is_a_number_not_a_boolean(api, app, people, score):
    """Request bodies are strict (no "1" for 1), and a score is 1, 0 or -1: true was taken as a good rating and false
    as a neutral one (not a bad one, as a client sending false for "bad" meant), each counted in the reputation."""
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    assert act(api, buyer, trade_id, "confirm", key="c", **PP).status_code == 200
    response = act(api, buyer, trade_id, "ratings", score=score)
    assert (response.status_code, response.json["code"]) == (422, "validation_failed"), response.json
    assert [error["field"] for error in response.json["errors"]] == ["score"]
    reputation = api.client.get(f"/api/v1/users/{seller['user']['id']}/reputation", headers=buyer["headers"]).json
    assert reputation["as_seller"]["count"] == 0
    assert act(api, buyer, trade_id, "ratings", score=-1).status_code == 201
