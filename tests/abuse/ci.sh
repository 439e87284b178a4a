#!/usr/bin/env bash
# Abuse suite and supply-chain check, as CI runs them (Debian, root, no stdin, no network beyond
# crates.io). Exits non-zero on any failure. Usage: bash tests/abuse/ci.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0 CI="${CI:-1}"
step() { printf '\n== %s ==\n' "$*"; }

step "limits"
# Row 7 holds 10k connections in this process and 10k in the server: raise the descriptor
# limit (as root the hard limit too). The test raises its own soft limit up to the hard one.
ulimit -Hn 65536 2>/dev/null || true
ulimit -Sn "$(ulimit -Hn)"
echo "RLIMIT_NOFILE $(ulimit -Sn)/$(ulimit -Hn)"
if [ "$(ulimit -Sn)" -lt 12000 ]; then
    echo "error: need RLIMIT_NOFILE >= 12000 for the 10k-connection row" >&2
    exit 1
fi

step "build"
cargo fetch --locked
# The static binary the image ships: rows 7-12 run against it (HELLO_ABUSE_BIN), so memory and
# CPU figures are those of production (musl's allocator, release profile).
rustup target add x86_64-unknown-linux-musl
cargo build --release --locked --target x86_64-unknown-linux-musl
export HELLO_ABUSE_BIN="$PWD/target/x86_64-unknown-linux-musl/release/hello-server"

step "abuse suite"
started=$SECONDS
# Release: the CPU-bound rows (churn, floods) measure the real thing. One test at a time is
# enforced inside the suite; --nocapture shows each row's ROW line.
timeout 600 cargo test --release --locked --test abuse -- --nocapture 2>&1 | tee target/abuse.log
echo "abuse suite: $((SECONDS - started)) s"
grep '^ROW ' target/abuse.log || true

step "cargo deny"
if ! command -v cargo-deny >/dev/null; then
    # About 7 minutes on 2 cores.
    cargo install cargo-deny --locked
fi
# The RustSec database, offline: unpacked where deny.toml's db-path expects it (cargo-deny names
# the directory after its URL: advisory-db-<hash of https://github.com/rustsec/advisory-db>).
db_archive="${ADVISORY_DB_ARCHIVE:-/work/shared/data/advisory-db.tar.gz}"
db_dir=target/advisory-dbs/advisory-db-3157b0e258782691
rm -rf "$db_dir" target/advisory-dbs/advisory-db
mkdir -p target/advisory-dbs
tar xzf "$db_archive" -C target/advisory-dbs
mv target/advisory-dbs/advisory-db "$db_dir"
echo "advisory-db at $(git -C "$db_dir" log -1 --format='%h %cI')"
cargo deny --offline check advisories bans licenses sources

step "summary"
echo "abuse suite and cargo deny passed"
