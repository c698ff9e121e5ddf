"""Offline validation of deploy/k8s (run through deploy/validate.sh, which installs the tools).

1. The kustomization: every listed resource exists and parses; when a kustomize binary (or
   `kubectl kustomize`) is on PATH, the base also builds, and the built stream is what gets
   validated.
2. Built-in kinds against Kubernetes' OpenAPI schemas (kubernetes-validate, strict: unknown
   fields are errors), for the oldest and newest Kubernetes versions we claim.
3. KEDA kinds against KEDA's CRD schemas (pydantic models generated from them, package
   cloudcoil-models-keda), plus a strict unknown-field walk (the models silently drop unknown
   fields, and so would the API server, so a typo like `minReplicaCont` would go unnoticed),
   plus the trigger metadata keys KEDA's postgresql scaler reads (a free-form map in the CRD).

Exit status 0 only when everything passed; every problem is printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import types
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel

# Kubernetes versions to validate against: the oldest with every field we use
# (PodDisruptionBudget.unhealthyPodEvictionPolicy is on by default from 1.27, GA in 1.31) and
# the newest schemas the package ships.
K8S_VERSIONS = ["1.31.0", "1.37.0"]
CRD_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication")}
# KEDA's postgresql scaler: metadata and authentication parameters it reads (KEDA docs,
# scalers/postgresql). Anything else is a typo it would ignore.
POSTGRES_METADATA = {
    "query", "targetQueryValue", "activationTargetQueryValue", "connectionFromEnv",
    "host", "port", "userName", "dbName", "sslmode", "passwordFromEnv",
}
POSTGRES_AUTH_PARAMS = {"connection", "host", "port", "userName", "dbName", "sslmode", "password"}

problems: list[str] = []


def problem(msg: str) -> None:
    problems.append(msg)
    print(f"FAIL {msg}")


def load_docs(path: Path) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        problem(f"{path}: {e}")
        return []
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            problem(f"{path}: a document without kind/apiVersion")
    return docs


def kustomize_build(base: Path, what: str = "the base") -> str | None:
    for cmd in (["kustomize", "build", str(base)], ["kubectl", "kustomize", str(base)]):
        if shutil.which(cmd[0]) is None:
            continue
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            problem(f"`{' '.join(cmd)}` failed: {r.stderr.strip()}")
            return None
        print(f"ok   `{' '.join(cmd[:2])}` builds {what}")
        return r.stdout
    print("note no kustomize binary (nor kubectl kustomize): checked the resource list only")
    return None


def check_references(docs: list[dict], label: str) -> None:
    """Every name one resource gives for another resolves, and every selector selects the
    runner pods: a rename in an overlay must not leave KEDA scaling a Deployment that is gone."""
    before = len(problems)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}

    def need(kind: str, name: str, who: str) -> None:
        if (kind, name) not in names:
            problem(f"{label}: {who} names {kind} {name!r}, which the build does not contain")

    runner_labels: dict = {}
    for d in docs:
        kind, name, spec = d["kind"], d["metadata"]["name"], d.get("spec", {})
        who = f"{kind} {name}"
        if kind in ("Deployment", "Job"):
            pod = spec["template"]["spec"]
            if kind == "Deployment":
                runner_labels = spec["template"]["metadata"]["labels"]
            if "serviceAccountName" in pod:
                need("ServiceAccount", pod["serviceAccountName"], who)
            for c in pod["containers"]:
                for src in c.get("envFrom", []):
                    if "configMapRef" in src:
                        need("ConfigMap", src["configMapRef"]["name"], who)
                    if "secretRef" in src:
                        need("Secret", src["secretRef"]["name"], who)
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {})
                    if "secretKeyRef" in ref:
                        need("Secret", ref["secretKeyRef"]["name"], who)
                    if "configMapKeyRef" in ref:
                        need("ConfigMap", ref["configMapKeyRef"]["name"], who)
        elif kind == "ScaledObject":
            need(spec["scaleTargetRef"].get("kind", "Deployment"), spec["scaleTargetRef"]["name"], who)
            for t in spec["triggers"]:
                if "authenticationRef" in t:
                    need(t["authenticationRef"].get("kind", "TriggerAuthentication"),
                         t["authenticationRef"]["name"], who)
        elif kind == "TriggerAuthentication":
            for ref in spec.get("secretTargetRef", []):
                need("Secret", ref["name"], who)
    for d in docs:
        spec = d.get("spec", {})
        selector = {
            "Service": spec.get("selector"),
            "PodDisruptionBudget": spec.get("selector", {}).get("matchLabels"),
            "NetworkPolicy": spec.get("podSelector", {}).get("matchLabels"),
        }.get(d["kind"])
        if selector and not all(runner_labels.get(k) == v for k, v in selector.items()):
            problem(f"{label}: {d['kind']} {d['metadata']['name']} selects {selector}, not the runner pods")
    if len(problems) == before:
        print(f"ok   {label}: every reference resolves and every selector selects the runners")


def check_overlay(base: Path) -> None:
    """Builds the overlay shown in docs/deployment.md (plus a namePrefix) on top of the base."""
    doc_path = base.parents[1] / "docs" / "deployment.md"
    if not doc_path.is_file() or shutil.which("kubectl") is None and shutil.which("kustomize") is None:
        print("note no docs/deployment.md or no kustomize: overlay example not built")
        return
    text = doc_path.read_text()
    marker = "# overlays/prod/kustomization.yaml"
    if marker not in text:
        problem("docs/deployment.md: the overlay example is gone")
        return
    block = text[text.index(marker):]
    block = block[: block.index("```")]
    overlay = yaml.safe_load(block)
    with tempfile.TemporaryDirectory() as tmp:
        prod = Path(tmp) / "overlays" / "prod"
        prod.mkdir(parents=True)
        overlay["resources"] = [os.path.relpath(base, prod)]
        overlay["namePrefix"] = "acme-"
        (prod / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
        for gen in overlay.get("secretGenerator", []):
            for env in gen.get("envs", []):
                (prod / env).write_text(
                    "DATABASE_URL=postgres://r@db/wa\nMIGRATE_DATABASE_URL=postgres://o@db/wa\n"
                    "KEDA_DATABASE_URL=postgres://k@db/wa\nWA_AUTH_KEY=k1:AAAA\n")
        built = kustomize_build(prod, "the overlay of docs/deployment.md §3")
        if built is None:
            return
        docs = [d for d in yaml.safe_load_all(built) if d]
        check_references(docs, "docs overlay + namePrefix")
        ns = {d["metadata"].get("namespace") for d in docs}
        if ns != {overlay["namespace"]}:
            problem(f"docs overlay: namespaces {ns}, expected {overlay['namespace']}")


def unknown_fields(data, ann, path: str):
    """Yields the paths of keys in `data` that the model type `ann` does not declare."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        yield from unknown_fields(data, typing.get_args(ann)[0], path)
        return
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(ann):
            if arg is not type(None):
                yield from unknown_fields(data, arg, path)
                return
        return
    if origin in (list, typing.List):
        if isinstance(data, list):
            (item,) = typing.get_args(ann) or (typing.Any,)
            for i, x in enumerate(data):
                yield from unknown_fields(x, item, f"{path}[{i}]")
        return
    if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(data, dict):
        fields = {(f.alias or name): f for name, f in ann.model_fields.items()}
        for key, value in data.items():
            if key not in fields:
                yield f"{path}.{key}"
            else:
                yield from unknown_fields(value, fields[key].annotation, f"{path}.{key}")


