#!/usr/bin/env bash
# Installs what building and testing vminitd needs, and only what is missing:
# the musl target, the system packages (QEMU, busybox, kernel source and its
# build tools, e2fsprogs, runc/crun/umoci for the OCI tests, podman and
# docker with their network stacks and compose, and containerd with ctr and
# the CNI plugins its CRI service wires pods with, for the end-to-end tests;
# protoc, which builds the tests' CRI client from Kubernetes' .proto files)
# and the pinned vhost-device-vsock backend and virtiofsd daemon. Safe to run
# again; a second run does nothing.
set -euo pipefail

VHOST_DEVICE_VSOCK_VERSION=0.3.0
VIRTIOFSD_VERSION=1.14.0

PACKAGES=(
  qemu-system-x86 busybox-static e2fsprogs file
  linux-source-6.1 bc bison flex libelf-dev libssl-dev xz-utils cpio
  util-linux procps build-essential umoci runc crun
  libseccomp-dev libcap-ng-dev
  podman netavark aardvark-dns conmon docker.io podman-compose docker-compose
  containerd containernetworking-plugins protobuf-compiler
  iproute2 iptables
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
  # docker.io's maintainer scripts start a system dockerd (and its socket,
  # listening for the docker group) where an init system runs. The tests
  # start their own daemons, each on a private Unix socket with its own
  # data root, bridge and address pool; a system one would only hold
  # docker0 and iptables chains that they must not share. So no service is
  # started during the install (policy-rc.d 101, the Debian way), and none
  # is enabled afterwards.
  policy=/usr/sbin/policy-rc.d
  placed_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# scripts/setup.sh: no service starts while packages install.\nexit 101\n' |
      sudo_if_needed tee "$policy" >/dev/null
    sudo_if_needed chmod 755 "$policy"
    placed_policy=1
  fi
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ -n "$placed_policy" ]; then sudo_if_needed rm -f "$policy"; fi
  # Nor does one start at the next boot: the units the package enabled are
  # disabled (a machine that wants a system dockerd enables it by hand).
  if [[ " ${missing[*]} " == *" docker.io "* || " ${missing[*]} " == *" containerd "* ]] &&
     [ -d /run/systemd/system ]; then
    log "disabling docker.socket, docker.service and containerd.service (the tests start their own daemons)"
    sudo_if_needed systemctl disable --now docker.socket docker.service containerd.service >/dev/null 2>&1 || true
  fi
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
# rustfmt, whose check `make lint` runs first.
if ! cargo fmt --version >/dev/null 2>&1; then
  log "adding rustfmt"
  rustup component add rustfmt
fi

# The vhost-user vsock backend, used where /dev/vhost-vsock is not usable.
if ! command -v vhost-device-vsock >/dev/null 2>&1 ||
   ! vhost-device-vsock --version 2>/dev/null | grep -q "$VHOST_DEVICE_VSOCK_VERSION"; then
  log "installing vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION"
  cargo install --locked --version "$VHOST_DEVICE_VSOCK_VERSION" vhost-device-vsock
fi
# The virtio-fs daemon that shares host files with a VM (vmshim run -v, bind
# mounts of host paths); it links libseccomp and libcap-ng. QEMU's own
# /usr/lib/qemu/virtiofsd is the older C daemon, with other options.
if ! command -v virtiofsd >/dev/null 2>&1 ||
   ! virtiofsd --version 2>/dev/null | grep -q "$VIRTIOFSD_VERSION"; then
  log "installing virtiofsd $VIRTIOFSD_VERSION"
  cargo install --locked --version "$VIRTIOFSD_VERSION" virtiofsd
fi
log "ready"
