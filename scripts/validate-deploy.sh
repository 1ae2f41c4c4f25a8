#!/usr/bin/env bash
# Validates the Kubernetes manifests under deploy/ offline: every resource against the
# Kubernetes schemas with kubernetes-validate --strict (unknown fields are errors), the
# kustomization's files exist, and the seccomp profile is JSON of the runtime's shape.
# kubernetes-validate comes from PyPI into a venv under target/ (pinned below).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VERSION=1.37.0
VENV=target/k8s-validate-venv
if [ ! -x "$VENV/bin/kubernetes-validate" ] || ! "$VENV/bin/pip" show kubernetes-validate 2>/dev/null | grep -q "^Version: $VERSION$"; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VERSION"
fi
RESOURCES=(deploy/namespace.yaml deploy/seccomp-installer.yaml deploy/daemonset.yaml deploy/service.yaml)
"$VENV/bin/kubernetes-validate" --strict "${RESOURCES[@]}"
"$VENV/bin/python" - "${RESOURCES[@]}" <<'PY'
import json, sys, yaml
kust = yaml.safe_load(open("deploy/kustomization.yaml"))
listed = ["deploy/" + r for r in kust["resources"]]
assert sorted(listed) == sorted(sys.argv[1:]), f"kustomization resources {listed} != validated {sys.argv[1:]}"
for gen in kust.get("configMapGenerator", []):
    for f in gen["files"]:
        open("deploy/" + f.split("=", 1)[-1]).close()
profile = json.load(open("deploy/seccomp/snapcall.json"))
assert profile["defaultAction"] in ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"), profile["defaultAction"]
denied = {n for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ERRNO" for n in rule["names"]}
for needed in ("io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "ioctl", "mmap"):
    assert needed not in denied, f"the profile denies {needed}, which snapcall needs"
ds = yaml.safe_load(open("deploy/daemonset.yaml"))
c = ds["spec"]["template"]["spec"]["containers"][0]
assert c["securityContext"]["seccompProfile"] == {"type": "Localhost", "localhostProfile": "profiles/snapcall.json"}
assert c["readinessProbe"]["httpGet"]["path"] == "/healthz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
print("validate-deploy.sh: kustomization, seccomp profile and probes ok")
PY
