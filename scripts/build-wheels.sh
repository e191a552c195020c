#!/usr/bin/env bash
# Builds what a package registry takes: the sdist and a manylinux2014 (glibc 2.17) abi3 wheel,
# stripped, into target/dist/, then shows the wheel's platform tag with auditwheel.
#
# zig (the `ziglang` package) links against glibc 2.17 symbols without a manylinux container;
# a plain `maturin build` here would be tagged for the build machine's glibc (manylinux_2_34 on
# Debian 12). PROFILE=ci skips fat LTO (minutes faster; `release` is what to publish).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-release}"
python3 -m pip install -q --disable-pip-version-check 'maturin>=1.7,<2' ziglang auditwheel
rm -rf target/dist
python3 -m maturin sdist --out target/dist
python3 -m maturin build --profile "$PROFILE" --zig --compatibility manylinux2014 --out target/dist
python3 -m auditwheel show target/dist/*.whl
ls -l target/dist
