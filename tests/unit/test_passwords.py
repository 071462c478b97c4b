import pytest

from core.config import load
from core.errors import ValidationFailed
from security.passwords import Passwords, check_login_password, check_payment_password

FAST = {"time_cost": 1, "memory_kib": 8, "parallelism": 1}


def test_hashes_are_argon2id_and_verify():
    hasher = Passwords("pepper", time_cost=2, memory_kib=19456, parallelism=1)
    stored = hasher.hash("a long secret")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert hasher.verify(stored, "a long secret") and not hasher.verify(stored, "a long secreT")


def test_the_pepper_is_part_of_the_hash():
    stored = Passwords("pepper one", **FAST).hash("a long secret")
    assert not Passwords("pepper two", **FAST).verify(stored, "a long secret")


def test_changed_parameters_ask_for_a_rehash():
    old = Passwords("p", **FAST).hash("secret phrase")
    assert Passwords("p", time_cost=2, memory_kib=19456, parallelism=1).needs_rehash(old)
    assert not Passwords("p", **FAST).needs_rehash(old)


def test_garbage_hashes_do_not_verify():
    assert not Passwords("p", **FAST).verify("not a hash", "x")


@pytest.mark.parametrize("password", ["short", "x" * 129, "password123", "PASSWORD123", "qwertyuiop", "zzzzzzzzzz",
                                      "12345678", "2025550142"])
def test_weak_login_passwords(password):
    with pytest.raises(ValidationFailed):
        check_login_password(password, "+12025550142")


@pytest.mark.parametrize("password", ["correct horse battery", "Tr0ub4dor&3", "长城长城长城长城"])
def test_acceptable_login_passwords(password):
    check_login_password(password, "+12025550142")


@pytest.mark.parametrize("pin", ["000000", "111111", "123456", "234567", "987654", "890123", "121212", "123123",
                                 "550142", "12345", "1234567", "abcdef", "١٢٣٤٥٦"])
def test_trivial_or_malformed_payment_passwords(pin):
    with pytest.raises(ValidationFailed):
        check_payment_password(pin, "+12025550142")


@pytest.mark.parametrize("pin", ["135790", "246813", "802461"])
def test_acceptable_payment_passwords(pin):
    check_payment_password(pin, "+12025550142")


def test_production_refuses_to_start_without_a_pepper(tmp_path):
    production = {"WALLET_ENV": "production", "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/wallet"}
    with pytest.raises(RuntimeError, match="PASSWORD_PEPPER"):
        load(production, str(tmp_path))
    with pytest.raises(RuntimeError, match="PASSWORD_PEPPER"):
        load({**production, "PASSWORD_PEPPER": "development-pepper-not-a-secret"}, str(tmp_path))
    assert load({**production, "PASSWORD_PEPPER": "s3cret"}, str(tmp_path))["PASSWORD_PEPPER"] == "s3cret"


def test_development_has_a_default_pepper(tmp_path):
    assert load({}, str(tmp_path))["PASSWORD_PEPPER"]


def test_the_dummy_hash_costs_a_real_verification_and_never_matches():
    hasher = Passwords("p", time_cost=2, memory_kib=19456, parallelism=1)
    assert hasher.dummy_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert not hasher.needs_rehash(hasher.dummy_hash)
    for guess in ("", "no account has this password", "correct horse battery"):
        assert not hasher.verify(hasher.dummy_hash, guess)


# "café au lait" precomposed (NFC) and with a combining accent (NFD): one password typed on two phones.
CAFE_NFC, CAFE_NFD = "caf\u00e9 au lait", "cafe\u0301 au lait"


def test_a_password_is_one_password_however_its_letters_are_composed():
    hasher = Passwords("p", **FAST)
    assert CAFE_NFC != CAFE_NFD
    stored = hasher.hash(CAFE_NFC)
    assert hasher.verify(stored, CAFE_NFD) and hasher.verify(stored, CAFE_NFC)
    assert hasher.verify(hasher.hash(CAFE_NFD), CAFE_NFC)
    assert not hasher.verify(stored, "cafe au lait")  # a missing accent is another password
    # Full-width digits are the digits (a payment password typed on a full-width keyboard).
    assert hasher.verify(hasher.hash("480351"), "\uff14\uff18\uff10\uff13\uff15\uff11")


def test_a_hash_made_before_normalising_still_verifies_the_password_as_it_was_typed():
    hasher = Passwords("p", **FAST)
    legacy = hasher._hasher.hash(hasher._peppered(CAFE_NFD))  # what hash(CAFE_NFD) stored before
    assert hasher.verify(legacy, CAFE_NFD)
    assert not hasher.verify(legacy, "something else entirely")


def test_the_rules_judge_the_password_as_it_is_hashed():
    with pytest.raises(ValidationFailed):  # full-width "password1", among the common passwords
        check_login_password("\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44\uff11", "+12025550142")
