"""HTTP helpers shared by every blueprint: declaring endpoints, parsing bodies, writing responses.

``endpoint(...)`` registers a view on a blueprint *and* records its request/response models, so the OpenAPI
document (``core/openapi.py``) is generated from the same models that parse and serialise the traffic.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from flask import Blueprint, Response, request
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json

from core.db import run_in_transaction
from core.errors import (
    AppError,
    BadRequest,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    UnsupportedMediaType,
    ValidationFailed,
)

M = TypeVar("M", bound=BaseModel)
# An error an operation can answer: an ``AppError`` class (its ``status`` and ``code``), or ``(status, code)`` for
# an error whose code is set per instance (``wallet.trades.TradeConflict``).
ErrorSpec = type[AppError] | tuple[int, str]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # OpenAPI form: /api/v1/trades/{trade_id}
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: bool = True
    form: type[BaseModel] | None = None  # a body sent as application/x-www-form-urlencoded (a provider's callback)
    idempotent: bool | Literal["optional"] = False  # documents the Idempotency-Key header (required or not)
    extra_statuses: tuple[int, ...] = field(default_factory=tuple)  # other successes, with the same body
    response_media_types: tuple[str, ...] = ("application/json",)
    location: str | None = None  # OpenAPI form: /api/v1/trades/{id}, what a ``status`` answer created
    # Every (status, code) of a problem this operation can answer: the ones listed to ``endpoint(errors=...)`` and
    # the ones every operation of its kind answers (``answered_errors``).
    errors: frozenset[tuple[int, str]] = frozenset()


REGISTRY: list[Endpoint] = []
_RULE_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def endpoint(
    bp: Blueprint,
    rule: str,
    method: str,
    *,
    summary: str,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    auth: bool = True,
    idempotent: bool | Literal["optional"] = False,
    response_media_types: tuple[str, ...] = ("application/json",),
    extra_statuses: tuple[int, ...] = (),
    location: str | None = None,
    form: type[BaseModel] | None = None,
    errors: tuple[ErrorSpec, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Route ``rule`` on ``bp`` and document it. ``auth`` only documents; the view enforces it. ``location`` (under
    ``bp``'s prefix, as ``rule``) is where a GET reads what a ``status`` answer created: ``{id}`` the answer's ``id``,
    other ``{name}`` the path's parameters; the answer names it in ``Location``. ``form`` documents a body that
    comes form-encoded instead of as JSON ``body``. ``errors`` are the domain errors the view and the services it
    calls can answer; the ones every operation of its kind answers are added (``answered_errors``). A view rate
    limited with ``core.ratelimit.limit`` (below this decorator) answers ``rate_limited`` too."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        full = (bp.url_prefix or "") + rule
        located = None if location is None else (bp.url_prefix or "") + location
        answered = answered_errors(errors, auth=auth, body=body is not None, form=form is not None,
                                   query=query is not None, path_parameters=_RULE_PARAM.search(rule) is not None,
                                   idempotent=idempotent, rate_limited=getattr(view, "rate_limited", False))
        REGISTRY.append(
            Endpoint(
                method=method.lower(),
                path=_RULE_PARAM.sub(r"{\1}", full),
                summary=summary,
                tag=bp.name,
                body=body,
                query=query,
                response=response,
                status=status,
                auth=auth,
                idempotent=idempotent,
                response_media_types=response_media_types,
                extra_statuses=extra_statuses,
                location=located,
                form=form,
                errors=answered,
            )
        )
        handler = _read_only(view) if method == "GET" else view
        handler = _bounded_path(handler if located is None else _locating(handler, located, status))
        bp.add_url_rule(rule, endpoint=view.__name__, view_func=handler, methods=[method])
        return view

    return decorate


def answered_errors(errors: tuple[ErrorSpec, ...], *, auth: bool, body: bool, form: bool, query: bool,
                    path_parameters: bool, idempotent: bool | Literal["optional"],
                    rate_limited: bool) -> frozenset[tuple[int, str]]:
    """Every (status, code) an operation can answer: ``errors`` and those every operation of its kind answers. A token
    missing, expired or revoked (``security.auth``) is 401 ``unauthenticated``; a JSON body can be unreadable (400),
    of another media type (415), too large (413) or invalid (422), and a form body unreadable (its chunked framing
    broken, ``app.py``), too large or invalid; a query invalid (422); a path parameter names nothing (404,
    ``_bounded_path``); an ``Idempotency-Key`` be missing where required, or sent empty (400), malformed (422
    ``validation_failed``) or used before with another request (422, ``core.idempotency``); a rate limit be reached
    (429)."""
    kinds: list[ErrorSpec] = list(errors)
    if auth:
        kinds.append(Unauthenticated)
    if body:
        kinds += [BadRequest, UnsupportedMediaType, PayloadTooLarge, ValidationFailed]
    if form:
        kinds += [BadRequest, PayloadTooLarge, ValidationFailed]
    if query:
        kinds.append(ValidationFailed)
    if path_parameters:
        kinds.append(NotFound)
    if idempotent:  # where the key is optional too, one sent empty is refused as missing (``check_key``)
        kinds += [IdempotencyKeyReused, ValidationFailed, IdempotencyKeyMissing]
    if rate_limited:
        kinds.append(RateLimited)
    return frozenset(kind if isinstance(kind, tuple) else (kind.status, kind.code) for kind in kinds)


MAX_PATH_PARAMETER = 64  # what the OpenAPI document promises for every path parameter


def _bounded_path(view: Callable[..., Any]) -> Callable[..., Any]:
    """No id is longer than 64 characters or holds a NUL: such a path parameter names nothing (404), before any
    work."""

    @functools.wraps(view)
    def wrapper(**path: str) -> Any:
        if any(len(value) > MAX_PATH_PARAMETER or "\x00" in value for value in path.values()):
            raise NotFound("No such resource.")
        return view(**path)

    return wrapper


def _locating(view: Callable[..., Any], template: str, status: int) -> Callable[..., Any]:
    """``Location`` on an answer of ``status`` (RFC 9110 15.3.2): ``template`` filled from the answer itself, so a
    replay of a stored answer under its Idempotency-Key names what the first one did (found by the followups audit: no
    answer that created something said where to read it)."""

    @functools.wraps(view)
    def wrapper(**path: str) -> Any:
        response = view(**path)
        if response.status_code == status:
            answer = response.get_json()
            values = {**path, "id": answer.get("id", "")} if isinstance(answer, dict) else path
            response.headers["Location"] = request.script_root + template.format_map(
                {name: quote(str(value), safe="") for name, value in values.items()})
        return response

    return wrapper


def _read_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """A GET reads in one read-only block (``core.db``): on PostgreSQL its statements run without BEGIN and
    COMMIT, on SQLite without the write lock, and anything in it that tries to write fails loudly."""

    @functools.wraps(view)
    def wrapper(**path: str) -> Any:
        return run_in_transaction(lambda: view(**path), read_only=True)

    return wrapper


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# No request of ours nests deeper than an evidence attachment (body → attachments → item → field); a few levels
# more are allowed, thousands are refused (before the validation below walks them).
MAX_BODY_DEPTH = 16


def _parsed_body() -> Any:
    """The body parsed as JSON; raises ``BadRequest`` for anything unreadable, including nesting so deep that the
    parser gives up (``RecursionError``, which is no ``ValueError``)."""
    raw = request.get_data(cache=True)
    _refuse_past_limit(len(raw))
    try:
        return json.loads(raw or b"null", parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest("The body is not valid JSON.") from exc


def form_body() -> Any:
    """``request.form``, held to ``MAX_CONTENT_LENGTH`` as a JSON body is (found by a review: a chunked form over the
    limit was cut at it without a word, and its first 64 KiB read as the whole form)."""
    form = request.form
    _refuse_past_limit(request.stream.tell())
    return form


def _refuse_past_limit(read: int) -> None:
    """A body sent without ``Content-Length`` (chunked) is cut by werkzeug at ``MAX_CONTENT_LENGTH`` without a word, so
    one that reached the limit is looked past: if more follows it is refused (413) as one announced too long is (found
    by an audit: its first 64 KiB were read, and carried out when they were a whole request)."""
    limit = request.max_content_length
    if request.content_length is not None or limit is None or read < limit:
        return
    try:
        more = request.environ["wsgi.input"].read(1)
    except OSError:  # the client went away right at the limit: what it sent is all there is
        more = b""
    if more:
        raise PayloadTooLarge(f"The body is larger than {limit} bytes.")


def json_body() -> dict[str, Any]:
    """The request body as a JSON object; 415 for another media type, 400 for anything unreadable."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Send the body as application/json.")
    data = _parsed_body()
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.")
    _refuse_nul(data)
    return data


