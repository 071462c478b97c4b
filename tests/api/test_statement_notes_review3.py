"""A payer's note in the payee's CSV statement is never a spreadsheet formula, also when typed full-width, as a Chinese
or Japanese keyboard types ＝ ＋ － ＠: spreadsheets in those locales read ``＝cmd|' /C calc'!A0`` as a formula (OWASP
www-community issue 1088). Found by the review: only the ASCII characters were written with a leading apostrophe."""

import csv
import io

import pytest

from tests.api.test_statement_notes_audit3 import _pay


@pytest.mark.parametrize("note", ["＝HYPERLINK(\"http://example.invalid\",\"refund\")", "＋1 lunch", "＠SUM(A1)",
                                  "－2＋3", "﹦1+1"])
def test_a_full_width_formula_in_a_note_is_written_as_text_in_the_csv_statement(api, note):
    alice, bob = api.verified(), api.register()
    api.money("/api/v1/topups", alice, amount=10000, bank_card_id=alice["card_id"])
    _pay(api, alice, bob, 250, note=note)
    text = api.client.get("/api/v1/wallet/transactions?format=csv", headers=bob["headers"]).get_data(as_text=True)
    assert [row["note"] for row in csv.DictReader(io.StringIO(text))] == ["'" + note]
    # The JSON statement shows the note as the payer wrote it.
    lines = api.client.get("/api/v1/wallet/transactions", headers=bob["headers"]).json["data"]
    assert [line["note"] for line in lines] == [note]
