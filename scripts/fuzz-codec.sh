#!/usr/bin/env bash
# Fuzzes the MQTT decoder (core/codec/fuzz, target `decode`) for a bounded time.
#
#   scripts/fuzz-codec.sh [seconds]     (default 60)
#
# Installs cargo-fuzz if missing. This machine (and CI) has only stable Rust; cargo-fuzz needs
# nightly flags (-Zsanitizer=address, -Cpasses=sancov-module), which RUSTC_BOOTSTRAP=1 unlocks
# on stable. Exits non-zero if the fuzzer finds a crash (the input is saved under
# core/codec/fuzz/artifacts/decode/). The corpus is kept in core/codec/fuzz/corpus/decode/ so
# later runs start from what earlier ones found.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz..." >&2
    cargo install cargo-fuzz --locked
fi

cd "$root/core/codec"
mkdir -p fuzz/corpus/decode
export RUSTC_BOOTSTRAP=1
# -max_total_time bounds the fuzzing itself; -timeout flags any single input taking > 10 s.
exec cargo fuzz run decode fuzz/corpus/decode -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
