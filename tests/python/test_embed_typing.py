"""``Broker(...)`` settings are typed: mypy flags a misspelt or mistyped setting, and the typed
dict lists every key the broker has."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

uringmq = pytest.importorskip("uringmq")
pytest.importorskip("mypy")

from uringmq.settings import ListenerSettings, Settings  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "uringmq.example.toml"

GOOD = '''
import pathlib
import uringmq

uringmq.Broker(port=0, cores=1, driver="epoll", password_file=pathlib.Path("p"),
               listener=[{"port": 0, "transport": "ws"}], max_qos=1, allow_anonymous=None)
'''

BAD = '''
import uringmq

uringmq.Broker(prot=1883)
uringmq.Broker(port="1883")
uringmq.Broker(driver="uring")
uringmq.Broker(listener=[{"transprot": "ws"}])
'''


def mypy(tmp_path, name: str, code: str) -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(code)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--strict", "--no-error-summary", str(path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )


def test_mypy_accepts_good_settings_and_flags_bad_ones(tmp_path):
    good = mypy(tmp_path, "good.py", GOOD)
    assert good.returncode == 0, good.stdout
    bad = mypy(tmp_path, "bad.py", BAD)
    lines = bad.stdout.splitlines()
    assert bad.returncode == 1
    for line_no, word in [(4, "prot"), (5, "port"), (6, "driver"), (7, "transprot")]:
        assert any(f"bad.py:{line_no}:" in l and word in l for l in lines), bad.stdout


def test_typed_settings_list_every_key_the_broker_has():
    # Every key the broker reports is typed; a typed key it does not report (an optional one,
    # unset by default) must be a key of the config file: uringmq.example.toml documents every
    # key (a Rust unit test checks that).
    example = "\n".join(l.lstrip("# ") for l in EXAMPLE.read_text().splitlines())
    effective = uringmq.Broker(listener=[{"port": 0}]).settings
    for typed, reported in [
        (set(Settings.__annotations__), set(effective)),
        (set(ListenerSettings.__annotations__), set(effective["listener"][0])),
    ]:
        assert reported - typed == set(), "keys missing from uringmq/settings.py"
        # A table such as `[cluster]` is documented commented out, unset by default.
        documented = {k for k in typed - reported if f"\n[{k}]" in "\n" + example}
        unknown = {k for k in typed - reported - documented if f"\n{k} = " not in "\n" + example}
        assert unknown == set(), "typed keys that are not config keys"
