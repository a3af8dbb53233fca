#!/usr/bin/env bash
# Packets delivered per server CPU-second, side by side: staticwire-router, wireguard-go and
# boringtun-cli, each pinned to CPU 0 with one worker, against the same load from
# staticwire-loadtest on CPU 1: N customers, each with its own key, socket and real handshake.
#   in:  customers -> server (decrypt, anti-spoof, route) -> "internet" host
#   out: "internet" host -> server (route, encrypt) -> customers (who authenticate each packet)
# usage: sudo bash benches/pps.sh   env: N (customers, 16), T (seconds per run, 5), SIZES ("1420 64"),
#   SERVERS (default: every one installed of staticwire-router staticwire-router-batch
#   staticwire-router-simple wireguard-go-new gotatun boringtun-cli wireguard-go)
# Everything lives in namespaces made and removed here (198.18.0.0/15, 203.0.113.0/24).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-16} T=${T:-5} SIZES=${SIZES:-"1420 64"}
cargo build --release -q -p staticwire-router -p staticwire-loadtest --manifest-path "$here/Cargo.toml"
router=$here/target/release/staticwire-router
lt=$here/target/release/staticwire-loadtest
export PATH="$PATH:$HOME/.cargo/bin"
wggo_new=$here/../shared/peers/wireguard-go-0.0.20250522
if [ -z "${SERVERS:-}" ]; then
  SERVERS="staticwire-router staticwire-router-batch staticwire-router-simple"
  [ -x "$wggo_new" ] && SERVERS="$SERVERS wireguard-go-new"
  for s in gotatun boringtun-cli wireguard-go; do command -v $s >/dev/null && SERVERS="$SERVERS $s"; done
fi
id=swpps$$ CLI=swpps$$-cli SRV=swpps$$-srv INET=swpps$$-inet
tmp=$(mktemp -d)
. "$here/ops/netns.sh"
down() {
  netns_down
  rm -f /var/run/wireguard/${id}s.sock
}
trap 'down; rm -rf "$tmp"' EXIT INT TERM

$lt keys $N > $tmp/customers.keys
wg genkey > $tmp/srv.key; wg pubkey < $tmp/srv.key > $tmp/srv.pub

up() {
  netns_up
  # The customers drop what the blast sends them outside WireGuard, so no ICMP flows back.
  ex $CLI iptables -A INPUT -p udp --dport 9 -j DROP
}

start_server() {
  case $1 in
    staticwire-router) ex $SRV taskset -c 0 $router --foreground --threads 1 --metrics 127.0.0.1:9586 ${id}s >/dev/null 2>&1 & ;;
    staticwire-router-batch) ex $SRV taskset -c 0 $router --foreground --io batch --threads 1 --metrics 127.0.0.1:9586 ${id}s >/dev/null 2>&1 & ;;
    staticwire-router-simple) ex $SRV taskset -c 0 $router --foreground --io simple --threads 1 ${id}s >/dev/null 2>&1 & ;;
    wireguard-go) ex $SRV env GOMAXPROCS=1 taskset -c 0 wireguard-go -f ${id}s >/dev/null 2>&1 & ;;
    wireguard-go-new) ex $SRV env GOMAXPROCS=1 taskset -c 0 $wggo_new -f ${id}s >/dev/null 2>&1 & ;;
    boringtun-cli) ex $SRV taskset -c 0 boringtun-cli -f --disable-drop-privileges --threads 1 ${id}s >/dev/null 2>&1 & ;;
    gotatun) ex $SRV taskset -c 0 gotatun -f --disable-drop-privileges --threads 1 ${id}s >/dev/null 2>&1 & ;;
  esac
  for i in $(seq 1 50); do [ -S /var/run/wireguard/${id}s.sock ] && break; sleep 0.1; done
  args=""
  i=0
  while IFS=$'\t' read -r _priv pub; do
    args="$args peer $pub allowed-ips 203.0.113.$((10 + i))/32"; i=$((i + 1))
  done < $tmp/customers.keys
  ex $SRV wg set ${id}s private-key $tmp/srv.key listen-port 51820 $args
  ex $SRV ip link set ${id}s mtu 1420 up
  ex $SRV ip route add 203.0.113.0/24 dev ${id}s
}

