# Prepares a machine for the test suite. Sourced (not run) by .ci/test.sh (`make test`) and
# .ci/run (CI), so what it exports reaches cargo:
#   PATH                    + Go (installed when missing) and the Rust toolchain
#   VIGIL_K8S_BIN           the Kubernetes test binaries (kube-apiserver, etcd, helm)
#   VIGIL_H2SPEC            the h2spec binary (HTTP/2 conformance)
#   VIGIL_SKIP_ROOT_TESTS=1 when not root (said, with the tests it skips)
#   VIGIL_TEST_SETUP_DONE=1 so a second `source` (make test inside .ci/run) is a no-op
#
# Idempotent: with everything present it installs nothing and takes a second or two.
# As root it installs the missing Debian packages with apt-get; as a normal user it says
# what is missing, stops if the suite cannot run without it, and otherwise says which
# tests are skipped and why.
#
# Honoured: VIGIL_SKIP_K8S_TESTS=1 (do not build the Kubernetes binaries; their tests
# skip), VIGIL_K8S_BIN (use binaries from there), GOPROXY (where Go comes from).

# shellcheck shell=bash
if [ "${VIGIL_TEST_SETUP_DONE:-}" = 1 ]; then
    return 0 2>/dev/null || exit 0
fi

# Callers run with `set -euo pipefail`: pipelines below end in `grep >/dev/null`, not
# `grep -q`, whose early exit could fail the pipeline with SIGPIPE.
setup_log() { printf '==> %s\n' "$*" >&2; }
setup_note() { printf '    %s\n' "$*" >&2; }

# --- system packages (Debian) ---------------------------------------------------------
# ONE line per package: `pkg PACKAGE PROBE SCOPE  # why`. PROBE is a command on PATH or
# an absolute path the package installs; SCOPE says who needs it:
#   build  the build and every test run     root  only tests that run as root
#   tests  the tests that run as any user   k8s   the Kubernetes suite (e2e/tests/k8s_*)
# As root, every missing package is installed; as a normal user, a missing `build`,
# `tests` or `k8s` package stops the run with the install command, a `root` one is noted.
setup_missing=()
setup_missing_scope=()
pkg() {
    local package=$1 probe=$2 scope=$3
    case $probe in
        /*) [ -e "$probe" ] && return 0 ;;
        *) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" command -v "$probe" >/dev/null 2>&1 && return 0 ;;
    esac
    setup_missing+=("$package")
    setup_missing_scope+=("$scope")
}
pkg gcc             cc         build   # aws-lc-sys compiles its C sources
pkg libc6-dev       /usr/include/stdio.h build # the C library headers for the above
pkg make            make       build   # the Makefile
pkg git             git        build   # cargo fetching git sources; cloning
pkg curl            curl       build   # rustup, Go from the module proxy; README walkthroughs
pkg ca-certificates /etc/ssl/certs/ca-certificates.crt build # HTTPS for the above
pkg openssl         openssl    tests   # issued certificates are checked with an independent implementation
pkg python3         python3    tests   # the README walkthroughs' demo app (http.server); unzips Go
pkg iproute2        ip         root    # network namespaces (e2e suite); also gives the README walkthrough test a private loopback
pkg util-linux      setpriv    tests   # setpriv: e2e proxies as uid 1337, k8s tests' --pdeathsig; unshare: walkthrough test
pkg iptables        iptables   root    # interception rules (proxy interception test, e2e suite)
pkg tcpdump         tcpdump    root    # e2e: captures what crosses the bridge
pkg tshark          tshark     root    # e2e: reads the capture (TLS 1.3, ALPN, no plaintext)
pkg valgrind        valgrind   tests   # benches: the harness counts instructions per request under callgrind (and its test does)
pkg binutils        strip      build   # make images: strip the binaries' debug info
pkg skopeo          skopeo     tests   # e2e/tests/images: reads the image archives independently
pkg containerd      containerd root    # e2e/tests/cluster: the real node's container runtime (and ctr)
pkg runc            runc       root    # e2e/tests/cluster: the OCI runtime containerd runs
pkg containernetworking-plugins /usr/lib/cni/bridge root # e2e/tests/cluster: the pod network (bridge, host-local, loopback, portmap)
pkg conntrack       conntrack  root    # e2e/tests/cluster: kube-proxy flushes conntrack entries with it
pkg docker.io       dockerd    root    # e2e/tests/images: docker load of the archives (the test starts its own daemon)

if [ "${#setup_missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        setup_log "installing: ${setup_missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${setup_missing[@]}" >/dev/null
    else
        setup_fatal=()
        setup_root_only=()
        for i in "${!setup_missing[@]}"; do
            case ${setup_missing_scope[$i]} in
                build | tests) setup_fatal+=("${setup_missing[$i]}") ;;
                k8s) [ -n "${VIGIL_SKIP_K8S_TESTS:-}" ] || setup_fatal+=("${setup_missing[$i]}") ;;
                root) setup_root_only+=("${setup_missing[$i]}") ;;
            esac
        done
        if [ "${#setup_root_only[@]}" -gt 0 ]; then
            setup_log "not installed: ${setup_root_only[*]} (only the root-only tests need them)"
        fi
        if [ "${#setup_fatal[@]}" -gt 0 ]; then
            setup_log "missing: ${setup_fatal[*]}; the test suite needs them (why: the list in .ci/setup.sh)"
            setup_note "install them (sudo apt-get install ${setup_fatal[*]}), or run make test as root, which does"
            return 1 2>/dev/null || exit 1
        fi
    fi
fi
unset -f pkg

# --- who runs the tests -----------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    export VIGIL_SKIP_ROOT_TESTS=1
    setup_log "not root: VIGIL_SKIP_ROOT_TESTS=1 — these tests are skipped (they need network namespaces and iptables):"
    setup_note "proxy/tests/interception.rs  transparent interception with real iptables rules"
    setup_note "e2e/tests/mesh.rs            the network-namespace end-to-end suite (wire capture, rotation, controller loss)"
    setup_note "e2e/tests/cluster            the real-node suite (kubelet, containerd, kube-proxy in a network namespace)"
    setup_note "e2e/tests/images             docker load of the image archives (the archives' contract is checked as any user)"
    setup_note "run make test as root to include them"
fi

# --- Rust toolchain -----------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    setup_log "installing rustup + the stable toolchain into $HOME/.cargo"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if command -v rustup >/dev/null 2>&1; then
    for c in clippy rustfmt; do # make lint
        rustup component list --installed 2>/dev/null | grep "^$c" >/dev/null || rustup component add "$c"
    done
fi

# --- Go and the Kubernetes test binaries ------------------------------------------------
# The Kubernetes tests (e2e/tests/k8s_*.rs) run a real kube-apiserver, etcd and helm, and
# the real-node tests (e2e/tests/cluster) also kubelet, kube-controller-manager,
# kube-scheduler, kube-proxy, CoreDNS and pause, all built from their Go modules (pause from
# upstream's C source) by e2e/k8s/testbin/build.sh into $HOME/.cache/vigil/k8s/<versions>/
# (cold, with empty Go caches: ~12-15 minutes on 2 cores; afterwards nothing to do). A
# machine without Go >= 1.26 gets the toolchain from the Go module proxy (the same zip
# `GOTOOLCHAIN=auto` would use) into $HOME/.cache/vigil/go-<version>.
SETUP_GO_VERSION=1.26.8
setup_go() {
    if command -v go >/dev/null 2>&1 && go version | grep -E 'go1\.(2[6-9]|[3-9][0-9])' >/dev/null; then
        return 0
    fi
    local godir="$HOME/.cache/vigil/go-$SETUP_GO_VERSION"
    if [ ! -x "$godir/bin/go" ]; then
        setup_log "installing Go $SETUP_GO_VERSION from the module proxy into $godir"
        local proxy="${GOPROXY:-https://proxy.golang.org}"
        proxy="${proxy%%,*}"
        local tmp
        tmp=$(mktemp -d)
        curl -sSfL "$proxy/golang.org/toolchain/@v/v0.0.1-go$SETUP_GO_VERSION.linux-amd64.zip" -o "$tmp/go.zip" || {
            rm -rf "$tmp"
            return 1
        }
        python3 -c 'import sys,zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$tmp/go.zip" "$tmp"
        mkdir -p "$(dirname "$godir")"
        mv "$tmp/golang.org/toolchain@v0.0.1-go$SETUP_GO_VERSION.linux-amd64" "$godir"
        chmod +x "$godir"/bin/* "$godir"/pkg/tool/*/* 2>/dev/null || true
        rm -rf "$tmp"
    fi
    export PATH="$godir/bin:$PATH"
}
if [ -n "${VIGIL_SKIP_K8S_TESTS:-}" ]; then
    setup_log "VIGIL_SKIP_K8S_TESTS is set: the Kubernetes suite (e2e/tests/k8s_*.rs) is skipped"
