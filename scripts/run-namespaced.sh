#!/usr/bin/env bash
# Starts vminitd as PID 1 of a new PID + mount namespace, listening on a Unix
# socket, prints its boot timeline, runs one command through `vmshim exec`,
# then shuts the agent down. Usage: run-namespaced.sh CMD [ARGS...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
vminitd=${VMINITD_BIN:-$root/target/x86_64-unknown-linux-musl/release/vminitd}
vmshim=${VMSHIM_BIN:-$root/target/release/vmshim}
[ "$#" -gt 0 ] || set -- sh -c 'echo hello from vminitd'

dir=$(mktemp -d /tmp/vminitd-run.XXXXXX)
sock="$dir/agent.sock"
userns=()
[ "$(id -u)" -eq 0 ] || userns=(--user --map-root-user)
unshare "${userns[@]}" --pid --mount --fork --kill-child "$vminitd" --listen "unix:$sock" &
agent=$!
cleanup() { kill "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
"$vmshim" ping --connect "unix:$sock"
set +e
"$vmshim" exec --connect "unix:$sock" -- "$@"
status=$?
set -e
"$vmshim" shutdown --connect "unix:$sock" || true
wait "$agent" 2>/dev/null || true
exit "$status"
