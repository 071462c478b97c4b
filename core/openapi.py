"""The OpenAPI 3.1 document, generated from the endpoint registry and its pydantic models.

Never written by hand: every path, body and response schema comes from ``core.api.REGISTRY``. Every
operation documents each status of the problem+json errors it can answer (``Endpoint.errors``) as a response of its
own, whose ``code`` is one of that operation's codes of that status; its ``default`` response is what no client
error of it is (500 internal_error, 503 database_unavailable, 405 method_not_allowed).
"""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from core.api import MAX_PATH_PARAMETER, REGISTRY, Endpoint, takes_nothing


class FieldError(BaseModel):
    field: str
    code: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details with a stable machine ``code``."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine-readable error code")
    errors: list[FieldError] | None = Field(default=None, description="validation_failed: every field refused")
    request_id: str | None = None
    # Members some problems add (security.errors): what a client shows or waits for (found by the contract audit).
    attempts_left: int | None = Field(default=None, description="invalid_credentials, invalid_totp_code: wrong"
                                      " entries left before the third locks it")
    locked_until: datetime | None = Field(default=None, description="login_locked, payment_password_locked,"
                                          " recovery_locked: when the lock lifts by itself; null for a hard lock")
    hard_locked: bool | None = Field(default=None, description="login_locked, payment_password_locked,"
                                     " recovery_locked: true when only an SMS-verified reset lifts it")
    available_at: datetime | None = Field(default=None, description="payment_password_reset_too_soon,"
                                          " account_recently_recovered: when the request will be accepted")
    reason: str | None = Field(default=None, description="payment_password_reset_too_soon: phone_changed or"
                               " password_recovered; bank_declined: the bank's reason")
    frozen_at: datetime | None = Field(default=None, description="account_frozen: since when")
    available: int | None = Field(default=None, description="insufficient_funds: fen available now")
    topup_id: str | None = Field(default=None, description="bank_declined: the failed top-up")
    limit: int | None = Field(default=None, description="limit_exceeded: the limit refused, in fen (the most one"
                              " movement carries, or the most sent out in one China Standard Time day)")


_REF = "#/components/schemas/{model}"
# A path parameter in an endpoint's path template: ``{trade_id}``.
_PATH_PARAMETER = re.compile(r"{([a-z_]+)}")

# What a retry with the same Idempotency-Key gets (core.idempotency, wallet.guarded): a mobile client's retry policy.
_KEY_RULES = (
    "Unique per intended effect, kept at least 24 hours. A retry with the same key and body (the payment password"
    " aside) replays the first successful answer, marked Idempotent-Replayed: true; the same key with another body,"
    " endpoint or trade is refused (422 idempotency_key_reused). An error answer keeps nothing: once its cause is"
    " fixed (the balance, the payment password, a lock lifted) the same key runs the request, once; after a 5xx it"
    " replays or runs, never twice. Except the bank's refusal to debit the card (422 bank_declined, on a top-up or a"
    " trade paid with a card), which stays the key's answer: try the card again with a new key. A replay checks the"
    " payment password like any request (a wrong one is 401, the entry that locks it 423), except once the account is"
    " frozen or its payment password locked: then a retry of a request that has its answer gets that answer (it moves"
    " nothing), and only a new request is refused (403 account_frozen, 423 payment_password_locked)."
)

# Sent on an answer replayed for a repeated Idempotency-Key (absent on the first answer).
_REPLAYED_HEADER = {
    "description": "Present, and `true`, when this answer is the stored first answer to an earlier request with the"
                   " same Idempotency-Key and body: the effect happened once, then.",
    "schema": {"type": "string", "enum": ["true"]},
}


def _location_header(template: str) -> dict[str, Any]:
    """Sent with the answer of an operation that creates what a GET reads (``Endpoint.location``)."""
    return {
        "description": f"Where a GET reads what this answer created: {template}, with `{{id}}` the answer's `id`"
                       " (a replay names the same).",
        "schema": {"type": "string"},
    }


# Sent with the error answers that ask the client to come back (app.py): 429 rate_limited, 503 bank_unavailable
# (BANK_RETRY_AFTER_SECONDS) and 503 database_unavailable.
_RETRY_AFTER_HEADER = {
    "description": "On 429 rate_limited, 503 bank_unavailable and 503 database_unavailable: seconds to wait before"
                   " retrying (a money request with the same Idempotency-Key: after a 503 bank_unavailable the bank's"
                   " answer is unknown, and the retry finishes the request once).",
    "schema": {"type": "integer", "minimum": 1},
}
# Sent with a 423 whose lock lifts by itself (security.errors).
_LOCK_LIFTS_HEADER = {
    "description": "On a 423 whose lock lifts by itself (hard_locked false): seconds until locked_until, rounded up."
                   " A hard lock, which only a reset by SMS code lifts, has none.",
    "schema": {"type": "integer", "minimum": 1},
}


