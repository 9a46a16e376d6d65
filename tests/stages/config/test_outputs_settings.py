"""``[mqtt]`` and ``[[webhooks]]`` settings that would break their sink at run time are refused at load,
in one line naming the field."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.settings import ConfigError, load_settings
from stages.config import MqttSettings, Settings, WebhookSettings
from tests.harness import self_signed

BAD_PREFIXES = {
    "empty": "",
    "multi-level wildcard": "home/#",
    "single-level wildcard": "a/+/b",
    "NUL": "a\x00b",
    "control character": "a\x01b",
    "broker's own": "$SYS/vestwatch",
    "empty level": "a//b",
    "leading slash": "/vestwatch",
    "trailing slash": "vestwatch/",
    "too long": "x" * 70_000,
}


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return self_signed(tmp_path_factory.mktemp("ca"), "test-ca")[0]


def test_the_defaults_and_ordinary_values_pass(ca_file: Path) -> None:
    mqtt = MqttSettings(host="broker")
    assert (mqtt.topic_prefix, mqtt.discovery_prefix) == ("vestwatch", "homeassistant")
    MqttSettings(host="broker", tls=True, ca_file=ca_file, topic_prefix="plant-2/safety", discovery_prefix="ha")
    MqttSettings(host="broker", topic_prefix="sécurité/" + "x" * 190)  # levels, letters beyond ASCII: fine
    for url in ("https://alerts.example/hook", "http://10.0.0.5:8080/hook", "http://127.0.0.1/hook"):
        assert WebhookSettings(url=url).allow_link_local is False


@pytest.mark.parametrize("field", ["topic_prefix", "discovery_prefix"])
@pytest.mark.parametrize("value", BAD_PREFIXES.values(), ids=BAD_PREFIXES.keys())
def test_a_prefix_the_broker_would_refuse_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        MqttSettings(host="broker", **{field: value})
    assert [error["loc"] for error in refused.value.errors()] == [(field,)] and field in str(refused.value)


def test_a_ca_file_paho_could_not_load_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for path, why in [(tmp_path / "gone.pem", "no such file"), (tmp_path, "not a file"), (junk, "no CA")]:
        with pytest.raises(ValidationError, match=why) as refused:
            MqttSettings(host="broker", tls=True, ca_file=path)
        assert [error["loc"] for error in refused.value.errors()] == [("ca_file",)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_ca_file_is_refused(ca_file: Path, tmp_path: Path) -> None:
    locked = tmp_path / "ca.pem"
    shutil.copy(ca_file, locked)
    locked.chmod(0)
    with pytest.raises(ValidationError, match="cannot read it"):
        MqttSettings(host="broker", tls=True, ca_file=locked)


def test_load_settings_names_the_field_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    for toml, says in [
        ('tls = true\nca_file = "/nowhere/ca.pem"', r"mqtt\.ca_file: .*/nowhere/ca\.pem: no such file"),
        ('discovery_prefix = "homeassistant/#"', r"mqtt\.discovery_prefix: .*'#'"),
        ('topic_prefix = "a\\u0000b"', r"mqtt\.topic_prefix: .*'\\x00'"),
    ]:
        config.write_text(f'[mqtt]\nhost = "broker"\n{toml}\n')
        with pytest.raises(ConfigError, match=says) as refused:
            load_settings(Settings, config)
        assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "http://169.254.1.2:8080/hook",
        "http://[fe80::1]/hook",
        "http://[fe80::1%25eth0]:8080/hook",
        "http://2852039166/",  # 169.254.169.254 as one number: the resolver takes it
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_a_link_local_webhook_needs_allow_link_local(url: str) -> None:
    with pytest.raises(ValidationError, match=r"url .* is link-local.*allow_link_local"):
        WebhookSettings(url=url)
    assert WebhookSettings(url=url, allow_link_local=True).url == url
