#!/usr/bin/env bash
# Installs what building and testing vminitd needs, and only what is missing:
# the musl target, the system packages (QEMU, busybox, kernel source and its
# build tools, e2fsprogs, runc/crun/umoci for the OCI tests) and the pinned
# vhost-device-vsock backend. Safe to run again; a second run does nothing.
set -euo pipefail

VHOST_DEVICE_VSOCK_VERSION=0.3.0

PACKAGES=(
  qemu-system-x86 busybox-static e2fsprogs file
  linux-source-6.1 bc bison flex libelf-dev libssl-dev xz-utils cpio
  util-linux procps build-essential umoci runc crun
)

log() { printf 'setup: %s\n' "$*" >&2; }

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# System packages.
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The musl target for the static vminitd.
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  log "adding the x86_64-unknown-linux-musl target"
  rustup target add x86_64-unknown-linux-musl
fi

# Clippy, which `make lint` (part of `make test`) runs.
if ! cargo clippy --version >/dev/null 2>&1; then
  log "adding clippy"
  rustup component add clippy
fi

# The vhost-user vsock backend, used where /dev/vhost-vsock is not usable.
if ! command -v vhost-device-vsock >/dev/null 2>&1 ||
   ! vhost-device-vsock --version 2>/dev/null | grep -q "$VHOST_DEVICE_VSOCK_VERSION"; then
  log "installing vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION"
  cargo install --locked --version "$VHOST_DEVICE_VSOCK_VERSION" vhost-device-vsock
fi
log "ready"
