#!/usr/bin/env bash
# One-shot deploy: builds raydeploy from this checkout when the binary is missing or older than
# its sources, then runs `raydeploy deploy "$@"` (exit code and output are raydeploy's).
#
#   ./deploy.sh                                   deploy ./raydeploy.yaml
#   ./deploy.sh examples/xgboost-blob/raydeploy.yaml -e dev --auto-approve
#   ./deploy.sh --dry-run                         print the phase graph and commands only
#
# RAYDEPLOY_BIN=/path/to/raydeploy uses that binary and builds nothing. The build's output goes
# to stderr, so `--output json` keeps stdout machine-readable.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ -n "${RAYDEPLOY_BIN:-}" ]; then
    bin=$RAYDEPLOY_BIN
else
    bin="$here/target/release/raydeploy"
    stale=0
    if [ ! -x "$bin" ]; then
        stale=1
    elif [ -n "$(find "$here/src" "$here/templates" "$here/schema" "$here/Cargo.toml" "$here/Cargo.lock" \
        -newer "$bin" -type f -print -quit 2>/dev/null)" ]; then
        stale=1
    fi
    if [ "$stale" = 1 ]; then
        if ! command -v cargo >/dev/null; then
            echo "deploy.sh: raydeploy is not built and cargo is missing; install Rust (https://rustup.rs) or set RAYDEPLOY_BIN" >&2
            exit 1
        fi
        echo "deploy.sh: building raydeploy (cargo build --release --locked)" >&2
        cargo build --release --locked --quiet --manifest-path "$here/Cargo.toml" --bin raydeploy >&2
    fi
fi

exec "$bin" deploy "$@"
