#!/usr/bin/env bash
# Builds the real kube-apiserver, etcd and helm from their Go modules (no Docker needed)
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

key="kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}"
bin="${VIGIL_K8S_BIN:-$HOME/.cache/vigil/k8s/$key}"
mkdir -p "$bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
log() { printf '==> %s\n' "$*" >&2; }

if [ ! -x "$bin/kube-apiserver" ]; then
    log "building kube-apiserver $KUBE_VERSION (cold: ~4 minutes on 2 cores)"
    minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
    (cd "$here/kube-apiserver" && go build -trimpath -ldflags "-s -w \
        -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
        -X k8s.io/component-base/version.gitMajor=1 \
        -X k8s.io/component-base/version.gitMinor=$minor" \
        -o "$bin/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
    mv "$bin/kube-apiserver.tmp" "$bin/kube-apiserver"
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
echo "$bin"
