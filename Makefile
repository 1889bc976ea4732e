# Vigil developer entry points. `make test` is what CI runs (via .ci/run).
#
# Every target here works; none is a placeholder.

CARGO ?= cargo
CARGO_FLAGS ?= --locked

.PHONY: all build demo test test-k8s test-cluster images e2e soak fuzz lint fmt bench bench-full bench-count bench-build proxy-layout generate check-generated chart-lint clean

all: build

## build: compile every crate and binary (debug)
build:
	$(CARGO) build $(CARGO_FLAGS) --workspace --all-targets

## demo: build and run `vigil demo` (the whole mesh on loopback; no Kubernetes, no root)
demo:
	$(CARGO) build $(CARGO_FLAGS) -q -p vigil-cli --bin vigil
	$(CARGO) run $(CARGO_FLAGS) -q -p vigil-cli --bin vigil -- demo $(DEMO_FLAGS)

## test: the full suite, set-up included (.ci/test.sh): installs what is missing
## (.ci/setup.sh: Debian packages as root, Go and the Kubernetes test binaries), builds
## every binary, runs every test binary even when one fails (unit, integration, CLI, the
## demo, the README walkthroughs, the Kubernetes suite, and as root the network-namespace
## e2e suite and the real-node suite with the image archives it runs (make images); not
## root: those are skipped, and named), then prints a summary of failures.
test:
	@CARGO="$(CARGO)" CARGO_FLAGS="$(CARGO_FLAGS)" bash .ci/test.sh

# Where cargo puts its output (CARGO_TARGET_DIR or ./target): images go to $(TARGET_DIR)/images.
TARGET_DIR ?= $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

## images: OCI image archives, without a container engine or a registry:
## $(TARGET_DIR)/images/vigil-controller.tar and vigil-proxy.tar from the release binaries
## (stripped of debug info; exactly the shared libraries they load; the proxy image carries
## iptables for vigil-init), and vigil-testapp.tar for the real-node tests. They load with
## ctr/k3s ctr images import, docker load and kind load image-archive (see the README).
images:
	$(CARGO) build $(CARGO_FLAGS) --release -p vigil-controller -p vigil-proxy
	$(CARGO) build $(CARGO_FLAGS) -p vigil-testapp -p vigil-images
	$(TARGET_DIR)/debug/vigil-images build --release-dir $(TARGET_DIR)/release \
	  --testapp $(TARGET_DIR)/debug/vigil-testapp --out $(TARGET_DIR)/images

## test-cluster: only the real-node tests (root): the image archives (docker load, skopeo,
## the chart's contract), then the chart on a single-node cluster whose kubelet starts
## the pods (e2e/tests/images, e2e/tests/cluster; binaries from e2e/k8s/testbin/build.sh)
test-cluster: images
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins
	$(CARGO) test $(CARGO_FLAGS) -p vigil-e2e --test images --test cluster -- --nocapture --test-threads=1

## e2e: only the network-namespace end-to-end suite (root), printing its measurements
e2e:
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins
	$(CARGO) test $(CARGO_FLAGS) -p vigil-e2e -- --nocapture

## soak: the soak under churn (root) for VIGIL_SOAK_SECS (default 1800; `make test` runs a
## 180 s tier): HTTP/1.1, HTTP/2 and opaque TCP through real proxies in controller mode
## while SVIDs rotate, a policy flips every 2 s, a quarantine toggles every 10 s and the
## controller is killed and restarted; prints the figures (e2e/tests/soak.rs)
soak:
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins
	VIGIL_SOAK_SECS=$${VIGIL_SOAK_SECS:-1800} $(CARGO) test $(CARGO_FLAGS) -p vigil-e2e --test soak -- --nocapture

## fuzz: every cargo-fuzz target (fuzz/) for FUZZ_SECONDS each (default 60; CI runs 30),
## from the committed seeds; installs nightly and cargo-fuzz if missing (.ci/fuzz.sh)
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash .ci/fuzz.sh

## lint: formatting and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

## fmt: format the code
fmt:
	$(CARGO) fmt --all

## generate: write crds/*.yaml from the Rust CRD types, and copy them into the chart
generate:
	$(CARGO) run $(CARGO_FLAGS) -q -p vigil-crds --bin crdgen -- crds
	rm -f charts/vigil/crds/*.yaml && cp crds/*.yaml charts/vigil/crds/

## check-generated: fail if crds/ or charts/vigil/crds/ differ from what `generate` writes
check-generated:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(CARGO) run $(CARGO_FLAGS) -q -p vigil-crds --bin crdgen -- "$$tmp" >/dev/null && \
	diff -ru -x README.md crds "$$tmp" && diff -ru -x README.md charts/vigil/crds "$$tmp" && \
	echo "crds/ and charts/vigil/crds/ are up to date"

## chart-lint: helm lint the chart (default and HA values, --strict); builds helm if needed
chart-lint:
	@helm=$$(e2e/k8s/testbin/build.sh | tail -n 1)/helm && \
	$$helm lint --strict charts/vigil && $$helm lint --strict charts/vigil -f charts/vigil/values-ha.yaml

## test-k8s: only the Kubernetes tests (real kube-apiserver + etcd + helm, built by
## e2e/k8s/testbin/build.sh on first use; `make test` runs them too)
test-k8s:
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins
	$(CARGO) test $(CARGO_FLAGS) -p vigil-e2e --test k8s_crds --test k8s_chart --test k8s_helm --test k8s_mesh --test k8s_ha --test k8s_cli --test k8s_check

## bench: the quick tier (well under 10 minutes on 2 cores): installs the baselines
## (benches/baselines/install.sh: HAProxy, nginx, Envoy), builds the release binaries, runs
## the criterion micro-benchmarks (B8-B11) and the side-by-side harness (B1-B7, B12), and
## prints `ratio=... target=... pass=...` per target. Report and JSON in
## <target dir>/bench-results/ (report.md, latency.svg, run-*.json, B*.jsonl).
bench: bench-build
	$(CARGO) bench $(CARGO_FLAGS) -p vigil-benches
	$(CARGO) run $(CARGO_FLAGS) --release -q -p vigil-benches --bin vigil-bench

## bench-full: the full tier (5 rounds, longer runs, 10k connections for B8)
bench-full: bench-build
	VIGIL_BENCH_FULL=1 $(CARGO) bench $(CARGO_FLAGS) -p vigil-benches
	$(CARGO) run $(CARGO_FLAGS) --release -q -p vigil-benches --bin vigil-bench -- --full

## bench-count: only the counted figures (instructions and allocator calls per request
## under callgrind; repeatable, the loop to use while optimising)
bench-count: bench-build
	$(CARGO) run $(CARGO_FLAGS) --release -q -p vigil-benches --bin vigil-bench -- --count-only

## proxy-layout: rewrite proxy/layout/hot-functions.txt, the functions vigil-proxy runs
## (profiled under callgrind at startup and serving each kind of traffic), which its release
## build links together so that only code that runs is resident (B8's idle PSS). Commit the
## result; regenerate after changing the proxy's startup or request path.
proxy-layout: bench-build
	$(CARGO) run $(CARGO_FLAGS) --release -q -p vigil-benches --bin vigil-bench -- layout

bench-build:
	bash benches/baselines/install.sh
	$(CARGO) build $(CARGO_FLAGS) --release -p vigil-proxy --bin vigil-proxy -p vigil-benches --bin vigil-bench

clean:
	$(CARGO) clean
