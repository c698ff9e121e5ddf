#!/usr/bin/env bash
# The runner image, built and run with real containers (podman, no Docker engine needed):
#
#  1. installs podman, buildah, runc and mmdebstrap through apt when missing;
#  2. makes the base images deploy/docker/Dockerfile names, once (kept in podman's storage and
#     reused by name): `debian:bookworm-slim` is a bookworm root filesystem built by mmdebstrap
#     from the Debian mirror this machine's apt already uses, and the builder's
#     `rust:<RUST_VERSION>-slim-bookworm` is the same plus gcc and this machine's Rust toolchain.
#     No registry is reached; a user who pulls the real images builds the same Dockerfile;
#  3. builds the image from deploy/docker/Dockerfile as a user would (`podman build`, Docker
#     image format so the HEALTHCHECK is kept);
#  4. runs it on the host network against the PostgreSQL it is given (WA_TEST_DATABASE_URL, an
#     admin URL: a throwaway database is made and dropped) and a simulator it starts
#     (WA_OUTBOX_BIN sim): migrate through the image's entrypoint; a runner as uid 10001 with a
#     read-only root filesystem, no capabilities, no privilege escalation and writable /data and
#     /tmp (deploy/k8s/deployment.yaml's securityContext); a session to QR, scanned on the
#     simulator, connected; one message, received exactly once by the simulator; the HEALTHCHECK
#     run; `podman stop` (SIGTERM to tini, passed to wa-outbox): the runner drains, releases its
#     lease, exits 0, and none of its Chromium processes is left;
#  5. prints the image's size and its Chromium version.
#
# Any failure names the step it happened in. Every container it starts carries the label
# wa-outbox.test-run=$WA_OUTBOX_TEST_RUN and is removed on the way out, whatever happened.
#
# Environment: WA_TEST_DATABASE_URL (required), WA_OUTBOX_BIN (default target/debug/wa-outbox),
# WA_IMAGE_REBUILD_BASE=1 to remake the base images.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

BIN=${WA_OUTBOX_BIN:-$ROOT/target/debug/wa-outbox}
ADMIN_URL=${WA_TEST_DATABASE_URL:?WA_TEST_DATABASE_URL must name a PostgreSQL admin URL}
RUN_ID=${WA_OUTBOX_TEST_RUN:-image-$$}
IMAGE=localhost/wa-outbox:image-test
DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
# Local stand-ins for registry images live here between runs (podman's own storage holds them).
STATE=/var/tmp/wa-outbox-image
T0=$SECONDS

STEP="start"
step() {
  STEP=$1
  echo "-- image [$((SECONDS - T0))s]: $STEP"
}
fail() {
  echo "== image test FAILED in step '$STEP': $*" >&2
  exit 1
}

