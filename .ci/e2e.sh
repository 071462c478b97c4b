#!/usr/bin/env bash
# The e2e step of .ci/run: the many-instances and crash suites of issue 6 (real gunicorn instances, SMS
# dispatchers and background workers against a fresh PostgreSQL database each; see tests/e2e/harness.py).
# About three to four minutes. Fails on any failure, on "no tests ran" (pytest exit 5), and when a suite was
# skipped (PostgreSQL unreachable) unless WALLET_E2E_ALLOW_SKIP=1.
#
# Knobs (environment): WALLET_E2E_SECONDS (many-instances load, default 40), WALLET_E2E_CRASH_SECONDS (crash
# load, default 60), WALLET_E2E_THREADS (client threads, default 6), WALLET_E2E_SEED (repeat a run's mix),
# WALLET_E2E_GUNICORN_CONF (another gunicorn configuration file instead of gunicorn.conf.py).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

make .venv/.installed >/dev/null

if ! pg_isready -h 127.0.0.1 -q; then
    echo "PostgreSQL is not up; starting it"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
    for _ in $(seq 1 30); do
        pg_isready -h 127.0.0.1 -q && break
        sleep 1
    done
fi

export WALLET_E2E=1
log="$(mktemp "${TMPDIR:-/tmp}/wallet-e2e.XXXXXX.log")"
rc=0
.venv/bin/pytest -m e2e -p no:cacheprovider -rs tests/e2e/test_many_instances.py tests/e2e/test_crash.py 2>&1 \
    | tee "$log" || rc=$?
if [[ "$rc" -eq 5 ]]; then
    echo "!! pytest collected no e2e tests: that is a failure, not a pass"
    exit 5
fi
if [[ "$rc" -eq 0 ]] && grep -qE "[0-9]+ skipped" "$log" && [[ "${WALLET_E2E_ALLOW_SKIP:-0}" != "1" ]]; then
    echo "!! an e2e suite was skipped (see the reason above): that is a failure in CI"
    rc=1
fi
if [[ "$rc" -eq 0 ]] && ! grep -qE "2 passed" "$log"; then
    echo "!! expected both e2e suites to pass"
    rc=1
fi
rm -f "$log"
exit "$rc"
