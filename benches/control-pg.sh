#!/usr/bin/env bash
# Control at scale on PostgreSQL (BENCHMARKS.md, "Control at scale"): two control replicas on
# one PostgreSQL server (ops/pg.sh's throwaway server, with fsync turned back on: a commit is
# on disk before its answer), N active rentals seeded into it, then CREATE rentals made over
# HTTP through both replicas at once (requests alternate between them; CONC clients), with
# GET /v1/terms beside them at the first replica. Loopback and a temp dir only; the server,
# the replicas and the stand-in router are stopped and removed at the end.
#
#   bash benches/control-pg.sh [N=1000] [CREATE=5000]     (RATE=1000: the creates paced)
# PGSTAT=1: the server's time per statement (pg_stat_statements: planning and execution) at the end.
# PGOPTS="-c name=value ...": server settings beside the defaults (e.g. shared_buffers).
set -euo pipefail
N=${1:-1000}
CREATE=${2:-5000}
CONC=${CONC:-16}
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p staticwire-control --bin staticwire-control --example control_load
BIN=$CARGO_TARGET_DIR/release/staticwire-control
LOAD=$CARGO_TARGET_DIR/release/examples/control_load
DIR=$(mktemp -d /tmp/swt-ctlpg.XXXXXX)
PIDS=()
# shellcheck source=../ops/pg.sh
source ops/pg.sh
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pg_down
  [ -n "${KEEP:-}" ] && echo "kept $DIR" || rm -rf "$DIR"
}
trap cleanup EXIT
pg_up
# ops/pg.sh starts its test server with fsync off: started again here with it on (the default).
as=()
if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
"${as[@]}" "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null
stat=()
[ -n "${PGSTAT:-}" ] && stat=(-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on)
"${as[@]}" "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c max_connections=400 ${stat[*]} ${PGOPTS:-}" start >/dev/null
psql -q "$PG_URL" -c "CREATE DATABASE swt_bench" >/dev/null
DB_URL="${PG_URL%/*}/swt_bench"
[ -n "${PGSTAT:-}" ] && psql -q "$DB_URL" -c "CREATE EXTENSION pg_stat_statements" >/dev/null
echo "PostgreSQL fsync = $(psql -At "$PG_URL" -c 'SHOW fsync'), synchronous_commit = $(psql -At "$PG_URL" -c 'SHOW synchronous_commit'), shared_buffers = $(psql -At "$PG_URL" -c 'SHOW shared_buffers'), wal_compression = $(psql -At "$PG_URL" -c 'SHOW wal_compression')"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
P1=$(free_port)
P2=$(free_port)
MPORT=$(free_port)
POOL=$(python3 -c "import math; n=$N+$CREATE+16; print('100.64.0.0/%d' % (32-max(8, math.ceil(math.log2(n)))))")
cat >"$DIR/control.toml" <<TOML
listen = "127.0.0.1:$P1"
data_dir = "$DIR"
database = "$DB_URL"
reconcile_interval_secs = 3600
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
echo "== $N rentals, pool $POOL, two replicas on PostgreSQL, $(nproc) cores, commit $(git rev-parse --short HEAD)"
t=$(date +%s.%N)
"$BIN" -c "$DIR/control.toml" rentals list >/dev/null 2>"$DIR/init.log"
echo "schema and pool addresses made in $(python3 -c "print(round($(date +%s.%N)-$t,1))") s"
# N active rentals, paid for 30 days, one per address from 100.64.0.2 (keys: 32 bytes each).
t=$(date +%s.%N)
NOW=$(date +%s)
psql -q "$DB_URL" -c "INSERT INTO rentals(public_key, address, router, created_at, started_at, credited_secs)
  SELECT encode(sha256(('seed ' || i)::bytea), 'base64'), host('100.64.0.2'::inet + i), 'wg0',
         $NOW, $NOW, 30 * 86400
  FROM generate_series(0, $N - 1) AS i" -c "ANALYZE" >/dev/null
