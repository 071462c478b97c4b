"""The sandbox bank of DESIGN 7.2: linking cards (holder checks, tokens), card endings, idempotency by
reference, asynchronous payouts, latency and injected timeouts (repeatable under a seed)."""

from __future__ import annotations

import threading

import pytest

from tests.factories_ids import break_luhn, make_card_number
from wallet.banks import BANK_CODES, BankUnavailable, PayoutNotFound, ReferenceConflict, SimulatedBank


@pytest.fixture
def bank() -> SimulatedBank:
    return SimulatedBank()


def linked(bank_code: str = "ICBC", **card: object) -> str:
    """The token of a fresh card linked at ``bank_code`` (by a bank of its own: tokens work at any instance)."""
    token = SimulatedBank().link_card(bank_code, make_card_number(**card), "张三")  # type: ignore[arg-type]
    assert token is not None
    return token


# --- holder checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [16, 17, 18, 19])
@pytest.mark.parametrize("bank_code", BANK_CODES)
def test_every_luhn_valid_card_of_16_to_19_digits_is_held_by_every_partner_bank(bank, bank_code, length):
    number = make_card_number(length=length)
    token = bank.link_card(bank_code, number, "张三")
    assert token is not None and token.startswith(f"sim-{bank_code}-") and token.endswith(number[-4:])
    assert number[:-4] not in token  # the token does not carry the number


def test_each_link_gets_its_own_token(bank):
    number = make_card_number()
    assert bank.link_card("ICBC", number, "张三") != bank.link_card("ICBC", number, "张三")


@pytest.mark.parametrize(
    ("bank_code", "card_number", "holder"),
    [
        ("ICBC", make_card_number(ending="0000"), "张三"),
        ("ICBC", break_luhn(make_card_number()), "张三"),
        ("ICBC", make_card_number(length=16)[:15], "张三"),
        ("ICBC", make_card_number(length=19) + "0", "张三"),
        ("HSBC", make_card_number(), "张三"),
        ("ICBC", make_card_number(), "  "),
    ],
    ids=["ending 0000", "luhn", "15 digits", "20 digits", "unknown bank", "blank name"],
)
def test_holder_check_fails(bank, bank_code, card_number, holder):
    assert bank.link_card(bank_code, card_number, holder) is None


def test_a_card_is_held_in_the_name_first_confirmed(bank):
    card = make_card_number()
    assert bank.link_card("ABC", card, "John Doe") is not None
    assert bank.link_card("ABC", card, " john  DOE ") is not None
    assert bank.link_card("ABC", card, "Jane Doe") is None


# --- debits -------------------------------------------------------------------------------------------


def test_a_debit_succeeds_once_per_reference(bank):
    card = linked()
    first = bank.debit("ICBC", card, 50_000, "topup-1")
    again = bank.debit("ICBC", card, 50_000, "topup-1")
    assert first.status == "succeeded" and first.ok and first.reason is None
    assert again == first
    assert bank.operation_count() == 1
    assert bank.total_debited(card) == 50_000


def test_a_card_ending_9999_has_no_money_at_the_bank(bank):
    card = linked("CCB", ending="9999")
    result = bank.debit("CCB", card, 100, "topup-2")
    assert (result.status, result.reason, result.ok) == ("failed", "insufficient_funds_at_bank", False)
    assert bank.debit("CCB", card, 100, "topup-2") == result  # the failure is remembered, too
    assert bank.total_debited(card) == 0


@pytest.mark.parametrize("token", [linked("CCB"), "sim-ICBC-not-issued-1234", make_card_number()],
                         ids=["another bank's token", "not a token", "a card number"])
def test_a_debit_from_a_card_the_bank_has_not_linked_fails(bank, token):
    result = bank.debit("ICBC", token, 100, "topup-3")
    assert (result.status, result.reason) == ("failed", "card_not_found")


@pytest.mark.parametrize("change", ["amount", "card", "kind"])
def test_reusing_a_reference_for_another_operation_is_refused(bank, change):
    card = linked()
    bank.debit("ICBC", card, 100, "ref-1")
    with pytest.raises(ReferenceConflict):
        if change == "amount":
            bank.debit("ICBC", card, 101, "ref-1")
        elif change == "card":
            bank.debit("ICBC", linked(), 100, "ref-1")
        else:
            bank.payout("ICBC", card, 100, "ref-1")


@pytest.mark.parametrize("amount", [0, -1, True, 1.5, "100"])
def test_amounts_are_positive_integers_of_fen(bank, amount):
    with pytest.raises(ValueError, match="amount"):
        bank.debit("ICBC", linked(), amount, "ref-amount")
    with pytest.raises(ValueError, match="amount"):
        bank.payout("ICBC", linked(), amount, "ref-amount")


