#!/usr/bin/env bash
# Checks the image's Chromium flags file (deploy/docker/chromium.d/wa-outbox-container) against
# this machine's Debian launcher, /usr/bin/chromium:
#  1. the launcher picks the file up and passes --no-sandbox to the browser;
#  2. through it, Chromium starts headless as uid 10001 (the image's user) with no_new_privs
#     (what allowPrivilegeEscalation: false sets) and renders a page.
# What is not reproduced here: that Chromium's own sandbox fails without the flag inside a
# container under the RuntimeDefault seccomp profile (it blocks the user namespaces the sandbox
# needs). This host allows them, so Chromium would start here either way.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
flags="$here/../docker/chromium.d/wa-outbox-container"
launcher=/usr/bin/chromium

if [ ! -r "$launcher" ] || ! grep -q '/etc/chromium.d/' "$launcher"; then
  echo "skip Debian's chromium launcher is not installed here"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
  echo "skip needs root and setpriv to start Chromium as uid 10001"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/chromium.d" "$work/home"
cp "$flags" "$work/chromium.d/"
chown -R 10001:10001 "$work/home"
chmod 755 "$work"
# The launcher with its config folder moved to ours; the rest is Debian's script as is.
sed "s#/etc/chromium.d/#$work/chromium.d/#" "$launcher" > "$work/chromium"
# A second copy that prints the browser's command line instead of running it.
sed -e "s#/etc/chromium.d/#$work/chromium.d/#" -e 's#^\( *\)exec \$LIBDIR/\$APPNAME#\1exec echo#' \
  "$launcher" > "$work/chromium-args"
chmod 755 "$work/chromium" "$work/chromium-args"
if ! grep -q 'exec echo' "$work/chromium-args"; then
  echo "FAIL the launcher's exec line changed; update this check"
  exit 1
fi

args="$("$work/chromium-args" --headless)"
case " $args " in
  *" --no-sandbox "*) echo "ok   the launcher passes --no-sandbox from the flags file" ;;
  *) echo "FAIL the launcher did not pass --no-sandbox: $args"; exit 1 ;;
esac

out="$(timeout 60 setpriv --reuid=10001 --regid=10001 --clear-groups --no-new-privs \
  env HOME="$work/home" "$work/chromium" --headless --disable-gpu --no-first-run \
  --disable-background-networking --disable-dev-shm-usage --user-data-dir="$work/home/profile" \
  --dump-dom 'data:text/html,<p>wa-outbox</p>' 2>/dev/null || true)"
case "$out" in
  *"<p>wa-outbox</p>"*) echo "ok   Chromium renders a page as uid 10001 with no_new_privs" ;;
  *) echo "FAIL Chromium did not render as uid 10001: $out"; exit 1 ;;
esac
