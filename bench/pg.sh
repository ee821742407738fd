#!/usr/bin/env bash
# Postgres benchmark: pgbench -S direct vs through PgBouncer (session mode), HAProxy (`mode tcp`,
# one thread: the floor of any relay) and leasegate, in interleaved rounds on one private server,
# plus pgbench -C (a connection per transaction) against each, and leasegate's mint latency
# (p50/p99) from its own log.
#
#   bench/pg.sh                         # defaults: ROUNDS=3 DURATION=10 SCALE=10 CLIENTS="8 32"
#   ROUNDS=5 DURATION=20 bench/pg.sh
#   LG_BASELINE=/path/to/older/leasegate bench/pg.sh   # also that binary, in the same rounds
#
# Needs: postgresql (initdb, pgbench), pgbouncer and haproxy (installed when missing, as root),
# asyncpg (for the cancel latency). Only 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-"8 32"}
THREADS=${THREADS:-2}

if ! command -v pgbouncer >/dev/null && ! [ -x /usr/sbin/pgbouncer ]; then
  [ "$(id -u)" -eq 0 ] || { echo "pgbouncer is missing (apt-get install pgbouncer)" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
if ! command -v haproxy >/dev/null && ! [ -x /usr/sbin/haproxy ]; then
  [ "$(id -u)" -eq 0 ] || { echo "haproxy is missing (apt-get install haproxy)" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
fi
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
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
  sleep 0.5
  as_pg "$BIN/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

PG_PORT=$(free_port); BOUNCER_PORT=$(free_port); LG_PORT=$(free_port); HAPROXY_PORT=$(free_port)
ADMIN_PW=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
echo "$ADMIN_PW" > "$work/pwfile"; [ "$(id -u)" -eq 0 ] && chown postgres "$work/pwfile"
as_pg "$BIN/initdb" -D "$work/data" -U bench_admin --auth=scram-sha-256 --pwfile="$work/pwfile" --no-sync --no-instructions >/dev/null
as_pg "$BIN/pg_ctl" -D "$work/data" -l "$work/pg.log" -w -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work -c max_connections=300 -c shared_buffers=256MB" start >/dev/null
export PGHOST=127.0.0.1 PGPASSWORD="$ADMIN_PW"
psql -q -p "$PG_PORT" -U bench_admin -d postgres -v ON_ERROR_STOP=1 <<SQL
CREATE ROLE bench_group NOLOGIN;
CREATE ROLE bench_direct LOGIN PASSWORD '$ADMIN_PW' IN ROLE bench_group;
SQL
"$BIN/pgbench" -i -q -s "$SCALE" -p "$PG_PORT" -U bench_admin postgres >/dev/null 2>&1
psql -q -p "$PG_PORT" -U bench_admin -d postgres -c "GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench_group"

# PgBouncer, session mode, SCRAM for clients and server.
cat > "$work/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $work/userlist.txt
pool_mode = session
max_client_conn = 500
default_pool_size = 64
logfile = $work/pgbouncer.log
INI
echo "\"bench_direct\" \"$ADMIN_PW\"" > "$work/userlist.txt"
[ "$(id -u)" -eq 0 ] && chown postgres "$work"/pgbouncer.ini "$work"/userlist.txt
# pgbouncer drops to the postgres account itself (-u): runuser would not pass signals on.
if [ "$(id -u)" -eq 0 ]; then
  "$PGBOUNCER" -u postgres "$work/pgbouncer.ini" >/dev/null 2>&1 &
else
  "$PGBOUNCER" "$work/pgbouncer.ini" >/dev/null 2>&1 &
fi
PGB_PID=$!
pids+=($PGB_PID)

# HAProxy: a bare TCP relay, one thread (what any proxy costs at least).
cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 2000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen pg
  bind 127.0.0.1:$HAPROXY_PORT
  server pg 127.0.0.1:$PG_PORT
CFG
"$HAPROXY" -f "$work/haproxy.cfg" -db >/dev/null 2>&1 &
HAP_PID=$!
pids+=($HAP_PID)

# leasegate (and, with LG_BASELINE, an older binary beside it: its own port, journal and prefix)
CLIENT_PW=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
VERIFIER=$(echo "$CLIENT_PW" | "$LG" hash-password)
echo "$ADMIN_PW" > "$work/admin.secret"
lg_config() { # name port prefix
cat <<TOML
[journal]
path = "$work/$1.db"

[[database]]
name = "bench"
kind = "postgres"
listen = "127.0.0.1:$2"
upstream = "127.0.0.1:$PG_PORT"
admin_user = "bench_admin"
admin_password_file = "$work/admin.secret"
name_prefix = "$3"
upstream_tls = { mode = "disable" }

[[role]]
name = "reader"
database = "bench"
default_ttl = "1h"
max_ttl = "2h"
member_of = ["bench_group"]

[[client]]
name = "bench"
password = "$VERIFIER"
roles = ["reader"]
TOML
}
lg_config leasegate "$LG_PORT" lgb_ > "$work/leasegate.toml"
"$LG" --log-format json --log-level info serve --config "$work/leasegate.toml" 2> "$work/leasegate.log" &
LG_PID=$!
pids+=($LG_PID)
TARGETS="direct pgbouncer haproxy leasegate"
C_TARGETS="direct pgbouncer haproxy leasegate"
BASE_PORT=$LG_PORT BASE_PID=""
if [ -n "${LG_BASELINE:-}" ]; then
  BASE_PORT=$(free_port)
  lg_config baseline "$BASE_PORT" lgc_ > "$work/baseline.toml"
  "$LG_BASELINE" --log-format json --log-level info serve --config "$work/baseline.toml" 2> "$work/baseline.log" &
  BASE_PID=$!
  pids+=($BASE_PID)
  TARGETS="$TARGETS baseline" C_TARGETS="$C_TARGETS baseline"
fi
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$LG_PORT) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/$BOUNCER_PORT) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/$HAPROXY_PORT) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/$BASE_PORT) 2>/dev/null && break; sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
run() { # target clients extra-args… → "TPS proxy-CPU-µs-per-transaction"
  local target=$1 clients=$2; shift 2
  local port user pw proxy=""
  case $target in
    direct) port=$PG_PORT user=bench_direct pw=$ADMIN_PW ;;
    pgbouncer) port=$BOUNCER_PORT user=bench_direct pw=$ADMIN_PW proxy=$PGB_PID ;;
    haproxy) port=$HAPROXY_PORT user=bench_direct pw=$ADMIN_PW proxy=$HAP_PID ;;
    leasegate) port=$LG_PORT user=bench pw=$CLIENT_PW proxy=$LG_PID ;;
    baseline) port=$BASE_PORT user=bench pw=$CLIENT_PW proxy=$BASE_PID ;;
  esac
  local before=0; [ -n "$proxy" ] && before=$(cpu_ticks "$proxy")
  local out; out=$(PGPASSWORD=$pw PGSSLMODE=disable "$BIN/pgbench" -n -S -c "$clients" -j "$THREADS" -T "$DURATION" -p "$port" -U "$user" "$@" postgres 2>&1)
  local after=0; [ -n "$proxy" ] && after=$(cpu_ticks "$proxy")
  grep -q 'failed transactions: [1-9]' <<<"$out" && echo "pgbench reported failed transactions against $target" >&2
  local tps n; tps=$(awk '/^tps = / {print $3}' <<<"$out"); n=$(awk -F': ' '/actually processed/ {split($2, a, "/"); print a[1]}' <<<"$out")
  echo "${tps:-0} $(calc "${n:-0} > 0 ? ($after - $before) * 10000 / ${n:-1} : 0")"
}

