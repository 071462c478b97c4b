"""Schemathesis hooks for ``.ci/schemathesis.sh``: a bearer token that stays usable for the whole run.

A fixed ``-H "Authorization: Bearer ..."`` header dies within seconds of fuzzing: schemathesis logs out (``DELETE
/sessions/current``), revokes devices, sends a wrong login password (which ends the session it is entered in) and
wrong payment passwords until that password locks (DESIGN 4.2), after which the operations answer 401/423 and their
bodies are never validated. So the token comes from a pool: ``after_call`` notices when the current token was spent
(logout, revocation, a lock) and the next case gets a freshly registered fictional user. The operations that guess
passwords or end a session get the users of a second pool, so that the first pool's users, who open the trades,
last. Every pooled user has a verified name, a card and a balance, and a case on a resource that a pooled user
created (a trade, a refund) is sent with that user's token while it lasts, or with the seller's for a seller's step,
so that a trade opened in a stateful scenario can be paid by its buyer, shipped by its seller and confirmed.

Environment: ``WALLET_BASE_URL``, ``SMS_CONSOLE_FILE`` (the server's console SMS file), optionally
``WALLET_FIRST_TOKEN`` and ``WALLET_FIRST_PHONE`` (a user registered beforehand) and ``WALLET_PHONE_OFFSET``.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import zlib
from pathlib import Path

import schemathesis
from schemathesis.core.parameters import ParameterLocation

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent))  # the repository: tests.factories_ids
from wallet_client import PAYMENT_PASSWORD, UserPool, WalletClient, fictional_phones

from tests.factories_ids import make_card_number, make_id_number

# Answers that mean the token we sent can no longer reach anything (or no longer reach money).
_SPENT_CODES = {"unauthenticated", "login_locked", "payment_password_locked", "refresh_token_reused"}

_client = WalletClient(os.environ["WALLET_BASE_URL"], os.environ["SMS_CONSOLE_FILE"])
_phones = fictional_phones(int(os.environ.get("WALLET_PHONE_OFFSET", "1")))
# A verified seller, whom the pooled users open escrow trades with (``map_case``): a random seller_phone names
# nobody, so without one no trade would ever be opened and the stateful phase would never reach the trade's own
# operations (pay, ship, refunds, disputes, evidence, ratings, ...) with an id that exists.
_SELLER_PHONE = next(_phones)
_SELLER_TOKEN = _client.register_seller(_SELLER_PHONE, "张三", make_id_number(), make_card_number())["access_token"]
# The steps only a trade's seller takes: sent with the seller's token on a trade a pooled user opened.
_SELLERS_STEPS = {("POST", "/api/v1/trades/{trade_id}/ship"),
                  ("POST", "/api/v1/trades/{trade_id}/refunds/{refund_id}/agree"),
                  ("POST", "/api/v1/trades/{trade_id}/refunds/{refund_id}/refuse"),
                  ("POST", "/api/v1/trades/{trade_id}/refunds/{refund_id}/receive-return")}
# Each pooled user gets a verified name, a card and a balance (the largest single top-up), so that a trade it opens
# can be paid and its money can move: with an empty wallet every payment stops at 422 insufficient_funds.
_BALANCE = 5_000_000


def _fund(token: str) -> None:
    _client.fund(token, "李四", make_id_number(), make_card_number(), _BALANCE)


_pool = UserPool(_client, _phones, first_token=os.environ.get("WALLET_FIRST_TOKEN") or None, prepare=_fund,
                 first_phone=os.environ.get("WALLET_FIRST_PHONE") or None)
# The operations that guess a password (a wrong payment password counts toward its lock, and a wrong login password
# ends the session it is entered in) or end the session they are sent with (a logout, a revoked device) go out
# with the users of a pool of their own, so that the users who open trades stay able to take them through their
# story. The device list goes with them: its ids are the ones a revocation names.
_pool_at_risk = UserPool(_client, _phones, prepare=_fund)
_AT_RISK = {("DELETE", "/api/v1/sessions/current"), ("GET", "/api/v1/devices"),
            ("DELETE", "/api/v1/devices/{device_id}"), ("PATCH", "/api/v1/me"), ("PUT", "/api/v1/me/login-password"),
            ("PUT", "/api/v1/me/payment-password"), ("PUT", "/api/v1/me/phone"), ("POST", "/api/v1/me/totp"),
            ("POST", "/api/v1/me/totp/verify"), ("POST", "/api/v1/me/payment-password/verify"),
            ("POST", "/api/v1/me/bank-cards"), ("POST", "/api/v1/topups"), ("POST", "/api/v1/transfers"),
            ("POST", "/api/v1/withdrawals")}
# Logins and recoveries name a phone number, not a token. Schemathesis reuses the values it read in answers, such as
# ``GET /me``'s phone, and its wrong passwords then locked the login of the user who opened the trades; a number of
# that pool or the seller's is swapped for the current number of the pool at risk, so wrong passwords still meet a
# real account and its lock.
_NAMES_A_PHONE = {("POST", "/api/v1/sessions"), ("POST", "/api/v1/password-resets")}


def _operations_needing_auth() -> set[tuple[str, str]]:
    """(METHOD, path template) of every operation the document says needs a bearer token."""
    status, doc = _client.call("GET", "/api/v1/openapi.json")
    if status != 200 or not isinstance(doc, dict):
        raise RuntimeError(f"GET /api/v1/openapi.json answered {status}")
    return {
        (method.upper(), path)
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
        if operation.get("security", doc.get("security", []))
    }


# A 401/423 from a public operation (a login for some generated phone number) says nothing about our token.
_NEEDS_AUTH = _operations_needing_auth()


@atexit.register
def _report() -> None:
    print(f"[schemathesis hooks] registered {_pool.registered} replacement user(s) for the trades and "
          f"{_pool_at_risk.registered} for the operations that guess passwords or end sessions", file=sys.stderr)


# The token each created resource's id was answered to. When the pool moves to a new user, what the one before
# created belongs to a stranger, who rightly gets 404 for it (DESIGN: a stranger gets 404, not 403).
_CREATED_WITH: dict[str, str] = {}
# Tokens seen spent (``after_call``): never sent again.
_SPENT: set[str] = set()


def _spend(token: str) -> None:
    _SPENT.add(token)
    _pool.spent(token)
    _pool_at_risk.spent(token)


@schemathesis.auth(refresh_interval=None)
class PooledBearer:
    def get(self, case, ctx):
        """For a case addressing a resource a pooled user created (a trade, a refund ...): the seller's token for a
        seller's step (every trade that gets opened names the verified seller), else the creator's, while the token
        is not spent: the pool may have moved on since, and the step after the creation should come from a party to
        it, not a stranger. Otherwise the current token of the operation's pool (``_AT_RISK``)."""
        operation = (case.method.upper(), case.path)
        created = [_CREATED_WITH[value] for value in (case.path_parameters or {}).values()
                   if isinstance(value, str) and value in _CREATED_WITH]
        if created and operation in _SELLERS_STEPS and _SELLER_TOKEN not in _SPENT:
            return _SELLER_TOKEN
        for creator in created:
            if creator not in _SPENT:
                return creator
        return (_pool_at_risk if operation in _AT_RISK else _pool).current()

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _sent_token(response) -> str | None:
    header = response.request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token if scheme == "Bearer" and token else None


