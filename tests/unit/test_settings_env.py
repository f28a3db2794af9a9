"""Settings from a platform's own variables (Heroku Kafka and Redis), and Kafka's log noise."""

from __future__ import annotations

import logging
import os
import ssl
import stat
from pathlib import Path

import pytest

from bridge.settings import KafkaSettings
from state.errors import ConfigError
from tasks.settings import Settings
from tasks.worker.config import celery_config

HEROKU_URL = (
    "kafka+ssl://ec2-1.compute.amazonaws.com:9096,kafka+ssl://ec2-2.compute.amazonaws.com:9096"
)
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"
HEROKU = {
    "KAFKA_URL": HEROKU_URL,
    "KAFKA_TRUSTED_CERT": PEM,
    "KAFKA_CLIENT_CERT": PEM,
    "KAFKA_CLIENT_CERT_KEY": KEY,
    "KAFKA_PREFIX": "wisconsin-1234.",
}


def test_heroku_kafka_from_its_own_variables() -> None:
    kafka = KafkaSettings.from_env(HEROKU)
    assert kafka.bootstrap_servers == (
        "ec2-1.compute.amazonaws.com:9096,ec2-2.compute.amazonaws.com:9096"
    )
    assert kafka.security_protocol == "SSL"
    assert kafka.ssl_check_hostname is False, "Heroku's certificates do not name the brokers"
    cfg = kafka.client_config()
    assert cfg["bootstrap_servers"] == [
        "ec2-1.compute.amazonaws.com:9096",
        "ec2-2.compute.amazonaws.com:9096",
    ]
    for key, text in (("ssl_cafile", PEM), ("ssl_certfile", PEM), ("ssl_keyfile", KEY)):
        path = Path(cfg[key])
        assert path.read_text() == text + "\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{key} is private"
        os.unlink(path)
    assert cfg["ssl_check_hostname"] is False


def test_an_explicit_hostname_check_wins_and_other_tls_keeps_it_on() -> None:
    assert KafkaSettings.from_env({**HEROKU, "KAFKA_SSL_CHECK_HOSTNAME": "true"}).ssl_check_hostname
    own = KafkaSettings.from_env({"KAFKA_URL": "kafka+ssl://broker.example:9093"})
    assert (own.security_protocol, own.ssl_check_hostname) == ("SSL", True)
    plain = KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "a:9092,b:9092"})
    assert plain.security_protocol == "PLAINTEXT"
    assert "ssl_check_hostname" not in plain.client_config()


def test_kafka_prefix_names_topics_and_the_group() -> None:
    settings = Settings.from_env(HEROKU)
    assert settings.topic("jobs") == "wisconsin-1234.flowbridge.jobs"
    mine = Settings.from_env({**HEROKU, "FLOWBRIDGE_TOPIC_PREFIX": "mine."})
    assert mine.topic("jobs") == "mine.flowbridge.jobs", "FLOWBRIDGE_TOPIC_PREFIX wins"


def test_rediss_url_works_for_the_broker_and_the_result_backend() -> None:
    heroku = Settings.from_env({"REDIS_URL": "rediss://:pw@ec2-3.compute.amazonaws.com:6380"})
    cfg = celery_config(heroku)
    assert cfg["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_NONE}
    assert cfg["redis_backend_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_NONE}
    strict = Settings.from_env(
        {"REDIS_URL": "rediss://h:6380", "FLOWBRIDGE_REDIS_SSL_CERT_REQS": "required"}
    )
    assert celery_config(strict)["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    in_url = Settings.from_env({"REDIS_URL": "rediss://h:6380/0?ssl_cert_reqs=required"})
    assert "broker_use_ssl" not in celery_config(in_url), "the URL's own choice stands"
    assert "broker_use_ssl" not in celery_config(Settings.from_env({"REDIS_URL": "redis://h"}))
    with pytest.raises(ConfigError, match="FLOWBRIDGE_REDIS_SSL_CERT_REQS='maybe'"):
        Settings.from_env({"REDIS_URL": "rediss://h", "FLOWBRIDGE_REDIS_SSL_CERT_REQS": "maybe"})


def test_kafka_slow_task_warnings_are_quiet_and_other_warnings_are_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    KafkaSettings().client_config()
    selector = logging.getLogger("kafka.net.selector")
    with caplog.at_level(logging.WARNING):
        selector.warning(
            "Task %r ran for %.3fs (>%.3fs threshold). It is blocking the event loop -- likely a "
            "tight sync loop inside a coroutine. Other pollers will time out.",
            "<Task poll>",
            0.14,
            0.1,
        )
        selector.warning("Task %s left RUNNING after step; demoting to UNSCHEDULED", "<Task x>")
    assert [r.getMessage()[:20] for r in caplog.records] == ["Task <Task x> left R"]
