"""Checking real answers against the served OpenAPI document (jsonschema_rs)."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs

DOC = "/api/v1/openapi.json"
# Headers of our own conventions that an answer may carry; the document must describe them where they occur.
_OUR_HEADERS = ("Idempotent-Replayed", "Location")


def document(client) -> dict[str, Any]:
    response = client.get(DOC)
    assert response.status_code == 200
    return response.json


def template_of(doc: dict[str, Any], path: str) -> str:
    """The OpenAPI path template that ``path`` (no query) matches."""
    for template in doc["paths"]:
        pattern = "^" + re.sub(r"\\{[a-z_]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template
    raise AssertionError(f"{path} matches no documented path")


def schema_errors(doc: dict[str, Any], method: str, path: str, response) -> list[str]:
    """Where ``response`` departs from what the document promises for this operation and status."""
    operation = doc["paths"][template_of(doc, path.split("?")[0])][method.lower()]
    status = str(response.status_code)
    documented = operation["responses"].get(status)
    if documented is None:
        if response.status_code < 400:
            return [f"{method} {path}: status {status} is not documented"]
        documented = operation["responses"]["default"]
    problems = [f"{method} {path} {status}: header {name} is not documented"
                for name in _OUR_HEADERS if name in response.headers and name not in documented.get("headers", {})]
    content = documented.get("content")
    if content is None:
        return problems + ([] if not response.data else [f"{method} {path}: {status} documents no body but has one"])
    if response.mimetype not in content:
        return [f"{method} {path}: media type {response.mimetype} not in {list(content)}"]
    schema = {**content[response.mimetype]["schema"], "components": doc["components"]}
    validator = jsonschema_rs.Draft202012Validator(schema)
    return problems + [f"{method} {path} {status}: {'/'.join(map(str, e.instance_path))}: {e.message}"
                       for e in validator.iter_errors(response.json)]
