# vminitd — the two commands of the quick start are `make run` and `make test`.
# Both install what is missing first (scripts/setup.sh).

MUSL_TARGET := x86_64-unknown-linux-musl
BUILD       := build
VMINITD     := target/$(MUSL_TARGET)/release/vminitd
VMSHIM      := target/release/vmshim
SHIM        := target/release/containerd-shim-vminitd-v2
MKINITRAMFS := target/release/mkinitramfs
KERNEL      := $(BUILD)/vmlinux
INITRAMFS   := $(BUILD)/initramfs.cpio
CMD         ?= sh -c 'echo "hello from $$(uname -sr) in a micro-VM; PID 1 is $$(cat /proc/1/comm)"'

export VMINITD_BIN := $(CURDIR)/$(VMINITD)
export VMSHIM_BIN  := $(CURDIR)/$(VMSHIM)

.PHONY: all setup build vminitd host-tools kernel initramfs vm-assets run run-namespaced lint test fuzz bench install uninstall clean

all: build vm-assets

setup:
	@scripts/setup.sh

# The static PID 1 (and the static probe that the VM tests run in a guest),
# and the host tools.
vminitd: setup
	cargo build --release --locked --target $(MUSL_TARGET) -p vminitd -p vsock-probe

host-tools: setup
	cargo build --release --locked -p host-shim -p initramfs -p vminitd-shim

build: vminitd host-tools

# The guest kernel: cached by kernel/build.sh (a second run is instant).
kernel: setup
	kernel/build.sh --out $(BUILD)

# vminitd as /init; byte-identical for the same vminitd.
initramfs: vminitd host-tools
	$(MKINITRAMFS) --init $(VMINITD) -o $(INITRAMFS)

vm-assets: kernel initramfs

# Boots a micro-VM, runs CMD in it and prints the boot profile.
run: build vm-assets
	$(VMSHIM) run --profile -- $(CMD)

# The agent as PID 1 of a PID + mount namespace on the host, no VM.
run-namespaced: build
	@scripts/run-namespaced.sh $(CMD)

# The layout rustfmt.toml gives, then clippy with the workspace lints
# (Cargo.toml), every warning an error.
lint: setup
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

test: build vm-assets lint
	PROPTEST_CASES=64 cargo test --locked --workspace --no-fail-fast

# The property tests of every parser that faces untrusted bytes (the tests
# named prop_), each with FUZZ_CASES cases instead of make test's 64.
FUZZ_CASES ?= 20000
fuzz: setup
	PROPTEST_CASES=$(FUZZ_CASES) cargo test --locked --workspace --tests --no-fail-fast prop_

# Boot time against a busybox-init baseline, TCP throughput against the
# host's loopback, OCI container launch against crun and runc, host
# files through virtio-fs against the guest's own root, `podman run`
# with vminitd-runtime against runc, and a pod's start through containerd's
# CRI service with the vminitd handler against runc's (and the shims'
# memory per pod), and a VM's memory (freed memory back on the host, an
# idle VM's footprint, a balloon resize), each baseline measured in the
# same run.
# The benches run the release binaries that `build` made, whatever a test
# run built since.
bench: export VMSHIM_BIN = $(CURDIR)/target/release/vmshim
bench: export VMINITD_SHIM_BIN = $(CURDIR)/target/release/containerd-shim-vminitd-v2
bench: build vm-assets
	cargo run --release --locked -p vminitd-tests --bin bench -- boot
	cargo run --release --locked -p vminitd-tests --bin bench -- net
	cargo run --release --locked -p vminitd-tests --bin bench -- oci
	cargo run --release --locked -p vminitd-tests --bin bench -- fs
	cargo run --release --locked -p vminitd-tests --bin bench -- podman
	cargo run --release --locked -p vminitd-tests --bin bench -- cri
	cargo run --release --locked -p vminitd-tests --bin bench -- memory

# vmshim, its OCI runtime entry point `vminitd-runtime` (a link to vmshim,
# which is `vmshim runtime` under that name: runc's command line, for
# podman's and docker's configuration) and the guest kernel and initramfs,
# which an installed vmshim finds in PREFIX/share/vminitd. DESTDIR stages.
PREFIX ?= /usr/local
BINDIR := $(DESTDIR)$(PREFIX)/bin
ASSETDIR := $(DESTDIR)$(PREFIX)/share/vminitd

install: build vm-assets
	install -d $(BINDIR) $(ASSETDIR)
	install -m 0755 $(VMSHIM) $(BINDIR)/vmshim
	ln -sf vmshim $(BINDIR)/vminitd-runtime
	install -m 0755 $(SHIM) $(BINDIR)/containerd-shim-vminitd-v2
	install -m 0644 $(KERNEL) $(ASSETDIR)/vmlinux
	install -m 0644 $(INITRAMFS) $(ASSETDIR)/initramfs.cpio

uninstall:
	rm -f $(BINDIR)/vmshim $(BINDIR)/vminitd-runtime $(BINDIR)/containerd-shim-vminitd-v2 $(ASSETDIR)/vmlinux $(ASSETDIR)/initramfs.cpio
	-rmdir $(ASSETDIR)

clean:
	cargo clean
	rm -rf $(BUILD)
