"""The ledger's invariant checker (``flask wallet check`` and the tests run it).

It reads the committed books in one consistent snapshot (its own connection and transaction: REPEATABLE READ on
PostgreSQL, SQLite's write lock on SQLite),
recomputes everything the ledger caches, and reports each disagreement as one line of text:

1. per currency the balances of all accounts sum to zero, and pending debits equal pending credits;
2. every account's cached totals equal the totals recomputed from transfers (posted) and open holds (pending);
3. no wallet or escrow account is below zero available;
4. every transfer has exactly its two entries, each entry matches its transfer, and ``balance_after`` is the
   running sum of the account's entries in id order;
5. a hold is pending exactly when it has no resolution, its status is its resolution's outcome, and a posted
   resolution points at a transfer of the hold's accounts and kind, for at most the held amount;
6. a trade's ``refund_open`` flag is set exactly when one of its refunds is open (the escrow steps trust the
   flag, migration 0011);
7. each user's ``rating_totals`` per role are the sums of the ratings they received (reputations are read from
   them, migration 0015);
8. the ledger agrees with the money tables beside it: a trade's escrow account is of kind escrow and holds exactly
   what the trade says it holds (paid less refunded less released: nothing once it is over); a withdrawal's hold
   takes the withdrawing user's wallet to a bank's clearing account and has the outcome the withdrawal's status
   says (open while it is pending or with the bank, posted in full once it succeeded, voided once it failed); a
   succeeded top-up's transfer is a top-up from a bank's clearing account of the top-up's amount and currency, into
   its user's wallet. A buggy release could write any of these with every ledger rule kept (found by audits that
   wrote them with plain SQL).

An empty list means the books are clean. Each kind of problem is reported at most ``LIMIT`` times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Row, text

from core.db import db, snapshot
from wallet.escrow import OPEN_REFUND_STATES
from wallet.models import NON_NEGATIVE_KINDS

LIMIT = 100

_SUMS = text(
    "SELECT currency, SUM(credits_posted - debits_posted) AS total, SUM(debits_pending) AS debits_pending,"
    " SUM(credits_pending) AS credits_pending FROM ledger_accounts GROUP BY currency ORDER BY currency"
)

_RECOMPUTED = text(
    """
WITH posted AS (
    SELECT account_id, SUM(debits) AS debits, SUM(credits) AS credits FROM (
        SELECT debit_account_id AS account_id, amount AS debits, 0 AS credits FROM transfers
        UNION ALL
        SELECT credit_account_id AS account_id, 0 AS debits, amount AS credits FROM transfers
    ) AS sides GROUP BY account_id
), pending AS (
    SELECT account_id, SUM(debits) AS debits, SUM(credits) AS credits FROM (
        SELECT debit_account_id AS account_id, amount AS debits, 0 AS credits FROM holds WHERE status = 'pending'
        UNION ALL
        SELECT credit_account_id AS account_id, 0 AS debits, amount AS credits FROM holds WHERE status = 'pending'
    ) AS sides GROUP BY account_id
)
SELECT a.id, a.kind, a.owner,
       a.debits_posted, COALESCE(p.debits, 0) AS debits_posted_recomputed,
       a.credits_posted, COALESCE(p.credits, 0) AS credits_posted_recomputed,
       a.debits_pending, COALESCE(h.debits, 0) AS debits_pending_recomputed,
       a.credits_pending, COALESCE(h.credits, 0) AS credits_pending_recomputed
FROM ledger_accounts AS a
LEFT JOIN posted AS p ON p.account_id = a.id
LEFT JOIN pending AS h ON h.account_id = a.id
WHERE a.debits_posted <> COALESCE(p.debits, 0) OR a.credits_posted <> COALESCE(p.credits, 0)
   OR a.debits_pending <> COALESCE(h.debits, 0) OR a.credits_pending <> COALESCE(h.credits, 0)
ORDER BY a.id
"""
)

_NEGATIVE = text(
    "SELECT id, kind, owner, credits_posted - debits_posted - debits_pending AS available FROM ledger_accounts"
    " WHERE kind IN ('wallet', 'escrow') AND credits_posted - debits_posted - debits_pending < 0 ORDER BY id"
)
assert NON_NEGATIVE_KINDS == ("wallet", "escrow"), "keep _NEGATIVE in step with the CHECK constraint"

_TRANSFERS_WITHOUT_BOTH_ENTRIES = text(
    """
