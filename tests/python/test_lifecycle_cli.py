"""The ``uringmq`` console command (``uringmq.cli:main``): start, serve, stop on a signal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

uringmq = pytest.importorskip("uringmq")

CMD = [sys.executable, "-m", "uringmq"]


def test_console_script_is_registered():
    scripts = entry_points(group="console_scripts") if sys.version_info >= (3, 10) else entry_points()["console_scripts"]
    assert any(ep.name == "uringmq" and ep.value == "uringmq.cli:main" for ep in scripts)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_until_signalled(sig):
    proc = subprocess.Popen(
        CMD + ["--port", "0", "--cores", "1", "--log-level", "warn"], stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stderr.readline()
        assert "listening on 127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()


# `uringmq.cli` run with one change: when the main loop enters a wait on a condition (an
# Event's), SIGTERM is sent first, so that it is handled while the loop holds that condition's
# lock: the moment a signal hung the command (rarely, under load) when its handler set an Event.
SIGNAL_INSIDE_THE_WAIT = """
import os, signal, sys, threading
from uringmq import cli

real_wait = threading.Condition.wait

def wait(self, timeout=None):
    if sys._getframe(2).f_code is cli.main.__code__:
        os.kill(os.getpid(), signal.SIGTERM)
        # A few thousand bytecodes: the handler runs here, whichever thread got the signal.
        for _ in range(100000):
            pass
    return real_wait(self, timeout)

threading.Condition.wait = wait
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_signal_at_any_moment_of_the_main_loop_stops_it():
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_INSIDE_THE_WAIT, "--port", "0", "--cores", "1", "--log-level", "warn"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        assert "listening on 127.0.0.1:" in line, line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()


def test_print_config_applies_file_and_flags(tmp_path):
    conf = tmp_path / "u.toml"
    conf.write_text("max_qos = 1\nport = 1999\n")
    out = subprocess.run(
        CMD + ["--config", str(conf), "--port", "2000", "--driver", "epoll", "--print-config"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "max_qos = 1" in out.stdout
    assert "port = 2000" in out.stdout
    assert 'driver = "epoll"' in out.stdout


def test_bad_setting_exits_2_naming_the_key(tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text("max_inflihgt = 1\n")
    out = subprocess.run(CMD + ["--config", str(conf)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "max_inflihgt" in out.stderr


def test_port_in_use_exits_1():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(CMD + ["--port", str(port)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert f"127.0.0.1:{port}" in out.stderr


def test_passwd_subcommand_writes_a_password_file(tmp_path):
    pw = tmp_path / "passwd"
    out = subprocess.run(CMD + ["passwd", "-c", "-b", str(pw), "alice", "s3cret"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert pw.read_text().startswith("alice:$")
    out = subprocess.run(CMD + ["passwd", "-b", str(pw)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Usage: uringmq passwd" in out.stderr


def _options_and_commands(help_text: str):
    """The long options and the subcommands (a word, two spaces, its description) of a help."""
    import re

    options = set(re.findall(r"(--[a-z][a-z-]+)", help_text))
    commands = set(re.findall(r"^\s+([a-z]+)\s{2,}\S", help_text, re.M)) - {"help"}
    return options, commands


def test_python_command_and_binary_take_the_same_command_line():
    binary = os.environ.get("URINGMQ_BIN")
    if not binary or not os.path.exists(binary):
        pytest.skip("URINGMQ_BIN is not set (scripts/test.sh builds the binary)")
    ours = subprocess.run(CMD + ["--help"], capture_output=True, text=True, timeout=60).stdout
    theirs = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert _options_and_commands(ours) == _options_and_commands(theirs), (ours, theirs)
    sub_ours = subprocess.run(CMD + ["passwd", "--help"], capture_output=True, text=True, timeout=60).stdout
    sub_theirs = subprocess.run([binary, "passwd", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert sub_ours[sub_ours.index("Usage:"):] == sub_theirs[sub_theirs.index("Usage:"):]


def test_binary_takes_bind_localhost_like_the_python_command():
    binary = os.environ.get("URINGMQ_BIN")
    if not binary or not os.path.exists(binary):
        pytest.skip("URINGMQ_BIN is not set (scripts/test.sh builds the binary)")
    for cmd in ([binary], CMD):
        out = subprocess.run(cmd + ["--bind", "localhost", "--print-config"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and 'bind = "127.0.0.1"' in out.stdout, (cmd, out.stderr)
