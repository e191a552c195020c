"""Settings from keyword arguments and config files, and the errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

uringmq = pytest.importorskip("uringmq")


def test_every_config_key_is_a_keyword_argument():
    b = uringmq.Broker(port=0, max_packet_size=4096, max_qos=1, shared_subscription_strategy="random")
    s = b.settings
    assert s["max_packet_size"] == 4096
    assert s["max_qos"] == 1
    assert s["shared_subscription_strategy"] == "random"
    # Untouched keys keep the broker's defaults.
    assert s["max_inflight"] == uringmq.Broker().settings["max_inflight"]


def test_none_means_default():
    assert uringmq.Broker(max_inflight=None).settings == uringmq.Broker().settings


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"max_inflihgt": 3}, "max_inflihgt"),  # unknown key
        ({"max_qos": 3}, "max_qos"),  # out of range
        ({"max_packet_size": "big"}, "max_packet_size"),  # wrong type
        ({"driver": "kqueue"}, "kqueue"),  # unknown variant
        ({"port": 70000}, "port"),  # does not fit
        ({"listener": [{"port": 0, "transport": "tls"}]}, "listener"),  # inconsistent
    ],
)
def test_bad_settings_raise_value_error_naming_the_key(settings, key):
    with pytest.raises(ValueError, match=key):
        uringmq.Broker(**settings)


def test_unsupported_value_type_is_a_type_error_naming_the_key():
    with pytest.raises(TypeError, match="max_qos"):
        uringmq.Broker(max_qos=object())


def test_config_file_and_overrides(tmp_path: Path):
    conf = tmp_path / "uringmq.toml"
    conf.write_text("port = 0\nmax_packet_size = 2048\nmax_qos = 1\n")
    b = uringmq.Broker(conf, max_qos=2)
    assert b.settings["max_packet_size"] == 2048  # from the file
    assert b.settings["max_qos"] == 2  # the keyword wins
    with b:
        assert b.port != 0


def test_config_file_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        uringmq.Broker(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("max_inflihgt = 3\n")
    with pytest.raises(ValueError, match="max_inflihgt"):
        uringmq.Broker(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(ValueError, match="broken.toml"):
        uringmq.Broker(broken)


def test_paths_are_accepted_for_file_settings(tmp_path: Path):
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite #\n")
    assert uringmq.Broker(acl_file=acl).settings["acl_file"] == str(acl)


def test_extra_listeners_as_a_list_of_tables():
    with uringmq.Broker(port=0, pin_cores=False, cores=1, listener=[{"port": 0, "name": "second"}]) as b:
        names = [name for name, _, _ in b.listeners]
        assert "second" in names
        assert len({port for _, _, port in b.listeners}) == 2
