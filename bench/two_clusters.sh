# Sourced by bench/store.sh and bench/issuer.sh: the release build, helpers, and two private
# Postgres clusters (scram-sha-256, on free ports): "upstream" (PG_PORT, what leases are minted
# on) and "store" (STORE_PORT, the shared lease store, reached as leasegate_store with only
# CREATE on its database; its URL in $work/store.url). $work is removed and every pid in
# $pids killed at exit. Sets BIN, LG, PW, work, pids, PG_PORT, STORE_PORT, PGHOST, PGPASSWORD.
BIN=$(pg_config --bindir)
cargo build --release --quiet
LG="${CARGO_TARGET_DIR:-target}/release/leasegate"

calc() { awk "BEGIN { print ($*) }"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

work=$(mktemp -d /tmp/leasegate-bench.XXXXXX)
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown postgres "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for c in upstream store; do as_pg "$BIN/pg_ctl" -D "$work/$c" -m fast stop >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

PW=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
echo "$PW" > "$work/pwfile"; [ "$(id -u)" -eq 0 ] && chown postgres "$work/pwfile"
start_cluster() { # name port
  as_pg "$BIN/initdb" -D "$work/$1" -U bench_admin --auth=scram-sha-256 --pwfile="$work/pwfile" --no-instructions >/dev/null
  as_pg "$BIN/pg_ctl" -D "$work/$1" -l "$work/$1.log" -w -o "-p $2 -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work -c max_connections=300" start >/dev/null
}
PG_PORT=$(free_port); STORE_PORT=$(free_port)
start_cluster upstream "$PG_PORT"
start_cluster store "$STORE_PORT"
export PGHOST=127.0.0.1 PGPASSWORD="$PW"
psql -q -p "$PG_PORT" -U bench_admin -d postgres -v ON_ERROR_STOP=1 -c "CREATE ROLE bench_group NOLOGIN"
psql -q -p "$STORE_PORT" -U bench_admin -d postgres -v ON_ERROR_STOP=1 \
  -c "CREATE ROLE leasegate_store LOGIN PASSWORD '$PW'" -c "GRANT CREATE ON DATABASE postgres TO leasegate_store"
echo "postgres://leasegate_store:$PW@127.0.0.1:$STORE_PORT/postgres" > "$work/store.url"
echo "$PW" > "$work/admin.secret"
