#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh Debian 12 machine with Rust,
# then runs formatting, lints and every test, including the network-namespace tests (root only).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v wireguard-go >/dev/null || need+=(wireguard-go)
command -v wg >/dev/null || need+=(wireguard-tools)
command -v wg-quick >/dev/null || need+=(wireguard-tools)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v pgrep >/dev/null || need+=(procps)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v iptables-restore >/dev/null || need+=(iptables)
# A real BIND 9 for the reverse-DNS test (control/tests/netns_rdns.rs), with dig and nsupdate.
command -v named >/dev/null || need+=(bind9)
command -v tsig-keygen >/dev/null || need+=(bind9)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v nsupdate >/dev/null || need+=(bind9-dnsutils)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if [ "$(id -u)" != 0 ]; then
  cat >&2 <<'MSG'
###########################################################################
##  NOT ROOT: the network-namespace tests (real TUN, wireguard-go, wg,   ##
##  iperf3) will print SKIPPED and prove nothing. Run: sudo bash ops/test.sh
###########################################################################
MSG
fi

# Leftovers of an interrupted earlier run (only our own test prefix).
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(swt|rd)' || true); do
  ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
done

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# The control's import graph: no cycle, every import pointing down its layers (ARCHITECTURE.md).
python3 ops/check-control-layers.py
# The original StaticWire client's Python stack, for the compatibility tests: both
# wireguard-tools series its releases used.
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv
fi
for v in 0.4 0.6; do
  venv=target/compat-venv-$v
  if [ ! -x $venv/bin/python ] || ! $venv/bin/python -c 'import wireguard_tools, bolt11, requests_toolbelt' 2>/dev/null; then
    echo "== Python venv with wireguard-tools $v.x"
    python3 -m venv $venv
    $venv/bin/pip install -q "wireguard-tools==$v.*" requests requests-toolbelt bolt11 "bitstring<4.2"
  fi
done
export STATICWIRE_COMPAT_PYTHON=$PWD/target/compat-venv-0.6/bin/python

echo "== cargo test"
cargo test --workspace

# The control's suite again with its store on PostgreSQL (a throwaway server of our own), then
# two replicas sharing it, then the move of a SQLite host onto it.
source ops/pg.sh
trap pg_down EXIT
pg_up
echo "== control suite on PostgreSQL"
STATICWIRE_TEST_PG=$PG_URL cargo test -q -p staticwire-control --lib
echo "== two control replicas on one PostgreSQL"
STATICWIRE_TEST_PG=$PG_URL cargo test -q -p staticwire-control --test replicas -- --nocapture
echo "== migrate: one SQLite host to PostgreSQL"
STATICWIRE_TEST_PG=$PG_URL cargo test -q -p staticwire-control --test migrate
pg_down
trap - EXIT

# The router's namespace suite again in the other I/O modes (the workspace run used the default,
# io_uring), then with io_uring refused by the kernel: the default must fall back to batch.
for mode in batch simple; do
  echo "== router namespace suite, --io $mode"
  STATICWIRE_ROUTER_IO=$mode cargo test -q -p staticwire-router --test netns
done
echo "== router namespace suite, io_uring without offloads (plain packets)"
STATICWIRE_ROUTER_IO=uring STATICWIRE_ROUTER_ARGS=--no-offload cargo test -q -p staticwire-router --test netns
if [ "$(id -u)" = 0 ] && [ -w /proc/sys/kernel/io_uring_disabled ]; then
  echo "== io_uring disabled by the kernel: the router falls back to batched syscalls"
  was=$(cat /proc/sys/kernel/io_uring_disabled)
  trap 'echo "$was" > /proc/sys/kernel/io_uring_disabled' EXIT
  echo 2 > /proc/sys/kernel/io_uring_disabled
  STATICWIRE_EXPECT_IO=batch cargo test -q -p staticwire-router --test netns tunnel_carries
  echo "$was" > /proc/sys/kernel/io_uring_disabled
  trap - EXIT
fi

for v in 0.4 0.6; do
  echo "== original-client protocol suite (wireguard-tools $v.x)"
  target/compat-venv-$v/bin/python control/tests/compat/protocol_test.py target/debug/staticwire-control
done
bash ops/test-reliability.sh   # cargo deny, short fuzz runs (issue 12)
bash ops/test-ops.sh           # Prometheus, alerts, dashboard, units, nftables (issue 13)
bash ops/test-web.sh           # the public web page in headless Chromium (issue 15)
echo "== cargo bench (quick mode)"
cargo bench -p staticwire-benches -- --quick --noplot
echo "== all tests passed"
