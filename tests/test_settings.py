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


def test_playground_is_on_unless_turned_off():
    assert Settings.from_env({}).playground is True
    assert Settings.from_env({"PLAYGROUND": "false"}).playground is False
    with pytest.raises(SettingsError, match="PLAYGROUND"):
        Settings.from_env({"PLAYGROUND": "sometimes"})
