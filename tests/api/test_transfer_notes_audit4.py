"""The note on a payment to a phone number is shown to both sides on their statements (JSON and CSV). It was taken
as typed: a note with Unicode bidirectional controls (U+202E RIGHT-TO-LEFT OVERRIDE and the like) is shown by the
payee's app in another order than it was written ("refund" can be made to read as something else, a number to call
reversed), and control characters (an escape, DEL, C1 codes) have no business on a statement. Such a note is now
refused 422 before any money moves; a tab and line breaks stay allowed (a note of several lines, which the CSV
statement quotes: ``test_statement_notes_audit3``). A blank note (spaces only) showed as a note of nothing: it is now
kept as no note, as an empty one always was (the note is optional; the payment itself is not refused over it)."""

import pytest

_OVERRIDES = ["\u202e", "\u202d", "\u202a", "\u202b", "\u202c", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e",
              "\u200f", "\u061c"]
_CONTROLS = ["\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9b"]


@pytest.fixture
def pair(api):
    alice, bob = api.verified(), api.register()
    assert api.money("/api/v1/topups", alice, amount=10000, bank_card_id=alice["card_id"]).status_code == 201
    return alice, bob


def _statement_notes(api, who):
    return [line["note"] for line in api.client.get("/api/v1/wallet/transactions", headers=who["headers"]).json["data"]
            if line["kind"] == "payment"]


@pytest.mark.parametrize("character", _OVERRIDES + _CONTROLS)
def test_a_note_with_a_bidi_control_or_a_control_character_is_refused_and_nothing_moves(api, pair, character):
    alice, bob = pair
    response = api.money("/api/v1/transfers", alice, amount=100, to_phone=bob["phone"],
                         note=f"refund for order {character}4321")
    assert response.status_code == 422, response.json
    assert [(e["field"], e["code"]) for e in response.json["errors"]] == [("note", "note_character_not_allowed")]
    assert (api.balance(alice), api.balance(bob)) == (10000, 0)
    assert _statement_notes(api, bob) == []


@pytest.mark.parametrize("blank", ["", " ", "   ", "\u3000", "\n\t"])
def test_a_blank_note_is_kept_as_no_note(api, pair, blank):
    alice, bob = pair
    response = api.money("/api/v1/transfers", alice, amount=100, to_phone=bob["phone"], note=blank)
    assert response.status_code == 201, response.json
    assert _statement_notes(api, bob) == [None]
    assert _statement_notes(api, alice) == [None]


@pytest.mark.parametrize("note", ["房租 三月", "إيجار مارس", "rent 👨\u200d👩\u200d👧 family", "café au lait",
                                  "two lines:\r\nrent\tand water"])
def test_notes_in_any_script_and_with_emoji_are_shown_as_written(api, pair, note):
    alice, bob = pair
    assert api.money("/api/v1/transfers", alice, amount=100, to_phone=bob["phone"], note=note).status_code == 201
    assert _statement_notes(api, bob) == [note]


def test_the_document_says_what_a_note_may_hold(client):
    note = client.get("/api/v1/openapi.json").json["components"]["schemas"]["TransferRequest"]["properties"]["note"]
    assert "blank" in note["description"] and "bidirectional" in note["description"]
