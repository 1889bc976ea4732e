# Vigil developer entry points. `make test` is what CI runs (via .ci/run).
#
# Targets that later issues add (chart-lint, e2e, bench-full) appear here when they
# work; none is a placeholder.

CARGO ?= cargo
CARGO_FLAGS ?= --locked

.PHONY: all build demo test lint fmt bench generate check-generated clean

all: build

## build: compile every crate and binary (debug)
build:
	$(CARGO) build $(CARGO_FLAGS) --workspace --all-targets

## demo: build and run `vigil demo` (the whole mesh on loopback; no Kubernetes, no root)
demo:
	$(CARGO) build $(CARGO_FLAGS) -q -p vigil-cli --bin vigil
	$(CARGO) run $(CARGO_FLAGS) -q -p vigil-cli --bin vigil -- demo $(DEMO_FLAGS)

## test: the full test suite (unit, integration, CLI; needs openssl on PATH)
test:
	$(CARGO) test $(CARGO_FLAGS) --workspace

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