def json_object_or_none() -> dict[str, Any] | None:
    """The body as a JSON object if it is one, else None, whatever it holds: for code that only peeks at a field
    (a rate limit's key) and must never fail the request itself."""
    try:
        data = _parsed_body()
    except BadRequest:
        return None
    return data if isinstance(data, dict) else None


def _refuse_nul(value: Any, where: str = "body") -> None:
    """No text we take may hold the NUL character (``\\u0000``): PostgreSQL cannot store it, and no name, title,
    id or cursor needs it. Refused as a validation error naming the field, before anything reads it. Walks the
    body without recursion, and refuses one nested deeper than ``MAX_BODY_DEPTH`` (400)."""
    pending: list[tuple[Any, str, int]] = [(value, where, 0)]
    while pending:
        value, where, depth = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise ValidationFailed.field(where, "nul_character", "Text may not contain the NUL character.")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth >= MAX_BODY_DEPTH:
            raise BadRequest(f"The body is nested deeper than {MAX_BODY_DEPTH} levels.")
        if isinstance(value, dict):
            for key, item in value.items():
                pending.append((key, where, depth + 1))
                pending.append((item, f"{where}.{key}" if where != "body" else key, depth + 1))
        else:
            pending.extend((item, f"{where}.{index}", depth + 1) for index, item in enumerate(value))


