#!/usr/bin/env bash
# Twilio contract suite (issue 5): the real TwilioSmsSender against Prism serving Twilio's own OpenAPI
# description (../shared/twilio/twilio_api_v2010.json), with request validation on, plus the provider-outage
# test. Installs the pinned @stoplight/prism-cli with npm into a cache directory outside the repository
# (reused by later runs), then runs tests/contract with WALLET_REQUIRE_CONTRACT=1 so nothing can skip.
#
# Knobs (environment): PRISM_CACHE (default ~/.cache/wallet-prism), WALLET_TWILIO_SPEC (default
# ../shared/twilio/twilio_api_v2010.json beside the repository), WALLET_TEST_DATABASE_URL (default SQLite;
# a PostgreSQL URL is emptied first), extra arguments go to pytest.
set -euo pipefail

PRISM_VERSION="5.14.2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PRISM_DIR="${PRISM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wallet-prism}/$PRISM_VERSION"
PRISM_BIN="$PRISM_DIR/node_modules/.bin/prism"

if ! command -v npm >/dev/null; then
    echo "npm is missing: installing Debian's nodejs and npm"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
if [[ ! -x "$PRISM_BIN" ]] || [[ "$("$PRISM_BIN" --version 2>/dev/null)" != "$PRISM_VERSION" ]]; then
    echo "installing @stoplight/prism-cli@$PRISM_VERSION into $PRISM_DIR"
    mkdir -p "$PRISM_DIR"
    npm install --prefix "$PRISM_DIR" --no-audit --no-fund --loglevel=error "@stoplight/prism-cli@$PRISM_VERSION"
fi
echo "prism $("$PRISM_BIN" --version)"

# The venv the rest of CI uses (make creates it from the pinned requirements on first use).
make .venv/.installed >/dev/null

export WALLET_PRISM_BIN="$PRISM_BIN"
export WALLET_REQUIRE_CONTRACT=1
export WALLET_TWILIO_SPEC="${WALLET_TWILIO_SPEC:-$ROOT/../shared/twilio/twilio_api_v2010.json}"
.venv/bin/pytest tests/contract -p no:cacheprovider "$@"
