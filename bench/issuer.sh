#!/usr/bin/env bash
# Issuer benchmark: SIDECARS simulated sidecars (bench/issuer_load.py) ask leasegate issuers for
# leases over HTTPS and release them, for RUN_SECONDS, against one issuer and then two issuers sharing
# the Postgres lease store, in front of one private Postgres; leases per second and the grant
# latency (p50/p99) of each. Release build; only 127.0.0.1.
#
#   bench/issuer.sh                       # defaults: SIDECARS=1000 RUN_SECONDS=15 ROUNDS=2
#
# Needs: postgresql (initdb), openssl, python3 with PyJWT and cryptography (pip install pyjwt cryptography).
set -euo pipefail
cd "$(dirname "$0")/.."
SIDECARS=${SIDECARS:-1000}
SECONDS_EACH=${RUN_SECONDS:-15}
ROUNDS=${ROUNDS:-2}
python3 -c "import jwt, cryptography" 2>/dev/null || pip install --quiet pyjwt cryptography
. bench/two_clusters.sh
# The sidecars' token, and the key the issuers verify it with.
mkdir -p "$work/keys"
python3 tests/clients/jwt_tokens.py keys "$work/keys" k1
python3 tests/clients/jwt_tokens.py sign "$work/keys" k1 \
  '{"iss": "https://k8s.bench.invalid", "sub": "system:serviceaccount:bench:sidecar", "aud": ["leasegate"], "exp_in": 3600, "iat_in": -5}' > "$work/sidecar.token"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$work/issuer.key" -out "$work/issuer.crt" 2>/dev/null

ports=()
for i in 0 1; do
  port=$(free_port); ports+=("$port")
  cat > "$work/issuer-$i.toml" <<TOML
[journal]
url_file = "$work/store.url"
instance = "issuer-$i"

[issuer]
listen = "127.0.0.1:$port"
tls = { cert = "$work/issuer.crt", key = "$work/issuer.key" }

[[jwt_issuer]]
name = "k8s"
issuer = "https://k8s.bench.invalid"
jwks_file = "$work/keys/jwks.json"
audiences = ["leasegate"]

[[sidecar]]
name = "bench"
jwt = { issuer = "k8s", subject = "system:serviceaccount:bench:sidecar" }
clients = ["bench"]

[[database]]
name = "bench"
kind = "postgres"
listen = "127.0.0.1:$(free_port)"
upstream = "127.0.0.1:$PG_PORT"
admin_user = "bench_admin"
admin_password_file = "$work/admin.secret"
name_prefix = "lgb_"
upstream_tls = { mode = "disable" }
max_concurrent_mints = 16
connect_timeout = "10s"

[[role]]
name = "reader"
database = "bench"
default_ttl = "1h"
max_ttl = "2h"
member_of = ["bench_group"]

[[client]]
name = "bench"
roles = ["reader"]
TOML
  "$LG" --log-format json --log-level warn serve --config "$work/issuer-$i.toml" 2> "$work/issuer-$i.log" &
  pids+=($!)
done
for p in "${ports[@]}"; do for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done; done

one="https://127.0.0.1:${ports[0]}"
two="$one,https://127.0.0.1:${ports[1]}"
echo "# $SIDECARS simulated sidecars, grant + release in a loop, ${SECONDS_EACH}s per run, $ROUNDS interleaved rounds, $(nproc) cores"
for r in $(seq "$ROUNDS"); do
  for urls in "$one" "$two"; do
    printf 'round %d  ' "$r"
    python3 bench/issuer_load.py "$urls" "$work/issuer.crt" "$work/sidecar.token" "$SIDECARS" "$SECONDS_EACH"
    sleep 2
  done
done
left=$(psql -Atq -p "$PG_PORT" -U bench_admin -d postgres -c "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'lgb\_%'")
echo "minted users left: $left"
for i in 0 1; do
  grep -q '"level":"ERROR"' "$work/issuer-$i.log" && { echo "issuer-$i logged errors:"; grep '"level":"ERROR"' "$work/issuer-$i.log" | head -3; } || true
done
