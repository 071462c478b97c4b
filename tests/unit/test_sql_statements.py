"""``core.sql.Statement``: how a statement's SQL reaches each driver (no database needed)."""

from __future__ import annotations

from core.sql import Statement


def test_named_parameters_become_psycopgs_and_stay_as_they_are_for_sqlite():
    stmt = Statement("SELECT a FROM t WHERE b = :b AND c::text = :c_2 AND d LIKE '5%' AND e = '10:30'")
    assert stmt.driver_sql("postgresql") == (
        "SELECT a FROM t WHERE b = %(b)s AND c::text = %(c_2)s AND d LIKE '5%%' AND e = '10:30'")
    assert stmt.driver_sql("sqlite") == stmt.sql


def test_a_statement_may_say_it_differently_to_each_database():
    stmt = Statement({"postgresql": "SELECT a FROM t WHERE id = :id FOR UPDATE",
                      "sqlite": "SELECT a FROM t WHERE id = :id"})
    assert stmt.driver_sql("postgresql").endswith("FOR UPDATE")
    assert stmt.driver_sql("sqlite") == "SELECT a FROM t WHERE id = :id"


def test_reads_and_writes_are_told_apart_unless_said():
    assert not Statement("SELECT 1").writes
    assert not Statement("  select 1").writes
    assert not Statement("WITH RECURSIVE r AS (SELECT 1) SELECT * FROM r").writes
    assert Statement("WITH w AS (INSERT INTO t VALUES (1) RETURNING 1) SELECT * FROM w").writes
    assert Statement("UPDATE t SET a = 1").writes
    assert not Statement("WITH p AS (SELECT 1) SELECT * FROM p", writes=False).writes