WORK=$(mktemp -d /var/tmp/wa-image-run.XXXXXX)
SIM_PID=""
DB_NAME=""
BG_PID=""
cleanup() {
  local rc=$? ids
  # A second Ctrl-C or TERM must not cut the clean-up short.
  trap - EXIT
  trap '' INT TERM
  set +e
  [[ -n $BG_PID ]] && kill "$BG_PID" 2>/dev/null && wait "$BG_PID" 2>/dev/null
  if [[ $rc -ne 0 ]]; then
    echo "== image test failed in step '$STEP' (exit $rc)" >&2
    if [[ -n ${RUNNER:-} ]] && "${PODMAN[@]}" container exists "$RUNNER" 2>/dev/null; then
      echo "-- last lines of the runner's log:" >&2
      "${PODMAN[@]}" logs --tail 40 "$RUNNER" >&2 2>&1
    fi
  fi
  if [[ ${#PODMAN[@]} -gt 0 ]]; then
    ids=$("${PODMAN[@]}" ps -aq --filter "label=wa-outbox.test-run=$RUN_ID" 2>/dev/null)
    # shellcheck disable=SC2086
    [[ -n $ids ]] && "${PODMAN[@]}" rm -f -t 0 $ids >/dev/null 2>&1
  fi
  [[ -n $SIM_PID ]] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
  [[ -n $DB_NAME ]] && psql -qAt "$ADMIN_URL" -c "drop database if exists $DB_NAME with (force)" >/dev/null 2>&1
  rm -rf "$WORK"
  exit "$rc"
}
PODMAN=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a long command in the background and waits for it, so that a signal to this script is
# handled at once (bash runs a trap only after a foreground command has ended); the clean-up
# stops the command.
long() {
  "$@" &
  BG_PID=$!
  wait "$BG_PID"
  local rc=$?
  BG_PID=""
  return "$rc"
}

# Polls `$2` (a command printing a value) until it prints `$3` (an extended regex) or $1 seconds
# pass; prints the last value seen either way and returns 1 on timeout.
wait_for() {
  local secs=$1 cmd=$2 want=$3 got="" deadline=$((SECONDS + $1))
  while :; do
    got=$(eval "$cmd" 2>/dev/null) || got=""
    if [[ $got =~ $want ]]; then
      printf '%s' "$got"
      return 0
    fi
    if [[ $SECONDS -ge $deadline ]]; then
      printf '%s' "$got"
      return 1
    fi
    sleep 0.5
  done
}

# ---- 1. tools ----------------------------------------------------------------------------------
step "install podman, buildah, runc, mmdebstrap"
missing=()
for tool in podman buildah runc mmdebstrap psql curl jq; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  pkgs=()
  for tool in "${missing[@]}"; do
    case $tool in psql) pkgs+=(postgresql-client) ;; *) pkgs+=("$tool") ;; esac
  done
  [[ $(id -u) -eq 0 ]] || fail "missing ${missing[*]} and not root to install them"
  apt-get update -qq || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null \
    || fail "apt-get install ${pkgs[*]} failed"
fi
[[ $(id -u) -eq 0 ]] || fail "run as root: rootless podman is not set up by this script"
[[ -x $BIN ]] || fail "$BIN is missing (cargo build first, or set WA_OUTBOX_BIN)"

# ---- 2. can this machine run a container? ------------------------------------------------------
# Two things these machines need that a stock podman does not do, both passed through a
# containers.conf layered on the system's (CONTAINERS_CONF):
#  - runc rather than crun: the kernel mounts cgroup v1 with a cgroup v2 hierarchy beside it that
#    holds a controller (hugetlb), and crun 1.8 refuses that ("cgroups in hybrid mode not
#    supported"), even with --cgroups=disabled;
#  - rlimits no higher than podman's own: root here lacks CAP_SYS_RESOURCE, podman asks for
#    nofile=1048576 and nproc=4194304 by default, and the runtime may not raise a limit above
#    its parent's (conmon's nproc is 32768 here, nofile the shell's hard limit).
step "configure podman (runtime, rlimits)"
nofile=$(ulimit -Hn)
[[ $nofile == unlimited || $nofile -gt 1048576 ]] && nofile=1048576
nproc=$(ulimit -Hu)
[[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768
mkdir -p "$STATE"
cat > "$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$WORK/containers.conf
PODMAN=(podman)
if ! info_err=$(podman info 2>&1 >/dev/null); then
  if [[ $info_err == *overlay* ]]; then
    # No overlay filesystem for podman here: vfs (full copies, slower, more disk), in a store of
    # its own so it never meets the overlay one.
    echo "   overlay storage is not available (${info_err##*$'\n'}): using vfs"
    PODMAN=(podman --storage-driver vfs --root /var/lib/containers/storage-vfs)
    info_err=$("${PODMAN[@]}" info 2>&1 >/dev/null) || fail "podman info failed with vfs too: $info_err"
  else
    fail "podman info failed: $info_err"
  fi
fi

step "run a container (podman run on a minimal root filesystem)"
# A root filesystem of one dynamically linked binary and its libraries: proves namespaces,
# mounts, the runtime and the storage driver before anything slow is done.
probe=$WORK/probe-rootfs
mkdir -p "$probe/proc" "$probe/sys" "$probe/dev" "$probe/etc"
for f in /usr/bin/true $(ldd /usr/bin/true | grep -o '/[^ ]*'); do
  install -D "$(realpath "$f")" "$probe$f"
done
probe_run() {
  "${PODMAN[@]}" run --rm --label "wa-outbox.test-run=$RUN_ID" --network host --user 10001:10001 \
    --read-only --cap-drop ALL --security-opt no-new-privileges --rootfs "$probe" /usr/bin/true
}
if ! probe_out=$(probe_run 2>&1); then
  echo "$probe_out" >&2
  diag=()
  [[ -e /proc/self/ns/mnt && -e /proc/self/ns/pid && -e /proc/self/ns/uts ]] \
    || diag+=("the kernel lacks mount/pid/uts namespaces")
  unshare --mount --pid --fork --uts true 2>/dev/null || diag+=("unshare --mount --pid --uts is refused here (seccomp or a missing capability)")
  grep -q cgroup /proc/mounts || diag+=("no cgroup filesystem is mounted")
  fail "podman cannot run a container on this machine: ${probe_out##*$'\n'}${diag:+ (${diag[*]})}"
fi
driver=$("${PODMAN[@]}" info --format '{{.Store.GraphDriverName}}')
echo "   podman $(podman --version | awk '{print $3}'), runc, storage driver $driver"

# ---- 3. base images ----------------------------------------------------------------------------
DOCKERFILE=deploy/docker/Dockerfile
RUST_VERSION=$(sed -n 's/^ARG RUST_VERSION=//p' "$DOCKERFILE")
builder_from=$(sed -n 's/^FROM \(rust:[^ ]*\) AS builder.*/\1/p' "$DOCKERFILE")
[[ -n $RUST_VERSION && -n $builder_from ]] || fail "cannot read ARG RUST_VERSION / FROM rust:… from $DOCKERFILE"
RUST_IMAGE=docker.io/library/${builder_from//\$\{RUST_VERSION\}/$RUST_VERSION}
host_rust=$(rustc --version | awk '{print $2}')
BUILD_ARGS=()
if [[ $host_rust != "$RUST_VERSION" && $host_rust != "$RUST_VERSION".* ]]; then
  # The stand-in must hold the toolchain its tag names: build it under the host's version instead.
  echo "   the Dockerfile names Rust $RUST_VERSION, this machine has $host_rust: building with RUST_VERSION=$host_rust"
  RUST_IMAGE=docker.io/library/${builder_from//\$\{RUST_VERSION\}/$host_rust}
  BUILD_ARGS+=(--build-arg "RUST_VERSION=$host_rust")
fi

# The host's apt source for a suite ("bookworm", "bookworm-security"), deb822 or one-line form.
mirror_for() {
  {
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$1" '
      BEGIN { RS = ""; FS = "\n" }
      { u = ""; ok = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { split($i, a, " "); u = a[2] }
          if ($i ~ /^Suites:/) { n = split($i, b, " "); for (j = 2; j <= n; j++) if (b[j] == s) ok = 1 }
        }
        if (ok && u != "") print u }'
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v s="$1" '$1 == "deb" && $3 == s { print $2 }'
  } | awk 'NR == 1' || true
}

if [[ ${WA_IMAGE_REBUILD_BASE:-0} == 1 ]]; then
  "${PODMAN[@]}" rmi -f "$RUST_IMAGE" "$DEBIAN_IMAGE" >/dev/null 2>&1 || true
fi

if "${PODMAN[@]}" image exists "$DEBIAN_IMAGE"; then
  echo "   $DEBIAN_IMAGE: cached"
else
  step "make $DEBIAN_IMAGE (mmdebstrap from this machine's apt mirror)"
  main=$(mirror_for bookworm)
  security=$(mirror_for bookworm-security)
  main=${main:-http://deb.debian.org/debian}
  security=${security:-http://deb.debian.org/debian-security}
  echo "   mirror $main, security $security"
  # Like the official slim image: no manuals, documentation (but copyrights) or translations.
  long mmdebstrap --quiet --variant=minbase --format=tar \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --aptopt='Acquire::Retries "3"' \
    bookworm "$WORK/bookworm.tar" \
    "deb $main bookworm main" "deb $main bookworm-updates main" "deb $security bookworm-security main" \
    || fail "mmdebstrap could not build a bookworm root filesystem"
  "${PODMAN[@]}" import --quiet --change 'CMD ["bash"]' \
    --change 'LABEL org.opencontainers.image.description="local stand-in for debian:bookworm-slim, made by deploy/image/test.sh"' \
    "$WORK/bookworm.tar" "$DEBIAN_IMAGE" >/dev/null || fail "podman import failed"
  rm -f "$WORK/bookworm.tar"
fi

if "${PODMAN[@]}" image exists "$RUST_IMAGE"; then
  echo "   $RUST_IMAGE: cached"
else
  step "make $RUST_IMAGE (bookworm + gcc + this machine's Rust $host_rust)"
  sysroot=$(realpath "$(rustc --print sysroot)")
  toolchain=${host_rust}-x86_64-unknown-linux-gnu
  mkdir -p "$WORK/rust/ca"
  # This machine's own certificate authorities (a TLS-inspecting egress proxy signs crates.io
  # here): without them cargo cannot fetch a crate inside the build.
  cp /usr/local/share/ca-certificates/*.crt "$WORK/rust/ca/" 2>/dev/null || true
  # As the official image: rustup's layout under /usr/local, cargo and rustc on PATH, gcc and
  # libc6-dev for build scripts that compile C (ring). Documentation is left out.
  cat > "$WORK/rust/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
COPY ca/ /usr/local/share/ca-certificates/
RUN apt-get update \\
 && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \\
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    RUST_VERSION=$host_rust
RUN mkdir -p /usr/local/rustup/toolchains/$toolchain /usr/local/cargo/bin \\
 && cp -a /host-toolchain/bin /host-toolchain/lib /host-toolchain/libexec /usr/local/rustup/toolchains/$toolchain/ \\
 && for b in cargo rustc rustdoc; do ln -s /usr/local/rustup/toolchains/$toolchain/bin/\$b /usr/local/cargo/bin/\$b; done \\
 && cargo --version && rustc --version
LABEL org.opencontainers.image.description="local stand-in for rust:$host_rust-slim-bookworm, made by deploy/image/test.sh"
EOF
  long "${PODMAN[@]}" build --quiet --pull=never --format docker --volume "$sysroot:/host-toolchain:ro" \
    -t "$RUST_IMAGE" "$WORK/rust" >/dev/null || fail "building $RUST_IMAGE failed"
fi

# ---- 4. the image ------------------------------------------------------------------------------
step "build $IMAGE from $DOCKERFILE (podman build)"
# --format docker: the OCI format has no HEALTHCHECK and podman would drop it.
# --ignorefile: podman 4.3 does not pick up <Dockerfile>.dockerignore by itself as BuildKit does.
build_start=$SECONDS
long "${PODMAN[@]}" build --pull=never --format docker "${BUILD_ARGS[@]}" \
  --ignorefile deploy/docker/Dockerfile.dockerignore -f "$DOCKERFILE" -t "$IMAGE" . \
  > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; fail "podman build failed (log above)"; }
echo "   built in $((SECONDS - build_start))s"
# Earlier builds of the tag, now untagged, would pile up run after run.
"${PODMAN[@]}" image prune -f >/dev/null 2>&1 || true

step "inspect the image"
user=$("${PODMAN[@]}" image inspect --format '{{.Config.User}}' "$IMAGE")
[[ $user == 10001:10001 ]] || fail "image user is '$user', expected 10001:10001"
health=$("${PODMAN[@]}" image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")
[[ $health == *healthz* ]] || fail "image has no HEALTHCHECK on /healthz: $health"
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
chromium_version=$("${PODMAN[@]}" run --rm --label "wa-outbox.test-run=$RUN_ID" --network none \
  --user 10001:10001 --read-only --entrypoint /usr/bin/chromium "$IMAGE" --version 2>/dev/null) \
  || fail "chromium --version failed in the image"
echo "   image size: $((size / 1000000)) MB; $chromium_version"

# ---- 5. run it ---------------------------------------------------------------------------------
step "start the simulator and a throwaway database"
"$BIN" sim --listen 127.0.0.1:0 > "$WORK/sim.out" 2> "$WORK/sim.err" &
SIM_PID=$!
SIM=$(wait_for 30 "sed -n 's/^sim listening on //p' '$WORK/sim.out'" '^http://') \
  || fail "the simulator did not start: $(cat "$WORK/sim.err")"
DB_NAME=wa_image_$(od -An -N5 -tx1 /dev/urandom | tr -d ' \n')
psql -qAt "$ADMIN_URL" -c "create database $DB_NAME" >/dev/null || fail "cannot create a database at $ADMIN_URL"
DB_URL=${ADMIN_URL%/*}/$DB_NAME
sql() { psql -qAt "$DB_URL" -c "$1"; }

# deploy/k8s/deployment.yaml's pod and container securityContext: runAsUser/runAsGroup 10001,
# fsGroup 10001, RuntimeDefault seccomp (podman's default profile), no privilege escalation,
# every capability dropped, read-only root filesystem; /data and /tmp are emptyDirs.
SECURE=(--user 10001:10001 --group-add 10001 --cap-drop ALL --security-opt no-new-privileges
  --read-only --read-only-tmpfs=false)

step "migrate through the image's entrypoint"
mkdir -p "$WORK/migrate-tmp" && chmod 1777 "$WORK/migrate-tmp"
long "${PODMAN[@]}" run --rm --label "wa-outbox.test-run=$RUN_ID" --network host "${SECURE[@]}" \
  -v "$WORK/migrate-tmp:/tmp" -e DATABASE_URL="$DB_URL" -e HOME=/tmp -e WA_DATA_DIR=/tmp/wa \
  "$IMAGE" migrate > "$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log" >&2; fail "wa-outbox migrate failed"; }
[[ $(sql "select count(*) from _sqlx_migrations where success") -gt 0 ]] || fail "no migration recorded"

step "start a runner (uid 10001, read-only root, writable /data)"
mkdir -p "$WORK/data" "$WORK/tmp"
chown 10001:10001 "$WORK/data" && chmod 0770 "$WORK/data"
chmod 1777 "$WORK/tmp"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
AUTH_KEY="k1:$(head -c 32 /dev/urandom | base64)"
RUNNER=wa-image-runner-${RUN_ID:0:8}
"${PODMAN[@]}" run -d --name "$RUNNER" --label "wa-outbox.test-run=$RUN_ID" --network host "${SECURE[@]}" \
  -v "$WORK/data:/data" -v "$WORK/tmp:/tmp" \
  -e DATABASE_URL="$DB_URL" -e WA_AUTH_KEY="$AUTH_KEY" -e WA_WEB_URL="$SIM/" \
  -e WA_HTTP_LISTEN="127.0.0.1:$PORT" -e WA_LEASE_TTL=30s -e RUST_LOG=info -e TMPDIR=/tmp \
  "$IMAGE" run > /dev/null 2> "$WORK/podman.err" \
  || { cat "$WORK/podman.err" >&2; fail "podman run of the runner failed"; }
# (Without systemd podman cannot schedule the HEALTHCHECK itself and says so on stderr; the
# check is run by hand below.)
pid1=$("${PODMAN[@]}" top "$RUNNER" pid comm | awk '$1 == 1 { print $2 }')
[[ $pid1 == tini ]] || fail "PID 1 in the container is '$pid1', not tini"
wait_for 60 "curl -fsS http://127.0.0.1:$PORT/healthz >/dev/null && echo up" '^up$' >/dev/null \
  || fail "the runner's /healthz did not answer within 60 s"

step "HEALTHCHECK"
"${PODMAN[@]}" healthcheck run "$RUNNER" 2>> "$WORK/podman.err" || fail "the image's HEALTHCHECK failed"
state=$("${PODMAN[@]}" inspect --format '{{.State.Health.Status}}' "$RUNNER")
[[ $state == healthy ]] || fail "health state is '$state' after a passing check"

step "session to QR"
SESSION=image_test
PHONE=15550001234
sql "insert into wa_session (id) values ('$SESSION')" >/dev/null
status=$(wait_for 120 "sql \"select status from wa_session where id = '$SESSION'\"" '^(qr_pending|failed)$') \
  || fail "the session did not reach qr_pending within 120 s (status '$status')"
[[ $status == qr_pending ]] || fail "the session failed: $(sql "select error_code || ': ' || error from wa_session where id = '$SESSION'")"
[[ $(sql "select qr_image like 'data:image/png;base64,%' from wa_session where id = '$SESSION'") == t ]] \
  || fail "no QR image stored"

step "scan on the simulator, session connected"
qr=$(wait_for 30 "curl -fsS '$SIM/_sim/devices' | jq -r '[.devices[] | select(.state == \"pending\") | .qr][0] // empty'" '.') \
  || fail "the simulator shows no pending device"
curl -fsS -X POST "$SIM/_sim/scan" -H 'content-type: application/json' \
  -d "$(jq -nc --arg qr "$qr" --arg phone "$PHONE" '{qr: $qr, phone: $phone, name: "image test"}')" >/dev/null \
  || fail "the simulator refused the scan"
status=$(wait_for 60 "sql \"select status from wa_session where id = '$SESSION'\"" '^(connected|failed)$') \
  || fail "the session did not connect within 60 s (status '$status')"
[[ $status == connected ]] || fail "the session failed: $(sql "select error_code || ': ' || error from wa_session where id = '$SESSION'")"

step "one message, sent once"
BODY="hello from the image $RUN_ID"
id=$(sql "insert into wa_message (session_id, recipient, body) values ('$SESSION', '15557654321', '$BODY') returning id")
status=$(wait_for 60 "sql \"select status from wa_message where id = $id\"" '^(sent|delivered|read|failed)$') \
  || fail "message $id not sent within 60 s (status '$status')"
[[ $status != failed ]] || fail "message failed: $(sql "select error_code || ': ' || error from wa_message where id = $id")"
count=$(curl -fsS "$SIM/_sim/messages?phone=$PHONE" | jq --arg b "$BODY" '[.messages[] | select(.body == $b)] | length')
[[ $count == 1 ]] || fail "the simulator received the message $count times, expected exactly once"

step "podman stop: SIGTERM through tini, the runner drains and exits 0"
chromium_pids=$("${PODMAN[@]}" top "$RUNNER" hpid args | awk 'NR > 1 && /chromium/ { print $1 }')
[[ -n $chromium_pids ]] || fail "no Chromium process in the running container"
stop_start=$SECONDS
long "${PODMAN[@]}" stop -t 90 "$RUNNER" >/dev/null 2>> "$WORK/podman.err" \
  || { cat "$WORK/podman.err" >&2; fail "podman stop failed"; }
echo "   stopped in $((SECONDS - stop_start))s"
code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$RUNNER")
[[ $code == 0 ]] || fail "the runner exited $code (137: killed after the grace period, no drain)"
"${PODMAN[@]}" logs "$RUNNER" > "$WORK/runner.log" 2>&1
grep -q '"drained"' "$WORK/runner.log" || fail "the runner's log has no 'drained'"
[[ $(sql "select count(*) from wa_runner") == 0 ]] || fail "the runner's row is still in wa_runner"
[[ -z $(sql "select runner_id from wa_session where id = '$SESSION' and runner_id is not null") ]] \
  || fail "the session's lease was not released"
[[ $(sql "select count(*) from wa_session_auth where session_id = '$SESSION'") == 1 ]] \
  || fail "the login was not saved on the way out"
left=""
for p in $chromium_pids; do
  [[ -e /proc/$p ]] && left+=" $p"
done
[[ -z $left ]] || fail "Chromium processes left after the stop:$left"

step "done"
echo "== image test passed in $((SECONDS - T0))s: $IMAGE, $((size / 1000000)) MB, $chromium_version"