SELECT t.id, COALESCE(e.debit_entries, 0) AS debit_entries, COALESCE(e.credit_entries, 0) AS credit_entries
FROM transfers AS t
LEFT JOIN (
    SELECT transfer_id, SUM(CASE WHEN amount < 0 THEN 1 ELSE 0 END) AS debit_entries,
           SUM(CASE WHEN amount > 0 THEN 1 ELSE 0 END) AS credit_entries
    FROM ledger_entries GROUP BY transfer_id
) AS e ON e.transfer_id = t.id
WHERE COALESCE(e.debit_entries, 0) <> 1 OR COALESCE(e.credit_entries, 0) <> 1
ORDER BY t.id
"""
)

_ENTRIES_NOT_MATCHING = text(
    """
SELECT e.id, e.transfer_id FROM ledger_entries AS e JOIN transfers AS t ON t.id = e.transfer_id
WHERE e.kind <> t.kind OR NOT (
       (e.account_id = t.debit_account_id AND e.counterparty_account_id = t.credit_account_id AND e.amount = -t.amount)
    OR (e.account_id = t.credit_account_id AND e.counterparty_account_id = t.debit_account_id AND e.amount = t.amount))
ORDER BY e.id
"""
)

_RUNNING_BALANCE = text(
    """
SELECT id, account_id, balance_after, running FROM (
    SELECT id, account_id, balance_after,
           SUM(amount) OVER (PARTITION BY account_id ORDER BY id ROWS UNBOUNDED PRECEDING) AS running
    FROM ledger_entries
) AS e WHERE balance_after <> running ORDER BY id
"""
)

_HOLD_STATUS = text(
    """
SELECT h.id, h.status, r.outcome FROM holds AS h LEFT JOIN hold_resolutions AS r ON r.hold_id = h.id
WHERE (h.status = 'pending' AND r.hold_id IS NOT NULL)
   OR (h.status <> 'pending' AND (r.hold_id IS NULL OR r.outcome <> h.status))
ORDER BY h.id
"""
)

_POSTED_HOLDS = text(
    """
SELECT h.id, h.amount, r.posted_amount, t.id AS transfer_id FROM hold_resolutions AS r
JOIN holds AS h ON h.id = r.hold_id
LEFT JOIN transfers AS t ON t.id = r.transfer_id
WHERE r.outcome = 'posted' AND (
    t.id IS NULL OR t.hold_id IS NULL OR t.hold_id <> h.id OR t.amount <> r.posted_amount
    OR r.posted_amount > h.amount OR t.debit_account_id <> h.debit_account_id
    OR t.credit_account_id <> h.credit_account_id OR t.kind <> h.kind)
ORDER BY h.id
"""
)

_HOLD_TRANSFERS_WITHOUT_RESOLUTION = text(
    """
SELECT t.id, t.hold_id FROM transfers AS t LEFT JOIN hold_resolutions AS r ON r.transfer_id = t.id
WHERE t.hold_id IS NOT NULL AND (r.hold_id IS NULL OR r.hold_id <> t.hold_id)
ORDER BY t.id
"""
)

_REFUND_FLAGS = text(
    "SELECT t.id, t.refund_open FROM trades AS t WHERE t.refund_open <> EXISTS (SELECT 1 FROM refunds AS r"  # noqa: S608
    " WHERE r.trade_id = t.id AND r.status IN ({})) ORDER BY t.id".format(
        ", ".join(f"'{state}'" for state in OPEN_REFUND_STATES))
)


_RATING_TOTALS = text(
    """
WITH recomputed AS (
    SELECT ratee_id AS user_id, role, SUM(score) AS score, COUNT(*) AS ratings,
           SUM(CASE WHEN score = 1 THEN 1 ELSE 0 END) AS positive
    FROM ratings GROUP BY ratee_id, role
)
SELECT c.user_id, c.role, c.score, c.ratings, c.positive, r.score AS score_recomputed,
       r.ratings AS ratings_recomputed, r.positive AS positive_recomputed
