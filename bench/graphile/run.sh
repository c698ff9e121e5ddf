#!/usr/bin/env bash
# graphile-worker yardstick (DESIGN.md §7): throughput at concurrency 8 and 64,
# then add->start latency, against the PostgreSQL in DATABASE_URL.
# One JSON object per measurement on stdout; each bench.mjs run uses and then
# drops a fresh schema of its own.
#
# Knobs (environment): BENCH_JOBS (default 20000), BENCH_LATENCY_SAMPLES
# (default 200), BENCH_LATENCY_CONCURRENCY (default 1), BENCH_PHASE_TIMEOUT_S
# (default 120).
set -euo pipefail

: "${DATABASE_URL:?DATABASE_URL must point at the PostgreSQL to measure}"
export DATABASE_URL
jobs="${BENCH_JOBS:-20000}"
samples="${BENCH_LATENCY_SAMPLES:-200}"
latency_concurrency="${BENCH_LATENCY_CONCURRENCY:-1}"
timeout_s="${BENCH_PHASE_TIMEOUT_S:-120}"

cd "$(dirname "$0")"
if [ ! -d node_modules/graphile-worker ]; then
  # The lock file pins the exact tree; stdout stays reserved for results.
  npm ci --no-audit --no-fund >&2
fi

for c in 8 64; do
  # graphile-worker warns that a pool smaller than its concurrency is not
  # optimal; the yardstick should be graphile-worker at its best, so the pool
  # gets one connection per concurrent job plus the LISTEN one (never below
  # its default of 10).
  pool=$(( c + 1 > 10 ? c + 1 : 10 ))
  node bench.mjs --jobs "$jobs" --concurrency "$c" --max-pool-size "$pool" \
    --phase-timeout-s "$timeout_s"
done
# One named queue per chat (jobs of a queue run one at a time, in order), as many workers as
# queues: the fair comparison with wa-outbox's per-session order (issue 16).
for q in 8 64; do
  pool=$(( q + 1 > 10 ? q + 1 : 10 ))
  node bench.mjs --jobs "$jobs" --concurrency "$q" --queues "$q" --max-pool-size "$pool" \
    --phase-timeout-s "$timeout_s"
done
node bench.mjs --jobs 0 --latency-samples "$samples" \
  --concurrency "$latency_concurrency" --phase-timeout-s "$timeout_s"