def _errors_from(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(str(part) for part in err["loc"]) or "body",
            "code": err["type"],
            "message": err["msg"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]


def validated(model: type[M], data: Any) -> M:
    """``data`` validated against ``model``; 422 ``validation_failed`` lists every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(_errors_from(exc)) from exc


def parse_body(model: type[M]) -> M:
    """Validate the JSON body against ``model``; 422 ``validation_failed`` lists every bad field. A ``model`` with no
    fields (a step that takes nothing: cancel, extend) may come without a body, as a bodiless POST sends it."""
    if takes_nothing(model) and not request.get_data(cache=True):
        return validated(model, {})
    return validated(model, json_body())


def takes_nothing(model: type[BaseModel]) -> bool:
    """Whether a request body of ``model`` has no fields, and so may be left out (the OpenAPI document says so)."""
    return not model.model_fields


def parse_query(model: type[M]) -> M:
    """Validate the query string against ``model`` (values arrive as strings and are coerced); a NUL anywhere in it
    is a validation error naming the parameter."""
    args = request.args.to_dict()
    for name, value in args.items():
        _refuse_nul(name, "query")
        _refuse_nul(value, name)
    return validated(model, args)


def respond(model: BaseModel | None, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialise ``model`` (or nothing, for 204) as the response."""
    if model is None:
        response = Response(status=status, headers=headers)
        # No body names no media type (found by the followups audit: Flask's default said text/html on every 204).
        del response.headers["Content-Type"]
        return response
    return Response(
        model.model_dump_json(), status=status, mimetype="application/json", headers=headers
    )


def respond_built(body: dict[str, Any], status: int = 200) -> Response:
    """Serialise ``body``, which our own code built in the shape of the endpoint's response model, with
    pydantic-core's serializer and without validating it into the model first: for a page of many rows, where
    validating what we just read costs more than writing it out (20 statement lines: 14 us instead of 32). The
    API tests and schemathesis hold such a response to the model's schema."""
    return Response(to_json(body), status=status, mimetype="application/json")


def respond_json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json")


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are refused, types are strict (no "12" for 12)."""

    model_config = {"extra": "forbid", "strict": True}
