#!/usr/bin/env bash
# Every benchmark of DESIGN.md §7, side by side in one run on one throwaway PostgreSQL:
#   1. graphile-worker 0.18 (the outbox yardstick): throughput unordered at concurrency 8 and 64,
#      and with one named queue per chat at 8 and 64 queues; add→start latency
#   2. wa-outbox outbox (release): throughput at 1, 8, 64 sessions, insert→claim latency, claim
#      cost vs table size; then the ratios to graphile-worker's figures of this same run, with
#      the machine's load (bench/compare.py)
#   3. wa-outbox sessions vs whatsapp-web.js 1.34.7 on one simulator: cold start to QR, PSS per session,
#      wake from hibernation, runner memory with 50 hibernated + 5 connected sessions
#   4. wa-outbox scale (release, in-memory driver, 10 runner processes; issue 16): status and views,
#      plans before/after, claim/renewal per tick, wake-ups per insert with 1..10 runners,
#      statements per message, throughput and where its time went, latency, prune and its plan,
#      at 1 k sessions / 100 k rows and 10 k sessions / 10 M rows side by side
#      (knobs: BENCH_ROWS, BENCH_SESSIONS, BENCH_RUNNERS, BENCH_MESSAGES)
# BENCH_ONLY picks parts, comma-separated: `compare` (graphile-worker, then the outbox's throughput
# figures only, and the ratios), `outbox` (graphile-worker, the whole outbox benchmark, the
# ratios), `scale`, `sessions`. Unset: outbox, scale and sessions.
# Results are JSON lines on stdout; ratios are only meaningful within one run (the machines are noisy).
set -euo pipefail
cd "$(dirname "$0")/.."
want() { [ -z "${BENCH_ONLY:-}" ] || [[ ",${BENCH_ONLY}," == *",$1,"* ]]; }
load() { echo "$(date -u +%H:%M:%S) UTC, load average $(cut -d' ' -f1-3 /proc/loadavg)"; }
bash deploy/local/setup.sh
# Release only: the benchmarks are release builds, and the cluster is started by the same binary.
cargo build --release --quiet
BIN=$PWD/target/release/wa-outbox
PGDIR=$PWD/target/bench-pg
ADMIN=$("$BIN" dev-pg start --dir "$PGDIR")
trap '"$BIN" dev-pg stop --dir "$PGDIR" >/dev/null 2>&1 || true' EXIT
# Statements per message and per tick come from pg_stat_statements (a restart loads it).
psql "$ADMIN" -qc "alter system set shared_preload_libraries = 'pg_stat_statements'"
"$BIN" dev-pg stop --dir "$PGDIR" >/dev/null
ADMIN=$("$BIN" dev-pg start --dir "$PGDIR")
export WA_TEST_DATABASE_URL=$ADMIN
psql "$ADMIN" -qc "drop database if exists yardstick" -c "create database yardstick"
echo "# machine: $(nproc) cores, $(load)"
if want compare || want outbox; then
  OUT=$PWD/target/bench-compare.jsonl
  echo "# graphile-worker (start: $(load))"
  DATABASE_URL=${ADMIN%/*}/yardstick bash bench/graphile/run.sh | tee "$OUT"
  echo "# wa-outbox outbox (start: $(load))"
  if want outbox; then
    cargo bench --quiet --bench outbox | tee -a "$OUT"
  else
    BENCH_OUTBOX_THROUGHPUT_ONLY=1 cargo bench --quiet --bench outbox | tee -a "$OUT"
  fi
  echo "# end: $(load)"
  python3 bench/compare.py "$OUT"
fi
if want scale; then
  echo "# wa-outbox scale (start: $(load))"
  cargo bench --quiet --bench scale
  echo "# end: $(load)"
fi
if want sessions && [ "${BENCH_SKIP_SESSIONS:-}" = "" ]; then
  echo "# wa-outbox sessions vs whatsapp-web.js (start: $(load))"
  cargo bench --quiet --bench sessions
fi