FROM rating_totals AS c LEFT JOIN recomputed AS r ON r.user_id = c.user_id AND r.role = c.role
WHERE r.user_id IS NULL OR r.score <> c.score OR r.ratings <> c.ratings OR r.positive <> c.positive
UNION ALL
SELECT r.user_id, r.role, NULL, NULL, NULL, r.score, r.ratings, r.positive
FROM recomputed AS r LEFT JOIN rating_totals AS c ON c.user_id = r.user_id AND c.role = r.role
WHERE c.user_id IS NULL
ORDER BY 1, 2
"""
)


_ESCROW_HOLDINGS = text(
    """
SELECT t.id, t.status, t.paid_amount - t.refunded_amount - t.released_amount AS held, a.id AS account_id, a.kind,
       COALESCE(a.credits_posted - a.debits_posted, 0) AS balance
FROM trades AS t LEFT JOIN ledger_accounts AS a ON a.id = t.escrow_account_id
WHERE a.kind <> 'escrow' OR COALESCE(a.credits_posted - a.debits_posted, 0)
      <> t.paid_amount - t.refunded_amount - t.released_amount
ORDER BY t.id
"""
)

_WITHDRAWAL_HOLDS = text(
    """
SELECT w.id, w.user_id, w.amount, w.status, h.id AS hold_id, h.status AS hold_status, d.kind AS debit_kind,
       d.owner AS debit_owner, c.kind AS credit_kind, r.posted_amount
FROM withdrawals AS w JOIN holds AS h ON h.id = w.hold_id
JOIN ledger_accounts AS d ON d.id = h.debit_account_id JOIN ledger_accounts AS c ON c.id = h.credit_account_id
LEFT JOIN hold_resolutions AS r ON r.hold_id = h.id
WHERE d.kind <> 'wallet' OR d.owner <> w.user_id OR c.kind <> 'bank_clearing'
   OR NOT ((w.status IN ('pending', 'submitted') AND h.status = 'pending')
           OR (w.status = 'succeeded' AND h.status = 'posted' AND r.posted_amount = w.amount)
           OR (w.status = 'failed' AND h.status = 'voided'))
ORDER BY w.id
"""
)

_TOPUP_TRANSFERS = text(
    """
SELECT u.id, u.user_id, u.amount, u.currency, x.id AS transfer_id, x.kind, x.amount AS transfer_amount,
       x.currency AS transfer_currency, d.kind AS debit_kind, c.kind AS credit_kind, c.owner AS credit_owner
FROM topups AS u JOIN transfers AS x ON x.id = u.transfer_id JOIN ledger_accounts AS d ON d.id = x.debit_account_id
JOIN ledger_accounts AS c ON c.id = x.credit_account_id
WHERE x.kind <> 'topup' OR d.kind <> 'bank_clearing' OR x.amount <> u.amount OR x.currency <> u.currency
   OR c.kind <> 'wallet' OR c.owner <> u.user_id
ORDER BY u.id
"""
)

# A trade's escrow money moves only between its escrow account and the trade's parties (the database refuses the
# rest too: migration 0027): in from the buyer's wallet; out to the buyer's or the seller's wallet, or the fee account.
_ESCROW_TRANSFERS = text(
    """
SELECT x.id, e.owner AS trade_id, o.kind AS other_kind, o.owner AS other_owner,
       CASE WHEN e.id = x.credit_account_id THEN 'into' ELSE 'out of' END AS direction
FROM transfers AS x
JOIN ledger_accounts AS e ON e.id IN (x.debit_account_id, x.credit_account_id)
JOIN trades AS t ON t.id = e.owner AND t.escrow_account_id = e.id
JOIN ledger_accounts AS o ON o.id = CASE WHEN e.id = x.credit_account_id THEN x.debit_account_id
                                         ELSE x.credit_account_id END
WHERE (e.id = x.credit_account_id AND NOT (o.kind = 'wallet' AND o.owner = t.buyer_id))
   OR (e.id = x.debit_account_id
       AND NOT (o.kind = 'fees' OR (o.kind = 'wallet' AND o.owner IN (t.buyer_id, t.seller_id))))
ORDER BY x.id
"""
)

# A rating is one party's of a finished trade, of the other party under the ratee's role (the database refuses the
# rest but the trade's state: migration 0028).
_RATINGS_OUT_OF_PLACE = text(
    """
