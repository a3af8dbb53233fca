#!/usr/bin/env bash
# Configured peers at scale, side by side: RSS with N idle peers, time to admit them through UAPI
# (one `set` with all of them, and one `set` per peer), and `get=1` time, for staticwire-router,
# the current wireguard-go (stops at 65,536 peers), GotaTun and boringtun-cli.
# usage: sudo bash benches/scale.sh    env: COUNTS ("10000 100000 1000000"), MODES ("one-set per-set"),
#   SERVERS (default: every one installed), BIG_MAX (largest count for servers with a full Tunn per
#   peer, 100000: 11 KB each)
# Each server runs alone in a namespace made and removed here; no traffic is sent.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
COUNTS=${COUNTS:-"10000 100000 1000000"} MODES=${MODES:-"one-set per-set"} BIG_MAX=${BIG_MAX:-100000}
cargo build --release -q -p staticwire-router --manifest-path "$here/Cargo.toml"
router=$here/target/release/staticwire-router
export PATH="$PATH:$HOME/.cargo/bin"
wggo_new=$here/../shared/peers/wireguard-go-0.0.20250522
if [ -z "${SERVERS:-}" ]; then
  SERVERS="staticwire-router"
  [ -x "$wggo_new" ] && SERVERS="$SERVERS wireguard-go-new"
  for s in gotatun boringtun-cli; do command -v $s >/dev/null && SERVERS="$SERVERS $s"; done
fi
ns=swscale$$ ifc=swsc$$
pid=
down() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  ip netns del $ns 2>/dev/null || true
  rm -f /var/run/wireguard/$ifc.sock
}
trap down EXIT INT TERM

for server in $SERVERS; do
  for n in $COUNTS; do
    case $server in staticwire-router|wireguard-go-new) ;; *) [ "$n" -le "$BIG_MAX" ] || continue ;; esac
    for mode in $MODES; do
      ip netns add $ns
      case $server in
        staticwire-router) ip netns exec $ns $router --foreground --threads 2 $ifc >/dev/null 2>&1 & ;;
        wireguard-go-new) ip netns exec $ns $wggo_new -f $ifc >/dev/null 2>&1 & ;;
        gotatun) ip netns exec $ns gotatun -f --disable-drop-privileges $ifc >/dev/null 2>&1 & ;;
        boringtun-cli) ip netns exec $ns boringtun-cli -f --disable-drop-privileges --threads 2 $ifc >/dev/null 2>&1 & ;;
      esac
      pid=$!
      for _ in $(seq 1 100); do [ -S /var/run/wireguard/$ifc.sock ] && break; sleep 0.1; done
      printf '%-18s ' "$server"
      timeout 900 python3 "$here/benches/scale.py" /var/run/wireguard/$ifc.sock $pid $n $mode \
        || echo "peers=$n mode=$mode failed"
      down; pid=
    done
  done
done