def _created_id(response) -> str | None:
    try:
        body = json.loads(response.content)
    except (ValueError, AttributeError):
        return None
    return body.get("id") if isinstance(body, dict) and isinstance(body.get("id"), str) else None


@schemathesis.hook
def after_call(ctx, case, response) -> None:
    token = _sent_token(response)
    if token is None or (case.method.upper(), case.path) not in _NEEDS_AUTH:
        return
    if response.request.method == "POST" and response.status_code in (201, 202):
        created = _created_id(response)
        if created is not None:
            _CREATED_WITH[created] = token
    method, path = response.request.method, response.request.path_url.split("?")[0]
    if method == "DELETE" and path.startswith("/api/v1/sessions/current") and response.status_code == 204:
        _spend(token)
        return
    if method == "DELETE" and path.startswith("/api/v1/devices/") and response.status_code == 204:
        _spend(token)  # it may have been our own device, which ends our session
        return
    if response.status_code in (401, 423):
        try:
            code = json.loads(response.content).get("code")
        except (ValueError, AttributeError):
            return
        if code in _SPENT_CODES:
            _spend(token)


# The operations on which a right payment password moves money or a trade on (a random one is only ever wrong), and
# the check alone: three wrong guesses there lock the password, and the pool then spends its user.
_PAYS = {("POST", "/api/v1/trades/{trade_id}/pay"), ("POST", "/api/v1/trades/{trade_id}/confirm"),
         ("POST", "/api/v1/transfers"), ("POST", "/api/v1/withdrawals"), ("POST", "/api/v1/topups"),
         ("POST", "/api/v1/me/payment-password/verify"),
         ("POST", "/api/v1/trades/{trade_id}/refunds/{refund_id}/agree"),
         ("POST", "/api/v1/trades/{trade_id}/refunds/{refund_id}/receive-return")}
