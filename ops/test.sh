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
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^swt' || true); do
  ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
done

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== cargo bench (quick mode)"
cargo bench -p staticwire-benches -- --quick --noplot
echo "== all tests passed"
