"""`flask users freeze PHONE --reason TEXT`: the reason is kept with the freeze for good (README, R13), and `users
frozen` shows it. One longer than the 200 characters the database holds was cut to its first 200 without a word: the
operator was told "frozen since ...", and the record of why said less than was written (the end of "... see case
2026-0412" gone). Such a reason is a usage error, and nothing is frozen on it."""

from __future__ import annotations

from tests.api.test_cli_arguments import _clean_failure


def test_a_reason_longer_than_can_be_kept_is_refused_not_cut(api, app):
    alice = api.register()
    reason = "Cash-out pattern: " + "many small top-ups followed by one withdrawal; " * 4 + "see case 2026-0412"
    assert len(reason) > 200
    result = app.test_cli_runner().invoke(args=["users", "freeze", alice["phone"], "--reason", reason])
    if result.exit_code == 0:  # kept whole, or not at all
        listed = app.test_cli_runner().invoke(args=["users", "frozen"])
        assert reason in listed.output, listed.output
        return
    _clean_failure(result)
    assert "--reason" in result.output
    assert api.client.get("/api/v1/me", headers=alice["headers"]).json["frozen_since"] is None


def test_a_reason_of_200_characters_is_kept_whole(api, app):
    alice = api.register()
    reason = "x" * 190 + " case 0412"
    assert len(reason) == 200
    assert app.test_cli_runner().invoke(args=["users", "freeze", alice["phone"], "--reason", reason]).exit_code == 0
    assert reason in app.test_cli_runner().invoke(args=["users", "frozen"]).output