elif [ -n "${VIGIL_K8S_BIN:-}" ] && [ -x "$VIGIL_K8S_BIN/kube-apiserver" ]; then
    setup_log "Kubernetes test binaries: $VIGIL_K8S_BIN"
else
    if ! setup_go; then
        setup_log "cannot get Go >= 1.26 (from ${GOPROXY:-https://proxy.golang.org}): the Kubernetes suite needs it to build kube-apiserver, etcd and helm"
        setup_note "set VIGIL_SKIP_K8S_TESTS=1 to skip the Kubernetes suite knowingly"
        return 1 2>/dev/null || exit 1
    fi
    setup_log "Kubernetes test binaries ($(go version | cut -d' ' -f3); built once, ~5-7 minutes on 2 cores, then cached)"
    if ! VIGIL_K8S_BIN=$(bash e2e/k8s/testbin/build.sh | tail -n 1) || [ ! -x "$VIGIL_K8S_BIN/kube-apiserver" ]; then
        setup_log "building the Kubernetes test binaries failed (see above)"
        setup_note "set VIGIL_SKIP_K8S_TESTS=1 to skip the Kubernetes suite knowingly"
        return 1 2>/dev/null || exit 1
    fi
    export VIGIL_K8S_BIN
    setup_note "$VIGIL_K8S_BIN"
fi
# h2spec (HTTP/2 conformance; proxy/tests/h2spec.rs), built from its pinned Go module by
# e2e/h2spec/build.sh into $HOME/.cache/vigil/h2spec-<version>/ (a few seconds with warm
# Go caches).
if [ -z "${VIGIL_H2SPEC:-}" ] || [ ! -x "${VIGIL_H2SPEC:-}" ]; then
    if setup_go && VIGIL_H2SPEC=$(bash e2e/h2spec/build.sh | tail -n 1) && [ -x "$VIGIL_H2SPEC" ]; then
        export VIGIL_H2SPEC
        setup_log "h2spec: $VIGIL_H2SPEC"
    else
        setup_log "building h2spec failed (see above); proxy/tests/h2spec.rs will fail"
        unset VIGIL_H2SPEC
    fi
fi
unset -f setup_go

export VIGIL_TEST_SETUP_DONE=1
