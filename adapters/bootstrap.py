"""The one composition root: settings in, a wired engine out.

The CLI, the scripts and the tests all build the engine here, so they cannot disagree about the
store, the time-limit policy or the working-day calendar.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from eventsourcing.persistence import PersistenceError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import SQLAlchemyError

from adapters.calendars import ChinaCalendar
from adapters.store import StoreLocation, parse_db
from adapters.tipsters import TipsterVault, load_master_key
from loop.application import Clock, HazardLoop
from loop.errors import InvalidPolicy, StoreError
from loop.policy import Policy
from projections.runner import ProjectionRunner

__all__ = ["Settings", "build_engine", "build_runner", "views_engine"]


class Settings(BaseSettings):
    """Engine settings, from HAZARDLOOP_* environment variables or arguments."""

    model_config = SettingsConfigDict(env_prefix="HAZARDLOOP_", extra="ignore", frozen=True)

    db: str | None = Field(default=None, description="store: file path or sqlite:/// URL")
    policy: Path | None = Field(default=None, description="time-limit policy TOML file")
    calendar: Path | None = Field(
        default=None, description="operator working-day calendar TOML for years not yet known"
    )
    timezone: str | None = Field(default=None, description="overrides the policy's timezone")
    cipher_key: str | None = Field(
        default=None,
        description="master key sealing tipsters' identities: base64 of 32 bytes "
        "(default: a key file created beside the store)",
        repr=False,
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


def build_engine(settings: Settings | None = None, *, clock: Clock | None = None) -> HazardLoop:
    """Build the engine over the store, policy and calendar the settings name."""
    settings = settings or Settings()
    location: StoreLocation = parse_db(settings.db)
    policy = load_policy(settings)
    calendar = ChinaCalendar.from_file(settings.calendar)
    try:
        location.path.parent.mkdir(parents=True, exist_ok=True)
        app = HazardLoop(env=location.env(), policy=policy, calendar=calendar, clock=clock)
    except (sqlite3.Error, PersistenceError, OSError) as exc:
        # The one place where the store library's errors become ours.
        raise StoreError(f"cannot open the event store {location.path}: {exc}") from exc
    app.vault = TipsterVault(location.path, load_master_key(settings.cipher_key, location.path))
    return app


def views_engine(app: HazardLoop) -> Engine:
    """A SQLAlchemy engine on the store's database, for the read models."""
    path = app.env.get("SQLITE_DBNAME")
    if not path:
        raise StoreError("the read models need the event store's database")
    return create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})


def build_runner(app: HazardLoop, engine: Engine | None = None) -> ProjectionRunner:
    """The projection runner with every projection of the product, over the store's database
    (or over `engine`: a scratch database for views as known at a past moment)."""
    from projections.cases import CasesProjection
    from projections.organisation import OrganisationProjection

    try:
        return ProjectionRunner(
            app,
            engine if engine is not None else views_engine(app),
            [CasesProjection(), OrganisationProjection()],
        )
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open the read models: {exc}") from exc