echo "seeded $N rentals in $(python3 -c "print(round($(date +%s.%N)-$t,1))") s"
"$LOAD" router "$DIR/wg0.sock" >"$DIR/removed.log" &
PIDS+=($!)
# The first replica also serves /metrics (its own copy of the configuration).
sed "s|^reconcile_interval_secs = 3600|&\n[metrics]\nlisten = \"127.0.0.1:$MPORT\"|" "$DIR/control.toml" >"$DIR/control1.toml"
"$BIN" -c "$DIR/control1.toml" serve --listen "127.0.0.1:$P1" 2>"$DIR/r1.log" &
R1=$!
PIDS+=($R1)
"$BIN" -c "$DIR/control.toml" serve --listen "127.0.0.1:$P2" 2>"$DIR/r2.log" &
R2=$!
PIDS+=($R2)
t=$(date +%s.%N)
for p in $P1 $P2; do
  for _ in $(seq 3000); do curl -sf "http://127.0.0.1:$p/healthz" >/dev/null && break; sleep 0.1; done
done
echo "both replicas serving after $(python3 -c "print(round($(date +%s.%N)-$t,1))") s"
# The replica that takes the router's lease then compares it with every active rental (seconds
# at 1M; SQLite's control.sh does it before serving): the creates are measured after it.
for _ in $(seq 1200); do grep -q "router reconciled" "$DIR/r1.log" "$DIR/r2.log" && break; sleep 0.1; done
echo "first full compare done after $(python3 -c "print(round($(date +%s.%N)-$t,1))") s"
if [ -n "${PERF:-}" ]; then perf record -q -g -o "$DIR/perf.data" -p "$R1" 2>/dev/null & PERFPID=$!; fi
wal() {
  psql -At "$DB_URL" -c "SELECT w.wal_records, w.wal_fpi, w.wal_bytes, b.checkpoints_timed + b.checkpoints_req,
    b.buffers_checkpoint + b.buffers_backend + b.buffers_clean FROM pg_stat_wal w, pg_stat_bgwriter b"
}
WAL0=$(wal)
"$LOAD" terms "http://127.0.0.1:$P1" "$DIR/stop" 2 &
TPID=$!
"$LOAD" rent "http://127.0.0.1:$P1,http://127.0.0.1:$P2" "$CREATE" "$CONC" ${RATE:+"$RATE"} 2>"$DIR/rent.err" || true
touch "$DIR/stop"
wait "$TPID" || true
if [ -n "${PERF:-}" ]; then
  kill -INT "$PERFPID"; wait "$PERFPID" 2>/dev/null || true
  perf report -i "$DIR/perf.data" --no-children --percent-limit 2 --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -25
fi
head -3 "$DIR/rent.err"
# The state series at this size (a Prometheus scrape: read beside the writer).
for _ in 1 2; do
  curl -sf -o /dev/null -w "GET /metrics: %{time_total} s\n" "http://127.0.0.1:$MPORT/metrics" || echo "GET /metrics failed"
done
# What the creates wrote: WAL (full-page images are a page's first change after a checkpoint),
# checkpoints begun, buffers written out.
python3 - "$WAL0" "$(wal)" "$CREATE" <<'PY'
import sys
a, b = ([int(x) for x in s.split("|")] for s in sys.argv[1:3])
n = int(sys.argv[3])
d = [y - x for x, y in zip(a, b)]
print(f"WAL while creating: {d[0] / n:.1f} records, {d[1] / n:.2f} full-page images, "
      f"{d[2] / n / 1024:.1f} KiB a rental; {d[3]} checkpoints begun, {d[4]} buffers written")
PY
echo "in the database: $(psql -At "$DB_URL" -c "SELECT COUNT(*) FROM rentals WHERE started_at IS NULL AND released_at IS NULL") live unpaid holds, $(psql -At "$DB_URL" -c "SELECT COUNT(*) - COUNT(DISTINCT address) FROM rentals WHERE released_at IS NULL AND address IS NOT NULL") addresses held twice"
echo "replica RSS $(( $(awk '/VmRSS/ {print $2}' /proc/$R1/status) / 1024 )) and $(( $(awk '/VmRSS/ {print $2}' /proc/$R2/status) / 1024 )) MiB"
if [ -n "${PGSTAT:-}" ]; then
  psql "$DB_URL" -c "SELECT calls, round(total_plan_time) AS plan_ms, round(total_exec_time) AS exec_ms,
      round(((total_plan_time + total_exec_time) * 1000 / calls)::numeric) AS us_each,
      left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS statement
    FROM pg_stat_statements WHERE calls > 0 ORDER BY total_plan_time + total_exec_time DESC LIMIT 20"
  psql "$DB_URL" -c "SELECT relname, autovacuum_count, autoanalyze_count, last_autovacuum, last_autoanalyze
    FROM pg_stat_user_tables WHERE autovacuum_count + autoanalyze_count > 0 ORDER BY relname"
fi
