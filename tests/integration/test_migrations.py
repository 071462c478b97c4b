"""The committed Alembic migrations produce exactly the tables the models describe.

Alembic's comparison covers tables, columns (types, nullability, server defaults), indexes, unique constraints and
foreign keys by name and columns, but not CHECK constraints, the WHERE of a partial index, or a foreign key's
DEFERRABLE: the second test compares those too, table by table, against the models' own DDL (``create_all``) in a
database of its own, both read back by the same reflection (so PostgreSQL's rewriting of expressions does not count as
a difference)."""

from __future__ import annotations

import re
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect

from core.db import db


def test_migrations_match_the_models(app):
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        differences = compare_metadata(context, db.metadata)
    assert differences == []


def _text(value: Any) -> str | None:
    return None if value is None else re.sub(r"\s+", " ", str(value)).strip()


def _schema(engine: Engine) -> dict[str, dict[str, Any]]:
    found = inspect(engine)
    tables = {}
    for table in sorted(set(found.get_table_names()) - {"alembic_version"}):
        indexes = found.get_indexes(table)
        tables[table] = {
            "columns": {c["name"]: (str(c["type"]), c["nullable"], _text(c.get("default")))
                        for c in found.get_columns(table)},
            "primary key": found.get_pk_constraint(table)["constrained_columns"],
            "foreign keys": sorted((f["name"], f["constrained_columns"], f["referred_table"], f["referred_columns"],
                                    sorted(f.get("options", {}).items())) for f in found.get_foreign_keys(table)),
            "unique constraints": sorted((u["name"], u["column_names"]) for u in found.get_unique_constraints(table)),
            "indexes": sorted((i["name"], i["column_names"], bool(i["unique"]), _text(
                i.get("dialect_options", {}).get(f"{engine.dialect.name}_where"))) for i in indexes),
            "checks": sorted((c["name"], _text(c["sqltext"])) for c in found.get_check_constraints(table)),
        }
    return tables


def test_migrations_make_every_check_partial_index_and_deferred_key_the_models_declare(app, scratch_url):
    models = create_engine(scratch_url)
    db.metadata.create_all(models)
    try:
        declared = _schema(models)
    finally:
        models.dispose()
    with app.app_context():
        migrated = _schema(db.engine)
    assert sorted(migrated) == sorted(declared)
    for table in declared:
        assert migrated[table] == declared[table], table
