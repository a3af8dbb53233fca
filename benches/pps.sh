#!/usr/bin/env bash
# Packets delivered per server CPU-second, side by side: staticwire-router, wireguard-go and
# boringtun-cli, each pinned to CPU 0 with one worker, against the same load from
# staticwire-loadtest on CPU 1: N customers, each with its own key, socket and real handshake.
#   in:  customers -> server (decrypt, anti-spoof, route) -> "internet" host
#   out: "internet" host -> server (route, encrypt) -> customers (who authenticate each packet)
# usage: sudo bash benches/pps.sh   env: N (customers, 16), T (seconds per run, 5), SIZES ("1420 64"),
#   SERVERS (default: every one installed of staticwire-router staticwire-router-batch
#   staticwire-router-simple wireguard-go-new gotatun boringtun-cli wireguard-go), FLOOD (initiations a
#   second from unknown keys sent at the server during every "in" run: the established customers'
#   throughput under a handshake flood), ROUTER_ARGS (extra options for ours; with more than 240
#   customers the handshake limit is raised, since every customer connects from one address),
#   GEN (send: the customers encrypt as they send; replay: every packet is sealed before the clock
#   starts and only replayed with sendmmsg, so one core offers several times what one server core
#   takes: overload, see benches/overload.sh), PACKETS (replay: datagrams in all, 2000000),
#   BURST (replay: datagrams per customer per sendmmsg, 8), GSO=1 (replay: each burst as one UDP
#   GSO send; cheaper to offer, and the server may receive it as one GRO train), RATE (replay: offer
#   at most this many datagrams a second; unset: as fast as one core can), DIRS ("in out")
# Everything lives in namespaces made and removed here (198.18.0.0/15, 203.0.113.0/24).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-16} T=${T:-5} SIZES=${SIZES:-"1420 64"}
# More customers than the documentation /24 (203.0.113.0/24) holds rent IPv6 addresses from
# 2001:db8:100::/64 instead, and the internet host is 2001:db8:1::2.
if [ "$N" -gt 240 ]; then V6=1; else V6=0; fi
FLOOD=${FLOOD:-0} GEN=${GEN:-send} PACKETS=${PACKETS:-2000000} BURST=${BURST:-8} DIRS=${DIRS:-"in out"}
if [ -z "${ROUTER_ARGS+x}" ]; then
  ROUTER_ARGS=""; [ "$N" -gt 240 ] && ROUTER_ARGS="--handshake-limit 100000000"
fi
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
  if [ $V6 = 1 ]; then
    ex $SRV ip addr add 2001:db8:1::1/64 dev ${id}y nodad
    ex $INET ip addr add 2001:db8:1::2/64 dev ${id}x nodad
    ex $INET ip -6 route add 2001:db8:100::/64 via 2001:db8:1::1
    ex $SRV sysctl -qw net.ipv6.conf.all.forwarding=1
  fi
}

start_server() {
  case $1 in
    staticwire-router) ex $SRV taskset -c 0 $router --foreground --threads 1 --metrics 127.0.0.1:9586 $ROUTER_ARGS ${id}s >/dev/null 2>&1 & ;;
    staticwire-router-batch) ex $SRV taskset -c 0 $router --foreground --io batch --threads 1 --metrics 127.0.0.1:9586 $ROUTER_ARGS ${id}s >/dev/null 2>&1 & ;;
    staticwire-router-simple) ex $SRV taskset -c 0 $router --foreground --io simple --threads 1 $ROUTER_ARGS ${id}s >/dev/null 2>&1 & ;;
    wireguard-go) ex $SRV env GOMAXPROCS=1 taskset -c 0 wireguard-go -f ${id}s >/dev/null 2>&1 & ;;
    wireguard-go-new) ex $SRV env GOMAXPROCS=1 taskset -c 0 $wggo_new -f ${id}s >/dev/null 2>&1 & ;;
    boringtun-cli) ex $SRV taskset -c 0 boringtun-cli -f --disable-drop-privileges --threads 1 ${id}s >/dev/null 2>&1 & ;;
    gotatun) ex $SRV taskset -c 0 gotatun -f --disable-drop-privileges ${id}s >/dev/null 2>&1 & ;;
  esac
  for i in $(seq 1 100); do [ -S /var/run/wireguard/${id}s.sock ] && break; sleep 0.1; done
  [ -S /var/run/wireguard/${id}s.sock ] || { echo "$1 did not start" >&2; return 1; }
  # One `set` with every peer, through the UAPI socket (a command line would be too long).
  {
    echo "set=1"
    echo "private_key=$(base64 -d < $tmp/srv.key | od -An -tx1 | tr -d ' \n')"
    echo "listen_port=51820"
    i=0
    while IFS=$'\t' read -r _priv pub; do
      echo "public_key=$(echo "$pub" | base64 -d | od -An -tx1 | tr -d ' \n')"
      if [ $V6 = 1 ]; then echo "allowed_ip=2001:db8:100::$(printf %x $((16 + i)))/128"
      else echo "allowed_ip=203.0.113.$((10 + i))/32"; fi
      i=$((i + 1))
    done < $tmp/customers.keys
    echo
  } > $tmp/uapi.set
  python3 - /var/run/wireguard/${id}s.sock $tmp/uapi.set <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(open(sys.argv[2], 'rb').read())
