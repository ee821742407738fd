#!/usr/bin/env bash
# Load and faults: SOAK_CLIENTS (default 1000) concurrent connections, half Postgres and half
# MariaDB, with churn for SOAK_SECONDS (default 180); meanwhile both servers are restarted,
# leasegate is killed with SIGKILL and started again, a login burst exhausts the admin pools and
# SOAK_HALF_OPEN (default 2000) half-open handshakes are held. It fails unless, at the end, no
# minted user is left, every lease in the journal ended and clients were served during the
# slowloris; it prints logins/failures/queries per phase and leasegate's peak RSS.
#   bench/soak.sh
#   SOAK_SECONDS=600 SOAK_CLIENTS=1000 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --quiet --test soak -- --ignored --nocapture 2>&1 | grep -E "^soak:|panicked|test result" | sed 's/^soak: //'
