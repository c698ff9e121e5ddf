#!/usr/bin/env bash
# Tests for django-wa-outbox against a real PostgreSQL with the runner's schema.
#
#   clients/django/run-tests.sh [pytest args]
#
# Database: WA_TEST_DATABASE_URL (admin URL of a running cluster; a fresh database is created in
# it), else a throwaway PostgreSQL 15 cluster under /tmp. Schema: `$WA_OUTBOX_BIN migrate` when
# WA_OUTBOX_BIN is set, else psql -f on migrations/*.sql. The e2e tests (real runner, Chromium,
# simulator) run only when WA_OUTBOX_BIN is set; they fail, never skip, if selected without it.
# WA_DJANGO_VENV picks the virtualenv (default clients/django/.venv, created if missing).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${WA_DJANGO_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "$here[test]"
# A regular (not editable) install of the current source: the tests import the package as a
# user's `pip install` leaves it (src/ is not on sys.path), so packaging mistakes show up here.
"${pip[@]}" --force-reinstall --no-deps "$here"

args=()
if [ -z "${WA_OUTBOX_BIN:-}" ]; then
  echo "run-tests.sh: WA_OUTBOX_BIN unset, leaving out the e2e tests (-m 'not e2e')" >&2
  args+=(-m "not e2e")
fi

cd "$here"
exec "$venv/bin/python" -m pytest -p no:cacheprovider "${args[@]}" "$@"
