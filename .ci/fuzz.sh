#!/usr/bin/env bash
# `make fuzz`: runs every cargo-fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each
# (default 60; CI runs 30 after `make test`). Installs what a fresh machine lacks: the
# nightly toolchain (rustup) and cargo-fuzz (pinned, cached under ~/.cache/vigil keyed by
# its version); the fuzz build is cached under ~/.cache/vigil keyed by the nightly rustc.
#
# Each run starts from the committed seeds (fuzz/seeds/<target>) plus a scratch corpus,
# so the repository is never written. A crash fails the run and prints the target's
# output, the reproducer (path, hex and base64) and the command that replays it.
#
# Built without a sanitizer (-s none: the workspace forbids `unsafe`, so what libFuzzer
# can find is panics, overflows — debug assertions are on — and broken properties) and
# with debug assertions.
#
# Environment: FUZZ_SECONDS, FUZZ_TARGETS (space-separated; default all).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_FUZZ_VERSION=0.13.2
secs=${FUZZ_SECONDS:-60}

if ! rustup run nightly rustc -V >/dev/null 2>&1; then
    printf '==> installing the nightly toolchain (cargo fuzz needs it)\n' >&2
    rustup toolchain install nightly --profile minimal
fi
fuzz_root="$HOME/.cache/vigil/cargo-fuzz-$CARGO_FUZZ_VERSION"
if [ ! -x "$fuzz_root/bin/cargo-fuzz" ]; then
    printf '==> installing cargo-fuzz %s\n' "$CARGO_FUZZ_VERSION" >&2
    cargo install --locked --root "$fuzz_root" "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
export PATH="$fuzz_root/bin:$PATH"
nightly_key=$(rustup run nightly rustc -V | sha256sum | cut -c1-12)
target_dir="$HOME/.cache/vigil/fuzz-target-$nightly_key"

cd fuzz
all=$(cargo +nightly fuzz list)
targets=${FUZZ_TARGETS:-$all}
flags=(-s none --debug-assertions --target-dir "$target_dir")

printf '==> cargo fuzz build (%s)\n' "$(printf '%s ' $targets)" >&2
cargo +nightly fuzz build "${flags[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in $targets; do
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
    log="$work/$t.log"
    if cargo +nightly fuzz run "${flags[@]}" "$t" "$work/corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -artifact_prefix="$work/artifacts/$t/" \
        -print_final_stats=1 >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
        printf '    %-16s ok   %s runs in %ss, %s, corpus %s\n' "$t" "${execs:-?}" "$secs" "${cov:-cov: ?}" \
            "$(find "$work/corpus/$t" -type f | wc -l)" >&2
    else
        failed+=("$t")
        printf '    %-16s FAILED\n' "$t" >&2
        grep -A4 -E 'panicked|ERROR: libFuzzer' "$log" >&2 || true
        tail -n 30 "$log" >&2
        for f in "$work/artifacts/$t"/*; do
            [ -f "$f" ] || continue
            printf '    reproducer %s (%s bytes)\n    hex:    %s\n    base64: %s\n' \
                "$(basename "$f")" "$(wc -c <"$f")" "$(od -An -tx1 -v "$f" | tr -d ' \n' | head -c 4000)" \
                "$(base64 -w0 "$f" | head -c 4000)" >&2
            printf '    replay: save the bytes to a file F, then (cd fuzz && cargo +nightly fuzz run -s none --debug-assertions %s F)\n' "$t" >&2
        done
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    printf '==> fuzzing FAILED: %s\n' "${failed[*]}" >&2
    exit 1
fi
printf '==> fuzzing: every target ran %ss without a failure\n' "$secs" >&2
