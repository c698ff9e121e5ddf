#!/usr/bin/env node
// Yardstick for wa-outbox (DESIGN.md §7): graphile-worker on the same PostgreSQL.
//
// Usage: DATABASE_URL=postgres://... node bench.mjs [--jobs N] [--concurrency C]
//          [--latency-samples K] [--latency-warmup W] [--max-pool-size P]
//          [--phase-timeout-s T] [--schema NAME]
//
// Prints one JSON object per measurement on stdout; diagnostics go to stderr.
// Exit codes: 0 ok, 1 failure, 2 a phase exceeded its timeout, 64 bad usage,
// 130 interrupted (SIGINT/SIGTERM; the schema is still dropped).
//
// Everything graphile-worker creates lives in one schema of its own (a fresh
// name per run unless --schema is given), dropped at the end, so a run leaves
// the database as it found it and two runs never share a queue.

import { EventEmitter } from "node:events";
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import {
  Logger,
  makeWorkerUtils,
  run,
  runMigrations,
} from "graphile-worker";

// The installed version, not the one we asked for, is what the figures belong to.
// package.json is not in the package's exports, so it is read beside dist/.
const VERSION = JSON.parse(
  readFileSync(new URL("../package.json", import.meta.resolve("graphile-worker")), "utf8"),
).version;
const SYSTEM = "graphile-worker";
const TASK = "noop";
// addJobs sends one JSON array per call; chunks keep each statement bounded.
const ENQUEUE_CHUNK = 5000;

class UsageError extends Error {}
class PhaseTimeout extends Error {}
class Interrupted extends Error {}

function parseOptions(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        jobs: { type: "string", default: "20000" },
        concurrency: { type: "string", default: "8" },
        queues: { type: "string", default: "0" },
        "latency-samples": { type: "string", default: "0" },
        "latency-warmup": { type: "string", default: "10" },
        "max-pool-size": { type: "string" },
        "phase-timeout-s": { type: "string", default: "120" },
        schema: { type: "string" },
        help: { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    throw new UsageError(e.message);
  }
  const v = parsed.values;
  if (v.help) return { help: true };
  const int = (name, min) => {
    const raw = v[name];
    if (!/^\d+$/.test(raw)) {
      throw new UsageError(`--${name} must be a whole number, got ${JSON.stringify(raw)}`);
    }
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < min) {
      throw new UsageError(`--${name} must be at least ${min}, got ${raw}`);
    }
    return n;
  };
  const opts = {
    jobs: int("jobs", 0),
    concurrency: int("concurrency", 1),
    queues: int("queues", 0),
    latencySamples: int("latency-samples", 0),
    latencyWarmup: int("latency-warmup", 0),
    maxPoolSize: v["max-pool-size"] === undefined ? undefined : int("max-pool-size", 1),
    phaseTimeoutMs: int("phase-timeout-s", 1) * 1000,
    schema: v.schema ?? `gw_bench_${process.pid}_${randomBytes(4).toString("hex")}`,
  };
  // The schema name is spliced into DROP SCHEMA, so only plain identifiers pass.
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(opts.schema)) {
    throw new UsageError(
      `--schema must be a lower-case SQL identifier (a-z, 0-9, _), got ${JSON.stringify(opts.schema)}`,
    );
  }
  if (opts.jobs === 0 && opts.latencySamples === 0) {
    throw new UsageError("nothing to measure: give --jobs N > 0 and/or --latency-samples K > 0");
  }
  return opts;
}

const USAGE = `usage: DATABASE_URL=postgres://... node bench.mjs [--jobs N] [--concurrency C]
       [--latency-samples K] [--latency-warmup W] [--max-pool-size P]
       [--phase-timeout-s T] [--schema NAME]
  --jobs N             no-op jobs for the throughput run (default 20000; 0 skips it)
  --concurrency C      worker concurrency (default 8)
  --queues Q           spread the jobs over Q named queues (queueName: one job at a time per
                       queue, graphile-worker's way to keep per-chat order); 0: no queue (default)
  --latency-samples K  add->start samples, one job at a time (default 0: skip)
  --latency-warmup W   unreported samples before the K measured ones (default 10)
  --max-pool-size P    graphile-worker's pg pool size (default: graphile-worker's, 10)
  --phase-timeout-s T  limit for each phase (default 120)
  --schema NAME        schema to use (default: a fresh gw_bench_* name); dropped at the end`;

// A signal ends the current phase the same way a timeout does, so the schema
// still gets dropped.
const interrupted = new Promise((_, reject) => {
  const onSignal = (sig) => reject(new Interrupted(`interrupted by ${sig}`));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
});
interrupted.catch(() => {});

