#!/usr/bin/env bash
# The packages under a real systemd (issue 23; called by ops/test-ops.sh, runs alone as root):
#  - the release packages, built by ops/package.sh (cargo deb), lintian-clean;
#  - two booted Debian 12 containers (systemd-nspawn -b): the provider `swsd-p` and the customer
#    `swsd-c`, plus the "internet" namespace `swsd-i`, joined only by veth pairs in
#    198.18.0.0/15 (customer 198.18.0.2 - 198.18.0.1 provider 198.19.0.1 - 198.19.0.2 internet,
#    which routes 203.0.113.0/24 to the provider): each container runs in a network namespace
#    this script makes (--private-network --network-namespace-path: /proc/sys/net writable),
#    nothing is routed to the host's interfaces;
#  - the provider installs the previous package version with apt, configures it from the
#    packaged example, applies the packaged sysctls and nftables policy, enables the router and
#    control units; the customer installs `staticip`, rents, is paid for (`dev-pay`), enables
#    its daemon unit, which brings the tunnel up; the internet host pings the rented address;
#  - the upgrade to the release package keeps the database, the rental and the edited config;
#  - faults: kill -9 of the router (systemd restarts it, the control re-admits the peer: the
#    gaps are measured), kill -9 of the control, `systemctl restart` of both during traffic,
#    the customer's container rebooted after the clocks moved 27 days (tunnel back on boot, the
#    daemon renews through its node), the provider's container rebooted (the rental served
#    again);
#  - `systemd-analyze security` of each unit, and every unit's mount namespace: writable only
#    in its own state, runtime and private temporary directories;
#  - `journalctl -u` shows each service's log lines with their fields;
#  - purge removes what the packages made.
# The root filesystem is made once by debootstrap and cached (keyed by its package list) in
# $STATICWIRE_TEST_CACHE (default /var/cache/staticwire-test); each container runs on an overlay
# of it. Everything made here is removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
t_start=$(date +%s)
if [ "$(id -u)" != 0 ]; then
  echo "!!!!! SKIPPED ops/test-systemd.sh: needs root (containers, network namespaces). Run: sudo bash ops/test-systemd.sh !!!!!" >&2
  exit 0
fi

P=swsd-p C=swsd-c I=swsd-i          # provider, customer (containers), internet (namespace)
API=http://198.18.0.1:8420
ROOTFS_PACKAGES=systemd,systemd-sysv,dbus,iproute2,iputils-ping,procps,adduser,wireguard-tools,wireguard-go,nftables
cache_root=${STATICWIRE_TEST_CACHE:-/var/cache/staticwire-test}
target=${CARGO_TARGET_DIR:-$PWD/target}
work=""

step() { printf "\n== %s  [%s s]\n" "$*" $(( $(date +%s) - t_start )); }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
ex() { ip netns exec "$@"; }

# The container's PID 1 as the host sees it: the process of its network namespace whose PID in
# its own namespace is 1.
leader() {
  local p
  for p in $(ip netns pids "$1" 2>/dev/null); do
    if [ "$(cat /proc/$p/comm 2>/dev/null)" = systemd ] && grep -q 'NSpid:.*[[:space:]]1$' /proc/$p/status 2>/dev/null; then
      echo $p; return 0
    fi
  done
  return 1
}
# Runs a command inside a booted container (all its namespaces), bounded by 120 s.
on() {
  local m=$1 l; shift
  l=$(leader $m) || { echo "container $m is not running" >&2; return 1; }
  timeout 120 nsenter -t $l -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}

# The cgroups a container runs in when no systemd is PID 1 here (nspawn --keep-unit): one of its
# own per hierarchy, so the two containers' systemd never share (and clean up) each other's.
cgroups() {
  local d
  if [ -d /sys/fs/cgroup/systemd ]; then echo /sys/fs/cgroup/systemd/$1; fi
  for d in /sys/fs/cgroup/unified /sys/fs/cgroup; do
    if [ -f $d/cgroup.controllers ]; then echo $d/$1; break; fi
  done
}
cgroups_remove() {
  local cg
  for cg in $(cgroups $1); do
    [ -d $cg ] || continue
    find $cg -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    sleep 0.2
    find $cg -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}
