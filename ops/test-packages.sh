#!/usr/bin/env bash
# The Debian packages (called by ops/test-ops.sh; runs alone too, as root):
#  - `staticwire` and `staticip` built with cargo deb (installed with `cargo install cargo-deb
#    --locked` when missing) from the debug binaries already built (ops/package.sh makes the
#    release ones), and checked with lintian;
#  - dpkg installs `staticwire`: the user, modes and owners of config and state; the router and
#    the control run as their installed units' User= and ExecStart= lines say (router with
#    CAP_NET_ADMIN only), in a network namespace with a private /run/wireguard, and the control
#    configures the router and serves /v1/terms from the installed config;
#  - an upgrade keeps the database and an edited conffile; remove keeps state; purge removes it;
#  - `staticip` installs, runs and purges.
# Never touches an existing installation of either package (skips loudly instead).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "!!!!! SKIPPED ops/test-packages.sh: needs root (dpkg) !!!!!" >&2; exit 0; }
for p in staticwire staticip; do
  if dpkg -s $p >/dev/null 2>&1; then
    echo "!!!!! SKIPPED ops/test-packages.sh: the $p package is installed on this machine; not touching it !!!!!" >&2
    exit 0
  fi
done

need=()
command -v lintian >/dev/null || need+=(lintian)
command -v adduser >/dev/null || need+=(adduser)
command -v setpriv >/dev/null || need+=(util-linux)
command -v wg >/dev/null || need+=(wireguard-tools)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! cargo deb --version >/dev/null 2>&1; then
  echo "== cargo install cargo-deb --locked"
  cargo install -q cargo-deb --locked
fi

