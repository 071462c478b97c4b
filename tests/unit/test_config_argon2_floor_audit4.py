"""DESIGN 4.1: both passwords are hashed with argon2id at *at least* m=19 MiB, t=2, p=1. Found by the design audit:
a production start took any argon2 cost argon2 itself accepts (ARGON2_MEMORY_KIB=8, ARGON2_TIME_COST=1), so a
mistyped or copied-from-the-tests setting hashed every new password, and rehashed every old one at its next login, a
few thousand times cheaper to guess than the design promises, and nothing said so. Development and tests keep their
freedom (fast hashes for tests and benchmarks); production refuses, naming the setting."""

from __future__ import annotations

import pytest

from core.config import ConfigError, load

PRODUCTION = {"WALLET_ENV": "production", "PASSWORD_PEPPER": "a test pepper",
              "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/wallet"}


@pytest.mark.parametrize(("settings", "named"), [
    ({"ARGON2_MEMORY_KIB": "8"}, "ARGON2_MEMORY_KIB"),
    ({"ARGON2_MEMORY_KIB": "19455"}, "ARGON2_MEMORY_KIB"),
    ({"ARGON2_TIME_COST": "1"}, "ARGON2_TIME_COST"),
])
def test_production_refuses_argon2_costs_below_the_design_floor(tmp_path, settings, named):
    with pytest.raises(ConfigError) as refused:
        load({**PRODUCTION, **settings}, str(tmp_path))
    message = refused.value.message
    assert named in message and "\n" not in message, message


@pytest.mark.parametrize("settings", [
    {},
    {"ARGON2_MEMORY_KIB": "19456", "ARGON2_TIME_COST": "2", "ARGON2_PARALLELISM": "1"},
    {"ARGON2_MEMORY_KIB": "65536", "ARGON2_TIME_COST": "3", "ARGON2_PARALLELISM": "4"},
])
def test_production_takes_the_floor_and_anything_above_it(tmp_path, settings):
    config = load({**PRODUCTION, **settings}, str(tmp_path))
    assert config["ARGON2_MEMORY_KIB"] >= 19456 and config["ARGON2_TIME_COST"] >= 2


def test_development_and_tests_may_hash_cheaply(tmp_path):
    for env in ("development", "test"):
        config = load({"WALLET_ENV": env, "ARGON2_MEMORY_KIB": "8", "ARGON2_TIME_COST": "1"}, str(tmp_path))
        assert (config["ARGON2_MEMORY_KIB"], config["ARGON2_TIME_COST"]) == (8, 1)
