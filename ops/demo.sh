#!/usr/bin/env bash
# The README's demo: a provider runs staticwire-control and staticwire-router; a customer rents
# a public address with its own WireGuard key, pays the Lightning invoice (dev backend: real
# BOLT11, settled locally), brings the tunnel up with wg-quick + wireguard-go, and a host on the
# "internet" reaches the customer's new address. Everything lives in network namespaces this
# script creates and removes (also on failure or Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the demo creates network namespaces: run it as root (sudo)" >&2; exit 1; }

need=()
for c in wireguard-go wg wg-quick ip ping curl python3 iptables-restore; do command -v $c >/dev/null || need+=($c); done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing wireguard-go wireguard-tools iproute2 iputils-ping curl python3 iptables"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    wireguard-go wireguard-tools iproute2 iputils-ping curl python3 iptables
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
id=swdemo$$
CLI=$id-cli SRV=$id-srv INET=$id-inet WGS=${id}s
tmp=$(mktemp -d)
. ops/netns.sh
cleanup() {
  netns_down
  rm -f /var/run/wireguard/$WGS.sock
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

step "build staticwire-router, staticwire-control and staticip"
cargo build --release -q -p staticwire-router -p staticwire-control -p staticip
router=$PWD/target/release/staticwire-router
control=$PWD/target/release/staticwire-control
staticip=$PWD/target/release/staticip

step "namespaces: customer $CLI (198.18.0.2), provider $SRV (198.18.0.1 / 198.19.0.1), internet $INET (198.19.0.2)"
netns_up

step "provider: staticwire-router on $WGS; the pool 203.0.113.0/24 is routed to it"
ex $SRV $router --log-file $tmp/router.log --metrics 127.0.0.1:9586 $WGS
ex $SRV ip link set $WGS up
ex $SRV ip route add 203.0.113.0/24 dev $WGS

step "provider: staticwire-control (SQLite, dev Lightning backend) drives the router"
cat > $tmp/control.toml <<CONF
listen = "198.18.0.1:8420"
data_dir = "$tmp/control"
[[routers]]
name = "$WGS"
socket = "/var/run/wireguard/$WGS.sock"
endpoint = "198.18.0.1:51820"
pools = ["203.0.113.0/24"]
reserved = ["203.0.113.1"]
CONF
cat $tmp/control.toml
ex $SRV $control -c $tmp/control.toml serve > $tmp/control.log 2>&1 &
api=http://198.18.0.1:8420
for i in $(seq 1 50); do ex $CLI curl -sf $api/healthz >/dev/null && break; sleep 0.1; done
echo "terms: $(ex $CLI curl -sf $api/v1/terms)"

step "customer: staticip RentNewIP (key made locally; only the public key is sent)"
sip() { ex $CLI env WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go $staticip --state-dir $tmp/customer --server $api "$@"; }
sip RentNewIP --no-wait
pub=$(sip --json status | json 'd["public_key"]')
bolt11=$(sip --json status | json 'd["open_invoice"]["bolt11"]')
addr=$(sip --json status | json 'd["address"]')

step "the customer's wallet pays the invoice (dev backend: staticwire-control dev-pay)"
$control -c $tmp/control.toml dev-pay "$bolt11"
for i in $(seq 1 50); do [ "$(sip --json status | json 'd["state"]')" = active ] && break; sleep 0.1; done
sip GetRentalStatus

step "customer: staticip GetConf writes the wg-quick file (private key filled in locally), staticip up"
sip GetConf
sip up 2>&1 | sed 's/^/  /'

step "customer serves a web page on its new address"
mkdir -p $tmp/www; echo "hello from the customer's own static address $addr" > $tmp/www/index.html
ex $CLI python3 -m http.server --bind $addr --directory $tmp/www 8080 >/dev/null 2>&1 &

step "internet -> $addr: ping and HTTP"
for i in $(seq 1 20); do ex $INET ping -c 1 -W 1 $addr >/dev/null && break; done
ex $INET ping -c 3 $addr
for i in $(seq 1 20); do ex $INET curl -sf --max-time 2 http://$addr:8080/ && break; sleep 0.2; done

step "customer -> internet leaves from $addr"
ex $INET python3 -c "
import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('198.19.0.2', 9000)); s.listen(1); s.settimeout(10); c, a = s.accept(); print('  the internet host sees a connection from', a[0])" &
sleep 0.3
ex $CLI python3 -c "import socket; socket.create_connection(('198.19.0.2', 9000), timeout=5).close()"
wait $!

step "provider: wg show and a few Prometheus series"
ex $SRV wg show $WGS
ex $SRV curl -sf http://127.0.0.1:9586/metrics | grep -E '^(wireguard_|staticwire_router_packets)' || true

step "done: removing namespaces, interfaces and processes"