def check_keda(doc: dict, where: str) -> None:
    from cloudcoil.models.keda import v1alpha1 as keda

    model = {"ScaledObject": keda.ScaledObject,
             "TriggerAuthentication": keda.TriggerAuthentication}[doc["kind"]]
    try:
        model.model_validate(doc)
    except Exception as e:  # pydantic.ValidationError, printed whole
        problem(f"{where}: {doc['kind']} does not match KEDA's CRD schema:\n{e}")
        return
    before = len(problems)
    bad = list(unknown_fields(doc, model, doc["kind"]))
    if bad:
        problem(f"{where}: fields KEDA's CRD does not define: {', '.join(bad)}")
    if doc["kind"] == "ScaledObject":
        for i, trigger in enumerate(doc["spec"].get("triggers", [])):
            if trigger.get("type") != "postgresql":
                continue
            meta = trigger.get("metadata", {})
            extra = set(meta) - POSTGRES_METADATA
            if extra:
                problem(f"{where}: triggers[{i}].metadata keys the postgresql scaler ignores: {sorted(extra)}")
            for key in ("query", "targetQueryValue"):
                if not str(meta.get(key, "")).strip():
                    problem(f"{where}: triggers[{i}].metadata.{key} is required")
    else:
        for ref in doc["spec"].get("secretTargetRef", []):
            if ref.get("parameter") not in POSTGRES_AUTH_PARAMS:
                problem(f"{where}: secretTargetRef parameter {ref.get('parameter')!r} is not one the postgresql scaler reads")
    if len(problems) == before:
        print(f"ok   {where}: {doc['kind']} {doc['metadata']['name']} (KEDA 2.16.1 CRD schema, strict)")