reply = b''
while not reply.endswith(b'\n\n'):
    chunk = s.recv(4096)
    if not chunk: break
    reply += chunk
assert b'errno=0' in reply, reply
PY
  ex $SRV ip link set ${id}s mtu 1420 up
  ex $SRV ip route add 203.0.113.0/24 dev ${id}s
  [ $V6 = 0 ] || ex $SRV ip -6 route add 2001:db8:100::/64 dev ${id}s
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
if [ $V6 = 1 ]; then
  common="$common --first-address 2001:db8:100::10"
  target="--target [2001:db8:1::2]:9" sink_at="[2001:db8:1::2]:9" first="--first-address 2001:db8:100::10"
else
  target="" sink_at="198.19.0.2:9" first=""
fi
echo "customers: $N, $T s per run, server pinned to CPU 0 (one worker), load on CPU 1"
printf '%-26s %6s %12s %12s %14s\n' server size "in pkt/cpu-s" "out pkt/cpu-s" "out lost at rx"
for server in $SERVERS; do
  for size in $SIZES; do
    down 2>/dev/null; up; start_server $server
    # in: customers send through the server to a UDP socket on the internet host, which counts
    # datagrams (a coalesced super-packet counts as the datagrams it carries).
    ex $INET taskset -c 1 $lt sink --bind "$sink_at" --seconds $((T + 4 + N / 1000)) > $tmp/sink.out &
    spid=$!
    for i in $(seq 1 50); do grep -q ready $tmp/sink.out 2>/dev/null && break; sleep 0.1; done
    fpid=
    if [ "$FLOOD" -gt 0 ]; then
      ex $CLI taskset -c 1 $lt flood --server 198.18.0.1:51820 --server-key "$(cat $tmp/srv.pub)" \
        --bind 198.18.0.2:0 --rate $FLOOD --seconds $((T + 1)) > $tmp/flood.out &
      fpid=$!
      for i in $(seq 1 100); do grep -q ready $tmp/flood.out 2>/dev/null && break; sleep 0.1; done
    fi
    # The server's CPU is counted from the end of the customers' handshakes.
    if [ "$GEN" = replay ]; then
      # The generator yields CPU 1 to the sink: when starved it only offers less (it says how much).
      ex $CLI taskset -c 1 nice -n 10 $lt replay $common $target --size $size --seconds $T \
        --packets $PACKETS --burst $BURST ${GSO:+--gso} ${RATE:+--rate $RATE} > $tmp/send.out &
    else
      ex $CLI taskset -c 1 $lt send $common $target --size $size --seconds $T > $tmp/send.out &
    fi
    sendpid=$!
    for i in $(seq 1 $((300 + N))); do grep -q ready $tmp/send.out 2>/dev/null && break; sleep 0.1; done
    c0=$(server_cpu)
    wait $sendpid
    c1=$(server_cpu)
    wait $spid
    if [ -n "$fpid" ]; then
      wait $fpid
      echo "  [$server $size in] flood: $(tail -1 $tmp/flood.out)" >&2
    fi
    got=$(sed -n 's/.*received packets=\([0-9]*\).*/\1/p' $tmp/sink.out)
    in=$(echo "${got:-0} $c0 $c1" | awk '{d=$3-$2; printf "%.0f", (d > 0 ? $1/d : 0)}')
    io_figures "$server $size in"
    echo "  [$server $size in] delivered ${got:-0} in $(echo "$c0 $c1" | awk '{print $2-$1}') server CPU-s" >&2
    if [ "$GEN" = replay ]; then
      # Overload: what was offered, and what got through per second of wall time.
      off=$(sed -n 's/.*replayed packets=\([0-9]*\) seconds=\([0-9.]*\).*/\1 \2/p' $tmp/send.out)
      echo "  [$server $size in] offered $(echo "$off" | awk '{printf "%.0f/s (%d in %.2f s)", $1/$2, $1, $2}'), delivered $(echo "${got:-0} $off" | awk '{printf "%.0f/s", $1/$3}')" >&2
    fi
    out=-
    lost=-
    case " $DIRS " in *" out "*) ;; *)
      printf '%-26s %6s %12s %12s %14s\n' $server $size $in $out $lost
      continue ;;
    esac
    # out: the internet host sends to the rented addresses; customers count what authenticates.
    ex $CLI taskset -c 1 $lt recv $common --seconds $((T + 3)) > $tmp/recv.out &
    rpid=$!
    for i in $(seq 1 $((50 + N))); do grep -q ready $tmp/recv.out 2>/dev/null && break; sleep 0.1; done
    c0=$(server_cpu)
    lost0=$(ex $CLI awk '/^Udp: [0-9]/ {print $6}' /proc/net/snmp)
    ex $INET taskset -c 1 $lt blast $first --customers $N --size $size --seconds $T > $tmp/blast.out
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
