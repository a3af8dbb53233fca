#!/usr/bin/env bash
# Side-by-side iperf3 TCP throughput through ../shared/rig/netns-rig.sh: the same customer client
# against each server, same run. Servers: staticwire-router in each I/O mode, the current
# wireguard-go (../shared/peers), GotaTun, boringtun-cli and Debian's wireguard-go, when installed.
# usage: sudo bash benches/rig.sh [ROUNDS]   env: T (seconds per direction, default 5),
#        WG_CLIENT (customer's WireGuard; default the current wireguard-go), SERVERS (names below)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rig="$here/../shared/rig/netns-rig.sh"
cargo build --release -q -p staticwire-router --manifest-path "$here/Cargo.toml"
router="$here/target/release/staticwire-router"
wggo_new=$(realpath "$here/../shared/peers/wireguard-go-0.0.20250522" 2>/dev/null || true)
export PATH="$PATH:$HOME/.cargo/bin"
export WG_CLIENT=${WG_CLIENT:-${wggo_new:-wireguard-go}}
. "$here/benches/servers.sh"
SERVERS=${SERVERS:-$(all_servers)}
echo "client: $WG_CLIENT, ${T:-5} s per direction, $(nproc) cores, $(date -u +%FT%TZ)"
for round in $(seq 1 "${1:-2}"); do
  for server in $SERVERS; do
    cmd=$(server_cmd "$server")
    result=$(T=${T:-5} timeout 120 bash "$rig" run "$cmd" 2>/dev/null | awk '/Mbit/ {print $1}' | paste -sd/ -)
    printf 'round %s  %-26s upload/inbound Mbit/s: %s\n' "$round" "$server" "${result:-failed}"
  done
done
