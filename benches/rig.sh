#!/usr/bin/env bash
# Side-by-side iperf3 throughput through ../shared/rig/netns-rig.sh: staticwire-router,
# wireguard-go and boringtun-cli as the provider's server, same client, same run.
# usage: sudo bash benches/rig.sh [ROUNDS]   env: T (seconds per direction, default 5),
#        WG_CLIENT (customer's WireGuard, default wireguard-go)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rig="$here/../shared/rig/netns-rig.sh"
cargo build --release -q -p staticwire-router --manifest-path "$here/Cargo.toml"
router="$here/target/release/staticwire-router"
export PATH="$PATH:$HOME/.cargo/bin"
command -v boringtun-cli >/dev/null || { echo "boringtun-cli missing: cargo install boringtun-cli" >&2; exit 1; }
echo "client: ${WG_CLIENT:-wireguard-go}, ${T:-5} s per direction, $(nproc) cores"
for round in $(seq 1 "${1:-2}"); do
  for server in staticwire-router wireguard-go boringtun-cli; do
    case $server in
      staticwire-router) cmd="$router wgs" ;;
      wireguard-go) cmd=wggo ;;
      boringtun-cli) cmd=boringtun ;;
    esac
    result=$(T=${T:-5} timeout 120 bash "$rig" run "$cmd" 2>/dev/null | awk '/Mbit/ {print $1}' | paste -sd/ -)
    echo "round $round  $server  upload/inbound Mbit/s: ${result:-failed}"
  done
done