# Boots a container on its overlay, in its own network namespace, with /dev/net/tun; a reboot
# inside (nspawn exits 133) boots it again, at most 5 times. Where systemd is PID 1, nspawn puts
# the container in a scope of its own and allows the TUN device there; elsewhere the container
# gets cgroups of its own and no device cgroup restricts it.
boot() {
  local m=$1 cg
  local -a sys=(--keep-unit)
  [ -d /run/systemd/system ] && sys=(--property="DeviceAllow=/dev/net/tun rwm")
  rm -f $work/$m.stop
  (
    if [ ${sys[0]} = --keep-unit ]; then
      for cg in $(cgroups $m); do mkdir -p $cg; echo $BASHPID > $cg/cgroup.procs; done
    fi
    for _ in 1 2 3 4 5 6; do
      systemd-nspawn --quiet --register=no "${sys[@]}" --console=read-only -D $work/$m/root -b \
        --machine=$m --private-network --network-namespace-path=/run/netns/$m \
        --bind=$work/dev/tun:/dev/net/tun --bind-ro=$work/debs:/srv/swsd-debs \
        --bind=$work/wallet:/srv/swsd-wallet &
      echo $! > $work/$m.nspawn
      rc=0; wait $! || rc=$?
      echo "-- nspawn exited $rc"
      [ $rc = 133 ] && [ ! -e $work/$m.stop ] || break
    done
  ) >> $work/$m.console 2>&1 &
  echo $! > $work/$m.wrapper
}
# Waits (bounded) until a container's systemd has finished booting; fails unless "running".
booted() {
  local m=$1 state="" i
  for i in $(seq 1 450); do
    state=$(on $m systemctl is-system-running 2>/dev/null) || true
    case "$state" in running|degraded) break ;; esac
    sleep 0.2
  done
  if [ "$state" != running ]; then
    echo "FAILED: $m did not boot to a running system (state: '$state')"
    on $m systemctl --failed --no-pager 2>/dev/null || true
    tail -40 $work/$m.console
    return 1
  fi
}
# Stops a container: nspawn turns SIGTERM into an orderly poweroff; SIGKILL after 30 s.
halt() {
  local m=$1 w n i
  [ -n "$work" ] && [ -e $work/$m.wrapper ] || return 0
  touch $work/$m.stop
  w=$(cat $work/$m.wrapper); n=$(cat $work/$m.nspawn 2>/dev/null || true)
  [ -n "$n" ] && kill -TERM $n 2>/dev/null || true
  for i in $(seq 1 150); do kill -0 $w 2>/dev/null || break; sleep 0.2; done
  if kill -0 $w 2>/dev/null; then
    [ -n "$n" ] && kill -KILL $n 2>/dev/null || true
    sleep 1
  fi
  rm -f $work/$m.wrapper
}
reboot_and_wait() {
  local m=$1 old i
  old=$(leader $m)
  on $m systemctl reboot 2>/dev/null || true
  for i in $(seq 1 300); do
    local now; now=$(leader $m 2>/dev/null || true)
    [ -n "$now" ] && [ "$now" != "$old" ] && break
    sleep 0.2
  done
  booted $m
}

cleanup() {
  local rc=$?
  set +e
  if [ $rc != 0 ] && [ -n "$work" ]; then
    echo "== FAILED (exit $rc): the services' journals"
    on $P journalctl --no-pager -n 40 -u staticwire-control -u 'staticwire-router@wg0' 2>/dev/null
    on $C journalctl --no-pager -n 30 -u staticip 2>/dev/null
  fi
  [ -n "$work" ] && [ -e $work/wallet.pid ] && kill $(cat $work/wallet.pid) 2>/dev/null
  for m in $P $C; do halt $m; done
  # Anything still in our namespaces (the container processes are gone with nspawn).
  for ns in $P $C $I; do
    ip netns pids $ns 2>/dev/null | xargs -r kill -KILL 2>/dev/null
  done
  for m in $P $C; do
    [ -n "$work" ] && mountpoint -q $work/$m/root && umount $work/$m/root
    rm -rf /run/systemd/nspawn/propagate/$m
    cgroups_remove $m
  done
  for ns in $P $C $I; do ip netns del $ns 2>/dev/null; done
  for v in swsd-pc swsd-pi; do ip link del $v 2>/dev/null; done
  [ -n "$work" ] && rm -rf "$work"
  exit $rc
}

# Leftovers of an interrupted earlier run (this script's names only).
for ns in $P $C $I; do
  ip netns pids $ns 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  ip netns del $ns 2>/dev/null || true
done
for m in $P $C; do cgroups_remove $m; done
for d in /tmp/swsd.*; do
  [ -d "$d" ] || continue
  for m in $P $C; do mountpoint -q $d/$m/root && umount -l $d/$m/root; done
  rm -rf "$d"
done