def test_concurrent_debits_with_one_reference_are_one_operation(bank):
    card = linked("SPDB")
    results = []
    def debit() -> None:
        results.append(bank.debit("SPDB", card, 700, "same"))

    threads = [threading.Thread(target=debit) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert bank.total_debited(card) == 700


# --- payouts ------------------------------------------------------------------------------------------


def test_a_payout_is_accepted_then_succeeds(bank):
    card = linked("CMB")
    result = bank.payout("CMB", card, 10_000, "wd-1")
    assert result.status == "accepted" and result.bank_reference
    assert bank.poll_payout("wd-1") == "succeeded"
    assert bank.payout("CMB", card, 10_000, "wd-1") == result
    assert bank.total_paid_out(card) == 10_000


def test_a_card_ending_8888_fails_payouts_after_accepting_them(bank):
    card = linked("ABC", ending="8888")
    assert bank.payout("ABC", card, 10_000, "wd-2").status == "accepted"
    assert bank.poll_payout("wd-2") == "failed"
    assert bank.poll_payout("wd-2") == "failed"
    assert bank.total_paid_out(card) == 0
    assert bank.debit("ABC", card, 100, "topup-8888").status == "succeeded"  # only payouts fail


def test_a_payout_to_a_card_the_bank_has_not_linked_is_refused_at_once(bank):
    result = bank.payout("ICBC", "sim-ICBC-not-issued-1234", 100, "wd-3")
    assert (result.status, result.reason) == ("failed", "card_not_found")
    assert bank.poll_payout("wd-3") == "failed"


def test_payouts_stay_pending_for_the_configured_number_of_polls():
    bank = SimulatedBank(payout_pending_polls=2)
    bank.payout("ICBC", linked(), 100, "wd-4")
    assert [bank.poll_payout("wd-4") for _ in range(4)] == ["pending", "pending", "succeeded", "succeeded"]


@pytest.mark.parametrize("kind", ["unknown", "a debit"])
def test_polling_a_payout_the_bank_never_received_raises(bank, kind):
    if kind == "a debit":
        bank.debit("ICBC", linked(), 100, "not-a-payout")
    with pytest.raises(PayoutNotFound):
        bank.poll_payout("not-a-payout")


# --- latency and failure injection --------------------------------------------------------------------


def test_every_call_takes_the_configured_latency():
    slept: list[float] = []
    bank = SimulatedBank(latency=0.25, sleep=slept.append)
    card = bank.link_card("ICBC", make_card_number(), "张三")
    assert card is not None
    bank.debit("ICBC", card, 100, "l-1")
    bank.payout("ICBC", card, 100, "l-2")
    bank.poll_payout("l-2")
    assert slept == [0.25] * 4


def test_the_default_bank_never_sleeps():
    bank = SimulatedBank(sleep=lambda seconds: pytest.fail("slept"))
    bank.debit("ICBC", linked(), 100, "fast")


def test_timeout_references_never_answer_and_have_no_effect_until_released():
    card = linked()
    bank = SimulatedBank(timeout_references={"stuck"})
    for call in (lambda: bank.debit("ICBC", card, 100, "stuck"), lambda: bank.payout("ICBC", card, 100, "stuck"),
                 lambda: bank.poll_payout("stuck")):
        with pytest.raises(BankUnavailable):
            call()
    assert bank.operation_count() == 0

    bank.timeout_references.discard("stuck")
    assert bank.debit("ICBC", card, 100, "stuck").status == "succeeded"


def test_a_failure_rate_of_one_always_times_out():
    bank = SimulatedBank(failure_rate=1.0)
    with pytest.raises(BankUnavailable) as caught:
        bank.link_card("ICBC", make_card_number(), "张三")
    assert caught.value.status == 503 and caught.value.code == "bank_unavailable"


def _outcomes(bank: SimulatedBank, cards: list[str]) -> list[str]:
    outcomes = []
    for i, card in enumerate(cards):
        try:
            outcomes.append(bank.debit("ICBC", card, 100, f"r-{i}").status)
        except BankUnavailable:
            outcomes.append("timeout")
    return outcomes


def test_injected_timeouts_are_repeatable_under_a_seed():
    cards = [linked() for _ in range(60)]
    first = _outcomes(SimulatedBank(failure_rate=0.3, seed=42), cards)
    second = _outcomes(SimulatedBank(failure_rate=0.3, seed=42), cards)
    other = _outcomes(SimulatedBank(failure_rate=0.3, seed=43), cards)
    assert first == second
    assert first != other
    assert 5 < first.count("timeout") < 35


def test_retrying_by_reference_through_timeouts_debits_each_reference_exactly_once():
    bank = SimulatedBank(failure_rate=0.5, seed=1)
    card = linked()
    lost_replies = 0
    for i in range(40):
        reference = f"topup-{i}"
        while True:
            before = bank.operation_count()
            try:
                result = bank.debit("ICBC", card, 100, reference)
                break
            except BankUnavailable:
                lost_replies += bank.operation_count() > before  # the bank acted, the answer was lost
        assert result.status == "succeeded"
    assert bank.total_debited(card) == 40 * 100
    assert bank.operation_count() == 40
    assert lost_replies > 0  # both kinds of timeout happened, and the retry absorbed the lost replies


@pytest.mark.parametrize("kwargs", [{"latency": -1}, {"failure_rate": 1.5}, {"failure_rate": -0.1},
                                    {"payout_pending_polls": -1}])
def test_nonsense_configuration_is_refused(kwargs):
    with pytest.raises(ValueError):
        SimulatedBank(**kwargs)


# --- answers say what they are about (CheckedGateway holds them to it) ----------------------------------------


def test_the_sandbox_answers_name_the_reference_the_amount_and_the_currency(bank):
    token = linked()
    for answer in (bank.debit("ICBC", token, 1500, reference="top_1"), bank.payout("ICBC", token, 700, "wd_1"),
                   bank.debit("ICBC", "sim-ICBC-unknown", 300, reference="top_2")):
        assert (answer.reference, answer.amount, answer.currency) in {
            ("top_1", 1500, "CNY"), ("wd_1", 700, "CNY"), ("top_2", 300, "CNY")}


@pytest.mark.parametrize("status", ["paid", None, 1])
def test_a_payout_status_the_interface_does_not_have_is_no_answer(status):
    from wallet.banks import CheckedGateway

    class _Odd(SimulatedBank):
        def poll_payout(self, reference):
            return status

    with pytest.raises(BankUnavailable):
        CheckedGateway(_Odd()).poll_payout("wd_1")
