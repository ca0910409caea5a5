#!/usr/bin/env bash
# Builds the vminitd guest kernel: an uncompressed x86_64 vmlinux with a PVH
# ELF note, which QEMU (-M microvm -kernel), Cloud Hypervisor and Firecracker
# boot directly.
#
#   kernel/build.sh [--source TARBALL] [--out DIR] [--jobs N]
#
# Source: Debian's linux-source-6.1 package (/usr/src/linux-source-6.1.tar.xz)
# unless --source names another tarball (e.g. a kernel.org linux-6.1.y.tar.xz).
# Config: `make tinyconfig` + kernel/config.fragment, then every option the
# fragment sets is checked in the final .config (a typo or an unmet dependency
# fails the build instead of silently dropping the option).
# Output: DIR/vmlinux (default DIR: build/ at the repository root), with
# DIR/vmlinux.key (the stamp) and DIR/vmlinux.config (the final config).
#
# Caching: the key is a sha256 over the fragment, the recipe version below,
# the source tarball's identity (path, size, mtime) and the compiler version.
# When DIR/vmlinux.key matches, nothing runs. Built kernels are also kept per
# machine in $VMINITD_KERNEL_CACHE (default ~/.cache/vminitd/kernel/<key>/),
# so a fresh clone on the same machine copies instead of building; the
# extracted tree is kept there too (tree-<key of the source alone>/), so
# changing the fragment rebuilds incrementally. No network access is needed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT="$ROOT/kernel/build.sh"
FRAGMENT="$ROOT/kernel/config.fragment"
DEFAULT_SOURCE=/usr/src/linux-source-6.1.tar.xz
SOURCE=$DEFAULT_SOURCE
OUT="$ROOT/build"
JOBS=$(nproc 2>/dev/null || echo 2)

