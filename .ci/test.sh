#!/usr/bin/env bash
# `make test`, the README's test command: prepares the machine (.ci/setup.sh: Debian
# packages as root, Go and the Kubernetes test binaries, the root-only tests skipped and
# named when not root), builds every binary (the e2e and README walkthrough tests run
# them), runs EVERY test binary even when one fails, and ends with a summary naming the
# failed test binaries and tests. Exits non-zero on any failure.
#
# Environment: CARGO, CARGO_FLAGS (from the Makefile), CARGO_TARGET_DIR, and what
# .ci/setup.sh honours (VIGIL_SKIP_K8S_TESTS, VIGIL_K8S_BIN, GOPROXY).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO=${CARGO:-cargo}
read -r -a cargo_flags <<<"${CARGO_FLAGS---locked}"

# shellcheck source=.ci/setup.sh
. .ci/setup.sh

start=$SECONDS
log=$(mktemp)
trap 'rm -f "$log"' EXIT

printf '==> building every binary\n' >&2
"$CARGO" build "${cargo_flags[@]}" --workspace --bins

# The image archives the real-node suite runs (release build of the controller and the
# proxy; nothing to do when they are current).
printf '==> make images\n' >&2
"${MAKE:-make}" --no-print-directory images CARGO="$CARGO" CARGO_FLAGS="${CARGO_FLAGS---locked}"

printf '==> cargo test --workspace --no-fail-fast\n' >&2
set +e
"$CARGO" test "${cargo_flags[@]}" --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# --- summary ------------------------------------------------------------------------------
awk -v elapsed=$((SECONDS - start)) -f .ci/test-summary.awk "$log" >&2

if [ -n "${VIGIL_SKIP_ROOT_TESTS:-}" ]; then
    printf '    skipped (not root): proxy/tests/interception.rs, e2e/tests/mesh.rs, e2e/tests/dual_stack.rs, e2e/tests/cluster, docker load in e2e/tests/images\n' >&2
fi
if [ -n "${VIGIL_SKIP_K8S_TESTS:-}" ]; then
    printf '    skipped (VIGIL_SKIP_K8S_TESTS): e2e/tests/k8s_*.rs\n' >&2
fi
if [ "$status" -ne 0 ]; then
    printf '==> make test FAILED (cargo test exit %s)\n' "$status" >&2
fi
exit "$status"
