#!/usr/bin/env bash
# Property-based API tests: start the dev server (`flask dev`, as `make run` does) on a free port with a
# throwaway database and console SMS file, register a real user through the API, then run schemathesis
# against the generated OpenAPI document with every check in .ci/schemathesis.toml. Any failed check, any
# 5xx, any traceback in the server log and a ledger that no longer balances afterwards (`flask wallet check`) fail
# the run. Needs .venv (`make test` creates it).
#
# Knobs (environment):
#   ST_DATABASE_URL   default a SQLite file in the work directory; a PostgreSQL database is emptied first,
#                     so name one reserved for this (.ci/run uses `test`)
#   ST_MAX_EXAMPLES   examples per operation and phase (default 50)
#   ST_SEED           default random; printed, so a failure can be replayed with the same seed
#   ST_WORKERS        concurrent schemathesis workers (default 1: on CPython 3.11.7 two threads parsing
#                     lambdas hit "AST constructor recursion depth mismatch", cpython gh-106905)
#   ST_PHASES         default examples,coverage,fuzzing,stateful
#   ST_KEEP=1         keep the work directory (server log, SMS file, reports); always kept on failure
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/wallet-schemathesis.XXXXXX")"
PORT="$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE_URL="http://127.0.0.1:$PORT"
SEED="${ST_SEED:-$((RANDOM * 32768 + RANDOM))}"
SERVER_PID=""
DB_URL="${ST_DATABASE_URL:-sqlite:///$WORK/wallet.db}"
STATUS=1

cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "$STATUS" -ne 0 ]]; then
        echo "--- last 60 lines of the server log ($WORK/server.log) ---"
        tail -n 60 "$WORK/server.log" 2>/dev/null || true
        echo "schemathesis: FAILED (seed $SEED); server log, SMS file and reports kept in $WORK"
    elif [[ "${ST_KEEP:-0}" == "1" ]]; then
        echo "schemathesis: work directory kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

if [[ "$DB_URL" == postgres* ]]; then
    echo "schemathesis: emptying ${DB_URL##*@}"
    "$BIN/python" - "$DB_URL" <<'PY'
import sys

from sqlalchemy import create_engine, text

engine = create_engine(sys.argv[1], isolation_level="AUTOCOMMIT")
with engine.connect() as conn:
    conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
    conn.execute(text("CREATE SCHEMA public"))
PY
fi

# Rate limits off (or schemathesis would mostly see 429s); a quick dispatcher, because every replacement user
# (see .ci/schemathesis_hooks.py) waits for its SMS code.
echo "schemathesis: starting 'flask dev' on $BASE_URL (database ${DB_URL##*@}; SMS file in $WORK)"
env DATABASE_URL="$DB_URL" SMS_CONSOLE_FILE="$WORK/sms.jsonl" RATELIMIT_ENABLED=false \
    WALLET_ENV=development FLASK_APP=app LOG_LEVEL=INFO DISPATCH_INTERVAL_SECONDS=0.05 \
    "$BIN/flask" dev --host 127.0.0.1 --port "$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

for _ in $(seq 1 150); do
    if curl -fsS "$BASE_URL/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "schemathesis: the dev server exited before it answered /readyz"
        exit 1
    fi
    sleep 0.2
done
curl -fsS "$BASE_URL/readyz" >/dev/null || { echo "schemathesis: /readyz did not answer within 30 s"; exit 1; }

echo "schemathesis: registering a user through the API (code read from the console SMS file)"
FIRST_PHONE=+12025550100  # fictional (NANP 555-01XX); the hooks' own users come after it (WALLET_PHONE_OFFSET=1)
TOKEN="$(SMS_CONSOLE_FILE="$WORK/sms.jsonl" "$BIN/python" .ci/wallet_client.py register "$BASE_URL" "$FIRST_PHONE")"

echo "schemathesis: running (seed $SEED, ${ST_MAX_EXAMPLES:-50} examples per operation)"
set +e
WALLET_BASE_URL="$BASE_URL" SMS_CONSOLE_FILE="$WORK/sms.jsonl" WALLET_FIRST_TOKEN="$TOKEN" WALLET_FIRST_PHONE="$FIRST_PHONE" \
    WALLET_PHONE_OFFSET=1 \
    SCHEMATHESIS_HOOKS="$ROOT/.ci/schemathesis_hooks.py" ST_WORK="$WORK" \
    HYPOTHESIS_STORAGE_DIRECTORY="$WORK/hypothesis" \
    "$BIN/schemathesis" --config-file "$ROOT/.ci/schemathesis.toml" --no-color run "$BASE_URL/api/v1/openapi.json" \
    --phases "${ST_PHASES:-examples,coverage,fuzzing,stateful}" \
    --max-examples "${ST_MAX_EXAMPLES:-50}" \
    --workers "${ST_WORKERS:-1}" \
    --seed "$SEED" \
    --generation-database "$WORK/examples" \
    --request-timeout 30 \
    --report junit,ndjson --report-dir "$WORK/reports"
ST_RC=$?
set -e

# 500s are reported by not_a_server_error; this also catches errors that never reached a response, such as
# a failing background task (the dispatcher) or an error logged after the answer was sent.
SERVER_ERRORS=0
if grep -nE "Traceback|unhandled error|background task .* failed" "$WORK/server.log" >"$WORK/server-errors.txt"; then
    echo "schemathesis: the server logged errors:"
    head -n 40 "$WORK/server-errors.txt"
    SERVER_ERRORS=1
fi
if grep -q '" 5[0-9][0-9] ' "$WORK/server.log"; then
    echo "schemathesis: the server answered 5xx:"
    grep '" 5[0-9][0-9] ' "$WORK/server.log" | head -n 20
    SERVER_ERRORS=1
fi

# Whatever the fuzzing paid, refunded or gave up on, the books must still balance (``flask wallet check``: every
# balance recomputed from the transfers, every ledger invariant; exit 1 and one line per problem otherwise).
LEDGER_PROBLEMS=0
if ! env DATABASE_URL="$DB_URL" WALLET_ENV=development FLASK_APP=app "$BIN/flask" wallet check \
        >"$WORK/ledger-check.txt" 2>&1; then
    echo "schemathesis: the ledger check after the run failed:"
    head -n 40 "$WORK/ledger-check.txt"
    LEDGER_PROBLEMS=1
else
    echo "schemathesis: $(tail -n 1 "$WORK/ledger-check.txt")"
fi

if [[ "$ST_RC" -ne 0 || "$SERVER_ERRORS" -ne 0 || "$LEDGER_PROBLEMS" -ne 0 ]]; then
    STATUS=1
else
    STATUS=0
    echo "schemathesis: passed (seed $SEED)"
fi
exit "$STATUS"
