#!/usr/bin/env bash
# Every benchmark of DESIGN.md §7, side by side in one run on one throwaway PostgreSQL:
#   1. graphile-worker 0.18 (the outbox yardstick): throughput at concurrency 8 and 64, add→start latency
#   2. wa-outbox outbox (release): throughput at 1, 8, 64 sessions, insert→claim latency, claim cost vs table size
#   3. wa-outbox sessions vs whatsapp-web.js 1.34.7 on one simulator: cold start to QR, PSS per session,
#      wake from hibernation, runner memory with 50 hibernated + 5 connected sessions
#   4. wa-outbox scale (release, in-memory driver; issue 16): status and views, claim/renewal per tick,
#      wake-ups per insert with 1..10 runners, statements per message, throughput, latency, prune, at
#      1 k sessions / 100 k rows and 10 k sessions / 10 M rows side by side
#      (knobs: BENCH_ROWS, BENCH_SESSIONS, BENCH_RUNNERS, BENCH_MESSAGES; BENCH_ONLY=scale runs only it)
# Results are JSON lines on stdout; ratios are only meaningful within one run (the machines are noisy).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/local/setup.sh
cargo build --quiet
BIN=$PWD/target/debug/wa-outbox
PGDIR=$PWD/target/bench-pg
ADMIN=$("$BIN" dev-pg start --dir "$PGDIR")
trap '"$BIN" dev-pg stop --dir "$PGDIR" >/dev/null 2>&1 || true' EXIT
# Statements per message and per tick come from pg_stat_statements (a restart loads it).
psql "$ADMIN" -qc "alter system set shared_preload_libraries = 'pg_stat_statements'"
"$BIN" dev-pg stop --dir "$PGDIR" >/dev/null
ADMIN=$("$BIN" dev-pg start --dir "$PGDIR")
export WA_TEST_DATABASE_URL=$ADMIN
psql "$ADMIN" -qc "drop database if exists yardstick" -c "create database yardstick"
echo "# machine: $(nproc) cores, $(uptime)"
if [ "${BENCH_ONLY:-}" = "" ]; then
  echo "# graphile-worker"
  DATABASE_URL=${ADMIN%/*}/yardstick bash bench/graphile/run.sh
  echo "# wa-outbox outbox"
  cargo bench --quiet --bench outbox
fi
if [ "${BENCH_ONLY:-}" = "" ] || [ "${BENCH_ONLY:-}" = "scale" ]; then
  echo "# wa-outbox scale (load at start: $(uptime))"
  cargo bench --quiet --bench scale
  echo "# load at end: $(uptime)"
fi
if [ "${BENCH_SKIP_SESSIONS:-}" = "" ] && [ "${BENCH_ONLY:-}" = "" ]; then
  echo "# wa-outbox sessions vs whatsapp-web.js"
  cargo bench --quiet --bench sessions
fi
