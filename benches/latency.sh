#!/usr/bin/env bash
# Round-trip latency through the tunnel, side by side: ping from the internet host to the rented
# address (through the server, then the customer's WireGuard and back), idle and while an iperf3
# TCP upload loads the same tunnel. Same rig and client as benches/rig.sh.
# usage: sudo bash benches/latency.sh   env: COUNT (pings per phase, 400), SERVERS, WG_CLIENT
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rig="$here/../shared/rig/netns-rig.sh"
cargo build --release -q -p staticwire-router --manifest-path "$here/Cargo.toml"
router="$here/target/release/staticwire-router"
wggo_new=$(realpath "$here/../shared/peers/wireguard-go-0.0.20250522" 2>/dev/null || true)
export PATH="$PATH:$HOME/.cargo/bin"
export WG_CLIENT=${WG_CLIENT:-${wggo_new:-wireguard-go}}
COUNT=${COUNT:-400}
. "$here/benches/servers.sh"
SERVERS=${SERVERS:-$(all_servers)}
trap 'bash "$rig" down >/dev/null 2>&1 || true' EXIT INT TERM
ex() { ip netns exec "$@"; }

# p50 / p99 / max of COUNT pings at 5 ms intervals (ms).
pings() {
  ex sw-inet ping -q -n -i 0.005 -c $COUNT -W 1 203.0.113.10 >/dev/null 2>&1 || true
  ex sw-inet ping -n -i 0.005 -c $COUNT -W 1 203.0.113.10 2>/dev/null \
    | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | sort -n \
    | awk '{a[NR]=$1} END {if (NR == 0) {print "failed"; exit} printf "%.3f / %.3f / %.3f (%d replies)", a[int(NR*0.5)+1], a[int(NR*0.99)], a[NR], NR}'
}

echo "client: $WG_CLIENT; $COUNT pings per phase; p50 / p99 / max ms"
for server in $SERVERS; do
  cmd=$(server_cmd "$server")
  bash "$rig" down >/dev/null 2>&1 || true
  bash "$rig" up >/dev/null
  bash "$rig" server "$cmd" >/dev/null
  for i in $(seq 1 20); do ex sw-cli ping -c 1 -W 1 198.19.0.2 >/dev/null && break; done
  idle=$(pings)
  ex sw-inet iperf3 -s -D -1 -B 198.19.0.2 >/dev/null; sleep 0.3
  ex sw-cli timeout 30 iperf3 -c 198.19.0.2 -B 203.0.113.10 -t 10 >/dev/null 2>&1 &
  load=$!
  sleep 1
  loaded=$(pings)
  wait $load || true
  printf '%-26s idle %s   under TCP load %s\n' "$server" "$idle" "$loaded"
  bash "$rig" down >/dev/null 2>&1 || true
done
