// The whatsapp-web.js side of `cargo bench --bench sessions` (benches/sessions.rs starts it).
// Same simulator, same Debian Chromium, same figures as our runner:
//   1. cold start to QR: `new Client(...).initialize()` → the `qr` event, on a fresh profile;
//   2. connected sessions: clients linked (scan through the simulator's control API) until
//      `ready`; at each size the browser pids are printed and this script waits for one line on
//      stdin, so that the Rust side measures PSS with the same code it uses for our browsers.
//
// Usage: node run.mjs --sim http://127.0.0.1:PORT --samples 5 --sessions 1,10
// Output: one JSON object per line on stdout. Every wait has a deadline; nothing sleeps to
// synchronise.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import wwebjs from 'whatsapp-web.js';

const { Client, LocalAuth } = wwebjs;

const { values: opts } = parseArgs({
  options: {
    sim: { type: 'string' },
    samples: { type: 'string', default: '5' },
    sessions: { type: 'string', default: '1,10' },
    'phone-base': { type: 'string', default: '15552000000' },
  },
});
if (!opts.sim || !/^https?:\/\/[^\s]+$/.test(opts.sim)) {
  console.error('usage: node run.mjs --sim http://HOST:PORT [--samples N] [--sessions 1,10]');
  process.exit(2);
}
const SIM = opts.sim.replace(/\/+$/, '');
const SAMPLES = Number.parseInt(opts.samples, 10);
const SIZES = opts.sessions.split(',').map((s) => Number.parseInt(s, 10));
const PHONE_BASE = BigInt(opts['phone-base']);
if (!(SAMPLES >= 0) || SIZES.some((n) => !(n > 0))) {
  console.error('--samples must be ≥ 0 and --sessions a list of positive numbers');
  process.exit(2);
}
const CHROMIUM = process.env.WA_CHROMIUM || '/usr/bin/chromium';
// The flags tests/compat uses (docs/simulator.md): --no-sandbox because this runs as root; the
// page is served as https://web.whatsapp.com/ and must reach the simulator on loopback.
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-features=LocalNetworkAccessChecks',
  '--disable-dev-shm-usage',
  '--disable-gpu',
  '--no-first-run',
  '--disable-extensions',
];
const STEP_MS = 120000;

const dataDir = mkdtempSync(path.join(tmpdir(), 'wa-bench-wwebjs-'));
const clients = [];
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

const stdinLines = createInterface({ input: process.stdin });
const pendingLines = [];
const lineWaiters = [];
stdinLines.on('line', (l) => {
  const w = lineWaiters.shift();
  if (w) w(l);
  else pendingLines.push(l);
});
// The Rust side closing our stdin means it is gone: clean up rather than linger.
stdinLines.on('close', () => {
  for (const w of lineWaiters.splice(0)) w(null);
});
function nextLine() {
  if (pendingLines.length) return Promise.resolve(pendingLines.shift());
  return new Promise((resolve) => lineWaiters.push(resolve));
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

function once(emitter, event, ms) {
  return withTimeout(new Promise((resolve) => emitter.once(event, (...a) => resolve(a))), ms, `event ${event}`);
}

async function api(method, p, body) {
  const res = await withTimeout(
    fetch(SIM + p, {
      method,
      headers: body ? { 'content-type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
    }),
    10000,
    `${method} ${p}`,
  );
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

function newClient(clientId) {
  const client = new Client({
    authStrategy: new LocalAuth({ dataPath: dataDir, clientId }),
    puppeteer: { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS },
    webVersionCache: { type: 'remote', remotePath: SIM + '/' },
    authTimeoutMs: STEP_MS,
  });
  clients.push(client);
  return client;
}

async function destroy(client) {
  await withTimeout(client.destroy(), 30000, 'client.destroy()').catch(() => {});
  const i = clients.indexOf(client);
  if (i >= 0) clients.splice(i, 1);
}

async function coldQr(sample) {
  const t0 = performance.now();
  const client = newClient(`cold${sample}`);
  const qr = once(client, 'qr', STEP_MS);
  client.initialize().catch(() => {});
  await qr;
  const ms = performance.now() - t0;
  await destroy(client);
  emit({ system: 'whatsapp-web.js', measure: 'cold_start_to_qr_ms', sample, ms: round(ms) });
}

// initialize → qr → the simulator's phone scans it → ready (after the history sync).
async function link(k) {
  const t0 = performance.now();
  const client = newClient(`mem${k}`);
  const qrP = once(client, 'qr', STEP_MS);
  const readyP = once(client, 'ready', STEP_MS);
  client.initialize().catch(() => {});
  const [qr] = await qrP;
  await api('POST', '/_sim/scan', { qr, phone: String(PHONE_BASE + BigInt(k)), name: `Bench ${k}` });
  await readyP;
  const ms = performance.now() - t0;
  emit({ system: 'whatsapp-web.js', measure: 'cold_start_to_connected_ms', session: k, ms: round(ms) });
}

const round = (x) => Math.round(x * 10) / 10;

async function main() {
  for (let i = 0; i < SAMPLES; i++) await coldQr(i);
  let linked = 0;
  for (const n of SIZES) {
    const batch = [];
    for (; linked < n; linked++) batch.push(link(linked));
    await Promise.all(batch);
    const browserPids = clients.map((c) => c.pupBrowser.process().pid);
    emit({ event: 'connected', system: 'whatsapp-web.js', sessions: n, browser_pids: browserPids, node_pid: process.pid });
    // The Rust side measures, then says go on.
    if ((await nextLine()) === null) break;
  }
}

let code = 0;
try {
  await main();
} catch (e) {
  emit({ event: 'error', error: String(e && e.stack ? e.stack : e) });
  code = 1;
} finally {
  for (const c of [...clients]) await destroy(c);
  rmSync(dataDir, { recursive: true, force: true });
  emit({ event: 'done' });
  stdinLines.close();
}
process.exit(code);
