"""Idempotency-Key rules that need no database: the key's shape and how long answers must be kept (DESIGN 7)."""

import pytest

from core.config import load
from core.errors import AppError
from core.idempotency import check_key


@pytest.mark.parametrize("key", ["abc\n", "a" * 255 + "\n", "abc\r\n"])
def test_a_key_with_a_line_break_at_its_end_is_refused(key):
    # ``$`` matches before a final newline: such a key passed the check, and one of 255 characters plus the newline
    # did not fit the column.
    with pytest.raises(AppError) as refused:
        check_key(key)
    assert refused.value.status == 422


def test_a_key_of_255_allowed_characters_is_accepted():
    assert check_key("a" * 255) == "a" * 255


def test_answers_cannot_be_configured_to_be_kept_less_than_a_day(tmp_path):
    # DESIGN 7: "Keys are kept at least 24 hours"; a retry a client makes the next morning must replay, not pay again.
    with pytest.raises(RuntimeError, match="IDEMPOTENCY_TTL_HOURS"):
        load({"IDEMPOTENCY_TTL_HOURS": "23"}, str(tmp_path))
    assert load({"IDEMPOTENCY_TTL_HOURS": "48"}, str(tmp_path))["IDEMPOTENCY_TTL_HOURS"] == 48
