"""DESIGN 4.2's long-run ceiling as ``security/lockout.py`` reads it, pinned by the lockout state machine's audit:
"consecutive" means since the last success or SMS reset, so a lock that lifts by itself does not reset the count,
and wrong entries made while locked are refused without being counted."""

from tests.factories import LOGIN_PASSWORD

WRONG = "definitely not it"


def test_the_tenth_wrong_login_in_a_row_hard_locks_even_across_three_ordinary_locks(api, clock, inbox):
    phone = api.register()["phone"]
    for _ in range(3):
        answers = [api.login(phone, WRONG) for _ in range(3)]
        assert [a.status_code for a in answers] == [401, 401, 423]
        assert answers[-1].json["hard_locked"] is False
        assert api.login(phone, WRONG).status_code == 423  # refused while locked, and not counted
        clock.advance(hours=3)

    tenth = api.login(phone, WRONG)
    assert (tenth.status_code, tenth.json["hard_locked"], tenth.json["locked_until"]) == (423, True, None)
    clock.advance(days=2)
    assert api.login(phone, LOGIN_PASSWORD).status_code == 423
    assert len(inbox.messages(to=phone, event="login_locked")) == 4  # one SMS per lock, the hard one included


def test_a_success_resets_the_ceiling_but_a_lock_lifting_by_itself_does_not(api, clock):
    phone = api.register()["phone"]
    for _ in range(3):
        api.login(phone, WRONG)
    clock.advance(hours=3)
    assert api.login(phone, LOGIN_PASSWORD).status_code == 201
    for _ in range(3):  # had the three before the success counted, the second burst would end in a hard lock
        answers = [api.login(phone, WRONG) for _ in range(3)]
        assert [(a.status_code, a.json.get("hard_locked")) for a in answers] == [(401, None), (401, None), (423, False)]
        clock.advance(hours=3)
    # Nine in a row since the success: one try left, whatever the window says.
    last = api.login(phone, WRONG)
    assert (last.status_code, last.json["hard_locked"]) == (423, True)
