# Vigil developer entry points. `make test` is what CI runs (via .ci/run).
#
# Targets that later issues add (chart-lint, bench-full) appear here when they work;
# none is a placeholder.

CARGO ?= cargo
CARGO_FLAGS ?= --locked

.PHONY: all build demo test e2e lint fmt bench generate check-generated clean

all: build

## build: compile every crate and binary (debug)
build:
	$(CARGO) build $(CARGO_FLAGS) --workspace --all-targets

## demo: build and run `vigil demo` (the whole mesh on loopback; no Kubernetes, no root)
demo:
	$(CARGO) build $(CARGO_FLAGS) -q -p vigil-cli --bin vigil
	$(CARGO) run $(CARGO_FLAGS) -q -p vigil-cli --bin vigil -- demo $(DEMO_FLAGS)

## test: the full test suite: unit, integration, CLI, the demo, and (as root) the
## network-namespace e2e suite. Needs openssl, and for e2e iproute2, iptables, setpriv,
## tcpdump and tshark (.ci/run installs them). The e2e tests run the built binaries, so
## they are built first.
test:
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins
	$(CARGO) test $(CARGO_FLAGS) --workspace

## e2e: only the network-namespace end-to-end suite (root), printing its measurements
e2e:
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins
	$(CARGO) test $(CARGO_FLAGS) -p vigil-e2e -- --nocapture

## lint: formatting and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

## fmt: format the code
fmt:
	$(CARGO) fmt --all

## generate: write crds/*.yaml from the Rust CRD types
generate:
	$(CARGO) run $(CARGO_FLAGS) -q -p vigil-crds --bin crdgen -- crds

## check-generated: fail if crds/ differs from what `generate` would write
check-generated:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(CARGO) run $(CARGO_FLAGS) -q -p vigil-crds --bin crdgen -- "$$tmp" >/dev/null && \
	diff -ru -x README.md crds "$$tmp" && echo "crds/ is up to date"

## bench: criterion micro-benchmarks; prints `ratio=... target=... pass=...` lines
bench:
	$(CARGO) bench $(CARGO_FLAGS) -p vigil-benches

clean:
	$(CARGO) clean
