#!/usr/bin/env bash
# PostgreSQL alone: pipelined statements with a Sync each (what tokio_postgres sends) against
# one Sync per batch, for a read by key and a single-row insert. See bench/pgsync/src/main.rs.
# Usage: bench/pgsync.sh [HOST:PORT] [SECONDS]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cargo build --quiet --release --locked --manifest-path "$here/pgsync/Cargo.toml"
exec "$here/pgsync/target/release/pgsync" "$@"
