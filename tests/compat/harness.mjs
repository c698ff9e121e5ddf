// Shared by the compatibility tests: start a simulator for one WhatsApp Web build, talk to its
// control API, make whatsapp-web.js clients that load it. Every wait has a deadline.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import wwebjs from 'whatsapp-web.js';

const { Client, LocalAuth } = wwebjs;

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.WA_OUTBOX_BIN || path.resolve(here, '../../target/debug/wa-outbox');
export const CHROMIUM = process.env.WA_CHROMIUM || '/usr/bin/chromium';

// The early-2026 page 1.34.7 was written against (avoylenko/wwebjs-api#93 pinned it); the sim's
// default is the newest page modelled (src/sim/version.rs).
export const EARLY_2026_WA_VERSION = '2.3000.1031490220';
export const NEWEST_WA_VERSION = '2.3000.1049833609';

// The flags a CI job needs (see docs/simulator.md): --no-sandbox only because CI runs as root;
// LocalNetworkAccessChecks would block the page (served as https://web.whatsapp.com/) from
// reaching the simulator on loopback.
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-features=LocalNetworkAccessChecks',
  '--disable-dev-shm-usage',
  '--disable-gpu',
  '--no-first-run',
  '--disable-extensions',
];

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

export function once(emitter, event, ms, predicate = () => true) {
  return withTimeout(
    new Promise((resolve) => {
      const handler = (...args) => {
        if (!predicate(...args)) return;
        emitter.off(event, handler);
        resolve(args);
      };
      emitter.on(event, handler);
    }),
    ms,
    `event ${event}`,
  );
}

export async function waitFor(what, ms, check) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/// A simulator modelling `version` (null: the binary's default, the newest page), with its
/// control API and a factory for whatsapp-web.js clients that load it.
export async function startSim(version) {
  const args = ['sim', '--listen', '127.0.0.1:0', '--sync-delay-ms', '300', '--ack-step-ms', '150'];
  if (version) args.push('--wa-version', version);
  const child = spawn(BIN, args, {
    stdio: ['ignore', 'pipe', 'inherit'],
    // Killed by the kernel when this node process ends, however it ends (a test run leaves
    // nothing running: WA_OUTBOX_DIE_WITH_PARENT, src/child.rs).
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn', WA_OUTBOX_DIE_WITH_PARENT: '1' },
  });
  const lines = createInterface({ input: child.stdout });
  const first = await withTimeout(
    new Promise((resolve, reject) => {
      lines.once('line', resolve);
      child.once('exit', (code) => reject(new Error(`sim exited early with ${code}`)));
      child.once('error', reject);
    }),
    30000,
    'the sim to print its address',
  );
  const m = /^sim listening on (http:\/\/\S+)$/.exec(first);
  assert.ok(m, `unexpected first line: ${first}`);
  const base = m[1];
  const dataDir = mkdtempSync(path.join(tmpdir(), 'wa-sim-compat-'));
  const clients = [];

  async function api(method, p, body) {
    const res = await withTimeout(
      fetch(base + p, {
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

  function newClient(extra = {}) {
    const client = new Client({
      authStrategy: new LocalAuth({ dataPath: dataDir, clientId: extra.clientId }),
      puppeteer: { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS },
      webVersionCache: { type: 'remote', remotePath: base + '/' },
      authTimeoutMs: 60000,
      ...extra.options,
    });
    clients.push(client);
    return client;
  }

  async function stop() {
    for (const c of clients) await withTimeout(c.destroy(), 30000, 'client.destroy').catch(() => {});
    child.kill('SIGTERM');
    rmSync(dataDir, { recursive: true, force: true });
  }

  return { child, base, api, newClient, stop };
}