need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v lintian >/dev/null || need+=(lintian)
for c in nsenter:util-linux ip:iproute2 ping:iputils-ping curl:curl python3:python3; do
  command -v ${c%%:*} >/dev/null || need+=(${c#*:})
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

step "release packages: bash ops/package.sh (cargo deb), lintian"
if ! cargo deb --version >/dev/null 2>&1; then
  echo "== cargo install cargo-deb --locked"
  cargo install -q cargo-deb --locked
fi
cargo build -q --release -p staticwire-router -p staticwire-control -p staticip
# Packaging takes minutes (debug symbols compressed into the -dbgsym packages): done again only
# when a binary or a packaged file is newer than the packages.
deb_new=$(ls -t $target/debian/staticwire_[0-9]*_amd64.deb 2>/dev/null | head -1 || true)
deb_sip=$(ls -t $target/debian/staticip_[0-9]*_amd64.deb 2>/dev/null | head -1 || true)
oldest=$(ls -tr $deb_new $deb_sip 2>/dev/null | head -1 || true)
if [ -z "$deb_new" ] || [ -z "$deb_sip" ] || [ -n "$(find $target/release/staticwire-router $target/release/staticwire-control \
    $target/release/staticip ops/*.service ops/debian ops/host ops/prometheus ops/grafana ops/README.md control/Cargo.toml \
    -newer $oldest 2>/dev/null | head -1)" ]; then
  bash ops/package.sh > /dev/null
  deb_new=$(ls -t $target/debian/staticwire_[0-9]*_amd64.deb | head -1)
  deb_sip=$(ls -t $target/debian/staticip_[0-9]*_amd64.deb | head -1)
else
  echo "  packages up to date with their inputs: not rebuilt"
fi
version=$(dpkg-deb -f $deb_new Version)
lint=0; lintian --fail-on error,warning --tag-display-limit 0 $deb_new $deb_sip > /tmp/swsd-lintian.$$ 2>&1 || lint=$?
grep -v 'running with root privileges' /tmp/swsd-lintian.$$ || true
rm -f /tmp/swsd-lintian.$$
[ $lint = 0 ] || { echo "FAILED: lintian"; exit 1; }
echo "  $(basename $deb_new), $(basename $deb_sip): lintian clean"

trap cleanup EXIT INT TERM
work=$(mktemp -d /tmp/swsd.XXXXXX)
chmod 0755 $work
mkdir -p $work/debs $work/wallet $work/dev
cp -p $deb_new $deb_sip $work/debs/
# "The previous version": the same release binaries packaged as revision 0 of this version (no
# earlier release of the package exists); the upgrade runs the package's maintainer scripts,
# conffile handling and service restarts from one installed version to the next.
prev=${version%-*}-0
cargo deb -q -p staticwire-control --no-build --strip --no-dbgsym --fast --deb-version $prev -o $work/debs/ >/dev/null
deb_prev=$work/debs/staticwire_${prev}_amd64.deb
[ -f $deb_prev ] || { echo "FAILED: no $deb_prev"; exit 1; }
# (cargo deb removes the package's other .deb files from target/debian: put the release one back)
cp -p $work/debs/$(basename $deb_new) $deb_new
chmod 0644 $work/debs/*.deb
echo "  previous version for the upgrade: $(basename $deb_prev) (same binaries, lower revision)"

step "root filesystem: Debian 12 minbase + systemd (debootstrap once, then cached)"
key=$(printf 'bookworm %s v1' "$ROOTFS_PACKAGES" | sha256sum | cut -c1-16)
rootfs=$cache_root/rootfs-bookworm-$key
if [ ! -e $rootfs/.complete ]; then
  mirror=${STATICWIRE_TEST_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    sed -E 's/\[[^]]*\]//' | grep -oE '^(URIs:|deb)[[:space:]]+[^[:space:]]+' | awk '{print $2}' | grep -m1 -E '/debian/?$' || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "  debootstrap from $mirror into $rootfs"
  rm -rf $rootfs $rootfs.tmp
  mkdir -p $cache_root
  timeout 1200 debootstrap --variant=minbase --include=$ROOTFS_PACKAGES bookworm $rootfs.tmp $mirror > $work/debootstrap.log 2>&1 ||
    { tail -20 $work/debootstrap.log; echo "FAILED: debootstrap"; exit 1; }
  # No apt timers in a test container (no network to fetch from); an empty machine id and
  # hostname, set per container below.
  for t in apt-daily.timer apt-daily-upgrade.timer; do ln -sf /dev/null $rootfs.tmp/etc/systemd/system/$t; done
  : > $rootfs.tmp/etc/machine-id
  rm -f $rootfs.tmp/etc/hostname
  touch $rootfs.tmp/.complete
  mv $rootfs.tmp $rootfs
fi
echo "  $rootfs ($(du -sh $rootfs | cut -f1))"
for m in $P $C; do
  mkdir -p $work/$m/up $work/$m/wk $work/$m/root
  mount -t overlay overlay -o lowerdir=$rootfs,upperdir=$work/$m/up,workdir=$work/$m/wk $work/$m/root
  echo $m > $work/$m/root/etc/hostname
  python3 -c 'import uuid; print(uuid.uuid4().hex)' > $work/$m/root/etc/machine-id
  mkdir -p $work/$m/root/srv/swsd-debs $work/$m/root/srv/swsd-wallet
done
# /dev/net/tun for the containers: Debian's udev makes it 0666 (the router opens it as the
# user staticwire); this machine may have it 0600, so the containers get a 0666 node of the
# same device.
mknod -m 0666 $work/dev/tun c 10 200

step "network: $C 198.18.0.2 -- 198.18.0.1 $P 198.19.0.1 -- 198.19.0.2 $I"
for ns in $P $C $I; do ip netns add $ns; ex $ns ip link set lo up; done
ip link add swsd-pc type veth peer name swsd-cp
ip link set swsd-pc netns $P; ip link set swsd-cp netns $C
ip link add swsd-pi type veth peer name swsd-ip
ip link set swsd-pi netns $P; ip link set swsd-ip netns $I
ex $C ip addr add 198.18.0.2/24 dev swsd-cp; ex $C ip link set swsd-cp up
ex $P ip addr add 198.18.0.1/24 dev swsd-pc; ex $P ip link set swsd-pc up
ex $P ip addr add 198.19.0.1/24 dev swsd-pi; ex $P ip link set swsd-pi up
ex $I ip addr add 198.19.0.2/24 dev swsd-ip; ex $I ip link set swsd-ip up
ex $I ip route add 203.0.113.0/24 via 198.19.0.1

step "boot both containers"
t_boot=$(date +%s.%N)
boot $P; boot $C
booted $P; booted $C
echo "  both at multi-user.target after $(python3 -c "import time; print(round(time.time()-$t_boot, 1))") s: $(on $P systemctl --version | head -1)"

step "provider: apt install the previous version, configure, enable the units"
on $P apt-get install -y -qq -o Dpkg::Options::=--force-confdef /srv/swsd-debs/$(basename $deb_prev) > $work/apt-p.log 2>&1 ||
  { cat $work/apt-p.log; exit 1; }
on $P sh -ec '
  cp /usr/share/staticwire/99-staticwire.conf /etc/sysctl.d/ && sysctl -q -p /etc/sysctl.d/99-staticwire.conf
  install -m 0644 /usr/share/staticwire/staticwire.nft /etc/staticwire/staticwire.nft
  sed -i -e "s/^define UPLINK = .*/define UPLINK = \"swsd-pi\"/" /etc/staticwire/staticwire.nft
  nft -f /etc/staticwire/staticwire.nft
  echo "include \"/etc/staticwire/staticwire.nft\"" >> /etc/nftables.conf
  systemctl enable -q nftables
  # The packaged example, edited: customers reach the API and the router on 198.18.0.1.
  sed -i -e "0,/^listen = .*/s//listen = \"198.18.0.1:8420\"/" -e "s/^endpoint = .*/endpoint = \"198.18.0.1:51820\"/" /etc/staticwire/control.toml
  echo "# edited by the operator" >> /etc/staticwire/control.toml
  # Test hooks only: POST /v1/dev/clock moves the control'"'"'s clock, /v1/dev/pay is the
  # customer'"'"'s stand-in node'"'"'s way to pay (dev backend only).
  mkdir -p /etc/systemd/system/staticwire-control.service.d
  printf "[Service]\nExecStart=\nExecStart=/usr/bin/staticwire-control -c /etc/staticwire/control.toml --data-dir /var/lib/staticwire serve --dev-hooks\n" \
    > /etc/systemd/system/staticwire-control.service.d/test-hooks.conf
  systemctl daemon-reload
  systemctl enable -q --now staticwire-router@wg0 staticwire-control
'
for i in $(seq 1 100); do ex $C curl -sf --max-time 1 $API/healthz >/dev/null && break; sleep 0.1; done
ex $C curl -sf --max-time 2 $API/readyz >/dev/null || { echo "FAILED: the control is not ready"; exit 1; }
on $P systemctl is-active -q staticwire-router@wg0 staticwire-control nftables
echo "  $(on $P dpkg-query -W -f '${Package} ${Version}' staticwire): router and control active, $API ready"
echo "  wg0: $(on $P wg show wg0 listen-port | sed 's/^/listening on /'), $(on $P ip -br addr show wg0 | awk '{print $2}')"

step "customer: apt install staticip, rent, pay (dev-pay), enable the daemon"
on $C apt-get install -y -qq /srv/swsd-debs/$(basename $deb_sip) > $work/apt-c.log 2>&1 || { cat $work/apt-c.log; exit 1; }
sip() { on $C staticip --state-dir /var/lib/staticip "$@"; }
sip --server $API RentNewIP --no-wait > $work/rent.txt 2>&1 || { cat $work/rent.txt; exit 1; }
bolt11=$(sip --json status | json 'd["open_invoice"]["bolt11"]')
addr=$(sip --json status | json 'd["address"]')
cpub=$(sip --json status | json 'd["public_key"]')
on $P runuser -u staticwire -- staticwire-control -c /etc/staticwire/control.toml dev-pay "$bolt11" >/dev/null
for i in $(seq 1 100); do [ "$(sip --json status | json 'd["state"]')" = active ] && break; sleep 0.1; done
[ "$(sip --json status | json 'd["state"]')" = active ] || { echo "FAILED: the rental is not active after payment"; exit 1; }
sip GetConf >/dev/null
# The customer's node for auto-pay: a stand-in speaking Core Lightning's JSON-RPC on a socket,
# paying through the provider's dev hook (the dev backend has no real network to pay over).
cat > $work/wallet.py <<'PY'
import json, os, socket, sys, urllib.request
path, api, log = sys.argv[1:4]
pays = {}
if os.path.exists(path):
    os.unlink(path)
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
os.chmod(path, 0o600)
srv.listen(4)
while True:
    c, _ = srv.accept()
    with c:
        c.settimeout(30)
        buf, req = b"", None
        try:
            while req is None:
                chunk = c.recv(65536)
                if not chunk:
                    break
                buf += chunk
                try:
                    req = json.loads(buf)
                except ValueError:
                    pass
        except OSError:
            continue
        if req is None:
            continue
        method, params = req.get("method"), req.get("params") or {}
        if method == "pay":
            try:
                r = urllib.request.urlopen(urllib.request.Request(api + "/v1/dev/pay",
                    data=json.dumps({"bolt11": params["bolt11"]}).encode(),
                    headers={"Content-Type": "application/json"}), timeout=20)
                d = json.load(r)
                pays[d["payment_hash"]] = d["preimage"]
                reply = {"result": {"status": "complete", "payment_preimage": d["preimage"]}}
                outcome = "paid " + d["payment_hash"]
            except Exception as e:
                reply = {"error": {"code": 210, "message": "payment failed: %s" % e}}
                outcome = "failed %s" % e
        elif method == "listpays":
            h = params.get("payment_hash")
            found = [{"payment_hash": h, "status": "complete", "preimage": pays[h]}] if h in pays else []
            reply = {"result": {"pays": found}}
            outcome = "listpays %s: %d" % (h, len(found))
        else:
            reply = {"error": {"code": -32601, "message": "unknown method"}}
            outcome = "unknown " + str(method)
        with open(log, "a") as f:
            f.write(outcome + "\n")
        reply.update({"jsonrpc": "2.0", "id": req.get("id")})
        c.sendall(json.dumps(reply).encode() + b"\n\n")
PY
ip netns exec $C python3 $work/wallet.py $work/wallet/lightning-rpc $API $work/wallet.log > $work/wallet.out 2>&1 &
echo $! > $work/wallet.pid
on $C sh -ec 'umask 077; printf "[autopay]\nmax_payment_sat = 100000\nmax_30_days_sat = 150000\nmax_fee_sat = 500\n[cln]\nsocket = \"/srv/swsd-wallet/lightning-rpc\"\n" > /var/lib/staticip/config.toml'
on $C systemctl enable -q --now staticip
for i in $(seq 1 100); do on $C ip link show sw-default >/dev/null 2>&1 && break; sleep 0.1; done
on $C systemctl is-active -q staticip staticip-tunnel || { echo "FAILED: staticip or staticip-tunnel is not active"; exit 1; }
reach() {  # the internet host reaches the rented address (20 tries)
  local i
  for i in $(seq 1 20); do ex $I ping -c 1 -W 1 $addr >/dev/null && return 0; done
  echo "FAILED: the internet host cannot reach $addr"; return 1
}
reach
echo "  rented $addr (key $cpub), paid; staticip.service pulled in staticip-tunnel: sw-default up; the internet host pings it"

# Continuous pings both ways through the tunnel during a fault, ten a second (90 s at most; no
# -w: with a deadline, ping quits at its first ICMP error); pings_stop stops them and sets
# $silence to the longest silence (seconds between two answered pings) of each direction.
pings_start() {
  ip netns exec $I ping -D -n -i 0.1 -W 1 -c 900 $addr > $work/ping-in.txt 2>&1 &
  echo $! > $work/ping-in.pid
  ip netns exec $C ping -D -n -i 0.1 -W 1 -c 900 198.19.0.2 > $work/ping-out.txt 2>&1 &
  echo $! > $work/ping-out.pid
  sleep 1
}
pings_stop() {
  kill -INT $(cat $work/ping-in.pid) $(cat $work/ping-out.pid) 2>/dev/null || true
  wait $(cat $work/ping-in.pid) $(cat $work/ping-out.pid) 2>/dev/null || true
  silence=$(python3 - $work/ping-in.txt $work/ping-out.txt <<'PY'
import re, sys
out = []
for f in sys.argv[1:]:
    text = open(f).read()
    t = [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from", text, re.M)]
    sent = re.search(r"(\d+) packets transmitted", text)
    gap = max((b - a for a, b in zip(t, t[1:])), default=float("nan"))
    out.append("%.1f s (%d of %s answered)" % (gap, len(t), sent.group(1) if sent else "?") if t else "no answers")
print("longest silence internet->customer %s, customer->internet %s" % tuple(out))
PY
)
}
# Waits (60 s at most) until traffic flows both ways again: the restarted router knows the
# peer but not its endpoint or session, so the customer's WireGuard must handshake again (it
# does when its packets go unanswered for 15 s, or at its 25 s keepalive).
flows() {
  local i
  for i in $(seq 1 600); do
    ex $I ping -c 1 -W 0.2 $addr >/dev/null 2>&1 && ex $C ping -c 1 -W 0.2 198.19.0.2 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "FAILED: no traffic through the tunnel 60 s after the fault"; return 1
}
mainpid() { on $P systemctl show -p MainPID --value $1; }
now() { date +%s.%N; }
secs() { python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$@"; }
# Waits (30 s at most) until unit $1 runs with a main PID other than $2 and the router holds the
# customer's peer; prints the time this took since $3.
readmitted() {
  local i p
  for i in $(seq 1 600); do
    p=$(mainpid $1)
    if [ "$p" != 0 ] && [ "$p" != "$2" ] && on $P wg show wg0 peers 2>/dev/null | grep -qxF "$cpub"; then
      secs $3 $(now); return 0
    fi
    sleep 0.05
  done
  echo "FAILED: $1 not back with the peer 30 s after the fault" >&2; return 1
}

step "upgrade the provider to $version: database, rental and edited config kept"
rentals() { on $P runuser -u staticwire -- staticwire-control -c /etc/staticwire/control.toml rentals list; }
db_before=$(on $P stat -c %i /var/lib/staticwire/staticwire.sqlite)
on $P apt-get install -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  /srv/swsd-debs/$(basename $deb_new) > $work/apt-up.log 2>&1 || { cat $work/apt-up.log; exit 1; }
[ "$(on $P dpkg-query -W -f '${Version}' staticwire)" = "$version" ]
on $P grep -q "edited by the operator" /etc/staticwire/control.toml || { echo "FAILED: the upgrade replaced the edited config"; exit 1; }
[ "$(on $P stat -c %i /var/lib/staticwire/staticwire.sqlite)" = "$db_before" ] || { echo "FAILED: the database file was replaced"; exit 1; }
n=$(rentals | python3 -c "import json,sys; print(sum(1 for r in json.load(sys.stdin) if r['state']=='active'))")
[ "$n" = 1 ] || { echo "FAILED: after the upgrade $n active rentals, expected 1"; exit 1; }
for i in $(seq 1 100); do on $P wg show wg0 peers 2>/dev/null | grep -qxF "$cpub" && break; sleep 0.1; done
on $P wg show wg0 peers | grep -qxF "$cpub" || { echo "FAILED: the peer is not back after the upgrade"; exit 1; }
flows
echo "  $(basename $deb_prev) -> $version: services restarted, 1 active rental, peer admitted, $addr reachable"

step "fault: kill -9 the router"
pings_start
old=$(mainpid staticwire-router@wg0)
t0=$(now); on $P kill -9 $old
gap_router=$(readmitted staticwire-router@wg0 $old $t0)
flows; t_flow=$(secs $t0 $(now))
sleep 1; pings_stop
echo "  restarted by systemd (pid $old -> $(mainpid staticwire-router@wg0)), peer re-admitted ${gap_router} s after the kill; traffic both ways ${t_flow} s after"
echo "  $silence"
kill_router="re-admitted ${gap_router} s, traffic ${t_flow} s; $silence"

step "fault: kill -9 the control"
pings_start
old=$(mainpid staticwire-control)
# The router keeps the peer while the control is down: checked all along.
t0=$(now); on $P kill -9 $old
kept=1
for i in $(seq 1 600); do
  on $P wg show wg0 peers 2>/dev/null | grep -qxF "$cpub" || kept=0
  p=$(mainpid staticwire-control)
  [ "$p" != 0 ] && [ "$p" != "$old" ] && ex $C curl -sf --max-time 1 $API/readyz >/dev/null 2>&1 && break
  sleep 0.05
done
gap_control=$(secs $t0 $(now))
ex $C curl -sf --max-time 2 $API/readyz >/dev/null || { echo "FAILED: the control is not back"; exit 1; }
[ $kept = 1 ] || { echo "FAILED: the peer left the router while the control restarted"; exit 1; }
flows
sleep 1; pings_stop
echo "  restarted by systemd, ready again ${gap_control} s after the kill; the peer never left the router"
echo "  $silence"
kill_control="ready ${gap_control} s; $silence"

step "fault: systemctl restart staticwire-router@wg0 staticwire-control during traffic"
pings_start
old=$(mainpid staticwire-router@wg0)
t0=$(now); on $P systemctl restart staticwire-router@wg0 staticwire-control
gap_restart=$(readmitted staticwire-router@wg0 $old $t0)
flows; t_flow=$(secs $t0 $(now))
sleep 1; pings_stop
echo "  peer re-admitted ${gap_restart} s after the restart began; traffic both ways ${t_flow} s after"
echo "  $silence"
restart_both="re-admitted ${gap_restart} s, traffic ${t_flow} s; $silence"

step "fault: the customer reboots after 27 days: tunnel back on boot, the daemon renews"
paid_before=$(sip --json status | json 'd["paid_until"]')
ex $C curl -sf --max-time 5 -H 'Content-Type: application/json' -d "{\"seconds\": $((27 * 86400))}" $API/v1/dev/clock >/dev/null
# The customer's clock moves as far (the daemon's --clock-offset, a test drop-in).
on $C sh -ec 'mkdir -p /etc/systemd/system/staticip.service.d
  printf "[Service]\nExecStart=\nExecStart=/usr/bin/staticip --state-dir /var/lib/staticip --auto-pay --clock-offset %s daemon --renew-days 5\n" '$((27 * 86400))' \
    > /etc/systemd/system/staticip.service.d/test-clock.conf'
t0=$(now)
reboot_and_wait $C
for i in $(seq 1 200); do on $C ip link show sw-default >/dev/null 2>&1 && break; sleep 0.1; done
on $C ip link show sw-default >/dev/null 2>&1 || { echo "FAILED: sw-default is not up after the reboot"; on $C journalctl -b --no-pager -u staticip; exit 1; }
t_back=$(secs $t0 $(now))
for i in $(seq 1 300); do
  [ "$(sip --json status | json 'd["paid_until"]')" = $((paid_before + 30 * 86400)) ] && break
  sleep 0.1
done
paid_after=$(sip --json status | json 'd["paid_until"]')
[ "$paid_after" = $((paid_before + 30 * 86400)) ] || { echo "FAILED: paid-until $paid_before -> $paid_after, expected one month more"; on $C journalctl -b --no-pager -u staticip; exit 1; }
on $C grep -q '"succeeded"' /var/lib/staticip/payments.log || { echo "FAILED: no succeeded payment in payments.log"; exit 1; }
grep -q '^paid ' $work/wallet.log || { echo "FAILED: the node was never asked to pay"; exit 1; }
# After the renewal's admission, with the customer silent: the router still sends to the port
# the rebooted customer's WireGuard uses now.
reach
echo "  rebooted, sw-default up ${t_back} s after the reboot began; renewed by the daemon through its node (paid-until +30 days); $addr reachable"
on $C journalctl -b --no-pager -o cat -u staticip > $work/journal.txt
echo "  journal: $(grep -m1 renewing $work/journal.txt)"

step "fault: the provider reboots: units, policy and the rental come back"
t0=$(now)
reboot_and_wait $P
on $P systemctl is-active -q staticwire-router@wg0 staticwire-control nftables ||
  { on $P systemctl status --no-pager staticwire-router@wg0 staticwire-control nftables; exit 1; }
for i in $(seq 1 200); do on $P wg show wg0 peers 2>/dev/null | grep -qxF "$cpub" && break; sleep 0.1; done
on $P wg show wg0 peers | grep -qxF "$cpub" || { echo "FAILED: the peer is not admitted after the provider's reboot"; exit 1; }
[ "$(on $P sysctl -n net.ipv4.ip_forward)" = 1 ] || { echo "FAILED: forwarding off after the reboot"; exit 1; }
on $P nft list table inet staticwire >/dev/null
flows
t_back=$(secs $t0 $(now))
n=$(rentals | python3 -c "import json,sys; print(sum(1 for r in json.load(sys.stdin) if r['state']=='active'))")
[ "$n" = 1 ] || { echo "FAILED: after the provider's reboot $n active rentals"; exit 1; }
[ "$(sip --json status | json 'd["paid_until"]')" = "$paid_after" ]
echo "  units, sysctls and nftables back at boot; peer admitted; traffic both ways ${t_back} s after the reboot began"
reboot_provider="traffic ${t_back} s after the reboot began"

step "hardening: systemd-analyze security (exposure, lower is better)"
exposure() { on $1 systemd-analyze security --no-pager $2 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: //p'; }
scores=""
for u in "$P staticwire-router@wg0.service" "$P staticwire-control.service" "$C staticip.service"; do
  s=$(exposure $u)
  printf '  %-32s %s\n' "${u#* }" "$s"
  scores="$scores ${u#* }=${s%% *}"
  case "$s" in *OK*|*SAFE*|*PERFECT*) ;; *) echo "FAILED: ${u#* } is not in the OK band or better"; exit 1 ;; esac
done

step "hardening: each unit writes only in its own directories (probed as root in its mount namespace)"
# Every path a unit could want to write elsewhere; each probe creates a file as root inside the
# unit's mount namespace (root passes every permission check: only the sandbox can stop it).
probe() {  # machine, unit, writable dirs...
  local m=$1 u=$2 pid d f bad=""; shift 2
  pid=$(on $m systemctl show -p MainPID --value $u)
  for d in / /etc /etc/staticwire /etc/systemd/system /usr /usr/bin /usr/lib /var /var/lib /var/log \
    /var/cache /var/spool /var/lib/dpkg /root /home /srv /opt /run /run/systemd /run/lock /dev/shm /var/lib/staticwire \
    /var/lib/staticip /run/wireguard /tmp /var/tmp; do
    [ -n "$(on $m sh -c "[ -d $d ] && echo y")" ] || continue
    f=$d/.swsd-probe
    if on $m nsenter -t $pid -m sh -c "touch $f 2>/dev/null && rm -f $f" 2>/dev/null; then
      case " $* " in *" $d "*) ;; *) bad="$bad $d" ;; esac
    else
      case " $* " in *" $d "*) bad="$bad !$d" ;; esac
    fi
  done
  if [ -n "$bad" ]; then echo "FAILED: $u: writable outside its directories, or not writable in them:$bad"; return 1; fi
  echo "  $u: writes only in $*"
}
probe $P staticwire-router@wg0 /run/wireguard /tmp /var/tmp
probe $P staticwire-control /var/lib/staticwire /tmp /var/tmp
probe $C staticip /var/lib/staticip /tmp /var/tmp

