#!/usr/bin/env bash
# Completed handshakes per server CPU-second, side by side: each server pinned to CPU 0 with one
# worker and N configured customers; staticwire-loadtest on CPU 1 sends one real initiation from
# each of a fresh set of distinct customers at each offered rate and counts the responses.
# usage: sudo bash benches/handshakes.sh   env: N (configured, 60000: wireguard-go stops at 65,536),
#   RATES ("2000 4000 6000 8000"), T (seconds per rate, 5), SERVERS (default: every one installed)
# Ours runs with --handshake-limit raised (capacity; the default asks for cookies past 2,000
# initiations a second per worker, see BENCHMARKS.md). Namespaces made and removed here.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-60000} T=${T:-5} RATES=${RATES:-"2000 4000 6000 8000"}
cargo build --release -q -p staticwire-router -p staticwire-loadtest --manifest-path "$here/Cargo.toml"
router=$here/target/release/staticwire-router
lt=$here/target/release/staticwire-loadtest
export PATH="$PATH:$HOME/.cargo/bin"
wggo_new=$here/../shared/peers/wireguard-go-0.0.20250522
if [ -z "${SERVERS:-}" ]; then
  SERVERS="staticwire-router"
  [ -x "$wggo_new" ] && SERVERS="$SERVERS wireguard-go-new"
  for s in gotatun boringtun-cli; do command -v $s >/dev/null && SERVERS="$SERVERS $s"; done
fi
id=swhs$$ CLI=swhs$$-cli SRV=swhs$$-srv INET=swhs$$-inet
tmp=$(mktemp -d)
. "$here/ops/netns.sh"
down() { netns_down; rm -f /var/run/wireguard/${id}s.sock; }
trap 'down; rm -rf "$tmp"' EXIT INT TERM

$lt pubkeys --seed 1 --count $N > $tmp/pub.hex
wg genkey > $tmp/srv.key; wg pubkey < $tmp/srv.key > $tmp/srv.pub

start_server() {
  case $1 in
    staticwire-router) ex $SRV taskset -c 0 $router --foreground --threads 1 --handshake-limit 100000000 ${id}s >/dev/null 2>&1 & ;;
    wireguard-go-new) ex $SRV env GOMAXPROCS=1 taskset -c 0 $wggo_new -f ${id}s >/dev/null 2>&1 & ;;
    boringtun-cli) ex $SRV taskset -c 0 boringtun-cli -f --disable-drop-privileges --threads 1 ${id}s >/dev/null 2>&1 & ;;
    gotatun) ex $SRV taskset -c 0 gotatun -f --disable-drop-privileges ${id}s >/dev/null 2>&1 & ;;
  esac
  for _ in $(seq 1 100); do [ -S /var/run/wireguard/${id}s.sock ] && break; sleep 0.1; done
  python3 - /var/run/wireguard/${id}s.sock $tmp/pub.hex "$(base64 -d < $tmp/srv.key | od -An -tx1 | tr -d ' \n')" <<'PY'
import socket, sys
path, keys, priv = sys.argv[1:4]
body = ["set=1", "private_key=" + priv, "listen_port=51820"]
for i, k in enumerate(open(keys).read().split()):
    body += ["public_key=" + k, "allowed_ip=2001:db8:%x:%x::1/128" % (i >> 16, i & 0xFFFF)]
s = socket.socket(socket.AF_UNIX); s.connect(path); s.sendall(("\n".join(body) + "\n\n").encode())
reply = b""
while not reply.endswith(b"\n\n"):
    chunk = s.recv(4096)
    if not chunk: break
    reply += chunk
assert b"errno=0" in reply, reply
PY
  ex $SRV ip link set ${id}s up
}

server_cpu() {
  local ticks=0
  for p in $(ip netns pids $SRV); do
    set -- $(sed 's/.*) //' /proc/$p/stat)
    ticks=$((ticks + ${12} + ${13}))
  done
  echo "$ticks $(getconf CLK_TCK)" | awk '{printf "%.3f", $1 / $2}'
}

echo "configured customers: $N; one initiation from each of a fresh set of customers per run, $T s per rate"
printf '%-20s %8s %10s %10s %10s %14s\n' server offered "resp/s" cookies "server cpu" "resp/cpu-s"
for server in $SERVERS; do
  down 2>/dev/null || true; netns_up; start_server $server
  first=0
  for rate in $RATES; do
    count=$((rate * T))
    [ $((first + count)) -le $N ] || first=0
    ex $CLI taskset -c 1 $lt handshakes --server 198.18.0.1:51820 --server-key "$(cat $tmp/srv.pub)" \
      --bind 198.18.0.2:0 --seed 1 --first $first --count $count --rate $rate --seconds $T > $tmp/hs.out &
    lpid=$!
    for _ in $(seq 1 600); do grep -q ready $tmp/hs.out 2>/dev/null && break; sleep 0.1; done
    c0=$(server_cpu); wait $lpid; c1=$(server_cpu)
    first=$((first + count))
    line=$(tail -1 $tmp/hs.out)
    resp=$(echo "$line" | sed -n 's/.*responses=\([0-9]*\).*/\1/p')
    rps=$(echo "$line" | sed -n 's/.*responses_per_s=\([0-9]*\).*/\1/p')
    ck=$(echo "$line" | sed -n 's/.*cookies=\([0-9]*\).*/\1/p')
    cpu=$(echo "$c0 $c1" | awk '{printf "%.2f", $2 - $1}')
    per=$(echo "${resp:-0} $cpu" | awk '{printf "%.0f", ($2 > 0 ? $1 / $2 : 0)}')
    printf '%-20s %8s %10s %10s %10s %14s\n' $server $rate "${rps:-0}" "${ck:-0}" $cpu $per
  done
done
