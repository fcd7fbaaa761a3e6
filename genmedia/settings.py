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

# Shorter keys can be guessed or brute-forced; 16 characters of a random token is ~96 bits.
MIN_API_KEY_LENGTH = 16
# Who may read `/metrics` by default: loopback and private ranges, where a scraper runs, never the internet.
PRIVATE_NETWORKS = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
RATE_LIMIT_STORAGE_SCHEMES = ("memory://", "redis://", "rediss://")


# What JOB_STORE_URL may name: the embedded SQLite file, or a PostgreSQL server (psycopg 3).
JOB_STORE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://", "postgresql+psycopg://")


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
    rate_limit_storage_url: str = "memory://"
    auth_failures_per_minute: int = 10
    blocked_ips: tuple[IPNetwork, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()
    metrics_allowed: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in PRIVATE_NETWORKS.split(","))
    cors_origins: tuple[str, ...] = ()
    backend_timeout_s: float = 600.0
    body_timeout_s: float = 60.0
    blocked_prompt_terms_file: Path | None = None
    safety_checker: bool = True
    caption_max_batch_size: int = 4
    job_store_url: str = "sqlite:///.data/jobs.db"
    job_retention_s: float = 604800.0
    job_concurrency: int = 4
    webhook_secret: str | None = None
    webhook_retry_window_s: float = 3600.0
    webhook_allow_private: bool = False
    gateway_max_replicas: int = 1
    playground: bool = True

    def __repr__(self) -> str:
        # Secrets never reach logs through a repr.
        return (
            f"Settings(profile={self.model_profile!r}, storage={self.storage_backend!r}, "
            f"api_keys={len(self.gateway_api_keys)}, rate_limit_per_minute={self.rate_limit_per_minute}, "
            f"rate_limit_storage={self.rate_limit_storage_url.partition(':')[0]!r})"
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
            raise SettingsError(f"{name}={raw!r} is not a boolean (true/false, on/off)")

        def items_of(value: str) -> tuple[str, ...]:
            return tuple(part.strip() for part in value.split(",") if part.strip())

        def items(name: str) -> tuple[str, ...]:
            return items_of(text(name) or "")

        def networks(name: str, default: str = "") -> tuple[IPNetwork, ...]:
            try:
                return tuple(ipaddress.ip_network(item, strict=False) for item in items(name) or items_of(default))
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
            rate_limit_storage_url=text("RATE_LIMIT_STORAGE_URL", "memory://"),
            auth_failures_per_minute=integer("AUTH_FAILURES_PER_MINUTE", 10, 1),
            blocked_ips=networks("BLOCKED_IPS"),
            trusted_proxies=networks("TRUSTED_PROXIES"),
            metrics_allowed=networks("METRICS_ALLOWED", PRIVATE_NETWORKS),
            cors_origins=items("CORS_ORIGINS"),
            backend_timeout_s=seconds("BACKEND_TIMEOUT_S", 600.0),
            body_timeout_s=seconds("BODY_TIMEOUT_S", 60.0),
            blocked_prompt_terms_file=Path(terms) if (terms := text("BLOCKED_PROMPT_TERMS_FILE")) else None,
            safety_checker=boolean("SAFETY_CHECKER", True),
            caption_max_batch_size=integer("CAPTION_MAX_BATCH_SIZE", 4, 1),
            job_store_url=text("JOB_STORE_URL", "sqlite:///.data/jobs.db"),
            job_retention_s=seconds("JOB_RETENTION_S", 604800.0),
            job_concurrency=integer("JOB_CONCURRENCY", 4, 1),
            webhook_secret=text("WEBHOOK_SECRET"),
            webhook_retry_window_s=seconds("WEBHOOK_RETRY_WINDOW_S", 3600.0),
            webhook_allow_private=boolean("WEBHOOK_ALLOW_PRIVATE", False),
            gateway_max_replicas=integer("GATEWAY_MAX_REPLICAS", 1, 1),
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
        if short := [key for key in self.gateway_api_keys if len(key) < MIN_API_KEY_LENGTH]:
            raise SettingsError(
                f"GATEWAY_API_KEYS: {len(short)} key(s) shorter than {MIN_API_KEY_LENGTH} characters; "
                "use long random tokens (e.g. `openssl rand -hex 24`)"
            )
        if not self.rate_limit_storage_url.startswith(RATE_LIMIT_STORAGE_SCHEMES):
            # Not quoted: the URL may hold a password.
            raise SettingsError(f"RATE_LIMIT_STORAGE_URL must start with {', '.join(RATE_LIMIT_STORAGE_SCHEMES)}")
        if self.blocked_prompt_terms_file is not None and not self.blocked_prompt_terms_file.is_file():
            raise SettingsError(f"BLOCKED_PROMPT_TERMS_FILE={str(self.blocked_prompt_terms_file)!r} is not a file")
        if not self.job_store_url.startswith(JOB_STORE_SCHEMES):
            raise SettingsError(
                f"JOB_STORE_URL must start with {' or '.join(JOB_STORE_SCHEMES)} (the database URL is not shown)"
            )
        if self.gateway_max_replicas > 1 and self.job_store_url.startswith("sqlite"):
            # Each replica would keep its own file: a job submitted on one is unknown to the others.
            raise SettingsError(
                f"GATEWAY_MAX_REPLICAS={self.gateway_max_replicas} needs a JOB_STORE_URL every replica shares "
                "(postgresql://…), not SQLite"
            )
        if self.webhook_secret is not None and not self.webhook_secret.startswith("whsec_"):
            raise SettingsError("WEBHOOK_SECRET must be a Standard Webhooks secret, 'whsec_' + base64")
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
