"""``flask users freeze`` on an account frozen already (found by the docs audit: it printed "<id> frozen since ..."
exactly as for a new freeze, and the new --reason was dropped without a word: an operator escalating a case believed
the account frozen for the new reason, and its owner told)."""

from tests.api.test_account_freeze import cli


def test_freezing_a_frozen_account_says_so_and_names_the_reason_kept(api, app, inbox):
    alice = api.register()
    assert cli(app, "freeze", alice["phone"], "--reason", "cash-out pattern").exit_code == 0
    again = cli(app, "freeze", alice["phone"], "--reason", "court order 12")
    assert again.exit_code == 0
    assert "frozen already" in again.output and "'cash-out pattern' (kept" in again.output
    assert len(inbox.messages(to=alice["phone"], event="account_frozen")) == 1
    listed = cli(app, "frozen").output
    assert "cash-out pattern" in listed and "court order 12" not in listed
