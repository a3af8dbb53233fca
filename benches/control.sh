#!/usr/bin/env bash
# Control at scale (BENCHMARKS.md, "Control at scale"): with N rentals in SQLite
# (synchronous = FULL), measures over HTTP
#  - a burst of SETTLE payments made while the control was down (pending rentals whose open
#    invoices the dev node has settled): credited per second at start, each once;
#  - status lookups (GET /v1/rentals/{key}: per second, p50/p99), and after the creates the
#    wg-quick file (GET /v1/rentals/{key}/config) too;
#  - rentals created (POST /v1/rentals, dev Lightning backend: per second) with GET /v1/terms
#    (p50/p99) beside them, timed so that 100 rentals fall due over 10 s in the middle of the
#    creates: their expiry lag (how late each removal reaches the router after its paid-until)
#    is measured while rentals are being made.
# The rentals are seeded straight into the control's own schema (the control makes it first);
# a stand-in router (control_load router) answers UAPI on a Unix socket and logs removals.
# Loopback and a temp dir only; everything is removed at the end.
#
#   bash benches/control.sh [N=1000] [CREATE=15000] [LOOKUPS=20000] [SETTLE=5000]
#   bash benches/control.sh 1000000 15000 50000 5000    # the 1M figures (~3 min, ~1.5 GB disk)
#   RATE=1000 bash benches/control.sh ...               # the creates offered at 1,000/s, not flooded
set -euo pipefail
N=${1:-1000}
CREATE=${2:-15000}
LOOKUPS=${3:-20000}
SETTLE=${4:-5000}
CONC=${CONC:-16}
E=100
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p staticwire-control --bin staticwire-control --example control_load
BIN=$CARGO_TARGET_DIR/release/staticwire-control
LOAD=$CARGO_TARGET_DIR/release/examples/control_load
DIR=$(mktemp -d /tmp/swt-ctl.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $DIR" || rm -rf "$DIR"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# A pool of 100.64.0.0/10 space holding every rental: rows in SQLite only, never routed
# (the stand-in router has no interface).
POOL=$(python3 -c "import math; n=$N+$SETTLE+$CREATE+$E+16; print('100.64.0.0/%d' % (32-max(8, math.ceil(math.log2(n)))))")
cat >"$DIR/control.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$DIR"
reconcile_interval_secs = 3600
[metrics]
listen = "127.0.0.1:$MPORT"
[limits]
burst = 100000000
per_second = 100000000.0
invoice_burst = 100000000
invoices_per_minute = 100000000000.0
max_unpaid_per_client = 1000000000
max_connections_per_client = 100000
max_connections = 100000
[[routers]]
name = "wg0"
socket = "$DIR/wg0.sock"
endpoint = "198.18.0.1:51820"
pools = ["$POOL"]
reserved = []
TOML
echo "== $N rentals, pool $POOL, $(nproc) cores, commit $(git rev-parse --short HEAD)"
t=$(date +%s.%N)
"$BIN" -c "$DIR/control.toml" rentals list >/dev/null 2>"$DIR/init.log"
echo "schema and pool addresses made in $(python3 -c "print(round($(date +%s.%N)-$t,1))") s"
"$LOAD" seed "$DIR/staticwire.sqlite" 0 "$N" 100.64.0.2 $(( $(date +%s) + 30 * 86400 ))
"$LOAD" unpaid "$DIR/staticwire.sqlite" "$N" $((N + SETTLE)) 100.64.0.2
F=$((N + SETTLE))
T0=$(( $(date +%s) + 60 + N / 10000 ))
for j in $(seq 0 9); do
  # Rentals F+j, F+j+10, ... are due at T0+j: seeded one due second at a time.
  for i in $(seq $((F + j)) 10 $((F + E - 1))); do
    "$LOAD" seed "$DIR/staticwire.sqlite" "$i" $((i + 1)) 100.64.0.2 $((T0 + j)) >/dev/null
  done
done
"$LOAD" router "$DIR/wg0.sock" >"$DIR/removed.log" &
PIDS+=($!)
t=$(date +%s.%N)
"$BIN" -c "$DIR/control.toml" serve 2>"$DIR/control.log" &
CPID=$!
PIDS+=($CPID)
"$LOAD" settled "$DIR/staticwire.sqlite" "$SETTLE" &
SPID=$!
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.1; done
echo "control serving after $(python3 -c "print(round($(date +%s.%N)-$t,1))") s (start: pool upsert, free-space index, first full compare)"
wait "$SPID"
"$LOAD" status "http://127.0.0.1:$PORT" "$N" "$LOOKUPS" "$CONC"
echo "control RSS $(( $(awk '/VmRSS/ {print $2}' /proc/$CPID/status) / 1024 )) MiB before the creates"
# The creates start 2 s before the first rental falls due and last past the last one.
while [ "$(date +%s)" -lt $((T0 - 2)) ]; do sleep 0.2; done
if [ -n "${PERF:-}" ]; then perf record -q -g -o "$DIR/perf.data" -p "$CPID" 2>/dev/null & PERFPID=$!; fi
"$LOAD" terms "http://127.0.0.1:$PORT" "$DIR/stop" 2 &
TPID=$!
"$LOAD" rent "http://127.0.0.1:$PORT" "$CREATE" "$CONC" ${RATE:+"$RATE"} 2>"$DIR/rent.err" || true
touch "$DIR/stop"
wait "$TPID" || true
if [ -n "${PERF:-}" ]; then
  kill -INT "$PERFPID"; wait "$PERFPID" 2>/dev/null || true
  perf report -i "$DIR/perf.data" --no-children --percent-limit 2 --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -25
fi
head -3 "$DIR/rent.err"
"$LOAD" status "http://127.0.0.1:$PORT" "$N" "$LOOKUPS" "$CONC"
"$LOAD" config "http://127.0.0.1:$PORT" "$N" "$((LOOKUPS / 4))" "$CONC"
# The state series at this size (a Prometheus scrape: read beside the writer).
for _ in 1 2; do
  curl -sf -o /dev/null -w "GET /metrics: %{time_total} s\n" "http://127.0.0.1:$MPORT/metrics" || echo "GET /metrics failed"
done
echo "control RSS $(( $(awk '/VmRSS/ {print $2}' /proc/$CPID/status) / 1024 )) MiB after the creates"
while [ "$(date +%s)" -le $((T0 + 11)) ]; do sleep 1; done
"$LOAD" lag "$DIR/removed.log" "$F" $((F + E)) "$T0"
