#!/usr/bin/env bash
# `make run`: a local PostgreSQL cluster under build/run with pg_integration
# preloaded, a database with the extension, and the sidecar on loopback.
# A second run reuses the cluster and its data. Ctrl-C stops both.
set -euo pipefail

BUILD=${BUILD:-$(pwd)/build}
PG_CONFIG=${PG_CONFIG:-/usr/bin/pg_config}
RUN=$BUILD/run
DATA=$RUN/data
DB=integration
BINDIR=$("$PG_CONFIG" --bindir)
SIDECAR=$(pwd)/target/release/integration-sidecar

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  local port=$1
  while port_in_use "$port"; do port=$((port + 1)); done
  echo "$port"
}

mkdir -p "$RUN"
if [ "$(id -u)" = 0 ]; then
  chown postgres:postgres "$RUN"
  if ! runuser -u postgres -- test -w "$RUN"; then
    echo "make run: the postgres OS user cannot reach $RUN;" >&2
    echo "  give it access (chmod o+x on the parent folders) or set BUILD to a folder it can use." >&2
    exit 1
  fi
fi

if [ ! -f "$DATA/PG_VERSION" ]; then
  echo "Creating a PostgreSQL cluster in $DATA"
  as_postgres "$BINDIR/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
  free_port 54329 >"$RUN/pg_port"
  cat >>"$DATA/postgresql.conf" <<CONF
# added by make run
port = $(cat "$RUN/pg_port")
listen_addresses = '127.0.0.1'
unix_socket_directories = '$RUN'
shared_preload_libraries = 'pg_integration'
CONF
fi
PG_PORT=$(cat "$RUN/pg_port")

if ! as_postgres "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  as_postgres "$BINDIR/pg_ctl" -D "$DATA" -l "$RUN/postgres.log" -w -t 60 start >/dev/null
fi

psql_admin() { "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
if [ "$(psql_admin -d postgres -Atc "SELECT count(*) FROM pg_database WHERE datname = '$DB'")" = 0 ]; then
  psql_admin -d postgres -c "CREATE DATABASE $DB"
fi
psql_admin -d "$DB" -c "SET client_min_messages = warning" \
  -c "CREATE EXTENSION IF NOT EXISTS pg_integration" \
  -c "ALTER EXTENSION pg_integration UPDATE" \
  -c "ALTER ROLE integration_sidecar LOGIN"

SIDECAR_PORT=$(free_port 8080)
DATABASE_URL="postgresql://integration_sidecar@127.0.0.1:$PG_PORT/$DB" \
LISTEN_ADDR="127.0.0.1:$SIDECAR_PORT" \
PUBLIC_URL="http://127.0.0.1:$SIDECAR_PORT" \
  "$SIDECAR" >>"$RUN/sidecar.log" 2>&1 &
SIDECAR_PID=$!

stop() {
  echo
  echo "Stopping the sidecar and PostgreSQL..."
  kill -TERM "$SIDECAR_PID" 2>/dev/null || true
  wait "$SIDECAR_PID" 2>/dev/null || true
  as_postgres "$BINDIR/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null || true
  exit 0
}
trap stop INT TERM

for _ in $(seq 50); do
  port_in_use "$SIDECAR_PORT" && break
  kill -0 "$SIDECAR_PID" 2>/dev/null || { echo "the sidecar did not start; see $RUN/sidecar.log" >&2; tail -20 "$RUN/sidecar.log" >&2; stop; }
  sleep 0.1
done

cat <<MSG

pg_integration is running.

  PostgreSQL   psql -h 127.0.0.1 -p $PG_PORT -U postgres $DB
  Sidecar      http://127.0.0.1:$SIDECAR_PORT   (/healthz, /readyz, /metrics)
  API docs     http://127.0.0.1:$SIDECAR_PORT/docs   (read and try the API in the browser; works offline)
  API document http://127.0.0.1:$SIDECAR_PORT/openapi.json   (OpenAPI 3.1, follows the configuration)
  SQL API      http://127.0.0.1:$SIDECAR_PORT/docs/sql   (every function, view and setting; also SELECT * FROM integration.api_reference)
  Logs         $RUN/postgres.log, $RUN/sidecar.log
  Extension    release build, installed in $("$PG_CONFIG" --pkglibdir)

Try, in psql:

  CREATE ROLE web_user NOLOGIN;
  SELECT integration.create_api_key('my first key', 'web_user', '{orders:read}', interval '30 days');
  SELECT * FROM integration.verify_api_key('<the token printed above>', 'orders:read');

Press Ctrl-C to stop everything.
MSG
status=0
wait "$SIDECAR_PID" || status=$?
# Ctrl-C reaches the sidecar too; it then stops cleanly with status 0.
[ "$status" = 0 ] || echo "the sidecar exited with status $status; see $RUN/sidecar.log" >&2
stop
