"""Start-up warnings for settings that are legal but rarely meant: a broker that refuses every
client, more cores than CPUs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

uringmq = pytest.importorskip("uringmq")

CMD = [sys.executable, "-m", "uringmq", "--port", "0", "--log-level", "warn"]


def start_output(*args: str) -> str:
    """What the command prints until it listens (then it is stopped)."""
    proc = subprocess.Popen(CMD + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                break
        return "".join(lines)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_warns_when_every_client_would_be_refused():
    out = start_output("--bind", "0.0.0.0", "--cores", "1")
    assert "anonymous clients are refused" in out and "no way to authenticate" in out, out


def test_no_warning_with_a_password_file(tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text("")
    conf = tmp_path / "b.toml"
    conf.write_text(f'password_file = "{pw}"\n')
    out = start_output("--bind", "0.0.0.0", "--cores", "1", "--config", str(conf))
    assert "anonymous clients are refused" not in out, out


def test_no_warning_on_loopback():
    out = start_output("--cores", "1")
    assert "anonymous clients are refused" not in out and "more cores than CPUs" not in out, out


def test_warns_when_cores_exceed_cpus():
    out = start_output("--cores", str((os.cpu_count() or 1) + 1))
    assert "more cores than CPUs" in out, out
