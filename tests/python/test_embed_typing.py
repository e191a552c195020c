"""``Broker(...)`` settings are typed: mypy flags a misspelt or mistyped setting, and the typed
dict lists every key the broker has."""

from __future__ import annotations

import subprocess
import sys

import pytest

uringmq = pytest.importorskip("uringmq")
pytest.importorskip("mypy")

from uringmq.settings import ListenerSettings, Settings  # noqa: E402

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


def test_typed_settings_list_every_key_the_broker_has(tmp_path):
    pw = tmp_path / "p"
    pw.write_text("")
    effective = uringmq.Broker(
        password_file=pw, acl_file=pw, allow_anonymous=True, listener=[{"port": 0, "name": "x"}]
    ).settings
    assert set(Settings.__annotations__) == set(effective)
    listener_keys = set(effective["listener"][0]) | {"cert_file", "key_file", "ca_file", "password_file", "acl_file", "allow_anonymous", "scram_sha256", "max_publish_rate", "max_publish_bytes_rate", "max_connection_rate", "max_connection_rate_per_source"}
    assert set(ListenerSettings.__annotations__) == listener_keys