declare -A sum
echo "# pgbench -S, $ROUNDS interleaved rounds of ${DURATION}s, scale $SCALE, $(nproc) cores, -j $THREADS"
for c in $CLIENTS; do
  for r in $(seq "$ROUNDS"); do
    for t in $TARGETS; do
      read -r tps cpu < <(run "$t" "$c")
      if [ "$t" = direct ]; then cpu_note=""; else cpu_note=$(printf '  (proxy CPU %.1f µs/tx)' "$cpu"); fi
      printf 'round %d  clients %-3s %-10s %10.0f tps%s\n' "$r" "$c" "$t" "$tps" "$cpu_note"
      sum[$t,$c]=$(calc "${sum[$t,$c]:-0} + $tps")
    done
  done
done
for r in $(seq "$ROUNDS"); do
  for t in $C_TARGETS; do
    read -r tps _ < <(run "$t" 8 -C)
    printf 'round %d  clients 8   %-10s %10.0f tps (-C: new connection per transaction)\n' "$r" "$t" "$tps"
    sum[$t,C]=$(calc "${sum[$t,C]:-0} + $tps")
  done
done

echo
echo "| workload | direct TPS | PgBouncer TPS (ratio) | HAProxy TPS (ratio) | leasegate TPS (ratio) | leasegate / PgBouncer | leasegate / HAProxy |"
echo "|---|---|---|---|---|---|---|"
for c in $CLIENTS C; do
  d=$(calc "${sum[direct,$c]} / $ROUNDS"); b=$(calc "${sum[pgbouncer,$c]} / $ROUNDS"); h=$(calc "${sum[haproxy,$c]} / $ROUNDS"); l=$(calc "${sum[leasegate,$c]} / $ROUNDS")
  label="pgbench -S, $c clients"; [ "$c" = C ] && label="pgbench -S -C, 8 clients (connect per transaction)"
  printf '| %s | %.0f | %.0f (%.2f×) | %.0f (%.2f×) | %.0f (%.2f×) | %.2f× | %.2f× |\n' "$label" "$d" "$b" "$(calc "$b/$d")" "$h" "$(calc "$h/$d")" "$l" "$(calc "$l/$d")" "$(calc "$l/$b")" "$(calc "$l/$h")"
