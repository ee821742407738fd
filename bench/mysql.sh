#!/usr/bin/env bash
# MariaDB benchmark: sysbench oltp_point_select (prepared statements, binary protocol) direct vs
# through HAProxy (`mode tcp`, one thread: the floor of any relay) vs through leasegate, in
# interleaved rounds on one private MariaDB, with each proxy's CPU per query and leasegate's
# mint latency (p50/p99) from its own log. No pooler is compared: Debian ships none for MySQL
# (ProxySQL and MaxScale are not packaged).
#
#   bench/mysql.sh                      # defaults: ROUNDS=3 DURATION=10 THREADS_LIST="8 32"
#   ROUNDS=5 DURATION=20 bench/mysql.sh
#   LG_BASELINE=/path/to/older/leasegate bench/mysql.sh   # also that binary, in the same rounds
#
# Needs: mariadb-server, sysbench, haproxy (installed when missing, as root). Only 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
THREADS_LIST=${THREADS_LIST:-"8 32"}
TABLE_SIZE=${TABLE_SIZE:-100000}

if ! command -v sysbench >/dev/null; then
  [ "$(id -u)" -eq 0 ] || { echo "sysbench is missing (apt-get install sysbench)" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sysbench >/dev/null
fi
if ! command -v haproxy >/dev/null && ! [ -x /usr/sbin/haproxy ]; then
  [ "$(id -u)" -eq 0 ] || { echo "haproxy is missing (apt-get install haproxy)" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
fi
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
cargo build --release --quiet
LG="${CARGO_TARGET_DIR:-target}/release/leasegate"

calc() { awk "BEGIN { print ($*) }"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_my() { if [ "$(id -u)" -eq 0 ]; then runuser -u mysql -- "$@"; else "$@"; fi; }

work=$(mktemp -d /tmp/leasegate-mybench.XXXXXX)
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown mysql "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  rm -rf "$work"
}
trap cleanup EXIT

MY_PORT=$(free_port); LG_PORT=$(free_port); HAPROXY_PORT=$(free_port)
as_my mariadb-install-db --no-defaults --datadir="$work/data" --auth-root-authentication-method=normal --skip-test-db >/dev/null
# mariadbd runs as mysql by itself when started by root (--user), so the trap's kill reaches it.
mariadbd --no-defaults --user=mysql --datadir="$work/data" --port="$MY_PORT" --bind-address=127.0.0.1 \
  --socket="$work/mysqld.sock" --pid-file="$work/mysqld.pid" --log-error="$work/error.log" \
  --skip-name-resolve --max-connections=500 --innodb-buffer-pool-size=256M &
pids+=($!)
for _ in $(seq 300); do mariadb --no-defaults -S "$work/mysqld.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
ADMIN_PW=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
mariadb --no-defaults -S "$work/mysqld.sock" -uroot <<SQL
CREATE DATABASE sbtest;
CREATE USER bench_admin@'%' IDENTIFIED BY '$ADMIN_PW';
GRANT ALL ON *.* TO bench_admin@'%' WITH GRANT OPTION;
CREATE ROLE bench_group;
GRANT SELECT ON sbtest.* TO bench_group;
GRANT bench_group TO bench_admin@'%' WITH ADMIN OPTION;
CREATE USER bench_direct@'%' IDENTIFIED BY '$ADMIN_PW';
GRANT SELECT ON sbtest.* TO bench_direct@'%';
SQL
sb() { sysbench oltp_point_select --db-driver=mysql --mysql-host=127.0.0.1 --mysql-db=sbtest --tables=1 --table-size="$TABLE_SIZE" "$@"; }
sb --mysql-port="$MY_PORT" --mysql-user=bench_admin --mysql-password="$ADMIN_PW" prepare >/dev/null

CLIENT_PW=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
VALUE=$(echo "$CLIENT_PW" | "$LG" hash-password)
echo "$ADMIN_PW" > "$work/admin.secret"
lg_config() { # name port prefix
cat <<TOML
[journal]
path = "$work/$1.db"

[[database]]
name = "bench"
kind = "mysql"
listen = "127.0.0.1:$2"
upstream = "127.0.0.1:$MY_PORT"
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
password = "$VALUE"
roles = ["reader"]
TOML
}
lg_config journal "$LG_PORT" lgb_ > "$work/leasegate.toml"
"$LG" --log-format json --log-level info serve --config "$work/leasegate.toml" 2> "$work/leasegate.log" &
LG_PID=$!
pids+=($LG_PID)
cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 2000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen my
  bind 127.0.0.1:$HAPROXY_PORT
  server my 127.0.0.1:$MY_PORT
CFG
"$HAPROXY" -f "$work/haproxy.cfg" -db >/dev/null 2>&1 &
HAP_PID=$!
pids+=($HAP_PID)
TARGETS="direct haproxy leasegate"
BASE_PORT=$LG_PORT BASE_PID=""
if [ -n "${LG_BASELINE:-}" ]; then
  BASE_PORT=$(free_port)
  lg_config baseline "$BASE_PORT" lgc_ > "$work/baseline.toml"
  "$LG_BASELINE" --log-format json --log-level info serve --config "$work/baseline.toml" 2> "$work/baseline.log" &
  BASE_PID=$!
  pids+=($BASE_PID)
  TARGETS="$TARGETS baseline"
fi
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$LG_PORT) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/$HAPROXY_PORT) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/$BASE_PORT) 2>/dev/null && break; sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
run() { # target threads → "QPS proxy-CPU-µs-per-query"
  local target=$1 threads=$2 port user pw proxy=""
  case $target in
    direct) port=$MY_PORT user=bench_direct pw=$ADMIN_PW ;;
    haproxy) port=$HAPROXY_PORT user=bench_direct pw=$ADMIN_PW proxy=$HAP_PID ;;
    leasegate) port=$LG_PORT user=bench pw=$CLIENT_PW proxy=$LG_PID ;;
    baseline) port=$BASE_PORT user=bench pw=$CLIENT_PW proxy=$BASE_PID ;;
  esac
  local before=0; [ -n "$proxy" ] && before=$(cpu_ticks "$proxy")
  local out; out=$(sb --mysql-port="$port" --mysql-user="$user" --mysql-password="$pw" --threads="$threads" --time="$DURATION" --db-ps-mode=auto run 2>&1)
  local after=0; [ -n "$proxy" ] && after=$(cpu_ticks "$proxy")
  grep -q 'FATAL' <<<"$out" && echo "sysbench failed against $target: $(grep FATAL <<<"$out" | head -2)" >&2
  local qps n; qps=$(awk '/queries:/ {gsub(/[()]/, "", $3); print $3}' <<<"$out"); n=$(awk '/queries:/ {print $2}' <<<"$out")
  echo "${qps:-0} $(calc "${n:-0} > 0 ? ($after - $before) * 10000 / ${n:-1} : 0")"
}