SELECT r.id, r.trade_id, r.rater_id, r.ratee_id, r.role, t.status
FROM ratings AS r JOIN trades AS t ON t.id = r.trade_id
WHERE t.status <> 'TRADE_FINISHED'
   OR NOT ((r.rater_id = t.buyer_id AND r.ratee_id = t.seller_id AND r.role = 'seller')
           OR (r.rater_id = t.seller_id AND r.ratee_id = t.buyer_id AND r.role = 'buyer'))
ORDER BY r.id
"""
)

# A top-up charges, and a withdrawal pays out to, a card of its own user (the database refuses the rest: 0027).
_CARDS_OF_OTHERS = text(
    """
SELECT 'top-up' AS what, u.id, u.user_id, u.card_id, c.user_id AS card_user
FROM topups AS u JOIN bank_cards AS c ON c.id = u.card_id WHERE c.user_id <> u.user_id
UNION ALL
SELECT 'withdrawal', w.id, w.user_id, w.card_id, c.user_id
FROM withdrawals AS w JOIN bank_cards AS c ON c.id = w.card_id WHERE c.user_id <> w.user_id
ORDER BY 2
"""
)


def _describe_escrow_transfer(row: Row[Any]) -> list[str]:
    return [f"transfer {row.id} moves money of trade {row.trade_id} {row.direction} its escrow account with a"
            f" {row.other_kind} account of {row.other_owner}, who is not the trade's party for that"]


def _describe_escrow(row: Row[Any]) -> list[str]:
    if row.account_id is None:
        return [f"trade {row.id} ({row.status}) holds {row.held} but has no escrow account"]
    if row.kind != "escrow":
        return [f"trade {row.id}: its escrow account {row.account_id} is a {row.kind} account"]
    return [f"trade {row.id} ({row.status}) holds {row.held} but its escrow account {row.account_id} has {row.balance}"]


def _describe_withdrawal(row: Row[Any]) -> list[str]:
    if (row.debit_kind, row.credit_kind) != ("wallet", "bank_clearing"):
        return [f"withdrawal {row.id}: its hold {row.hold_id} takes a {row.debit_kind} account to a {row.credit_kind}"
                " account, not the user's wallet to a bank's clearing account"]
    if row.debit_owner != row.user_id:
        return [f"withdrawal {row.id}: its hold {row.hold_id} takes the wallet of {row.debit_owner}, not its user's"]
    if (row.status, row.hold_status) == ("succeeded", "posted"):  # the bank paid out the amount; the ledger took less
        return [f"withdrawal {row.id} of {row.amount} succeeded but its hold {row.hold_id} posted {row.posted_amount}"]
    return [f"withdrawal {row.id} is {row.status} but its hold {row.hold_id} is {row.hold_status}"]


def _describe_topup(row: Row[Any]) -> list[str]:
    if row.kind != "topup" or row.debit_kind != "bank_clearing":
        return [f"top-up {row.id} was credited by transfer {row.transfer_id} (kind {row.kind}, from a {row.debit_kind}"
                " account), not by a top-up from a bank's clearing account"]
    return [f"top-up {row.id} of {row.user_id} ({row.amount} {row.currency}) was credited by transfer"
            f" {row.transfer_id} with {row.transfer_amount} {row.transfer_currency} to a {row.credit_kind} account of"
            f" {row.credit_owner}"]


def _describe_sums(row: Row[Any]) -> list[str]:
    problems = []
    if row.total != 0:
        problems.append(f"{row.currency}: balances of all ledger accounts sum to {row.total}, not 0")
    if row.debits_pending != row.credits_pending:
        problems.append(
            f"{row.currency}: pending debits {row.debits_pending} differ from pending credits {row.credits_pending}"
        )
    return problems


def _describe_totals(row: Row[Any]) -> list[str]:
    problems = []
    for total in ("debits_posted", "credits_posted", "debits_pending", "credits_pending"):
        cached, recomputed = getattr(row, total), getattr(row, total + "_recomputed")
        if cached != recomputed:
            source = "transfers" if total.endswith("posted") else "open holds"
            problems.append(
                f"ledger account {row.id} ({row.kind} {row.owner}): {total} is {cached} but {source} give {recomputed}"
            )
    return problems


_CHECKS: list[tuple[Any, Callable[[Row[Any]], list[str]]]] = [
    (_SUMS, _describe_sums),
    (_RECOMPUTED, _describe_totals),
    (_NEGATIVE, lambda r: [f"ledger account {r.id} ({r.kind} {r.owner}) is below zero: available {r.available}"]),
    (_TRANSFERS_WITHOUT_BOTH_ENTRIES, lambda r: [
        f"transfer {r.id} has {r.debit_entries} debit and {r.credit_entries} credit entries, not one of each"
    ]),
    (_ENTRIES_NOT_MATCHING, lambda r: [f"ledger entry {r.id} does not match its transfer {r.transfer_id}"]),
    (_RUNNING_BALANCE, lambda r: [
        f"ledger entry {r.id} of {r.account_id}: balance_after {r.balance_after} but entries sum to {r.running}"
    ]),
    (_HOLD_STATUS, lambda r: [f"hold {r.id} is {r.status} but its resolution says {r.outcome or 'nothing'}"]),
    (_POSTED_HOLDS, lambda r: [
        f"hold {r.id} (amount {r.amount}) posted {r.posted_amount} but its transfer {r.transfer_id} does not match"
    ]),
    (_HOLD_TRANSFERS_WITHOUT_RESOLUTION, lambda r: [
        f"transfer {r.id} posts hold {r.hold_id} but that hold's resolution does not name it"
    ]),
    (_REFUND_FLAGS, lambda r: [
        f"trade {r.id} says a refund is {'open' if r.refund_open else 'not open'}, but its refunds say otherwise"
    ]),
    (_ESCROW_HOLDINGS, _describe_escrow),
    (_WITHDRAWAL_HOLDS, _describe_withdrawal),
    (_ESCROW_TRANSFERS, _describe_escrow_transfer),
    (_RATINGS_OUT_OF_PLACE, lambda r: [
        f"rating {r.id} of trade {r.trade_id} ({r.status}) by {r.rater_id} of {r.ratee_id} as {r.role} is not one"
        " party's of a finished trade, of the other under the ratee's role"
    ]),
    (_CARDS_OF_OTHERS, lambda r: [
        f"{r.what} {r.id} of {r.user_id} names card {r.card_id}, which is a card of {r.card_user}"
    ]),
    (_TOPUP_TRANSFERS, _describe_topup),
    (_RATING_TOTALS, lambda r: [
        f"rating totals of {r.user_id} as {r.role}: score {r.score}, {r.ratings} ratings, {r.positive} positive,"
        f" but the ratings give {r.score_recomputed}, {r.ratings_recomputed or 0}, {r.positive_recomputed}"
    ]),
]


def check_invariants() -> list[str]:
    """Every broken ledger invariant, one line each; ``[]`` when the committed books are clean.

    Reads on a connection of its own, so it sees committed data only (commit before calling it)."""
    problems: list[str] = []
    with snapshot() as conn:  # one snapshot for all queries: concurrent movements cannot make clean books look broken
        for query, describe in _CHECKS:
            found: list[str] = []
            # Streamed (a server-side cursor on PostgreSQL): the loop stops after LIMIT problems, and one bad row
            # early in a busy account makes every later entry of it a problem row of its own. The cursor is closed
            # when the loop stops early too (it was left to the garbage collector, open on the server till then).
            with conn.execution_options(stream_results=True, yield_per=LIMIT + 1).execute(query) as rows:
                for row in rows:
                    found.extend(describe(row))
                    if len(found) > LIMIT:
                        found[LIMIT:] = ["... and more"]
                        break
            problems.extend(found)
    return problems


def counts() -> dict[str, int]:
    """How much is in the books (for ``flask wallet check``)."""
    with db.engine.connect() as conn:
        return {
            name: conn.execute(text(query)).scalar_one()
            for name, query in {
                "ledger accounts": "SELECT COUNT(*) FROM ledger_accounts",
                "transfers": "SELECT COUNT(*) FROM transfers",
                "ledger entries": "SELECT COUNT(*) FROM ledger_entries",
                "open holds": "SELECT COUNT(*) FROM holds WHERE status = 'pending'",
            }.items()
        }