echo "== cargo deb: staticwire and staticip"
cargo build -q -p staticwire-router -p staticwire-control -p staticip
tmp=$(mktemp -d)
ns=swo$$p
installed=0
cleanup() {
  ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del $ns 2>/dev/null || true
  if [ $installed = 1 ]; then dpkg -P staticwire staticip >/dev/null 2>&1 || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
deb() {  # the debug build: these tests check the packaging, not the optimizer
  cargo deb -q -p staticwire-control --no-build --profile dev --strip --no-dbgsym --fast -o $tmp/ "$@" 2>&1 |
    grep -v -e 'dev profile is not supported' -e 'To enable debug symbols' || true
}
deb
deb --deb-version 0.1.0-2
deb --variant staticip
ls $tmp/*.deb | sed 's/^/  /'
new=$tmp/staticwire_0.1.0-1_amd64.deb up=$tmp/staticwire_0.1.0-2_amd64.deb sip=$tmp/staticip_0.1.0-1_amd64.deb

echo "== lintian"
lintian --fail-on error,warning --tag-display-limit 0 $new $sip 2>&1 | grep -v 'running with root privileges' || true
lintian --fail-on error,warning $new $sip >/dev/null 2>&1 || { echo "lintian failed"; exit 1; }

echo "== dpkg -i staticwire"
installed=1
dpkg -i $new >/dev/null
getent passwd staticwire >/dev/null || { echo "no staticwire user"; exit 1; }
[ "$(stat -c '%U:%G %a' /var/lib/staticwire)" = "staticwire:staticwire 700" ] || { echo "state dir: $(stat -c '%U:%G %a' /var/lib/staticwire)"; exit 1; }
[ "$(stat -c '%U:%G %a' /etc/staticwire/control.toml)" = "root:staticwire 640" ] || { echo "config: $(stat -c '%U:%G %a' /etc/staticwire/control.toml)"; exit 1; }
(cd /lib/systemd/system && systemd-analyze verify --man=no staticwire-control.service staticwire-router@wg0.service)
echo "  user, modes and units as expected"

# The units' own lines: User=, ExecStart= (with %i = wg0), router capabilities.
unit_line() { sed -n "s/^$2=//p" /lib/systemd/system/$1 | head -1; }
router_exec=$(unit_line staticwire-router@.service ExecStart | sed 's/%i/wg0/g')
control_exec=$(unit_line staticwire-control.service ExecStart)
user=$(unit_line staticwire-control.service User)
[ "$(unit_line staticwire-router@.service User)" = "$user" ] && [ "$user" = staticwire ]
caps=$(unit_line staticwire-router@.service AmbientCapabilities)
[ "$caps" = CAP_NET_ADMIN ] || { echo "router capabilities: $caps"; exit 1; }
echo "  router:  $router_exec"
echo "  control: $control_exec"

echo "== running them as the units say (namespace $ns, private /run/wireguard)"
ip netns add $ns
ip netns exec $ns ip link set lo up
# The customer's key: private here, public in the rent.
priv=d0gKbRhxpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=
proof=$PWD/control/tests/staticwire_proof.py
pub=$(python3 $proof $priv pub)
cat > $tmp/run.sh <<RUN
PRIV=$priv
set -e
mount -t tmpfs -o mode=0755 tmpfs /run/wireguard
chown $user:$user /run/wireguard   # what RuntimeDirectory=wireguard does
# Debian's udev makes /dev/net/tun 0666; where this machine has it 0600, give this mount
# namespace a 0666 node of the same device.
if [ "\$(stat -c %a /dev/net/tun)" != 666 ]; then
  mkdir -p $tmp/dev && mount -t tmpfs -o mode=0755 tmpfs $tmp/dev
  mknod -m 0666 $tmp/dev/tun c 10 200 && mount --bind $tmp/dev/tun /dev/net/tun
fi
as() { setpriv --reuid=$user --regid=$user --init-groups --no-new-privs "\$@"; }
WG_PROCESS_FOREGROUND=1 setpriv --reuid=$user --regid=$user --init-groups --inh-caps=+net_admin \
  --ambient-caps=+net_admin --bounding-set=-all,+net_admin --no-new-privs $router_exec > $tmp/router.log 2>&1 &
for i in \$(seq 100); do [ -S /run/wireguard/wg0.sock ] && break; sleep 0.1; done
[ "\$(stat -c %U /run/wireguard/wg0.sock)" = $user ]
as $control_exec > $tmp/control.log 2>&1 &
for i in \$(seq 100); do curl -sf http://127.0.0.1:8420/healthz >/dev/null && break; sleep 0.1; done
curl -sf http://127.0.0.1:8420/v1/terms > $tmp/terms.json
# A rent proven with the customer's key (PROTOCOL.md 3.1): curl cannot, so Python signs it.
body='{"public_key":"$pub"}'
auth=\$(python3 $proof \$PRIV POST /v1/rentals "\$body" http://127.0.0.1:8420)
curl -sf -H 'Content-Type: application/json' -H "Authorization: \$auth" -d "\$body" \
  http://127.0.0.1:8420/v1/rentals > $tmp/rent.json
for i in \$(seq 50); do wg show wg0 listen-port 2>/dev/null | grep -qx 51820 && break; sleep 0.1; done
wg show wg0 > $tmp/wg.txt
curl -sf http://127.0.0.1:9587/metrics > $tmp/control.metrics
curl -sf http://127.0.0.1:9586/metrics > $tmp/router.metrics
RUN
if ! ip netns exec $ns unshare -m sh $tmp/run.sh; then
  echo "FAILED; router log:"; cat $tmp/router.log; echo "control log:"; cat $tmp/control.log; exit 1
fi
python3 -c "import json,sys; t=json.load(open(sys.argv[1])); assert t['servers'][0]['endpoint']=='vpn.example.net:51820', t; print('  /v1/terms from the installed config:', t['first_payment_sat'], 'sat, endpoint', t['servers'][0]['endpoint'])" $tmp/terms.json
grep -q 'listening port: 51820' $tmp/wg.txt || { echo "the control did not configure the router:"; cat $tmp/wg.txt; exit 1; }
echo "  wg show wg0: the unprivileged control configured the router ($(grep -c . $tmp/wg.txt) lines)"
grep -q '^staticwire_control_rentals{state="pending"} 1' $tmp/control.metrics
grep -q '^wireguard_peers{interface="wg0"} 0' $tmp/router.metrics
ip netns pids $ns | xargs -r kill
sleep 0.5
ip netns del $ns

echo "== upgrade to 0.1.0-2 keeps the database and the edited config"
echo "# edited by the operator" >> /etc/staticwire/control.toml
dpkg -i $up >/dev/null
[ "$(dpkg-query -W -f '${Version}' staticwire)" = 0.1.0-2 ]
grep -q "edited by the operator" /etc/staticwire/control.toml || { echo "the upgrade replaced the edited config"; exit 1; }
n=$(setpriv --reuid=$user --regid=$user --init-groups staticwire-control -c /etc/staticwire/control.toml rentals list 2>/dev/null |
  python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
[ "$n" = 1 ] || { echo "after the upgrade the database holds $n rentals, expected 1"; exit 1; }
echo "  the rental made before the upgrade is there"

echo "== backup and restore run by root leave the database to the service's user"
staticwire-control -c /etc/staticwire/control.toml backup $tmp/pkg-backup.sqlite >/dev/null 2>&1
staticwire-control -c /etc/staticwire/control.toml restore $tmp/pkg-backup.sqlite >/dev/null 2>&1
for f in /var/lib/staticwire/staticwire.sqlite* /var/lib/staticwire/serve.lock; do
  [ "$(stat -c %U "$f")" = $user ] || { echo "$f belongs to $(stat -c %U "$f") after the restore"; exit 1; }
done
n=$(setpriv --reuid=$user --regid=$user --init-groups staticwire-control -c /etc/staticwire/control.toml rentals list 2>/dev/null |
  python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
[ "$n" = 1 ] || { echo "after the restore the database holds $n rentals, expected 1"; exit 1; }
echo "  restored: $(ls /var/lib/staticwire | tr '\n' ' ')"

echo "== remove keeps state and config; purge removes them"
dpkg -r staticwire >/dev/null
[ -f /var/lib/staticwire/staticwire.sqlite ] && [ -f /etc/staticwire/control.toml ] || { echo "remove deleted state or config"; exit 1; }
dpkg -P staticwire >/dev/null
[ ! -e /var/lib/staticwire ] && [ ! -e /etc/staticwire ] || { echo "purge left $(ls -d /var/lib/staticwire /etc/staticwire 2>/dev/null)"; exit 1; }
echo "  removed: state kept; purged: /var/lib/staticwire and /etc/staticwire gone"

echo "== staticip: install, run, purge"
dpkg -i $sip >/dev/null
staticip --version
(cd /lib/systemd/system && systemd-analyze verify --man=no staticip.service)
dpkg -P staticip >/dev/null
[ ! -e /usr/bin/staticip ] || { echo "purge left /usr/bin/staticip"; exit 1; }
installed=0
echo "== packages passed"
