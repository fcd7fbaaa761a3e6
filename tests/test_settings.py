"""Settings fail at start, naming the variable to fix, and never show a secret."""

from __future__ import annotations

import ipaddress

import pytest

from genmedia.settings import Settings, SettingsError


def test_defaults_use_local_storage():
    settings = Settings.from_env({})

    assert settings.storage_backend == "local"
    assert settings.rate_limit_per_minute == 30
    assert settings.blocked_ips == ()


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
            "GATEWAY_API_KEYS": "client-key-1,client-key-2",
        }
    )

    shown = repr(settings)

    assert "service-role-secret" not in shown
    assert "client-key-1" not in shown
    assert "api_keys=2" in shown


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
