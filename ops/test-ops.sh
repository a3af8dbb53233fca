#!/usr/bin/env bash
# Operations tests (called by ops/test.sh; runs alone too: sudo bash ops/test-ops.sh):
#  - promtool check config / check rules / test rules on ops/prometheus/;
#  - systemd-analyze verify on every unit in ops/ (systemd need not be PID 1);
#  - the nftables ruleset and the sysctl file parse (nft -c, sysctl -p in a namespace);
#  - a real Prometheus (Debian's `prometheus`) scrapes staticwire-router and staticwire-control
#    in network namespaces while a customer rents, pays and uses an address; every expression
#    of the Grafana dashboard and of the alert rules is run through the query API and returns
#    series; the rental's bytes, handshake, satoshis and state moved as the run did; stopping
#    the router makes the router-down and reconcile alerts' expressions true;
#  - staticwire-control backup while serving;
#  - the Debian packages (ops/test-packages.sh): cargo deb, lintian, dpkg install, the units'
#    ExecStart lines run as their users, upgrade keeping the database, purge;
#  - the release packages under a real systemd (ops/test-systemd.sh): booted Debian 12
#    containers for the provider and the customer, faults, reboots, hardening, upgrade, purge.
# Root only (namespaces, TUN, apt-get); without root it says so loudly and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
t_start=$(date +%s)
if [ "$(id -u)" != 0 ]; then
  echo "!!!!! SKIPPED ops/test-ops.sh: needs root (network namespaces, apt-get). Run: sudo bash ops/test-ops.sh !!!!!" >&2
  exit 0
fi

# Leftovers of an interrupted earlier run (only this script's own prefix).
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^swo[0-9]' || true); do
  ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
done

