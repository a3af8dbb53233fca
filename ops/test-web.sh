#!/usr/bin/env bash
# The provider's public web page in a real browser (called by ops/test.sh; runs alone too:
# sudo bash ops/test-web.sh). A headless Chromium in the customer's network namespace rents,
# pays (dev-pay), reads the configuration, checks status, lapses, renews, and the tunnel that
# configuration describes then carries traffic between the customer and the "internet":
#   customer 198.18.0.2 --- 198.18.0.1 provider (control + router) 198.19.0.1 --- 198.19.0.2 internet
# Screenshots of every step at phone and desktop sizes: target/web-screenshots/.
# Root only (namespaces, TUN, apt-get); without root it says so loudly and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "!!!!! SKIPPED ops/test-web.sh: needs root (network namespaces, apt-get). Run: sudo bash ops/test-web.sh !!!!!" >&2
  exit 0
fi
t_start=$(date +%s)

need=()
for c in chromium:chromium chromedriver:chromium-driver zbarimg:zbar-tools wireguard-go:wireguard-go \
         wg:wireguard-tools wg-quick:wireguard-tools ip:iproute2 ping:iputils-ping curl:curl \
         python3:python3 iptables-restore:iptables; do
  command -v ${c%%:*} >/dev/null || need+=(${c#*:})
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! python3 -c 'import ensurepip' 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
venv=target/web-venv
if [ ! -x $venv/bin/python ] || ! $venv/bin/python -c 'import selenium' 2>/dev/null; then
  echo "== Python venv with selenium"
  python3 -m venv $venv
  $venv/bin/pip install -q "selenium>=4.20,<5"
fi

echo "  chromium, chromedriver, zbarimg and selenium ready after $(( $(date +%s) - t_start )) s"

cargo build -q -p staticwire-router -p staticwire-control
bin=${CARGO_TARGET_DIR:-$PWD/target}/debug

id=swtw$$
CLI=$id-cli SRV=$id-srv INET=$id-inet WGS=${id}s WGC=${id}c
tmp=$(mktemp -d)
shots=$PWD/target/web-screenshots
. ops/netns.sh
cleanup() {
  netns_down
  rm -f /var/run/wireguard/$WGS.sock /var/run/wireguard/$WGC.sock
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
netns_up

echo "== provider: staticwire-router and staticwire-control (dev backend, request bodies logged)"
ex $SRV $bin/staticwire-router --log-file $tmp/router.log $WGS
ex $SRV ip link set $WGS up
ex $SRV ip route add 203.0.113.0/24 dev $WGS
cat > $tmp/control.toml <<CONF
listen = "198.18.0.1:8420"
data_dir = "$tmp/control"
invoice_poll_millis = 100
[[routers]]
name = "$WGS"
socket = "/var/run/wireguard/$WGS.sock"
endpoint = "198.18.0.1:51820"
pools = ["203.0.113.0/24"]
reserved = ["203.0.113.1"]
ipv6_pool = "2001:db8:5::/48"
[limits]
max_unpaid_per_client = 4   # addresses per client /24: one /30 hold, so the test sees the page explain a refusal
CONF
ex $SRV env STATICWIRE_LOG_BODIES=1 $bin/staticwire-control -c $tmp/control.toml serve --dev-hooks \
  > $tmp/control.log 2>&1 &
api=http://198.18.0.1:8420
for i in $(seq 1 100); do ex $CLI curl -sf $api/healthz >/dev/null && break; sleep 0.1; done
ex $CLI curl -sf $api/healthz >/dev/null || { cat $tmp/control.log; exit 1; }

echo "== headless Chromium walks the page (customer namespace)"
rm -rf "$shots"; mkdir -p "$shots"
if ! ex $CLI env HOME=$tmp TMPDIR=$tmp timeout 180 $venv/bin/python control/tests/web/browser_test.py \
    --api $api --control-log $tmp/control.log --dev-pay "$bin/staticwire-control -c $tmp/control.toml dev-pay" \
    --out $tmp --shots "$shots"; then
  echo "--- control log (last 40 lines)"; tail -40 $tmp/control.log
  exit 1
fi
echo "  screenshots: $(ls "$shots" | wc -l) in $shots"

echo "== the configuration from the page brings a tunnel up (wg-quick + wireguard-go)"
cp $tmp/customer.conf $tmp/$WGC.conf
chmod 600 $tmp/$WGC.conf
addr=$(sed -n 's#^Address = \([0-9.]*\)/32.*#\1#p' $tmp/$WGC.conf)
[ -n "$addr" ] || { echo "FAIL: no IPv4 address in the configuration" >&2; cat $tmp/$WGC.conf; exit 1; }
ex $CLI env WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go wg-quick up $tmp/$WGC.conf 2>&1 | sed 's/^/  /'
ok=0
for i in $(seq 1 40); do ex $INET ping -c 1 -W 1 $addr >/dev/null 2>&1 && { ok=1; break; }; done
[ $ok = 1 ] || { echo "FAIL: the internet cannot reach $addr through the tunnel" >&2; exit 1; }
ex $INET ping -c 3 -i 0.2 $addr | tail -2 | sed 's/^/  /'
# The customer's own connections leave from the rented address.
ex $INET python3 -c "
import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('198.19.0.2', 9000)); s.listen(1); s.settimeout(20); c, a = s.accept(); print(a[0])" > $tmp/seen &
seen_pid=$!
sleep 0.3
ex $CLI python3 -c "
import socket, time
for i in range(50):  # until the listener is up
    try:
        socket.create_connection(('198.19.0.2', 9000), timeout=10).close(); break
    except ConnectionRefusedError:
        time.sleep(0.1)
else:
    raise SystemExit('no listener on the internet host')"
wait $seen_pid
[ "$(cat $tmp/seen)" = "$addr" ] || { echo "FAIL: the internet saw $(cat $tmp/seen), not $addr" >&2; exit 1; }
echo "  internet -> $addr and customer -> internet from $addr: ok"
echo "== web page test passed in $(( $(date +%s) - t_start )) s"