done
if [ -n "${LG_BASELINE:-}" ]; then
  echo
  echo "| workload | leasegate TPS | baseline ($LG_BASELINE) TPS | leasegate / baseline |"
  echo "|---|---|---|---|"
  for c in $CLIENTS C; do
    l=$(calc "${sum[leasegate,$c]} / $ROUNDS"); b=$(calc "${sum[baseline,$c]} / $ROUNDS")
    label="pgbench -S, $c clients"; [ "$c" = C ] && label="pgbench -S -C, 8 clients"
    printf '| %s | %.0f | %.0f | %.2f× |\n' "$label" "$l" "$b" "$(calc "$l/$b")"
  done
fi

# Cancel latency (CancelRequest out → the statement's 57014 in), direct vs leasegate, while
# pgbench keeps leasegate's event loop busy.
echo
PGPASSWORD=$CLIENT_PW PGSSLMODE=disable "$BIN/pgbench" -n -S -c 8 -j "$THREADS" -T 600 -p "$LG_PORT" -U bench postgres >/dev/null 2>&1 &
LOAD_PID=$!
pids+=($LOAD_PID)
sleep 1
python3 bench/cancel.py "${CANCEL_ROUNDS:-100}" \
  "direct=postgres://bench_direct:$ADMIN_PW@127.0.0.1:$PG_PORT/postgres?sslmode=disable" \
  "leasegate=postgres://bench:$CLIENT_PW@127.0.0.1:$LG_PORT/postgres?sslmode=disable" \
  || echo "cancel latency: some cancels were lost (see the lines above)"
kill "$LOAD_PID" 2>/dev/null || true

# Mint latency from leasegate's own "lease granted" events.
python3 - "$work/leasegate.log" <<'PY'
import json, sys
ms = sorted(json.loads(l).get("fields", json.loads(l))["mint_ms"] for l in open(sys.argv[1]) if "\"lease granted\"" in l)
if ms:
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
    print(f"\nmint latency over {len(ms)} mints: p50 {pick(0.5):.2f} ms, p99 {pick(0.99):.2f} ms")
PY
grep -q '"level":"ERROR"' "$work/leasegate.log" && { echo "leasegate logged errors:"; grep '"level":"ERROR"' "$work/leasegate.log" | head -5; } || true
