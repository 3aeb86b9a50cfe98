"""The one composition root: settings in, a wired engine out.

The CLI, the scripts and the tests all build the engine here, so they cannot disagree about the
store, the time-limit policy or the working-day calendar.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import psycopg
from eventsourcing.persistence import PersistenceError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from adapters.audit_scan import readonly_uri
from adapters.calendars import ChinaCalendar
from adapters.store import (
    EVENTS_TABLE,
    HazardLoopPostgresRecorder,
    StoreLocation,
    location_of,
    parse_db,
)
from adapters.storesql import store_engine
from adapters.tipsters import KeylessVault, TipsterVault, key_file_path, load_master_key
from loop.application import Clock, HazardLoop
from loop.errors import InvalidPolicy, StoreError
from loop.policy import Policy
from projections.runner import (
    DEFER_INDEXES_FROM,
    FOLD_HELPER_FROM,
    FOLD_HELPER_FROM_PG,
    REBUILD_CHUNK_SIZE,
    ProjectionRunner,
)

__all__ = ["Settings", "build_engine", "build_runner", "require_store", "views_engine"]


class Settings(BaseSettings):
    """Engine settings, from HAZARDLOOP_* environment variables or arguments."""

    model_config = SettingsConfigDict(env_prefix="HAZARDLOOP_", extra="ignore", frozen=True)

    db: str | None = Field(
        default=None,
        description="store: a SQLite file path or sqlite:/// URL, or postgresql://user@host:port/db",
    )
    policy: Path | None = Field(default=None, description="time-limit policy TOML file")
    calendar: Path | None = Field(
        default=None, description="operator working-day calendar TOML for years not yet known"
    )
    timezone: str | None = Field(default=None, description="overrides the policy's timezone")
    cipher_key: str | None = Field(
        default=None,
        description="master key sealing tipsters' identities: base64 of 32 bytes "
        "(default: the key file, or a key file created beside a SQLite store)",
        repr=False,
    )
    cipher_key_file: Path | None = Field(
        default=None,
        description="file holding the master key (created with mode 0600 if missing); "
        "a PostgreSQL store needs this or cipher_key",
    )
    fold_helper_from: int | None = Field(
        default=None,
        ge=0,
        description="a projection catch-up this many events behind folds cases in helper "
        f"processes (Linux, 2+ CPUs); 0: never (default: {FOLD_HELPER_FROM} with a SQLite "
        f"event store, {FOLD_HELPER_FROM_PG} with PostgreSQL)",
    )
    fold_helpers: int | None = Field(
        default=None,
        ge=1,
        description="helper processes of such a catch-up (default: usable CPUs, at most 8)",
    )
    defer_indexes_from: int = Field(
        default=DEFER_INDEXES_FROM,
        ge=0,
        description="a catch-up that starts a projection from zero this many events behind "
        "drops the views' secondary indexes and builds them once at its end; 0: never",
    )
    rebuild_chunk_size: int = Field(
        default=REBUILD_CHUNK_SIZE,
        ge=0,
        le=1_000_000,
        description="events per transaction of a catch-up whose fold helpers fold the cases "
        "from zero with at least twice as many events to read (other catch-ups: their own "
        "chunk size); 0: no bigger ones",
    )


def load_policy(settings: Settings) -> Policy:
    """The policy the settings name (the shipped default if none), with any timezone override."""
    policy = Policy.load(settings.policy)
    if settings.timezone:
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(settings.timezone)
        except Exception as exc:
            raise InvalidPolicy(f"unknown timezone {settings.timezone!r}") from exc
        policy = dataclasses.replace(policy, timezone=settings.timezone)
    return policy


def build_engine(
    settings: Settings | None = None, *, clock: Clock | None = None, existing: bool = False
) -> HazardLoop:
    """Build the engine over the store, policy and calendar the settings name.

    With `existing` (the read-only operator commands: reports, the nightly, show, history…) the
    store must already be a hazard-loop store: a missing file or database, or one without the
    event table, is refused with a StoreError and nothing is created (no folder, no database
    file, no key file). Only commands that write create a store.
    """
    settings = settings or Settings()
    location: StoreLocation = parse_db(settings.db)
    policy = load_policy(settings)
    calendar = ChinaCalendar.from_file(settings.calendar)
    if existing:
        require_store(location)
    if location.file is not None:
        try:
            location.file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open the event store {location.display}: {exc}") from exc
    if location.is_postgres:
        probe_postgres(location)
    try:
        app = HazardLoop(env=location.env(), policy=policy, calendar=calendar, clock=clock)
    except (sqlite3.Error, PersistenceError, psycopg.Error, OSError) as exc:
        # The one place where the store library's errors become ours.
        raise StoreError(f"cannot open the event store {location.display}: {exc}") from exc
    try:
        master = load_master_key(
            settings.cipher_key, location.file, settings.cipher_key_file, create=not existing
        )
        if master is None:  # a read-only command on a store whose key file is missing
            app.vault = KeylessVault(key_file_path(location.file, settings.cipher_key_file))
        elif location.is_postgres:
            recorder = app.recorder
            assert isinstance(recorder, HazardLoopPostgresRecorder)
            app.vault = TipsterVault(None, master, pg_connect=recorder.datastore.get_connection)
        else:
            app.vault = TipsterVault(location.path, master)
    except BaseException:
        app.close()
        raise
    return app


def require_store(location: StoreLocation) -> None:
    """Refuse a store that does not exist or is not a hazard-loop store, creating nothing."""
    if location.file is not None:
        path = location.file
        if not path.exists():
            raise StoreError(f"no event store at {location.display}: the file does not exist")
        if not path.is_file():
            raise StoreError(f"no event store at {location.display}: not a file")
        try:
            conn = sqlite3.connect(readonly_uri(path), uri=True)
            try:
                found = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                    (EVENTS_TABLE,),
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the event store {location.display}: {exc}") from exc
    else:
        probe_postgres(location)
        try:
            with psycopg.connect(**location.psycopg_kwargs()) as conn_pg:
                # Qualified by the recorder's schema, as it names its tables: a role whose
                # search_path leaves that schema out still finds the store.
                schema = location.env().get("POSTGRES_SCHEMA") or "public"
                row = conn_pg.execute(
                    "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                    (schema, EVENTS_TABLE),
                )
                found = row.fetchone()
                found = found if found and found[0] else None
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreError(f"cannot open the event store {location.display}: {reason}") from exc
    if found is None:
        raise StoreError(
            f"{location.display} is not a hazard-loop event store (it has no {EVENTS_TABLE} "
            "table; `hazardloop db init` creates one)"
        )


def probe_postgres(location: StoreLocation) -> None:
    """Connect once, so an unreachable server or a missing database is named at once (the
    library's pool would retry for its whole connect timeout, and say less)."""
    try:
        with psycopg.connect(**location.psycopg_kwargs()):
            pass
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise StoreError(f"cannot connect to the event store {location.display}: {reason}") from exc


def views_engine(app: HazardLoop) -> Engine:
    """A SQLAlchemy engine on the store's database, for the read models (see `store_engine`)."""
    return store_engine(location_of(app))


def build_runner(
    app: HazardLoop, engine: Engine | None = None, settings: Settings | None = None
) -> ProjectionRunner:
    """The projection runner with every projection of the product, over the store's database
    (or over `engine`: a scratch database for views as known at a past moment); its fold
    helpers as `settings` (default: the environment's) say."""
    from projections.cases import CasesProjection
    from projections.organisation import OrganisationProjection

    settings = settings if settings is not None else Settings()
    try:
        return ProjectionRunner(
            app,
            engine if engine is not None else views_engine(app),
            [CasesProjection(), OrganisationProjection()],
            fold_helper_from=settings.fold_helper_from,
            fold_helpers=settings.fold_helpers,
            defer_indexes_from=settings.defer_indexes_from,
            rebuild_chunk_size=settings.rebuild_chunk_size,
        )
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open the read models: {exc}") from exc
