#!/usr/bin/env bash
# Lease store benchmark: connection churn (pgbench -S -C, a lease minted and revoked per
# connection) through leasegate with the embedded SQLite journal vs the shared Postgres store,
# in interleaved rounds, against one private upstream; and what each lease costs the store
# (transactions committed on the store's server per lease) and the mint latency with each.
#
#   bench/store.sh                      # defaults: ROUNDS=3 DURATION=10 CLIENTS="8"
#   ROUNDS=5 DURATION=20 CLIENTS="8 32" bench/store.sh
#
# Needs: postgresql (initdb, pgbench). Only 127.0.0.1. The store is a second private cluster on
# the same disk (fsync on, as a real store would be).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-"8"}
THREADS=${THREADS:-2}
. bench/two_clusters.sh
"$BIN/pgbench" -i -q -s 1 -p "$PG_PORT" -U bench_admin postgres >/dev/null 2>&1
psql -q -p "$PG_PORT" -U bench_admin -d postgres -c "GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench_group"

CLIENT_PW=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
VERIFIER=$(echo "$CLIENT_PW" | "$LG" hash-password)
lg_config() { # journal-table port prefix
cat <<TOML
[journal]
$1

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
SQLITE_PORT=$(free_port); SHARED_PORT=$(free_port)
lg_config "path = \"$work/journal.db\"" "$SQLITE_PORT" lgs_ > "$work/sqlite.toml"
lg_config "url_file = \"$work/store.url\"" "$SHARED_PORT" lgp_ > "$work/shared.toml"
for t in sqlite shared; do
  "$LG" --log-format json --log-level info serve --config "$work/$t.toml" 2> "$work/$t.log" &
  pids+=($!)
done
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$SQLITE_PORT) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/$SHARED_PORT) 2>/dev/null && break; sleep 0.1; done

store_commits() { psql -Atq -p "$STORE_PORT" -U bench_admin -d postgres -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"; }
granted() { grep -c '"lease granted"' "$work/$1.log" || true; }
run() { # target clients → TPS
  local port; case $1 in sqlite) port=$SQLITE_PORT ;; shared) port=$SHARED_PORT ;; esac
  local out; out=$(PGPASSWORD=$CLIENT_PW PGSSLMODE=disable "$BIN/pgbench" -n -S -C -c "$2" -j "$THREADS" -T "$DURATION" -p "$port" -U bench postgres 2>&1)
  grep -q 'failed transactions: [1-9]' <<<"$out" && echo "pgbench reported failed transactions against $1" >&2
  awk '/^tps = / {print $3}' <<<"$out"
}

declare -A sum
echo "# pgbench -S -C (a lease per connection), $ROUNDS interleaved rounds of ${DURATION}s, $(nproc) cores"
for c in $CLIENTS; do
  for r in $(seq "$ROUNDS"); do
    for t in sqlite shared; do
      before_commits=$(store_commits); before_leases=$(granted "$t")
      tps=$(run "$t" "$c")
      sleep 2 # let the last revocations finish, so their writes are counted in this round
      commits=$(( $(store_commits) - before_commits )); leases=$(( $(granted "$t") - before_leases ))
      note=""; [ "$t" = shared ] && [ "$leases" -gt 0 ] && note=$(printf '  (store: %.1f commits per lease)' "$(calc "$commits / $leases")")
      printf 'round %d  clients %-3s %-7s %8.0f tps%s\n' "$r" "$c" "$t" "${tps:-0}" "$note"
      sum[$t,$c]=$(calc "${sum[$t,$c]:-0} + ${tps:-0}")
    done
  done
done

echo
echo "| workload | SQLite journal TPS | shared Postgres store TPS (ratio) |"
echo "|---|---|---|"
for c in $CLIENTS; do
  s=$(calc "${sum[sqlite,$c]} / $ROUNDS"); p=$(calc "${sum[shared,$c]} / $ROUNDS")
  printf '| pgbench -S -C, %s clients | %.0f | %.0f (%.2f×) |\n' "$c" "$s" "$p" "$(calc "$p/$s")"
done
echo
python3 - "$work/sqlite.log" "$work/shared.log" <<'PY'
import json, sys
for name, path in zip(["SQLite journal", "shared store"], sys.argv[1:]):
    ms = sorted(json.loads(l).get("fields", json.loads(l))["mint_ms"] for l in open(path) if "\"lease granted\"" in l)
    if ms:
        pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
        print(f"mint latency, {name}, over {len(ms)} mints: p50 {pick(0.5):.2f} ms, p99 {pick(0.99):.2f} ms")
PY
left=$(psql -Atq -p "$PG_PORT" -U bench_admin -d postgres -c "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'lgs\_%' OR rolname LIKE 'lgp\_%'")
echo "minted users left after the rounds: $left (revocations may still be finishing)"
for t in sqlite shared; do
  grep -q '"level":"ERROR"' "$work/$t.log" && { echo "$t leasegate logged errors:"; grep '"level":"ERROR"' "$work/$t.log" | head -5; } || true
done
