"""Operations endpoints: liveness, readiness, the OpenAPI document and its browsable page."""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from pydantic import BaseModel
from sqlalchemy import text

from core.api import endpoint, respond
from core.db import db
from core.errors import DatabaseNotMigrated
from core.openapi import build_document, render_docs_page

bp = Blueprint("ops", __name__)


class Health(BaseModel):
    status: str


@endpoint(bp, "/healthz", "GET", summary="Liveness", response=Health, auth=False)
def healthz() -> Response:
    return respond(Health(status="ok"))


@endpoint(bp, "/readyz", "GET", summary="Readiness: the database answers and has every migration", response=Health,
          auth=False,
          errors=(DatabaseNotMigrated,))
def readyz() -> Response:
    db.session.execute(text("SELECT 1"))
    db.session.rollback()
    schema_problem = current_app.extensions.get("schema_problem")
    problem = schema_problem() if schema_problem else None
    if problem:
        raise DatabaseNotMigrated(problem)
    return respond(Health(status="ready"))


def _document() -> dict:
    doc = current_app.extensions.get("openapi")
    if doc is None:
        doc = current_app.extensions["openapi"] = build_document()
    return doc


@bp.get("/api/v1/openapi.json")
def openapi_json() -> Response:
    return current_app.json.response(_document())


@bp.get("/api/v1/docs")
def openapi_docs() -> Response:
    return Response(render_docs_page(_document()), mimetype="text/html")
