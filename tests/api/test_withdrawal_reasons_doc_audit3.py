"""A failed withdrawal's ``failure_reason`` is what a client shows ("the bank refused", "your account is frozen"); the
document described the field as a bare string (found by the funds audit). Every reason the code gives is listed."""

import re
from pathlib import Path

from wallet import banks


def test_the_document_lists_every_reason_a_withdrawal_fails_for(api):
    from tests.api.answer_schemas import document

    doc = document(api.client)
    described = doc["components"]["schemas"]["WithdrawalOut"]["properties"]["failure_reason"].get("description", "")
    source = (Path(__file__).parents[2] / "wallet" / "funds.py").read_text(encoding="utf-8")
    ours = set(re.findall(r'_settle\(withdrawal, card, False, "([a-z_]+)"', source))
    assert ours == {"account_frozen", "bank_never_answered"}  # and the poll's "payout_failed", below
    for reason in sorted(ours | {"payout_failed", banks.CARD_NOT_FOUND}):
        assert reason in described, reason
