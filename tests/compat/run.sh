#!/usr/bin/env bash
# Runs the whatsapp-web.js compatibility test against the simulator binary.
# Needs node ≥ 20 and Chromium at /usr/bin/chromium (or WA_CHROMIUM); builds nothing itself:
# point WA_OUTBOX_BIN at a built wa-outbox (default ../../target/debug/wa-outbox).
set -euo pipefail
cd "$(dirname "$0")"

# npm ci only when the lock file changed since the last install (it wipes node_modules).
stamp=node_modules/.lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund
  echo "$want" > "$stamp"
fi

# The early-2026 page: everything works. The newest page: the breakage public reports describe.
exec node --test --test-concurrency=1 --test-reporter=spec wwebjs.test.mjs wwebjs-newest.test.mjs