def check_builtin(docs: list[dict], label: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "builtin.yaml"
        stream.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        for version in K8S_VERSIONS:
            r = subprocess.run(
                ["kubernetes-validate", "--strict", "--quiet", "-k", version, str(stream)],
                capture_output=True, text=True,
            )
            out = (r.stdout + r.stderr).strip()
            if r.returncode != 0 or "ERROR" in out or "WARN" in out:
                problem(f"{label} against Kubernetes {version}:\n{out}")
            else:
                print(f"ok   {label}: {len(docs)} resources valid against Kubernetes {version} (strict)")


def main() -> int:
    base = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "k8s")
    kust = base / "kustomization.yaml"
    kdocs = load_docs(kust)
    if not kdocs:
        problem(f"{kust}: missing or empty")
        return 1
    before = len(problems)
    resources = kdocs[0].get("resources", [])
    listed: list[tuple[str, dict]] = []
    for res in resources:
        path = base / res
        if not path.is_file():
            problem(f"{kust}: lists {res}, which does not exist")
            continue
        listed += [(res, d) for d in load_docs(path)]
    on_disk = {p.name for p in base.glob("*.yaml")} - {"kustomization.yaml"}
    on_disk -= set(kdocs[0].get("configurations", []))
    for stray in sorted(on_disk - set(resources)):
        problem(f"{base / stray} is not listed in kustomization.yaml (it would never be applied)")
    if len(problems) == before:
        print(f"ok   kustomization.yaml: {len(resources)} resources, all present and parsed")

    built = kustomize_build(base)
    if built is not None:
        docs = [(f"built:{d['kind']}/{d['metadata']['name']}", d)
                for d in yaml.safe_load_all(built) if d]
        if len(docs) != len(listed):
            problem(f"kustomize built {len(docs)} resources, the files hold {len(listed)}")
    else:
        docs = listed

    check_references([d for _, d in docs], "base")
    check_overlay(base)

    builtin = [d for _, d in docs if (d["apiVersion"], d["kind"]) not in CRD_KINDS]
    check_builtin(builtin, "built-in kinds")
    crds = [(w, d) for w, d in docs if (d["apiVersion"], d["kind"]) in CRD_KINDS]
    if {d["kind"] for _, d in crds} != {k for _, k in CRD_KINDS}:
        problem("expected one ScaledObject and one TriggerAuthentication")
    for where, d in crds:
        check_keda(d, where)

    if problems:
        print(f"\n{len(problems)} problem(s)")
        return 1
    print("\nall manifests valid")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
