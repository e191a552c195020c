"""The examples in python/examples run as shipped: their own pytest suite passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uringmq")
pytest.importorskip("paho.mqtt.client")

EXAMPLES = Path(__file__).resolve().parents[2] / "python" / "examples"


def test_examples_suite_passes():
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES)],
        capture_output=True, text=True, timeout=300, cwd=EXAMPLES,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "failed" not in r.stdout
