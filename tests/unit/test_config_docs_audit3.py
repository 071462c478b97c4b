"""Settings the README documents, held to what it says. Found by the docs audit."""

from __future__ import annotations

import pytest

from core.config import ConfigError, load


@pytest.mark.parametrize("value", [str(2**63), "99999999999999999999"])
def test_a_batch_size_no_claim_can_bind_stops_the_start(tmp_path, value):
    """``SMS_BATCH_SIZE=99999999999999999999`` started every process, and then every round of every dispatcher failed
    with a traceback (PostgreSQL: ``bigint out of range`` binding the claim's LIMIT; SQLite: ``OverflowError``), so no
    alert was ever sent. The README: a value the application cannot use stops it at start-up, naming the setting."""
    with pytest.raises(ConfigError) as refused:
        load({"SMS_BATCH_SIZE": value}, str(tmp_path))
    assert "SMS_BATCH_SIZE" in str(refused.value) and "\n" not in str(refused.value)
