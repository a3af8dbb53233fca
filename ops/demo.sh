#!/usr/bin/env bash
# The README's demo: a provider running staticwire-router, a customer with wireguard-go and the
# rented address 203.0.113.10, and a host on the "internet" reaching that address. Everything
# lives in network namespaces this script creates and removes (also on failure or Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the demo creates network namespaces: run it as root (sudo)" >&2; exit 1; }

need=()
for c in wireguard-go wg iperf3 ip ping python3; do command -v $c >/dev/null || need+=($c); done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing wireguard-go wireguard-tools iperf3 iproute2 iputils-ping python3"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    wireguard-go wireguard-tools iperf3 iproute2 iputils-ping python3
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
id=swdemo$$
CLI=$id-cli SRV=$id-srv INET=$id-inet WGS=${id}s WGC=${id}c
tmp=$(mktemp -d)
cleanup() {
  for ns in $CLI $SRV $INET; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill $p 2>/dev/null || true; done
  done
  sleep 0.3
  for ns in $CLI $SRV $INET; do ip netns del $ns 2>/dev/null || true; done
  rm -f /var/run/wireguard/$WGS.sock /var/run/wireguard/$WGC.sock
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
ex() { ip netns exec "$@"; }

step "build staticwire-router"
cargo build --release -q -p staticwire-router
router=$PWD/target/release/staticwire-router

step "namespaces: customer $CLI (198.18.0.2), provider $SRV (198.18.0.1 / 198.19.0.1), internet $INET (198.19.0.2)"
for ns in $CLI $SRV $INET; do ip netns add $ns; ex $ns ip link set lo up; done
ip link add ${id}a type veth peer name ${id}b
ip link set ${id}a netns $CLI; ip link set ${id}b netns $SRV
ip link add ${id}x type veth peer name ${id}y
ip link set ${id}x netns $INET; ip link set ${id}y netns $SRV
ex $CLI ip addr add 198.18.0.2/24 dev ${id}a; ex $CLI ip link set ${id}a up
ex $SRV ip addr add 198.18.0.1/24 dev ${id}b; ex $SRV ip link set ${id}b up
ex $SRV ip addr add 198.19.0.1/24 dev ${id}y; ex $SRV ip link set ${id}y up
ex $INET ip addr add 198.19.0.2/24 dev ${id}x; ex $INET ip link set ${id}x up
ex $INET ip route add 203.0.113.0/24 via 198.19.0.1
ex $SRV sysctl -qw net.ipv4.ip_forward=1

step "keys: each side generates its own"
umask 077
wg genkey > $tmp/srv.key; wg pubkey < $tmp/srv.key > $tmp/srv.pub
wg genkey > $tmp/cli.key; wg pubkey < $tmp/cli.key > $tmp/cli.pub
echo "provider public key: $(cat $tmp/srv.pub)"
echo "customer public key: $(cat $tmp/cli.pub)"

step "provider: start staticwire-router on $WGS, admit the customer's key for 203.0.113.10/32"
ex $SRV $router --log-file $tmp/router.log --metrics 127.0.0.1:9586 $WGS
ex $SRV wg set $WGS private-key $tmp/srv.key listen-port 51820 peer "$(cat $tmp/cli.pub)" allowed-ips 203.0.113.10/32
ex $SRV ip link set $WGS up
ex $SRV ip route add 203.0.113.0/24 dev $WGS

step "customer: wireguard-go on $WGC with the rented address 203.0.113.10"
ex $CLI wireguard-go $WGC 2>/dev/null
ex $CLI wg set $WGC private-key $tmp/cli.key peer "$(cat $tmp/srv.pub)" endpoint 198.18.0.1:51820 allowed-ips 198.19.0.0/24 persistent-keepalive 25
ex $CLI ip addr add 203.0.113.10/32 dev $WGC
ex $CLI ip link set $WGC mtu 1420 up
ex $CLI ip route add 198.19.0.0/24 dev $WGC src 203.0.113.10

step "customer -> internet: ping from 203.0.113.10"
for i in $(seq 1 10); do ex $CLI ping -c 1 -W 1 -I 203.0.113.10 198.19.0.2 >/dev/null && break; done
ex $CLI ping -c 3 -I 203.0.113.10 198.19.0.2

step "internet -> the customer's rented address"
ex $INET ping -c 3 203.0.113.10

step "TCP both ways (iperf3, 3 s each)"
ex $INET iperf3 -s -D -1 -B 198.19.0.2 >/dev/null; sleep 0.3
echo -n "upload  (customer -> internet): "
ex $CLI iperf3 -c 198.19.0.2 -B 203.0.113.10 -t 3 -J | python3 -c 'import json,sys; print("%.0f Mbit/s" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))'
ex $CLI iperf3 -s -D -1 -B 203.0.113.10 >/dev/null; sleep 0.3
echo -n "inbound (internet -> 203.0.113.10): "
ex $INET iperf3 -c 203.0.113.10 -t 3 -J | python3 -c 'import json,sys; print("%.0f Mbit/s" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))'

step "wg show on the provider"
ex $SRV wg show $WGS

step "a few of the router's Prometheus series"
ex $SRV python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:9586/metrics").read().decode())' \
  | grep -E '^(wireguard_|staticwire_router_packets|staticwire_router_dropped_packets_total.*spoofed)' || true

step "done: removing namespaces, interfaces and processes"
