#!/usr/bin/env bash
# Runs every test of wa-outbox on real parts: format and lint, the Rust unit and integration
# tests (real PostgreSQL, real Chromium, the simulator), the whatsapp-web.js compatibility test,
# the Kubernetes manifest checks and the Django package's tests.
# Installs what is missing first (deploy/local/setup.sh) and starts a throwaway PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

bash deploy/local/setup.sh

echo "== cargo fmt / clippy"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

echo "== build"
cargo build
BIN=$ROOT/target/debug/wa-outbox
export WA_OUTBOX_BIN=$BIN

PGDIR=$ROOT/target/test-pg
WA_TEST_DATABASE_URL=$("$BIN" dev-pg start --dir "$PGDIR")
export WA_TEST_DATABASE_URL
# Throwaway: stopped and removed (as root its files live in the postgres user's folder, not here).
cleanup() { "$BIN" dev-pg destroy --dir "$PGDIR" >/dev/null 2>&1 || true; }
trap cleanup EXIT
echo "test PostgreSQL: $WA_TEST_DATABASE_URL"

echo "== Rust tests"
cargo test --all-targets

if [ -f tests/compat/run.sh ]; then
  echo "== whatsapp-web.js compatibility test"
  bash tests/compat/run.sh
fi

if [ -f deploy/validate.sh ]; then
  echo "== Kubernetes manifests"
  bash deploy/validate.sh
fi

if [ -f clients/django/run-tests.sh ]; then
  echo "== Django package"
  bash clients/django/run-tests.sh
fi

echo "== all tests passed"