# CPU seconds used so far by every process in the server namespace.
server_cpu() {
  local ticks=0
  for p in $(ip netns pids $SRV); do
    set -- $(sed 's/.*) //' /proc/$p/stat)
    ticks=$((ticks + ${12} + ${13}))
  done
  echo "$ticks $(getconf CLK_TCK)" | awk '{printf "%.3f", $1 / $2}'
}

# Our router's own figures (packets per wake-up and per kernel operation), to stderr.
io_figures() {
  case $1 in staticwire-router-simple*|staticwire-router*) ;; *) return 0 ;; esac
  ex $SRV curl -sf http://127.0.0.1:9586/metrics 2>/dev/null | awk -v what="$1" '
    /^staticwire_router_io_wakeups_total/ {w += $NF}
    /^staticwire_router_io_operations_total/ {match($0, /what="[a-z_]+"/); k = substr($0, RSTART + 6, RLENGTH - 7); ops[k] += $NF}
    /^staticwire_router_io_packets_total/ {match($0, /what="[a-z_]+"/); k = substr($0, RSTART + 6, RLENGTH - 7); pk[k] += $NF}
    END { if (w == 0) exit; printf "  [%s] wakeups %d", what, w;
          for (k in ops) if (ops[k] > 0) printf ", %s %.1f pkt/op", k, pk[k] / ops[k];
          printf "\n" }' >&2 || true
}

common="--server 198.18.0.1:51820 --server-key $(cat $tmp/srv.pub) --keys $tmp/customers.keys --bind 198.18.0.2"
echo "customers: $N, $T s per run, server pinned to CPU 0 (one worker), load on CPU 1"
printf '%-26s %6s %12s %12s %14s\n' server size "in pkt/cpu-s" "out pkt/cpu-s" "out lost at rx"
for server in $SERVERS; do
  for size in $SIZES; do
    down 2>/dev/null; up; start_server $server
    # in: customers send through the server to a UDP socket on the internet host, which counts
    # datagrams (a coalesced super-packet counts as the datagrams it carries).
    ex $INET taskset -c 1 $lt sink --bind 198.19.0.2:9 --seconds $((T + 4 + N / 100)) > $tmp/sink.out &
    spid=$!
    for i in $(seq 1 50); do grep -q ready $tmp/sink.out 2>/dev/null && break; sleep 0.1; done
    c0=$(server_cpu)
    ex $CLI taskset -c 1 $lt send $common --size $size --seconds $T > $tmp/send.out
    c1=$(server_cpu)
    wait $spid
    got=$(sed -n 's/.*received packets=\([0-9]*\).*/\1/p' $tmp/sink.out)
    in=$(echo "${got:-0} $c0 $c1" | awk '{d=$3-$2; printf "%.0f", (d > 0 ? $1/d : 0)}')
    io_figures "$server $size in"
    echo "  [$server $size in] delivered ${got:-0} in $(echo "$c0 $c1" | awk '{print $2-$1}') server CPU-s" >&2
    # out: the internet host sends to the rented addresses; customers count what authenticates.
    ex $CLI taskset -c 1 $lt recv $common --seconds $((T + 3 + N / 100)) > $tmp/recv.out &
    rpid=$!
    for i in $(seq 1 $((50 + N))); do grep -q ready $tmp/recv.out 2>/dev/null && break; sleep 0.1; done
    c0=$(server_cpu)
    lost0=$(ex $CLI awk '/^Udp: [0-9]/ {print $6}' /proc/net/snmp)
    ex $INET taskset -c 1 $lt blast --customers $N --size $size --seconds $T > $tmp/blast.out
    c1=$(server_cpu)
    wait $rpid
    lost=$(( $(ex $CLI awk '/^Udp: [0-9]/ {print $6}' /proc/net/snmp) - lost0 ))
    got=$(sed -n 's/.*received packets=\([0-9]*\).*/\1/p' $tmp/recv.out)
    out=$(echo "${got:-0} $c0 $c1" | awk '{d=$3-$2; printf "%.0f", (d > 0 ? $1/d : 0)}')
    io_figures "$server $size out"
    echo "  [$server $size out] delivered ${got:-0} in $(echo "$c0 $c1" | awk '{print $2-$1}') server CPU-s" >&2
    printf '%-26s %6s %12s %12s %14s\n' $server $size $in $out $lost
  done
done