declare -A sum
echo "# sysbench oltp_point_select, $ROUNDS interleaved rounds of ${DURATION}s, $TABLE_SIZE rows, $(nproc) cores"
for t in $THREADS_LIST; do
  for r in $(seq "$ROUNDS"); do
    for target in $TARGETS; do
      read -r qps cpu < <(run "$target" "$t")
      note=""; [ "$target" != direct ] && note=$(printf '  (proxy CPU %.1f µs/query)' "$cpu")
      printf 'round %d  threads %-3s %-10s %10.0f qps%s\n' "$r" "$t" "$target" "$qps" "$note"
      sum[$target,$t]=$(calc "${sum[$target,$t]:-0} + $qps")
    done
  done
done
echo
echo "| workload | direct QPS | HAProxy QPS (ratio) | leasegate QPS (ratio) | leasegate / HAProxy |"
echo "|---|---|---|---|---|"
for t in $THREADS_LIST; do
  d=$(calc "${sum[direct,$t]} / $ROUNDS"); h=$(calc "${sum[haproxy,$t]} / $ROUNDS"); l=$(calc "${sum[leasegate,$t]} / $ROUNDS")
  printf '| sysbench oltp_point_select, %s threads | %.0f | %.0f (%.2f×) | %.0f (%.2f×) | %.2f× |\n' "$t" "$d" "$h" "$(calc "$h/$d")" "$l" "$(calc "$l/$d")" "$(calc "$l/$h")"
done
if [ -n "${LG_BASELINE:-}" ]; then
  echo
  echo "| workload | leasegate QPS | baseline ($LG_BASELINE) QPS | leasegate / baseline |"
  echo "|---|---|---|---|"
  for t in $THREADS_LIST; do
    l=$(calc "${sum[leasegate,$t]} / $ROUNDS"); b=$(calc "${sum[baseline,$t]} / $ROUNDS")
    printf '| sysbench oltp_point_select, %s threads | %.0f | %.0f | %.2f× |\n' "$t" "$l" "$b" "$(calc "$l/$b")"
  done
fi
python3 - "$work/leasegate.log" <<'PY'
import json, sys
ms = sorted(json.loads(l).get("fields", json.loads(l))["mint_ms"] for l in open(sys.argv[1]) if "\"lease granted\"" in l)
if ms:
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
    print(f"\nmint latency over {len(ms)} mints: p50 {pick(0.5):.2f} ms, p99 {pick(0.99):.2f} ms")
PY
grep -q '"level":"ERROR"' "$work/leasegate.log" && { echo "leasegate logged errors:"; grep '"level":"ERROR"' "$work/leasegate.log" | head -5; } || true
