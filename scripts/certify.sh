#!/usr/bin/env bash
# OpenFaaS's certifier (github.com/openfaas/certifier, vendored in ../shared/openfaas-certifier)
# against `snapcall serve --provider` as the provider: the images it deploys are built by
# guest-functions/images/build.sh, the certifier's Go tests offline from their vendored
# modules. scripts/test.sh runs this; docs/provider.md lists every certifier test and why
# the one not run here cannot pass.
#
#   scripts/certify.sh [--all]     --all: also run the tests known not to pass (for the record)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
CERTIFIER="${SNAPCALL_CERTIFIER:-$REPO/../shared/openfaas-certifier}"

# Every certifier test but Test_ScaleUpAndDownFromThroughPut, which needs OpenFaaS's gateway
# (its autoscaler calls scale-function under load); docs/provider.md says exactly why.
# Test_ScaleToZero is listed but skipped by the certifier itself without idler_enabled=true.
RUNS=(
    '^(Test_ProviderInfo|Test_HealthEndpoint|Test_ListNamespaces|Test_Deploy_MetaData|Test_InvokeNotFound|Test_Invoke|Test_SecretCRUD|Test_ScaleMinimum|Test_ScaleFromZeroDuringInvoke|Test_ScalingDisabledViaLabels|Test_ScaleToZero|Test_FunctionLogs)$'
)
if [ "${1:-}" = "--all" ]; then
    RUNS=('.')
fi

if [ ! -d "$CERTIFIER/tests" ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "certify.sh: the certifier is not at $CERTIFIER" >&2
        exit 1
    fi
    echo "certify.sh: the certifier is not at $CERTIFIER; skipped (set SNAPCALL_CERTIFIER)" >&2
    exit 0
fi
command -v go >/dev/null || { echo "certify.sh: go is missing (scripts/install-deps.sh installs golang-go)" >&2; exit 1; }

bash guest-functions/images/build.sh --out "$REPO/target/images"
cargo build -p httpd --locked
echo "certify.sh: building the certifier (go, vendored modules, offline)" >&2
(
    cd "$CERTIFIER"
    GOFLAGS=-mod=vendor GOPROXY=off GOCACHE="$REPO/target/go-cache" GOPATH="$REPO/target/go-path" \
        go test -c -o "$REPO/target/certifier.test" ./tests
)

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/functions"
target/debug/snapcall serve --functions "$WORK/functions" --listen 127.0.0.1:0 --provider \
    --images "$REPO/target/images" 2>"$WORK/serve.log" &
SERVER_PID=$!
ADDR=""
for _ in $(seq 600); do
    ADDR="$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$WORK/serve.log" | head -1)"
    [ -n "$ADDR" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$ADDR" ] || { echo "certify.sh: the server did not start" >&2; cat "$WORK/serve.log" >&2; exit 1; }

status=0
for run in "${RUNS[@]}"; do
    echo "certify.sh: snapcall serve --provider on $ADDR; the certifier's $run" >&2
    # HOME: the certifier's client looks for a faas-cli config there; give it an empty one.
    (cd "$WORK" && HOME="$WORK" timeout 1200 "$REPO/target/certifier.test" -test.v -test.count=1 \
        -test.run "$run" -gateway="http://$ADDR/") || status=$?
done
if [ "$status" != 0 ]; then
    echo "certify.sh: the certifier failed (exit $status); the server's log:" >&2
    tail -50 "$WORK/serve.log" >&2
fi
exit "$status"
