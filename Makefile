# Vigil developer entry points. `make test` is what CI runs (via .ci/run).
#
# Targets that later issues add (generate, check-generated, demo, chart-lint, e2e,
# bench-full) appear here when they work; none is a placeholder.

CARGO ?= cargo
CARGO_FLAGS ?= --locked

.PHONY: all build test lint fmt bench clean

all: build

## build: compile every crate and binary (debug)
build:
	$(CARGO) build $(CARGO_FLAGS) --workspace --all-targets

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

## bench: criterion micro-benchmarks; prints `ratio=... target=... pass=...` lines
bench:
	$(CARGO) bench $(CARGO_FLAGS) -p vigil-benches

clean:
	$(CARGO) clean