log() { printf 'kernel: %s\n' "$*" >&2; }
die() { printf 'kernel: error: %s\n' "$*" >&2; exit 1; }
usage() { grep -m1 "^#   kernel/build.sh" "$SCRIPT" | sed 's/^#   /usage: /' >&2; exit "${1:-2}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --source) [ $# -ge 2 ] || usage; SOURCE=$2; shift 2 ;;
    --source=*) SOURCE=${1#*=}; shift ;;
    --out) [ $# -ge 2 ] || usage; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --jobs|-j) [ $# -ge 2 ] || usage; JOBS=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) log "unknown argument: $1"; usage ;;
  esac
done

if [ ! -f "$SOURCE" ]; then
  if [ "$SOURCE" = "$DEFAULT_SOURCE" ]; then
    die "kernel source $SOURCE not found: install the Debian package linux-source-6.1 (scripts/setup.sh does), or pass --source TARBALL"
  fi
  die "kernel source tarball $SOURCE not found"
fi
[ -f "$FRAGMENT" ] || die "config fragment $FRAGMENT not found"
SOURCE=$(realpath "$SOURCE")
mkdir -p "$OUT"
OUT=$(realpath "$OUT")

# Bump when this script changes what it builds (not for messages or style):
# it is part of the cache key, with the fragment, the source and the compiler.
RECIPE=1
# Built kernels and extracted trees are kept per machine, so that a fresh
# clone (CI) does not pay the build again.
MACHINE_CACHE=${VMINITD_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vminitd/kernel}

sha() { sha256sum | cut -d' ' -f1; }
# The tarball's identity: cheap (no hashing of 140 MB), changes with any
# reinstall or upgrade of the package.
SOURCE_ID="$SOURCE $(stat -c '%s %Y' "$SOURCE")"
SOURCE_KEY=$(printf '%s\n' "$SOURCE_ID" | sha | cut -c1-16)
CC_ID=$("${CC:-gcc}" --version 2>/dev/null | sed -n 1p) || CC_ID=no-cc
KEY=$({ printf 'recipe: %s\nsource: %s\ncc: %s\n' "$RECIPE" "$SOURCE_ID" "$CC_ID"; cat "$FRAGMENT"; } | sha)

VMLINUX="$OUT/vmlinux"
STAMP="$OUT/vmlinux.key"
up_to_date() { [ -f "$VMLINUX" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ]; }

BUILT="$MACHINE_CACHE/$KEY"
# From the machine's cache: a kernel this very recipe built before.
from_machine_cache() {
  [ -f "$BUILT/vmlinux" ] || return 1
  cp "$BUILT/vmlinux" "$VMLINUX.tmp" && mv -f "$VMLINUX.tmp" "$VMLINUX"
  cp "$BUILT/vmlinux.config" "$OUT/vmlinux.config"
  printf '%s\n' "$KEY" >"$STAMP"
  log "$VMLINUX taken from the machine cache $BUILT"
}

if up_to_date; then
  log "$VMLINUX is up to date (key ${KEY:0:16})"
  exit 0
fi
from_machine_cache && exit 0

# One build at a time per machine; whoever waited may find it done.
mkdir -p "$MACHINE_CACHE"
exec 9>"$MACHINE_CACHE/.build.lock"
if ! flock -n 9; then
  log "waiting for another kernel build on this machine"
  flock 9
fi
if up_to_date; then
  log "$VMLINUX is up to date (key ${KEY:0:16})"
  exit 0
fi
from_machine_cache && exit 0

if [ "$(uname -m)" != x86_64 ] && [ -z "${CROSS_COMPILE:-}" ]; then
  die "this builds an x86_64 kernel: run it on x86_64, or set CROSS_COMPILE (e.g. x86_64-linux-gnu-)"
fi
for tool in make gcc bc bison flex xz tar perl flock readelf; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "missing build tool '$tool' (Debian: build-essential bc bison flex libelf-dev libssl-dev xz-utils)"
done

CACHE="$MACHINE_CACHE/tree-$SOURCE_KEY"
TREE="$CACHE/linux"
if [ ! -f "$TREE/Makefile" ]; then
  log "extracting $SOURCE into $TREE"
  rm -rf "$CACHE"
  mkdir -p "$CACHE"
  tmp="$CACHE/linux.partial"
  mkdir "$tmp"
  tar -xf "$SOURCE" -C "$tmp" --strip-components=1
  [ -f "$tmp/Makefile" ] && [ -d "$tmp/arch/x86" ] || die "$SOURCE does not look like a Linux source tarball"
  printf '%s\n' "$SOURCE_ID" >"$tmp/.vminitd-source"
  mv "$tmp" "$TREE"
else
  log "reusing the extracted tree $TREE"
fi

MAKE=(make -C "$TREE" ARCH=x86_64 -j"$JOBS")
if [ -n "${CC:-}" ]; then MAKE+=(CC="$CC"); fi

log "configuring: tinyconfig + $(basename "$FRAGMENT")"
# Kconfig's chatter (expected "override" warnings) goes to a log, shown on failure.
CONFIG_LOG="$CACHE/config.log"
{
  "${MAKE[@]}" tinyconfig &&
  (cd "$TREE" && ARCH=x86_64 scripts/kconfig/merge_config.sh -m .config "$FRAGMENT") &&
  "${MAKE[@]}" olddefconfig
} >"$CONFIG_LOG" 2>&1 || { cat "$CONFIG_LOG" >&2; die "configuring the kernel failed (log: $CONFIG_LOG)"; }

# Every option the fragment sets must be in the final config, as written.
missing=()
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*)
      grep -qxF -- "$line" "$TREE/.config" || {
        name=${line%%=*}
        got=$(grep -E "^(# )?$name[= ]" "$TREE/.config" || true)
        missing+=("$line (got: ${got:-absent})")
      } ;;
    "# CONFIG_"*" is not set")
      name=${line#\# }; name=${name%% *}
      if grep -qE "^$name=" "$TREE/.config"; then
        missing+=("$line (got: $(grep -E "^$name=" "$TREE/.config"))")
      fi ;;
  esac
done <"$FRAGMENT"
if [ "${#missing[@]}" -gt 0 ]; then
  log "these options of $(basename "$FRAGMENT") did not survive olddefconfig (typo, or a dependency is off):"
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi

log "building vmlinux with -j$JOBS (the first build takes a while)"
start=$(date +%s)
"${MAKE[@]}" vmlinux
log "built in $(( $(date +%s) - start ))s"

# The PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY, type 0x12) is what lets a VMM
# boot the uncompressed ELF directly.
readelf -n "$TREE/vmlinux" | grep -qiE 'Xen.*(0x00000012|PHYS32_ENTRY)' ||
  die "vmlinux has no PVH entry note (is CONFIG_PVH set?)"

cp "$TREE/vmlinux" "$VMLINUX.tmp"
mv -f "$VMLINUX.tmp" "$VMLINUX"
cp "$TREE/.config" "$OUT/vmlinux.config"
printf '%s\n' "$KEY" >"$STAMP"
mkdir -p "$BUILT.partial"
cp "$VMLINUX" "$OUT/vmlinux.config" "$BUILT.partial/"
rm -rf "$BUILT" && mv "$BUILT.partial" "$BUILT"
log "wrote $VMLINUX ($(du -h --apparent-size "$VMLINUX" | cut -f1)), kept in $BUILT"
