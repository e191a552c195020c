#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian/Ubuntu machine with Rust and Python 3.9+,
# then runs every test: Rust unit/property/e2e tests on both io drivers (io_uring and epoll), the
# Python package's tests and the paho-mqtt conformance suite, and a bounded fuzz run of the codec.
# `.ci/run` runs exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"

step() { printf '\n==== %s (%ss since start) ====\n' "$*" "$SECONDS"; }

step "system packages"
# Mosquitto (the reference broker and mosquitto_sub/pub), Prometheus (its server and promtool, for
# the metrics endpoint tests; installing it starts no service in a container without systemd).
missing=()
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    missing+=(mosquitto mosquitto-clients)
fi
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "python packages"
python3 -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt

step "rust: unit, property and end-to-end tests (io_uring where available)"
# Default members: everything but the pyo3 cdylib, which links only inside a Python process.
cargo test --locked

step "rust: end-to-end tests on the epoll driver"
# Every integration-test target of the default members: the e2e binary (tests/e2e/main.rs, all
# areas as modules), the codec's spec vectors and the broker-process tests. `--test '*'` rather
# than `-p uringmq-tests`: the same package selection as above unifies features the same way, so
# the build above is reused instead of recompiling dependencies.
MONOIO_FORCE_LEGACY_DRIVER=1 cargo test --locked --test '*'

step "rust: benchmarks and load generator build (test profile: compiled, not measured)"
cargo test --locked --benches --no-run

step "python: build and install the package (maturin)"
# The `ci` profile is `release` without fat LTO (see Cargo.toml); `pip install .` alone builds `release`.
MATURIN_PEP517_ARGS="--profile ci" \
    python3 -m pip install -q --disable-pip-version-check --force-reinstall --no-deps .

step "broker binary (ci profile) for the third-party client tests"
# test_edge_clients.py (paho, mosquitto_pub/sub/passwd) and the MQTT.js tests spawn the binary.
cargo build --locked --profile ci -p uringmq --bin uringmq
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export URINGMQ_BIN="$target_dir/ci/uringmq"

step "python: embedding, plugin and conformance tests"
status=0
(cd tests/python && python3 -m pytest -q -p no:cacheprovider) || status=$?
# pytest exit 5 means no tests ran: that is a failure here, the suite must exist.
[ "$status" = 0 ] || exit "$status"

step "python: conformance suite against the binary on the epoll driver"
# The same spec tests on monoio's legacy driver, as in containers whose seccomp profile blocks io_uring.
(cd tests/python && MONOIO_FORCE_LEGACY_DRIVER=1 \
    python3 -m pytest -q -p no:cacheprovider --broker=uringmq-bin test_mqtt_*.py)

step "node: MQTT.js over WebSocket"
(cd tests/node && npm ci --no-audit --no-fund --loglevel=error && npm test)

step "codec fuzzing (${FUZZ_SECONDS}s)"
bash scripts/fuzz-codec.sh "$FUZZ_SECONDS"

echo
echo "all tests passed"
