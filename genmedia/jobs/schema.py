"""The job store's tables, and its engine, on SQLite (the embedded default) or PostgreSQL.

One SQLAlchemy Core schema serves both: SQLite for one gateway on its own disk, PostgreSQL (e.g. the
Supabase project's own) for replicas that share jobs. Every replica runs `migrate` at start: a new database
gets the current schema, an older one is brought up to it step by step, a newer one stops the start (an old
gateway must not write rows it does not understand). Times are UNIX seconds (floats): the same on both
databases, and ordered.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url

SCHEMA_VERSION = 1
# Steps from version n to n + 1, applied in order inside the start-up transaction. `create_all` runs first
# and adds whole tables that are missing; a step changes what exists (columns, indexes, data).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}
# Any fixed number: replicas starting together take this PostgreSQL advisory lock to migrate one at a time.
MIGRATION_LOCK_KEY = 0x6A6F6273
SQLITE_BUSY_TIMEOUT_MS = 30_000

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(32), nullable=False),  # the sync route it runs: generate_image, synthesize_speech
    Column("owner", String(64), nullable=False),  # sha256 of the API key that made it ("" on an open gateway)
    Column("status", String(16), nullable=False),  # queued, running, succeeded, failed, canceled
    Column("request", JSON, nullable=False),  # the sync route's body, its seed drawn at submit
    Column("progress", Float, nullable=False, default=0.0),
    Column("stage", String(200)),  # what a running job is doing or waiting for, in words
    Column("result", JSON),
    Column("error", JSON),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    # Bumped at every change a client may see: the `id:` of its event, so streams resume from it.
    Column("version", Integer, nullable=False, default=1),
    Column("lease_owner", String(64)),  # the runner holding a running job
    Column("lease_expires_at", Float),  # past it, another runner may take the job
    Column("attempts", Integer, nullable=False, default=0),  # times a runner claimed it
    Column("idempotency_key", String(255)),
    Column("body_hash", String(64)),  # sha256 of the submitted body, to tell a replay from a reuse
    Column("webhook", Text),
    Column("webhook_events", JSON),
    UniqueConstraint("owner", "idempotency_key", name="jobs_owner_idempotency_key"),
    Index("jobs_queue", "kind", "status", "created_at"),
    Index("jobs_finished", "finished_at"),
)

schema_version = Table("schema_version", metadata, Column("version", Integer, primary_key=True))


def create_engine_for(url: str) -> Engine:
    """An engine for a JOB_STORE_URL: `sqlite:///path` or `postgresql://…` (driven by psycopg 3)."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.partition("://")[2]
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        # pre_ping: a pooled connection the database closed (a restart, Supabase's idle timeout) is replaced.
        return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=10)
    if parsed.get_backend_name() != "sqlite":
        raise ValueError(f"JOB_STORE_URL: {parsed.get_backend_name()!r} is not supported; use sqlite or postgresql")
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def configure(dbapi_connection, _record) -> None:
        # Transactions are begun below, not by the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint; WAL keeps it consistent
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin_immediate(connection) -> None:
        # Take the write lock at BEGIN: a deferred transaction that reads, then writes after another writer
        # committed, fails at once (SQLITE_BUSY_SNAPSHOT) instead of waiting its busy timeout.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def migrate(engine: Engine) -> int:
    """Create what is missing and bring the schema to SCHEMA_VERSION; returns the version found (0: new).

    Tables of other modules (the webhook outbox) are created too if they are in `metadata` by now: import
    them first (`genmedia.jobs.store` does).
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(text(f"pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")))
        metadata.create_all(connection)
        found = connection.execute(select(schema_version.c.version)).scalar()
        if found is None:
            connection.execute(insert(schema_version).values(version=SCHEMA_VERSION))
            return 0
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"the job store's schema is version {found}, newer than this gateway's {SCHEMA_VERSION}: "
                "deploy the newer gateway, or point JOB_STORE_URL at another database"
            )
        for version in range(found, SCHEMA_VERSION):
            MIGRATIONS[version](connection)
        connection.execute(update(schema_version).values(version=SCHEMA_VERSION))
        return found
