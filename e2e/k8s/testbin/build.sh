#!/usr/bin/env bash
# Builds the real Kubernetes commands (kube-apiserver, and for the real-node tests kubelet,
# kube-controller-manager, kube-scheduler, kube-proxy, kubectl), etcd and helm from their Go modules (no Docker needed)
# into a cache outside the checkout, keyed by version; does nothing when they are there.
# Prints the bin directory on stdout (the last line). See ../../../README.md ("Kubernetes
# tests") and the wrapper go.mod files next to this script.
#
#   e2e/k8s/testbin/build.sh            # build what is missing, print the bin dir
#
# Versions are pinned here and in the wrapper go.mod files; bump both together.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

KUBE_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.21.4
COREDNS_VERSION=v1.14.7

key="kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_coredns-${COREDNS_VERSION}"
bin="${VIGIL_K8S_BIN:-$HOME/.cache/vigil/k8s/$key}"
mkdir -p "$bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
log() { printf '==> %s\n' "$*" >&2; }

# Every Kubernetes command comes from one wrapper module (kubernetes/go.mod), so one `go
# build` compiles the shared packages once. The API-server tests need kube-apiserver; the
# real-node tests (e2e/tests/cluster.rs) need the rest.
kube_cmds=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl)
missing=()
for c in "${kube_cmds[@]}"; do [ -x "$bin/$c" ] || missing+=("$c"); done
if [ "${#missing[@]}" -gt 0 ]; then
    log "building ${missing[*]} $KUBE_VERSION (cold: ~4 minutes for kube-apiserver, ~8 more for the rest, on 2 cores)"
    minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
    tmp="$bin/.build.$$"
    mkdir -p "$tmp"
    pkgs=()
    for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    (cd "$here/kubernetes" && go build -trimpath -ldflags "-s -w \
        -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
        -X k8s.io/component-base/version.gitMajor=1 \
        -X k8s.io/component-base/version.gitMinor=$minor \
        -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION \
        -X k8s.io/client-go/pkg/version.gitMajor=1 \
        -X k8s.io/client-go/pkg/version.gitMinor=$minor" \
        -o "$tmp/" "${pkgs[@]}")
    for c in "${missing[@]}"; do mv "$tmp/$c" "$bin/$c"; done
    rmdir "$tmp"
fi
if [ ! -x "$bin/etcd" ]; then
    log "building etcd $ETCD_VERSION"
    (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3)
    mv "$bin/etcd.tmp" "$bin/etcd"
fi
if [ ! -x "$bin/helm" ]; then
    log "building helm $HELM_VERSION"
    GOBIN="$bin" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
# The real-node tests: cluster DNS (pods reach the controller as
# vigil-controller.vigil-system.svc, as in any cluster), and the pod sandbox ("pause")
# built from the same Kubernetes release's own C source (static, so its image needs nothing).
if [ ! -x "$bin/coredns" ]; then
    log "building coredns $COREDNS_VERSION"
    GOBIN="$bin" go install "github.com/coredns/coredns@$COREDNS_VERSION"
fi
if [ ! -x "$bin/pause" ]; then
    log "building pause from k8s.io/kubernetes@$KUBE_VERSION build/pause/linux/pause.c"
    src=$(cd "$here/kubernetes" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    ${CC:-cc} -Os -static -Wall -Werror -DVERSION="$KUBE_VERSION" -o "$bin/pause.tmp" "$src/build/pause/linux/pause.c"
    mv "$bin/pause.tmp" "$bin/pause"
fi
echo "$bin"
