#!/usr/bin/env bash
# Instructions leasegate executes per relayed query, counted by callgrind: unlike a throughput
# figure this is the same run after run, whatever else the machine does, so two binaries can be
# compared exactly (e.g. before and after a change to the data path).
#
#   bench/instructions.sh                          # the release build
#   bench/instructions.sh /tmp/old-leasegate target/release/leasegate
#   N=20000 bench/instructions.sh                  # queries per measurement (default 5000)
#
# Each binary runs `leasegate dev` under callgrind. One connection (asyncpg, simple queries)
# logs in and warms up; then the counters are zeroed, N/5 queries run, the counters are dumped,
# N more run, and they are dumped again. The same connection throughout, so no login, mint or
# revocation falls in either window: the difference between the windows divided by the
# difference in queries is the cost of relaying one query. Needs valgrind, postgresql and
# asyncpg. Only 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-5000}
BIN=$(pg_config --bindir)
[ $# -gt 0 ] || { cargo build --release --quiet; set -- "${CARGO_TARGET_DIR:-target}/release/leasegate"; }

measure() { # binary → instructions per query
  local lg=$1 work pid url
  work=$(mktemp -d /tmp/leasegate-instr.XXXXXX)
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$lg" dev --port 0 --mysql-port 0 > "$work/dev.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    url=$(grep -o 'postgres://[^ "]*' "$work/dev.log" | head -1 || true)
    [ -n "$url" ] && break
    sleep 0.2
  done
  [ -n "$url" ] || { echo "leasegate dev did not start: $(tail -3 "$work/dev.log")" >&2; kill "$pid"; return 1; }
  local small=$((N / 5)) ir1 ir2
  # The driver runs each batch it is told on stdin and says "done"; leasegate is counted between.
  coproc DRIVER { python3 -u -c '
import asyncio, sys, asyncpg
async def main(url):
    conn = await asyncpg.connect(url)
    for _ in range(200):
        await conn.execute("SELECT 1")
    print("ready")
    for line in sys.stdin:
        for _ in range(int(line)):
            await conn.execute("SELECT 1")
        print("done")
    await conn.close()
asyncio.run(main(sys.argv[1]))' "$url?sslmode=disable"; }
  read -r _ <&"${DRIVER[0]}"
  callgrind_control -z "$pid" >/dev/null
  echo "$small" >&"${DRIVER[1]}"; read -r _ <&"${DRIVER[0]}"
  callgrind_control -d "$pid" >/dev/null
  echo "$((small + N))" >&"${DRIVER[1]}"; read -r _ <&"${DRIVER[0]}"
  callgrind_control -d "$pid" >/dev/null
  exec {DRIVER[1]}>&-
  wait "$DRIVER_PID" 2>/dev/null || true
  ir1=$(awk '/^summary:/ {print $2}' "$work/cg.out.1")
  ir2=$(awk '/^summary:/ {print $2}' "$work/cg.out.2")
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$work"
  awk -v a="$ir1" -v b="$ir2" -v n="$N" 'BEGIN { printf "%.0f instructions/query", (b - a) / n }'
}

echo "# instructions per relayed query (callgrind), $N simple queries over one connection"
for lg in "$@"; do
  printf '%-40s %s\n' "$lg" "$(measure "$lg")"
done
