#!/usr/bin/env bash
# The end-to-end demo on the embedded defaults: local PostgreSQL, the simulator, a runner with
# headless Chromium, a session, its QR, messages. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/setup.sh
cargo build --quiet
exec ./target/debug/wa-outbox demo "$@"
