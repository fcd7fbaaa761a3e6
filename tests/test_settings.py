"""Settings fail at start, naming the variable to fix, and never show a secret."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import pytest

from genmedia.settings import Settings, SettingsError
from testbed.serving import REPO_ROOT


def test_defaults_use_local_storage():
    settings = Settings.from_env({})

    assert settings.storage_backend == "local"
    assert settings.rate_limit_per_minute == 30
    assert settings.blocked_ips == ()
    assert settings.rate_limit_storage_url == "memory://"
    assert settings.auth_failures_per_minute == 10
    assert ipaddress.ip_address("127.0.0.1") in settings.metrics_allowed[0]
    assert not any(ipaddress.ip_address("192.0.2.1") in network for network in settings.metrics_allowed)
    assert settings.caption_max_batch_size == 4


@pytest.mark.parametrize("missing", ["SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"])
def test_supabase_storage_needs_its_url_and_key(missing):
    env = {"STORAGE_BACKEND": "supabase", "SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k"}
    del env[missing]

    with pytest.raises(SettingsError, match=missing):
        Settings.from_env(env)


@pytest.mark.parametrize("value", ["lots", "0", "-5"])
def test_a_bad_rate_limit_names_the_variable(value):
    with pytest.raises(SettingsError, match="RATE_LIMIT_PER_MINUTE"):
        Settings.from_env({"RATE_LIMIT_PER_MINUTE": value})


def test_blocked_ips_take_addresses_and_cidrs():
    settings = Settings.from_env({"BLOCKED_IPS": "10.0.0.0/8, 192.168.1.5 ,2001:db8::/32"})

    assert settings.blocked_ips == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.5/32"),
        ipaddress.ip_network("2001:db8::/32"),
    )


def test_a_bad_blocked_ip_names_the_variable():
    with pytest.raises(SettingsError, match="BLOCKED_IPS"):
        Settings.from_env({"BLOCKED_IPS": "10.0.0.300"})


def test_repr_hides_the_keys():
    settings = Settings.from_env(
        {
            "STORAGE_BACKEND": "supabase",
            "SUPABASE_URL": "https://x.supabase.co",
            "SUPABASE_SERVICE_ROLE_KEY": "service-role-secret",
            "GATEWAY_API_KEYS": "client-key-1-0123456789,client-key-2-0123456789",
            "RATE_LIMIT_STORAGE_URL": "rediss://default:redis-password@redis.example:6380",
        }
    )

    shown = repr(settings)

    assert "service-role-secret" not in shown
    assert "client-key-1" not in shown
    assert "redis-password" not in shown
    assert "api_keys=2" in shown and "rate_limit_storage='rediss'" in shown


@pytest.mark.parametrize("value", ["none", "0"])
def test_a_bad_auth_failure_limit_names_the_variable(value):
    with pytest.raises(SettingsError, match="AUTH_FAILURES_PER_MINUTE"):
        Settings.from_env({"AUTH_FAILURES_PER_MINUTE": value})


def test_metrics_allowed_takes_addresses_and_cidrs():
    settings = Settings.from_env({"METRICS_ALLOWED": "192.0.2.0/24"})

    assert settings.metrics_allowed == (ipaddress.ip_network("192.0.2.0/24"),)
    with pytest.raises(SettingsError, match="METRICS_ALLOWED"):
        Settings.from_env({"METRICS_ALLOWED": "everyone"})


@pytest.mark.parametrize("value", ["none", "0", "-1"])
def test_a_bad_caption_batch_size_names_the_variable(value):
    with pytest.raises(SettingsError, match="CAPTION_MAX_BATCH_SIZE"):
        Settings.from_env({"CAPTION_MAX_BATCH_SIZE": value})


@pytest.mark.parametrize(("value", "batchable", "max_batch_size"), [(None, True, 4), ("1", False, 2)])
def test_the_captioner_batches_up_to_caption_max_batch_size(value, batchable, max_batch_size):
    """The service reads it when imported; 1 serves `caption_batch` one request at a time."""
    env = {key: item for key, item in os.environ.items() if key != "CAPTION_MAX_BATCH_SIZE"}
    if value is not None:
        env["CAPTION_MAX_BATCH_SIZE"] = value
    code = (
        "from services.image_captioning import ImageCaptioning; "
        "api = ImageCaptioning.apis['caption_batch']; print(api.batchable, api.max_batch_size)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == [str(batchable), str(max_batch_size)]


def test_job_settings_default_to_the_embedded_store():
    settings = Settings.from_env({})

    assert settings.job_store_url == "sqlite:///.data/jobs.db"
    assert (settings.job_concurrency, settings.job_retention_s) == (4, 604800.0)
    assert (settings.webhook_secret, settings.webhook_allow_private) == (None, False)


def test_a_job_store_url_of_another_database_is_refused_without_showing_it():
    with pytest.raises(SettingsError, match="JOB_STORE_URL") as refused:
        Settings.from_env({"JOB_STORE_URL": "mysql://user:db-password-123@db/jobs"})

    assert "db-password-123" not in str(refused.value)


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_job_concurrency_names_the_variable(value):
    with pytest.raises(SettingsError, match="JOB_CONCURRENCY"):
        Settings.from_env({"JOB_CONCURRENCY": value})


def test_playground_is_on_unless_turned_off():
    assert Settings.from_env({}).playground is True
    assert Settings.from_env({"PLAYGROUND": "false"}).playground is False
    with pytest.raises(SettingsError, match="PLAYGROUND"):
        Settings.from_env({"PLAYGROUND": "sometimes"})
