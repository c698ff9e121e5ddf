#!/usr/bin/env bash
# Offline validation of everything under deploy/ that no test here can run for real:
#   - the Dockerfile, linted by hadolint (no Docker engine here, so it is not built);
#   - the kustomize base: resources present, built (kustomize or kubectl kustomize if on PATH),
#     built-in kinds against Kubernetes' schemas, KEDA kinds against KEDA's CRD schemas;
#   - the image's Chromium flags file against Debian's launcher.
# The SQL (KEDA query, roles) is checked against a real PostgreSQL by `cargo test --test deploy`.
# Tools come from PyPI into a venv under target/ (pinned in deploy/validate/requirements.txt).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="${WA_VALIDATE_VENV:-$root/target/deploy-validate/venv}"
reqs="$here/validate/requirements.txt"

if [ ! -x "$venv/bin/python" ] || ! cmp -s "$reqs" "$venv/.wa-requirements"; then
  echo "== installing validation tools into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reqs"
  cp "$reqs" "$venv/.wa-requirements"
fi
export PATH="$venv/bin:$PATH"

echo "== Dockerfile: hadolint $(hadolint --version | awk '{print $NF}')"
hadolint "$here/docker/Dockerfile"
echo "ok   deploy/docker/Dockerfile"

echo "== Kubernetes manifests"
python "$here/validate/validate.py" "$here/k8s"

echo "== Chromium flags file"
"$here/validate/chromium-flags.sh"

echo "deploy/validate.sh: all checks passed"
