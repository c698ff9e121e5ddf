#!/usr/bin/env bash
# Runs every test of wa-outbox on real parts: format and lint, the Rust unit and integration
# tests (real PostgreSQL, real Chromium, the simulator), the whatsapp-web.js compatibility test,
# the Kubernetes manifest checks, the Django package's tests and the container image (built and
# run with podman: deploy/image/test.sh).
# Installs what is missing first (deploy/local/setup.sh) and starts a throwaway PostgreSQL.
#
# A run leaves nothing running, whether it passes, fails or is interrupted (Ctrl-C, SIGTERM):
# every process it starts carries WA_OUTBOX_TEST_RUN=<this run's id> in its environment. On the
# way out the throwaway cluster is destroyed, and any process still carrying the mark is named
# and killed; after a run that otherwise passed, that fails the run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

WA_OUTBOX_TEST_RUN=$(cat /proc/sys/kernel/random/uuid)
export WA_OUTBOX_TEST_RUN

# The processes carrying this run's mark, as "pid command line" lines; builtins only, so the
# scan never finds itself.
marked() {
  local p env cmd
  for p in /proc/[0-9]*; do
    [[ ${p#/proc/} == "$$" ]] && continue
    mapfile -d '' env 2>/dev/null < "$p/environ" || continue
    local e
    for e in "${env[@]}"; do
      if [[ $e == "WA_OUTBOX_TEST_RUN=$WA_OUTBOX_TEST_RUN" ]]; then
        mapfile -d '' cmd 2>/dev/null < "$p/cmdline" || cmd=()
        echo "${p#/proc/} ${cmd[*]:0:8}"
        break
      fi
    done
  done
}

# Waits up to $1 seconds for the marked processes to end (children of a test binary die with
# it, but not in the same instant); prints those still there.
still_marked() {
  local deadline=$((SECONDS + $1)) left
  while :; do
    left=$(marked)
    if [[ -z $left || $SECONDS -ge $deadline ]]; then
      printf '%s' "$left"
      return
    fi
    sleep 0.2
  done
}

PGDIR=$ROOT/target/test-pg
BIN=$ROOT/target/debug/wa-outbox
finish() {
  local rc=$? left
  trap - EXIT INT TERM
  set +e
  if [[ $rc -ne 0 ]]; then
    # Failed or interrupted: ask whatever is still running to stop first.
    marked | while read -r pid _; do kill -TERM "$pid" 2>/dev/null; done
  fi
  # Containers of the image test, labelled with this run's id. Their processes are children of
  # conmon, not of this script, and carry no mark. deploy/image/test.sh removes its own; one
  # still here (that script was killed outright, or it has a bug) is named and removed, and
  # after a run that otherwise passed, that fails the run.
  if command -v podman >/dev/null; then
    local ids
    ids=$(podman ps -a --format '{{.ID}} {{.Names}} {{.Status}}' \
      --filter "label=wa-outbox.test-run=$WA_OUTBOX_TEST_RUN" 2>/dev/null)
    if [[ -n $ids ]]; then
      echo "== this test run left containers (removed now):" >&2
      echo "$ids" >&2
      # shellcheck disable=SC2046
      podman rm -f -t 0 $(echo "$ids" | awk '{ print $1 }') >/dev/null 2>&1
      [[ $rc -eq 0 ]] && rc=1
    fi
  fi
  # Throwaway: stopped and removed (as root its files live in the postgres user's folder).
  [[ -x $BIN ]] && "$BIN" dev-pg destroy --dir "$PGDIR" >/dev/null 2>&1
  left=$(still_marked 15)
  if [[ -n $left ]]; then
    echo "== this test run left processes running (killed now):" >&2
    echo "$left" >&2
    echo "$left" | while read -r pid _; do kill -KILL "$pid" 2>/dev/null; done
    [[ $rc -eq 0 ]] && rc=1
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Each step runs in the background and is waited for, so that a signal to this script is
# handled at once (a foreground child would delay the trap until it ends).
step() {
  "$@" &
  wait $!
}

step bash deploy/local/setup.sh

echo "== cargo fmt / clippy"
step cargo fmt --all -- --check
step cargo clippy --all-targets -- -D warnings

echo "== build"
step cargo build
export WA_OUTBOX_BIN=$BIN

WA_TEST_DATABASE_URL=$("$BIN" dev-pg start --dir "$PGDIR")
export WA_TEST_DATABASE_URL
echo "test PostgreSQL: $WA_TEST_DATABASE_URL"

echo "== Rust tests"
step cargo test --all-targets

if [ -f tests/compat/run.sh ]; then
  echo "== whatsapp-web.js compatibility test"
  step bash tests/compat/run.sh
fi

if [ -f deploy/validate.sh ]; then
  echo "== Kubernetes manifests"
  step bash deploy/validate.sh
fi

if [ -f clients/django/run-tests.sh ]; then
  echo "== Django package"
  step bash clients/django/run-tests.sh
fi

if [ -f deploy/image/test.sh ]; then
  echo "== container image (podman: build deploy/docker/Dockerfile, run it)"
  step bash deploy/image/test.sh
fi

echo "== all tests passed"