# What the ``default`` response stands for: no client error the operation documents (a 4xx or 503 of it has a
# response of its own).
_DEFAULT_DESCRIPTION = (
    "Not a documented client error of this operation: 500 internal_error (a fault of ours; quote the request_id),"
    " 503 database_unavailable (retry after Retry-After, with the same Idempotency-Key; listed under 503 where the"
    " operation documents a 503 of its own), or an answer of the HTTP layer for any path (405 method_not_allowed with"
    " Allow)."
)

# Sent with every 401 (app.py): RFC 9110 requires a challenge on it.
_CHALLENGE_HEADER = {
    "description": 'On 401: Bearer realm="wallet", with error="invalid_token" when the access token sent is missing'
                   " from our sessions, expired or revoked (log in or refresh again).",
    "schema": {"type": "string"},
}


def _error_responses(ep: Endpoint, problem_ref: dict[str, Any]) -> dict[str, Any]:
    """One response per status of the errors ``ep`` can answer: problem+json whose ``code`` is one of its codes of that
    status, described by them, with the headers that status carries (401 a challenge; 429 and 503 Retry-After; 423
    Retry-After when the lock lifts by itself)."""
    by_status: dict[int, list[str]] = {}
    for status, code in sorted(ep.errors):
        by_status.setdefault(status, []).append(code)
    if 503 in by_status:  # a documented 503 is no longer ``default``'s: the database's outage (app.py) is one too
        by_status[503] = sorted({*by_status[503], "database_unavailable"})
    responses: dict[str, Any] = {}
    for status, codes in by_status.items():
        answer: dict[str, Any] = {
            "description": "Problem details; `code` is one of: " + ", ".join(f"`{code}`" for code in codes) + ".",
            "content": {"application/problem+json": {"schema": {"allOf": [
                problem_ref,
                {"properties": {"status": {"const": status}, "code": {"enum": codes}}},
            ]}}},
        }
        if status == 401:
            answer["headers"] = {"WWW-Authenticate": _CHALLENGE_HEADER}
        elif status in (429, 503):
            answer["headers"] = {"Retry-After": _RETRY_AFTER_HEADER}
        elif status == 423:
            answer["headers"] = {"Retry-After": _LOCK_LIFTS_HEADER}
        responses[str(status)] = answer
    return responses


def error_codes(operation: dict[str, Any]) -> dict[str, list[str]]:
    """The error codes a generated operation documents, by status (``"404": ["not_found", ...]``)."""
    codes: dict[str, list[str]] = {}
    for status, answer in operation["responses"].items():
        schema = answer.get("content", {}).get("application/problem+json", {}).get("schema", {})
        for part in schema.get("allOf", []):
            enum = part.get("properties", {}).get("code", {}).get("enum")
            if enum is not None:
                codes[status] = list(enum)
    return codes


def _parameters(ep: Endpoint, defs: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "maxLength": MAX_PATH_PARAMETER}}
        for name in _PATH_PARAMETER.findall(ep.path)
    ]
    if ep.query is not None:
        schema = ep.query.model_json_schema(ref_template=_REF)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        defs.update(schema.get("$defs", {}))
    if ep.idempotent:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": ep.idempotent is True,
                "description": _KEY_RULES
                + ("" if ep.idempotent is True else " Optional here: with it a repeat replays the first answer;"
                   " without it a repeat is a new request (refused with 409 where the state it finds forbids it)."),
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:\\-]{1,255}$"},
            }
        )
    return params


def _link_created_resources(paths: dict[str, dict[str, Any]], defs: dict[str, Any]) -> None:
    """OpenAPI links from each operation that creates a resource (a POST answering 201 or 202 with an ``id``) to
    the operations on it: those whose path is the creator's path, one more ``{parameter}`` for the new id, and
    whatever follows with no parameter of its own (``POST /trades`` → ``POST /trades/{trade_id}/ship``, ...).
    The new id comes from the answer's body; the creator's own path parameters are passed on (a refund's
    ``trade_id``). A client reads in the document where an id comes from, and schemathesis's stateful phase
    follows the links from a created resource on."""
    for path, operations in paths.items():
        creator = operations.get("post")
        created = [status for status in ("201", "202") if creator is not None and status in creator["responses"]]
        if not created:
            continue
        answer = creator["responses"][created[0]]
        model = answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
        if "id" not in defs.get(model.rsplit("/", 1)[-1], {}).get("properties", {}):
            continue
        links: dict[str, Any] = {}
        passed_on = {name: f"$request.path.{name}" for name in _PATH_PARAMETER.findall(path)}
        for other, their_operations in sorted(paths.items()):
            new_id = re.match(re.escape(path) + "/" + _PATH_PARAMETER.pattern + "(?:/|$)", other)
            if new_id is None or set(_PATH_PARAMETER.findall(other)) != {*passed_on, new_id[1]}:
                continue  # not on what was created, or it needs an id this answer does not give (a refund's)
            for method, operation in sorted(their_operations.items()):
                links[operation["operationId"]] = {
                    "operationId": operation["operationId"],
                    "parameters": {**passed_on, new_id[1]: "$response.body#/id"},
                    "description": f"{method.upper()} {other} on what this created",
                }
        if links:
            # A copy: the answer object may be shared by the creator's statuses, never by another operation.
            creator["responses"][created[0]] = {**answer, "links": links}


