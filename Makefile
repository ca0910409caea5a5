# vminitd — the two commands of the quick start are `make run` and `make test`.
# Both install what is missing first (scripts/setup.sh).

MUSL_TARGET := x86_64-unknown-linux-musl
BUILD       := build
VMINITD     := target/$(MUSL_TARGET)/release/vminitd
VMSHIM      := target/release/vmshim
CMD         ?= sh -c 'echo "hello from $$(uname -n), pid $$$$"; cat /proc/1/comm'

export VMINITD_BIN := $(CURDIR)/$(VMINITD)
export VMSHIM_BIN  := $(CURDIR)/$(VMSHIM)

.PHONY: all setup build vminitd vmshim run test unit-test agent-test clean

all: build

setup:
	@scripts/setup.sh

# The static PID 1, and the host CLI.
vminitd: setup
	cargo build --release --locked --target $(MUSL_TARGET) -p vminitd

vmshim: setup
	cargo build --release --locked -p host-shim

build: vminitd vmshim

# Until the micro-VM path lands, `make run` starts vminitd as PID 1 of a fresh
# PID + mount namespace and runs a command in it through vmshim.
run: build
	@scripts/run-namespaced.sh $(CMD)

test: build
	cargo test --locked --workspace --no-fail-fast

clean:
	cargo clean
	rm -rf $(BUILD)
