#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is needed, builds the guest
# functions, runs every Rust test (unit and real-KVM integration), the native checks of the
# guest bundles, the README's quick start, and the compat measure's CI subset. `.ci/run` calls
# exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" = 0 ]; then
    bash scripts/install-deps.sh
fi
[ -w /dev/kvm ] || { echo "test.sh: /dev/kvm is not usable by this user; snapcall's tests run real VMs" >&2; exit 1; }

bash guest-functions/build.sh
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast
bash scripts/validate-deploy.sh
bash scripts/certify.sh
bash guest-functions/test-native.sh
# The README's quick start, exactly as written (a Python function with a PyPI package, a C
# function: new, build, serve, invoke, logs, list, describe); needs pip's package index.
bash scripts/quickstart.sh
# The compat measure's fast subset (docs/compat.md): CPython regression tests natively and in
# VMs; fails when fewer than 97 % of the natively passing ones pass in the VM. Needs root.
if [ "$(id -u)" = 0 ]; then
    cargo run -p benches --bin compat --locked -- --ci
else
    echo "test.sh: not root: skipping the compat subset (docs/compat.md)" >&2
fi