def build_document(title: str = "Escrow wallet API", version: str = "1.0.0") -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(Problem, "serialization")]
    for ep in REGISTRY:
        if ep.body is not None:
            models.append((ep.body, "validation"))
        if ep.form is not None:
            models.append((ep.form, "validation"))
        if ep.response is not None:
            models.append((ep.response, "serialization"))
    unique = list(dict.fromkeys(models))
    refs, top = models_json_schema(unique, ref_template=_REF)
    defs: dict[str, Any] = dict(top.get("$defs", {}))

    paths: dict[str, dict[str, Any]] = {}
    problem = {"application/problem+json": {"schema": refs[(Problem, "serialization")]}}
    for ep in sorted(REGISTRY, key=lambda e: (e.path, e.method)):
        op: dict[str, Any] = {
            "operationId": f"{ep.method}_{re.sub(r'[^a-z0-9]+', '_', ep.path.lower()).strip('_')}",
            "summary": ep.summary,
            "tags": [ep.tag],
            "parameters": _parameters(ep, defs),
            "responses": {**_error_responses(ep, refs[(Problem, "serialization")]),
                          "default": {"description": _DEFAULT_DESCRIPTION, "content": problem,
                                      "headers": {"Retry-After": _RETRY_AFTER_HEADER}}},
        }
        if ep.body is not None:
            op["requestBody"] = {
                "required": not takes_nothing(ep.body),
                "content": {"application/json": {"schema": refs[(ep.body, "validation")]}},
            }
        if ep.form is not None:  # found by the followups audit: only JSON bodies were documented
            op["requestBody"] = {
                "required": True,
                "content": {"application/x-www-form-urlencoded": {"schema": refs[(ep.form, "validation")]}},
            }
        ok: dict[str, Any] = {"description": "Success"}
        if ep.idempotent:
            ok["headers"] = {"Idempotent-Replayed": _REPLAYED_HEADER}
        if ep.response is not None:
            schema = refs[(ep.response, "serialization")]
            ok["content"] = {
                media: {"schema": schema if media == "application/json" else {"type": "string"}}
                for media in ep.response_media_types
            }
        for status in (ep.status, *ep.extra_statuses):
            op["responses"][str(status)] = ok
        if ep.location is not None:  # only the answer that created it names it
            op["responses"][str(ep.status)] = {**ok, "headers": {**ok.get("headers", {}),
                                                                "Location": _location_header(ep.location)}}
        op["security"] = [{"bearerAuth": []}] if ep.auth else []
        paths.setdefault(ep.path, {})[ep.method] = op

    _link_created_resources(paths, defs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Mobile wallet with escrow payments and SMS alerts. Amounts are integer fen. Times in"
                           " answers are RFC 3339 in UTC ending in Z (2026-01-15T08:00:00.123456Z; fractions of a"
                           " second only when there are any), except a timeline entry's `at`, the text its hash"
                           " covers, which ends in +00:00, and the statement's CSV, whose created_at does too."
                           " Statement days (`from`, `to`) are China Standard Time (UTC+8) days, and SMS texts give"
                           " China Standard Time.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


def render_docs_page(doc: dict[str, Any]) -> str:
    """A dependency-free HTML page listing every operation; schemas link to the JSON document."""
    rows = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            body = next(iter(op.get("requestBody", {}).get("content", {}).values()), {}).get("schema", {})
            ok = [code for code in op["responses"] if code.startswith("2")]
            errors = "<br>".join(f"{status} " + ", ".join(f"<code>{html.escape(code)}</code>" for code in codes)
                                 for status, codes in error_codes(op).items())
            rows.append(
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                "<td>{}</td></tr>".format(
                    method.upper(),
                    html.escape(path),
                    html.escape(op.get("summary", "")),
                    html.escape(body.get("$ref", "").rsplit("/", 1)[-1]),
                    ", ".join(ok),
                    errors,
                    "bearer" if op.get("security") else "",
                )
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 8px;border-bottom:1px solid #ddd;"
        "text-align:left}}</style></head><body><h1>{title}</h1><p>{desc} Machine-readable document: "
        "<a href='/api/v1/openapi.json'>/api/v1/openapi.json</a>.</p><table><tr><th>Method</th><th>Path</th>"
        "<th>What it does</th><th>Body</th><th>Success</th><th>Errors (status, code)</th><th>Auth</th></tr>{rows}"
        "</table></body></html>"
    ).format(
        title=html.escape(doc["info"]["title"]),
        desc=html.escape(doc["info"]["description"]),
        rows="".join(rows),
    )
