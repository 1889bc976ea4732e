#!/usr/bin/env bash
# Builds h2spec (HTTP/2 conformance, github.com/summerwind/h2spec v2.2.1, the newest
# version the Go module proxy serves) from this module's pinned go.mod/go.sum into
# $HOME/.cache/vigil/h2spec-<version>/h2spec, once; prints that path on the last line.
# .ci/setup.sh runs it and exports VIGIL_H2SPEC for proxy/tests/h2spec.rs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
version=$(sed -n 's/^require github.com\/summerwind\/h2spec \(v[^ ]*\).*/\1/p' go.mod)
out="$HOME/.cache/vigil/h2spec-${version%%+*}"
if [ ! -x "$out/h2spec" ]; then
    mkdir -p "$out"
    GOFLAGS=-mod=readonly go build -trimpath -ldflags '-s -w' -o "$out/h2spec.tmp" github.com/summerwind/h2spec/cmd/h2spec
    mv "$out/h2spec.tmp" "$out/h2spec"
fi
echo "$out/h2spec"