step "journalctl -u: the services' log lines with their fields"
jl() { on $1 journalctl --no-pager -o cat -u $2 > $work/journal.txt; }
# (grep reads a file: grep -m1 on a pipe would fail the pipeline with journalctl's SIGPIPE)
jl $P staticwire-control
line=$(grep -m1 "payment settled" $work/journal.txt) || { echo "FAILED: no 'payment settled' in journalctl -u staticwire-control"; tail $work/journal.txt; exit 1; }
echo "  staticwire-control: $line"
grep -q "address=$addr" <<<"$line" || { echo "FAILED: the line lacks its address field"; exit 1; }
line=$(grep -m1 "router reconciled" $work/journal.txt) || { echo "FAILED: no 'router reconciled' line"; exit 1; }
echo "  staticwire-control: $line"
jl $P staticwire-router@wg0
line=$(grep -m1 "staticwire-router up interface=wg0" $work/journal.txt) || { echo "FAILED: no router line naming wg0"; tail $work/journal.txt; exit 1; }
echo "  staticwire-router@wg0: $line"
uid=$(on $P id -u staticwire)
on $P journalctl --no-pager -o json -u staticwire-control -n 1 | json 'd["_UID"]' | grep -qx $uid ||
  { echo "FAILED: the control's journal entries are not from uid $uid"; exit 1; }