# Of those, the steps of a trade always carry the right one: a buyer or the one seller locked out by wrong guesses
# would end the trade's story (the wrong ones still come in transfers, withdrawals, top-ups and the check).
_TRADE_STEPS = {operation for operation in _PAYS if operation[1].startswith("/api/v1/trades/")}


def _protected(phone: object) -> bool:
    """Whether ``phone`` is, in any spelling, the number of the seller or of a user of the trades' pool."""
    if not isinstance(phone, str):
        return False
    digits = "".join(c for c in phone if c.isdigit())
    return bool(digits) and any(digits == known[1:] for known in _pool.phones | {_SELLER_PHONE})


def _most(body: dict, field: str) -> bool:
    """Three of four bodies, by a hash of the body that does not change between runs (``hash`` of a str does), so a
    seed replays the same cases."""
    return bool(zlib.crc32(repr(sorted(body.items(), key=str)).encode() + field.encode()) % 4)


@schemathesis.hook
def map_case(ctx, case):
    """Steer three of four schema-valid bodies to where the money is, so the fuzzing goes past the first refusal:

    * ``POST /api/v1/trades`` names the verified seller, at a price the pooled user's balance covers, so that trades
      are opened and their ids flow, through the document's links, to every operation on a trade;
    * a paying operation (``_PAYS``) carries the real payment password (every CI user has the same one), so a trade
      gets paid, shipped by the seller and confirmed (and its refunds and disputes reachable) and transfers and
      withdrawals move money. On a trade's steps every such body does; elsewhere the fourth keeps its generated
      password: wrong, it counts toward the lock, which the pool then answers with a fresh user.

    Bodies made invalid on purpose are left alone: the check that they are refused must still see them refused. A
    login or recovery naming a user of the trades' pool names one of the pool at risk instead (``_NAMES_A_PHONE``)."""
    operation = (case.method.upper(), case.path)
    if operation in _NAMES_A_PHONE and isinstance(case.body, dict) and _protected(case.body.get("phone")):
        _pool_at_risk.current()  # registers one if there is none yet
        case.body = {**case.body, "phone": _pool_at_risk.phone}
        return case
    if not isinstance(case.body, dict) or (operation != ("POST", "/api/v1/trades") and operation not in _PAYS):
        return case
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.BODY):
        return case
    body = case.body
    if operation == ("POST", "/api/v1/trades"):
        if isinstance(body.get("seller_phone"), str) and _most(body, "seller_phone"):
            body = {**body, "seller_phone": _SELLER_PHONE}
            for field, most in (("amount", 100_000), ("shipping_fee", 10_000)):
                if isinstance(body.get(field), int) and body[field] > most:
                    body[field] = most - body[field] % (most // 2)  # still positive, still generated-looking
    elif isinstance(body.get("payment_password"), str) and (operation in _TRADE_STEPS
                                                              or _most(body, "payment_password")):
        body = {**body, "payment_password": PAYMENT_PASSWORD}
    case.body = body
    return case


@schemathesis.hook
def filter_failure(ctx, failure, case, response) -> bool:
    """Drop one kind of failure only: "created resource not found" (ST302) when the resource was created with another
    user's token than the one that asked for it. That happens when the pool moved on between the two requests (the
    first user locked its payment password, logged out, ...): the 404 is then the right answer to a stranger. Every
    other failure, and a 404 to the resource's own creator or to the seller on a seller's step, still fails the run."""
    if getattr(failure, "code", None) != "ST302":
        return True
    asked_with = _sent_token(response)
    creators = {_CREATED_WITH.get(value) for value in (case.path_parameters or {}).values() if isinstance(value, str)}
    creators.discard(None)
    if asked_with == _SELLER_TOKEN and (case.method.upper(), case.path) in _SELLERS_STEPS:
        creators.add(_SELLER_TOKEN)  # a party to the trade
    return not creators or asked_with in creators