need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus >/dev/null || need+=(prometheus)
command -v nft >/dev/null || need+=(nftables)
command -v systemd-analyze >/dev/null || need+=(systemd)
for c in wireguard-go:wireguard-go wg:wireguard-tools wg-quick:wireguard-tools ip:iproute2 ping:iputils-ping curl:curl python3:python3; do
  command -v ${c%%:*} >/dev/null || need+=(${c#*:})
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "== promtool check config, check rules, test rules"
promtool check config ops/prometheus/prometheus.yml
promtool test rules ops/prometheus/staticwire.rules.test.yml
# Every alert has a unit test.
for a in $(sed -n 's/^ *- alert: //p' ops/prometheus/staticwire.rules.yml); do
  grep -q "alertname: $a\$" ops/prometheus/staticwire.rules.test.yml || { echo "alert $a has no promtool test" >&2; exit 1; }
done

echo "== systemd-analyze verify"
units=$(mktemp -d)
cp ops/*.service "$units/"
# verify resolves ExecStart binaries: point the unit copies at the ones just built.
cargo build -q -p staticwire-router -p staticwire-control -p staticip
bin=${CARGO_TARGET_DIR:-$PWD/target}/debug
sed -i "s#/usr/bin/staticwire-router#$bin/staticwire-router#; s#/usr/bin/staticwire-control#$bin/staticwire-control#; s#/usr/bin/staticip#$bin/staticip#" "$units"/*.service
mv "$units/staticwire-router@.service" "$units/staticwire-router@wg0.service"
(cd "$units" && systemd-analyze verify --man=no ./*.service 2>&1) | tee "$units/verify.log"
if grep -q . "$units/verify.log"; then
  echo "systemd-analyze verify complained" >&2; exit 1
fi
echo "  verified: $(cd "$units" && ls *.service | tr '\n' ' ')"
echo "== systemd-analyze security (exposure, lower is better)"
for u in "$units"/*.service; do
  printf '  %-32s %s\n' "$(basename $u)" "$(systemd-analyze security --offline=true "$u" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: //p')"
done
rm -rf "$units"

echo "== nftables ruleset and sysctls (checked in a scratch namespace)"
scratch=swo$$n
ip netns add $scratch
trap 'ip netns del $scratch 2>/dev/null || true' EXIT
ip netns exec $scratch ip link add wg0 type veth peer name eth0
ip netns exec $scratch nft -f ops/host/staticwire.nft
ruleset=$(ip netns exec $scratch nft list table inet staticwire)
grep -q 'iifname "wg0" ip saddr != @rented' <<<"$ruleset"
grep -q 'iifname "wg0" ip6 saddr != @rented6' <<<"$ruleset"
ip netns exec $scratch sysctl -q -p ops/host/99-staticwire.conf
[ "$(ip netns exec $scratch sysctl -n net.ipv4.ip_forward)" = 1 ]
[ "$(ip netns exec $scratch sysctl -n net.ipv6.conf.all.forwarding)" = 1 ]
ip netns del $scratch
trap - EXIT

echo "== a real Prometheus scrapes the router and the control during a rental"
id=swo$$
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
netns_up

ex $SRV $bin/staticwire-router --log-file $tmp/router.log --metrics 127.0.0.1:9586 $WGS
ex $SRV ip link set $WGS up
ex $SRV ip route add 203.0.113.0/24 dev $WGS
# The provider's forwarding policy (ops/host/staticwire.nft) on the provider's interfaces:
# the rental below must work through it.
sed -e "s/^define UPLINK = .*/define UPLINK = \"${id}y\"/" -e "s/^define WG = .*/define WG = \"$WGS\"/" \
  ops/host/staticwire.nft > $tmp/staticwire.nft
ex $SRV nft -f $tmp/staticwire.nft
# A pool of one rentable address: the rental exhausts it, which the pool alert must see.
cat > $tmp/control.toml <<CONF
listen = "198.18.0.1:8420"
data_dir = "$tmp/control"
reconcile_interval_secs = 1
invoice_poll_millis = 100
[metrics]
listen = "127.0.0.1:9587"
[[routers]]
name = "$WGS"
socket = "/var/run/wireguard/$WGS.sock"
endpoint = "198.18.0.1:51820"
pools = ["203.0.113.8/30"]
reserved = ["203.0.113.9"]
CONF
ex $SRV $bin/staticwire-control -c $tmp/control.toml serve > $tmp/control.log 2>&1 &
api=http://198.18.0.1:8420
for i in $(seq 1 100); do ex $CLI curl -sf $api/healthz >/dev/null && break; sleep 0.1; done

# The shipped Prometheus configuration, at a 1 s scrape and evaluation interval.
mkdir -p $tmp/prom
cp ops/prometheus/prometheus.yml ops/prometheus/staticwire.rules.yml $tmp/prom/
sed -i 's/_interval: 15s/_interval: 1s/' $tmp/prom/prometheus.yml
ex $SRV prometheus --config.file=$tmp/prom/prometheus.yml --storage.tsdb.path=$tmp/prom/data \
  --web.listen-address=127.0.0.1:9090 --log.level=warn > $tmp/prometheus.log 2>&1 &
prom=http://127.0.0.1:9090
q() { ex $SRV curl -sf --data-urlencode "query=$1" ${2:+--data-urlencode "time=$2"} $prom/api/v1/query; }
val() { q "$@" | json 'sum(float(r["value"][1]) for r in d["data"]["result"]) if d["data"]["result"] else "none"'; }
for i in $(seq 1 100); do
  [ "$(val 'count(up{job=~"staticwire-.*"} == 1)' 2>/dev/null)" = 2.0 ] && break
  [ $i = 100 ] && { echo "Prometheus never saw both targets up"; cat $tmp/prometheus.log; ex $SRV curl -s $prom/api/v1/targets; exit 1; }
  sleep 0.2
done
echo "  Prometheus is scraping both targets"
sleep 2
t0=$(date +%s.%N)

sip() { ex $CLI env WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go $bin/staticip --state-dir $tmp/customer --server $api "$@"; }
ex $CLI curl -s -o /dev/null $api/v1/rentals/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= || true   # a 401 (no proof) for the error panel
rent_out=$(sip RentNewIP --no-wait 2>&1) || { echo "FAILED: renting: $rent_out"; exit 1; }
bolt11=$(sip --json status | json 'd["open_invoice"]["bolt11"]')
addr=$(sip --json status | json 'd["address"]')
$bin/staticwire-control -c $tmp/control.toml dev-pay "$bolt11" >/dev/null
for i in $(seq 1 50); do [ "$(sip --json status | json 'd["state"]')" = active ] && break; sleep 0.1; done
sip GetConf >/dev/null
sip up >/dev/null 2>&1
ok=0
for i in $(seq 1 20); do ex $INET ping -c 1 -W 1 $addr >/dev/null && { ok=1; break; }; done
[ $ok = 1 ] || { echo "the rented address $addr is not reachable"; exit 1; }
ex $INET ping -q -c 20 -i 0.05 -s 1000 $addr >/dev/null
echo "  rented $addr, paid, tunnel up, pinged from the internet"
ex $SRV $bin/staticwire-control -c $tmp/control.toml backup $tmp/backup.sqlite >/dev/null
[ -s $tmp/backup.sqlite ] || { echo "backup while serving made nothing"; exit 1; }
echo "  backup while serving: $(stat -c %s $tmp/backup.sqlite) bytes"
sleep 4

echo "== the run as Prometheus saw it"
check() {  # name, expr, expected-before (or -), test on the value now
  local before now
  before=$(val "$2" $t0); now=$(val "$2")
  echo "  $1: $before -> $now"
  if [ "$3" != - ] && ! python3 -c "import sys; b=sys.argv[1]; sys.exit(0 if (0.0 if b=='none' else float(b))==float(sys.argv[2]) else 1)" "$before" "$3"; then
    echo "FAILED: $1 was $before before the rental, expected $3"; exit 1
  fi
  python3 -c "import sys; v=float(sys.argv[1]) if sys.argv[1]!='none' else None; sys.exit(0 if v is not None and ($4) else 1)" "$now" ||
    { echo "FAILED: $1 is $now, expected $4"; exit 1; }
}
check "bytes from the customer" "sum(wireguard_received_bytes_total{allowed_ips=\"$addr/32\"})" 0 'v > 20000'
check "bytes to the customer" "sum(wireguard_sent_bytes_total{allowed_ips=\"$addr/32\"})" 0 'v > 20000'
check "latest handshake" "max(wireguard_latest_handshake_seconds{allowed_ips=\"$addr/32\"})" 0 'v > 1.7e9'
check "handshakes" "sum(staticwire_router_handshakes_total)" 0 'v >= 1'
check "satoshis received (v1)" 'sum(staticwire_control_received_sat_total{api="v1"})' 0 'v == 72000'
check "active rentals" 'sum(staticwire_control_rentals{state="active"})' 0 'v == 1'
check "free addresses" 'sum(staticwire_control_addresses{status="free"})' 1 'v == 0'
check "admissions timed from settlement" 'sum(staticwire_control_settlement_admission_seconds_count)' 0 'v >= 1'

echo "== every dashboard and alert expression, through the query API"
ex $SRV python3 ops/prometheus/check_queries.py $prom ops/grafana/staticwire.json ops/prometheus/staticwire.rules.yml \
  --firing StaticWirePoolNearlyExhausted > $tmp/queries.txt || { cat $tmp/queries.txt; exit 1; }
cat $tmp/queries.txt

echo "== the forwarding policy carried the rental, and drops what it must"
# A rented source arriving from the uplink, and a customer's outbound SMTP.
ex $INET ip addr add 203.0.113.77/32 dev ${id}x
ex $INET ping -c 2 -W 1 -I 203.0.113.77 $addr >/dev/null 2>&1 || true
ex $CLI timeout 3 bash -c 'echo > /dev/tcp/198.19.0.2/25' 2>/dev/null || true
counter() { ex $SRV nft list chain inet staticwire forward | sed -n "/comment \"$1\"/s/.*counter packets \([0-9]*\).*/\1/p"; }
spoofed=$(counter "rented source from outside"); smtp=$(counter "blocked port")
echo "  dropped rented sources from the uplink: $spoofed, customer SMTP reset: $smtp"
[ "${spoofed:-0}" -ge 2 ] && [ "${smtp:-0}" -ge 1 ] || { ex $SRV nft list chain inet staticwire forward; exit 1; }

echo "== the router stops: its down and reconcile alerts' expressions become true"
for p in $(ip netns pids $SRV); do
  if [ "$(cat /proc/$p/comm 2>/dev/null)" = staticwire-rout ]; then kill $p; fi
done
sleep 4
ex $SRV python3 ops/prometheus/check_queries.py $prom ops/grafana/staticwire.json ops/prometheus/staticwire.rules.yml \
  --alerts-only --firing StaticWireRouterDown StaticWireReconcileFailing StaticWirePoolNearlyExhausted > $tmp/queries.txt ||
  { grep -v '^ ' $tmp/queries.txt; grep -E 'alert StaticWire(RouterDown|ReconcileFailing)' $tmp/queries.txt; exit 1; }
grep -E 'alert StaticWire(RouterDown|ReconcileFailing|PoolNearly)' $tmp/queries.txt

trap - EXIT INT TERM
cleanup
bash ops/test-packages.sh
bash ops/test-systemd.sh

echo "== ops tests passed in $(( $(date +%s) - t_start )) s"
