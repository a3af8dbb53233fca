# Sourced by ops/test.sh (and usable alone): a throwaway PostgreSQL server for the tests, in a
# temp dir, on its own loopback port, run as the `postgres` user when we are root (the server
# refuses to run as root). Installs Debian's `postgresql` when missing.
#   pg_up     starts it and exports PG_URL (postgres://postgres@127.0.0.1:PORT/postgres)
#   pg_down   stops it and removes the temp dir (also safe when pg_up failed half-way)

# Explicit return codes throughout: a bare `return` inside an EXIT trap returns the status
# that triggered the trap, which `set -e` would take for a failure here.
pg_bin() {
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
  return 0
}

pg_install() {
  [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] && return 0
  echo "== installing: postgresql"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  # The package's own cluster is not used (and cannot start without systemd); only the
  # binaries and the postgres user are.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

pg_up() {
  pg_install
  local bin; bin=$(pg_bin)
  PG_DIR=$(mktemp -d /tmp/swt-pg.XXXXXX)
  PG_PORT=${PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  local as=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$PG_DIR"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  # Loopback only, its own socket dir, no fsync (a test server: speed, not durability).
  "${as[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c max_connections=400" start >/dev/null \
    || { cat "$PG_DIR/server.log" >&2; return 1; }
  export PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  echo "== PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $PG_URL (data in $PG_DIR)"
}

pg_down() {
  [ -n "${PG_DIR:-}" ] || return 0
  local bin; bin=$(pg_bin) || true
  local as=()
  if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    "${as[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_DIR"
  unset PG_DIR PG_URL
  return 0
}