jl $C staticip
line=$(grep -m1 renewing $work/journal.txt) || { echo "FAILED: no 'renewing' in journalctl -u staticip"; exit 1; }
echo "  staticip: $line"

step "purge removes what the packages made"
on $P apt-get purge -y -qq staticwire > $work/purge-p.log 2>&1 || { cat $work/purge-p.log; exit 1; }
# What the operator made stays: /etc/staticwire/staticwire.nft (section 3 of ops/README.md)
# and the test's drop-in for the control.
left=$(on $P sh -c 'ls -d /var/lib/staticwire /etc/staticwire/control.toml /etc/staticwire/router-wg0.env /usr/bin/staticwire-* /lib/systemd/system/staticwire* /usr/share/staticwire /etc/systemd/system/*.wants/staticwire* /run/wireguard/wg0.sock 2>/dev/null; pgrep -l staticwire; ip link show wg0 2>/dev/null' || true)
[ -z "$left" ] || { echo "FAILED: purge left: $left"; exit 1; }
on $C apt-get purge -y -qq staticip > $work/purge-c.log 2>&1 || { cat $work/purge-c.log; exit 1; }
left=$(on $C sh -c 'ls -d /var/lib/staticip /var/lib/private/staticip /usr/bin/staticip /lib/systemd/system/staticip* /etc/systemd/system/multi-user.target.wants/staticip* 2>/dev/null; pgrep -l staticip; pgrep -l wireguard; ip link show sw-default 2>/dev/null' || true)
[ -z "$left" ] || { echo "FAILED: purge left: $left"; exit 1; }
echo "  staticwire: state, config, units, processes and wg0 gone; staticip: state, binary, units, tunnel gone"

step "summary"
echo "  kill -9 router:   $kill_router"
echo "  kill -9 control:  $kill_control"
echo "  restart both:     $restart_both"
echo "  provider reboot:  $reboot_provider"
echo "  exposure:        $scores"
echo "== systemd tests passed in $(( $(date +%s) - t_start )) s"
