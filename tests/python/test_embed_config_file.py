"""A config file loaded from Python or by the pip-installed command: errors name the file and
the right line, relative paths are relative to the file's folder, ``localhost`` is accepted."""

from __future__ import annotations

import subprocess
import sys

import pytest

uringmq = pytest.importorskip("uringmq")

TYPO_ON_LINE_5 = "# broker\nport = 0\ncores = 1\n\nmax_inflihgt = 10\n"


def test_error_names_the_file_and_the_line(tmp_path):
    conf = tmp_path / "broker.toml"
    conf.write_text(TYPO_ON_LINE_5)
    with pytest.raises(ValueError) as e:
        uringmq.Broker(config=conf)
    text = str(e.value)
    assert str(conf) in text and "line 5" in text and "max_inflihgt" in text


def test_error_names_the_whole_path_for_a_relative_config(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "b.toml").write_text(TYPO_ON_LINE_5)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=str(tmp_path / "etc" / "b.toml")):
        uringmq.Broker(config="etc/b.toml")


def test_the_command_reports_the_right_line(tmp_path):
    conf = tmp_path / "broker.toml"
    conf.write_text(TYPO_ON_LINE_5)
    r = subprocess.run(
        [sys.executable, "-m", "uringmq", "--config", str(conf), "--print-config"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2
    assert "line 5" in r.stderr and str(conf) in r.stderr


def test_keywords_still_override_the_file(tmp_path):
    conf = tmp_path / "b.toml"
    conf.write_text("max_inflight = 10\nmax_qos = 1\n")
    b = uringmq.Broker(config=conf, max_qos=2, max_packet_size=None)
    assert b.settings["max_inflight"] == 10 and b.settings["max_qos"] == 2


def test_relative_paths_resolve_against_the_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "acl").write_text("topic readwrite #\n")
    (folder / "b.toml").write_text('acl_file = "acl"\nport = 0\n')
    monkeypatch.chdir(tmp_path)
    b = uringmq.Broker(config="conf/b.toml")
    assert b.settings["acl_file"] == str(folder / "acl")
    b.start()
    b.stop()


def test_bind_localhost_is_accepted():
    with uringmq.Broker(bind="localhost", port=0, cores=1, pin_cores=False) as b:
        assert b.host == "127.0.0.1"


def test_a_host_name_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="not an IP address"):
        uringmq.Broker(bind="example.invalid")
