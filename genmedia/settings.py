"""Every environment variable genmedia reads, in one typed place.

Settings are parsed and validated once, when a service starts, so a misconfiguration fails at start with a
message naming the variable rather than at the first upload. The table in README.md mirrors this file.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    model_profile: str = "tiny"
    storage_backend: str = "local"
    local_storage_dir: Path = Path(".data/files")
    spool_dir: Path = Path(".data/spool")
    public_base_url: str = "http://127.0.0.1:3000"
    supabase_url: str | None = None
    supabase_service_role_key: str | None = None
    supabase_bucket: str = "genmedia"
    supabase_public_bucket: bool = True
    supabase_signed_url_ttl: int = 3600
    storage_timeout_s: float = 5.0
    storage_retry_budget_s: float = 10.0
    spool_drain_interval_s: float = 30.0
    gateway_api_keys: tuple[str, ...] = ()
    rate_limit_per_minute: int = 30
    blocked_ips: tuple[IPNetwork, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()
    cors_origins: tuple[str, ...] = ()
    backend_timeout_s: float = 600.0
    playground: bool = True

    def __repr__(self) -> str:
        # Secrets never reach logs through a repr.
        return (
            f"Settings(profile={self.model_profile!r}, storage={self.storage_backend!r}, "
            f"api_keys={len(self.gateway_api_keys)}, rate_limit_per_minute={self.rate_limit_per_minute})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def text(name: str, default: str | None = None) -> str | None:
            value = env.get(name, "").strip()
            return value or default

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = text(name, default).lower()
            if value not in allowed:
                raise SettingsError(f"{name}={value!r} is not one of {', '.join(allowed)}")
            return value

        def integer(name: str, default: int, minimum: int) -> int:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not an integer (expected a whole number ≥ {minimum})") from None
            if value < minimum:
                raise SettingsError(f"{name}={value} must be at least {minimum}")
            return value

        def seconds(name: str, default: float) -> float:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a number of seconds") from None
            if value <= 0:
                raise SettingsError(f"{name}={value} must be greater than 0")
            return value

        def boolean(name: str, default: bool) -> bool:
            raw = text(name)
            if raw is None:
                return default
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise SettingsError(f"{name}={raw!r} is not a boolean (true/false)")

        def items(name: str) -> tuple[str, ...]:
            return tuple(part.strip() for part in (text(name) or "").split(",") if part.strip())

        def networks(name: str) -> tuple[IPNetwork, ...]:
            try:
                return tuple(ipaddress.ip_network(item, strict=False) for item in items(name))
            except ValueError as error:
                raise SettingsError(f"{name}: {error} (expected IPs or CIDRs, comma-separated)") from None

        settings = cls(
            model_profile=choice("MODEL_PROFILE", "tiny", ("tiny", "full", "bench")),
            storage_backend=choice("STORAGE_BACKEND", "local", ("local", "supabase")),
            local_storage_dir=Path(text("LOCAL_STORAGE_DIR", ".data/files")),
            spool_dir=Path(text("SPOOL_DIR", ".data/spool")),
            public_base_url=text("PUBLIC_BASE_URL", f"http://127.0.0.1:{served_port(env)}").rstrip("/"),
            supabase_url=(text("SUPABASE_URL") or "").rstrip("/") or None,
            supabase_service_role_key=text("SUPABASE_SERVICE_ROLE_KEY"),
            supabase_bucket=text("SUPABASE_BUCKET", "genmedia"),
            supabase_public_bucket=boolean("SUPABASE_PUBLIC_BUCKET", True),
            supabase_signed_url_ttl=integer("SUPABASE_SIGNED_URL_TTL", 3600, 1),
            storage_timeout_s=seconds("STORAGE_TIMEOUT_S", 5.0),
            storage_retry_budget_s=seconds("STORAGE_RETRY_BUDGET_S", 10.0),
            spool_drain_interval_s=seconds("SPOOL_DRAIN_INTERVAL_S", 30.0),
            gateway_api_keys=items("GATEWAY_API_KEYS"),
            rate_limit_per_minute=integer("RATE_LIMIT_PER_MINUTE", 30, 1),
            blocked_ips=networks("BLOCKED_IPS"),
            trusted_proxies=networks("TRUSTED_PROXIES"),
            cors_origins=items("CORS_ORIGINS"),
            backend_timeout_s=seconds("BACKEND_TIMEOUT_S", 600.0),
            playground=boolean("PLAYGROUND", True),
        )
        settings._check_consistency()
        return settings

    def _check_consistency(self) -> None:
        if self.storage_backend == "supabase":
            for name, value in (
                ("SUPABASE_URL", self.supabase_url),
                ("SUPABASE_SERVICE_ROLE_KEY", self.supabase_service_role_key),
            ):
                if not value:
                    raise SettingsError(f"STORAGE_BACKEND=supabase needs {name} to be set")
            if not self.supabase_url.startswith(("http://", "https://")):
                raise SettingsError(f"SUPABASE_URL={self.supabase_url!r} must start with http:// or https://")
        if not self.public_base_url.startswith(("http://", "https://")):
            raise SettingsError(f"PUBLIC_BASE_URL={self.public_base_url!r} must start with http:// or https://")
        if "*" in self.cors_origins and self.gateway_api_keys:
            raise SettingsError("CORS_ORIGINS='*' is refused while GATEWAY_API_KEYS is set: list the origins")


@functools.cache
def get_settings() -> Settings:
    """The process's settings, parsed once."""
    return Settings.from_env()


# `bentoml serve` knows its port (`--port`, `-p`, `BENTOML_PORT`, else 3000) only in the process that parsed
# its command line; the workers it starts (the gateway's and each model service's) inherit this variable.
SERVED_PORT_VARIABLE = "GENMEDIA_SERVED_PORT"
DEFAULT_PORT = 3000


def served_port(env: Mapping[str, str]) -> int:
    return int(env.get(SERVED_PORT_VARIABLE) or DEFAULT_PORT)


def is_serve_command(argv: list[str]) -> bool:
    """True in the process of a `bentoml serve ...` command line (not in its workers, not in a build)."""
    return Path(argv[0]).name == "bentoml" and argv[1:2] == ["serve"]


def port_of_serve_command(argv: list[str], env: Mapping[str, str]) -> int:
    for index, arg in enumerate(argv):
        if arg in ("--port", "-p") and index + 1 < len(argv):
            return int(argv[index + 1])
        if arg.startswith("--port="):
            return int(arg.partition("=")[2])
    return int(env.get("BENTOML_PORT") or DEFAULT_PORT)


def check_before_serving(argv: list[str] | None = None) -> None:
    """In a `bentoml serve` process, before any worker starts: record the port, and stop on a bad setting.

    A bad value prints one line naming the variable and exits with status 2; checked later, in the workers,
    it would make BentoML restart them in a loop while the server answers 500s.
    """
    argv = sys.argv if argv is None else argv
    if not is_serve_command(argv):
        return
    os.environ.setdefault(SERVED_PORT_VARIABLE, str(port_of_serve_command(argv, os.environ)))
    try:
        Settings.from_env()
    except SettingsError as error:
        print(f"genmedia: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