// Cleanup passes interruptible=false: it must still run after the signal that
// ended the measurement (a second signal kills the process outright).
async function phase(name, ms, promise, interruptible = true) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new PhaseTimeout(`phase '${name}' exceeded ${ms} ms`)),
      ms,
    );
  });
  try {
    const racers = interruptible ? [promise, timeout, interrupted] : [promise, timeout];
    return await Promise.race(racers);
  } finally {
    clearTimeout(timer);
  }
}

// graphile-worker's console logger prints a line per completed job; at
// thousands of jobs/s that would measure the terminal, not the queue.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") {
    process.stderr.write(`[graphile-worker ${level}] ${message}\n`);
  }
});

function commonOptions(opts, connectionString) {
  const o = { connectionString, schema: opts.schema, logger };
  if (opts.maxPoolSize !== undefined) o.maxPoolSize = opts.maxPoolSize;
  return o;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

async function countJobs(utils, schema) {
  const { rows } = await utils.withPgClient((c) =>
    c.query(`select count(*)::int as n from ${schema}.jobs`),
  );
  return rows[0].n;
}

// Counts job outcomes on a worker's event bus; fails fast on the first job error.
function watchJobs(events, target) {
  let succeeded = 0;
  let resolveDone;
  let rejectDone;
  const done = new Promise((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  events.on("job:success", () => {
    succeeded += 1;
    if (succeeded === target) resolveDone(performance.now());
  });
  events.on("job:error", ({ job, error }) => {
    rejectDone(new Error(`job ${job.id} failed: ${error}`));
  });
  events.on("pool:fatalError", ({ error }) => {
    rejectDone(new Error(`worker pool fatal error: ${error}`));
  });
  return { done, count: () => succeeded };
}

async function throughput(opts, connectionString, utils, state) {
  const T = opts.phaseTimeoutMs;
  const n = opts.jobs;
  await phase("enqueue", T, (async () => {
    for (let from = 0; from < n; from += ENQUEUE_CHUNK) {
      const size = Math.min(ENQUEUE_CHUNK, n - from);
      const specs = Array.from({ length: size }, (_, i) =>
        opts.queues > 0
          ? { identifier: TASK, payload: {}, queueName: `chat${(from + i) % opts.queues}` }
          : { identifier: TASK, payload: {} });
      await utils.addJobs(specs);
    }
  })());
  const queued = await phase("count queued", T, countJobs(utils, opts.schema));
  if (queued !== n) throw new Error(`expected ${n} queued jobs, found ${queued}`);

  const events = new EventEmitter();
  const watch = watchJobs(events, n);
  watch.done.catch(() => {});
  const t0 = performance.now();
  state.runner = await phase("worker start", T, run({
    ...commonOptions(opts, connectionString),
    concurrency: opts.concurrency,
    noHandleSignals: true,
    events,
    taskList: { [TASK]: async () => {} },
  }));
  let t1;
  try {
    t1 = await phase("drain", T, watch.done);
  } catch (e) {
    if (e instanceof PhaseTimeout) {
      e.message += ` (${watch.count()} of ${n} jobs done)`;
    }
    throw e;
  }
  // stop() waits for the completions graphile-worker writes in the background,
  // so the table count below is the database's view, not the worker's.
  const runner = state.runner;
  state.runner = undefined;
  await phase("worker stop", T, runner.stop());
  const left = await phase("count left", T, countJobs(utils, opts.schema));
  if (left !== 0) throw new Error(`${left} jobs still in the table after the run`);
  const elapsedMs = t1 - t0;
  emit({
    system: SYSTEM,
    version: VERSION,
    concurrency: opts.concurrency,
    queues: opts.queues,
    jobs: n,
    jobs_per_s: Math.round((n / elapsedMs) * 1000),
    elapsed_ms: round2(elapsedMs),
    max_pool_size: opts.maxPoolSize ?? 10,
  });
}

async function latency(opts, connectionString, utils, state) {
  const T = opts.phaseTimeoutMs;
  const events = new EventEmitter();
  const starts = new Map(); // seq -> resolve(start time)
  const completes = new Map(); // seq -> resolve()
  let failure;
  const failed = new Promise((_, reject) => {
    failure = reject;
  });
  failed.catch(() => {});
  events.on("job:error", ({ job, error }) => failure(new Error(`job ${job.id} failed: ${error}`)));
  events.on("pool:fatalError", ({ error }) => failure(new Error(`worker pool fatal error: ${error}`)));
  // Keyed by payload, not job id: the job may finish before addJob resolves.
  events.on("job:complete", ({ job }) => {
    const r = completes.get(job.payload?.seq);
    if (r) r();
  });
  const listening = new Promise((res) => events.once("pool:listen:success", res));

  state.runner = await phase("latency worker start", T, run({
    ...commonOptions(opts, connectionString),
    concurrency: opts.concurrency,
    noHandleSignals: true,
    events,
    taskList: {
      [TASK]: async (payload) => {
        const t = performance.now();
        const r = starts.get(payload.seq);
        if (r) r(t);
      },
    },
  }));
  // Until LISTEN is in place a new job would wait for the next poll, which
  // would measure pollInterval rather than the notification path.
  await phase("latency listen", T, Promise.race([listening, failed]));

  const total = opts.latencyWarmup + opts.latencySamples;
  const samples = [];
  await phase("latency samples", T, (async () => {
    for (let seq = 0; seq < total; seq += 1) {
      const started = new Promise((res) => starts.set(seq, res));
      const completed = new Promise((res) => completes.set(seq, res));
      const tAdd = performance.now();
      await Promise.race([utils.addJob(TASK, { seq }), failed]);
      const tStart = await Promise.race([started, failed]);
      // Waiting for the job to finish keeps the worker idle for the next add.
      await Promise.race([completed, failed]);
      starts.delete(seq);
      completes.delete(seq);
      if (seq >= opts.latencyWarmup) samples.push(tStart - tAdd);
    }
  })());
  const runner = state.runner;
  state.runner = undefined;
  await phase("latency worker stop", T, runner.stop());

  samples.sort((a, b) => a - b);
  emit({
    system: SYSTEM,
    version: VERSION,
    concurrency: opts.concurrency,
    latency_p50_ms: round2(percentile(samples, 50)),
    latency_p99_ms: round2(percentile(samples, 99)),
    latency_min_ms: round2(samples[0]),
    latency_max_ms: round2(samples[samples.length - 1]),
    samples: samples.length,
    warmup: opts.latencyWarmup,
  });
}

// Nearest-rank percentile of an ascending array.
function percentile(sorted, p) {
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

function round2(x) {
  return Math.round(x * 100) / 100;
}

async function cleanup(opts, connectionString, state) {
  const T = Math.min(opts.phaseTimeoutMs, 30_000);
  let ok = true;
  const attempt = async (name, fn) => {
    try {
      await phase(name, T, fn(), false);
    } catch (e) {
      ok = false;
      process.stderr.write(`cleanup: ${name}: ${e.message}\n`);
    }
  };
  if (state.runner) {
    const runner = state.runner;
    state.runner = undefined;
    await attempt("stop worker", () => runner.stop());
  }
  let utils = state.utils;
  if (!utils && state.migrated) {
    await attempt("connect for cleanup", async () => {
      utils = await makeWorkerUtils(commonOptions(opts, connectionString));
    });
  }
  if (utils) {
    if (state.migrated) {
      await attempt("drop schema", () =>
        utils.withPgClient((c) => c.query(`drop schema if exists ${opts.schema} cascade`)),
      );
    }
    await attempt("release utils", () => utils.release());
  }
  return ok;
}

async function main() {
  let opts;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`bench.mjs: ${e.message}\n${USAGE}\n`);
      return 64;
    }
    throw e;
  }
  if (opts.help) {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  const connectionString = process.env.DATABASE_URL;
  if (!connectionString) {
    process.stderr.write(`bench.mjs: DATABASE_URL is not set\n${USAGE}\n`);
    return 64;
  }

  const state = { runner: undefined, utils: undefined, migrated: false };
  let code = 0;
  try {
    const T = opts.phaseTimeoutMs;
    // Set before the call: a migration cut short may still have created the schema.
    state.migrated = true;
    await phase("migrate", T, runMigrations(commonOptions(opts, connectionString)));
    state.utils = await phase("connect", T, makeWorkerUtils(commonOptions(opts, connectionString)));
    if (opts.jobs > 0) await throughput(opts, connectionString, state.utils, state);
    if (opts.latencySamples > 0) await latency(opts, connectionString, state.utils, state);
  } catch (e) {
    const expected = e instanceof PhaseTimeout || e instanceof Interrupted;
    code = e instanceof PhaseTimeout ? 2 : e instanceof Interrupted ? 130 : 1;
    process.stderr.write(`bench.mjs: ${expected ? e.message : e.stack || e}\n`);
  }
  const cleaned = await cleanup(opts, connectionString, state);
  if (!cleaned && code === 0) code = 1;
  return code;
}

// Explicit exit: a pool left half-open after a timeout must not keep the process alive.
main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`bench.mjs: ${e.stack || e}\n`);
    process.exit(1);
  },
);
