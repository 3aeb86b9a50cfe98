"""API tokens: each one names an actor with roles, a grid scope and a unit; stored only hashed.

A token is `hl_` and 43 characters of a random 256-bit secret, shown once when it is created.
The store keeps its SHA-256 (a secret of that entropy needs no slow hash), in the `api_tokens`
table of the event store's database (SQLite or PostgreSQL), beside the public id used to list
and revoke it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    Engine,
    Executable,
    MetaData,
    Row,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from adapters.storesql import create_tables as create_tables_of, db_error
from loop.authorization import GRID_SCOPED_ROLES, ROLES, Principal
from loop.errors import InvalidCommand, StoreError, Unauthorized

__all__ = [
    "TOKENS_TABLE",
    "TOKEN_PREFIX",
    "TokenInfo",
    "TokenStore",
    "create_tables",
    "hash_token",
    "tokens",
]

TOKENS_TABLE = "api_tokens"
TOKEN_PREFIX = "hl_"
_METADATA = MetaData()
_NAME = re.compile(r"^[^\x00-\x1f\x7f\s](?:[^\x00-\x1f\x7f]{0,62}[^\x00-\x1f\x7f\s])?$")


def hash_token(token: str) -> str:
    """The stored form of a token: the hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    """What is known of an issued token (never the token itself)."""

    id: str
    actor: str
    roles: tuple[str, ...]
    grids: tuple[str, ...]
    unit: str | None
    label: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def principal(self) -> Principal:
        return Principal(self.actor, frozenset(self.roles), self.grids, self.unit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "actor": self.actor,
            "roles": list(self.roles),
            "grids": list(self.grids),
            "unit": self.unit,
            "label": self.label,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _check(actor: str, roles: Iterable[str], grids: Iterable[str], unit: str | None) -> None:
    problems: list[dict[str, str]] = []
    roles, grids = list(roles), list(grids)
    if not _NAME.match(actor):
        problems.append({"field": "actor", "problem": "1-64 characters, no control characters"})
    if not roles:
        problems.append({"field": "roles", "problem": f"give at least one of {', '.join(ROLES)}"})
    for role in roles:
        if role not in ROLES:
            problems.append({"field": "roles", "problem": f"unknown role {role!r}"})
    for grid in grids:
        if not _NAME.match(grid):
            problems.append({"field": "grids", "problem": f"bad grid pattern {grid!r}"})
    if GRID_SCOPED_ROLES & set(roles) and not grids:
        problems.append(
            {"field": "grids", "problem": "a grid-scoped role needs a scope: codes, PREFIX*, or *"}
        )
    if "unit" in roles and not unit:
        problems.append({"field": "unit", "problem": "the unit role needs the unit's code"})
    if unit is not None and not _NAME.match(unit):
        problems.append({"field": "unit", "problem": "1-64 characters, no control characters"})
    if problems:
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        raise InvalidCommand(f"cannot issue the token: {summary}", fields=problems)


tokens = Table(
    TOKENS_TABLE,
    _METADATA,
    Column("id", Text, primary_key=True),
    Column("hash", Text, nullable=False, unique=True),
    Column("actor", Text, nullable=False, index=True),
    Column("roles", Text, nullable=False),  # JSON list
    Column("grids", Text, nullable=False),  # JSON list
    Column("unit", Text),
    Column("label", Text),
    Column("created_at", Text, nullable=False),  # RFC 3339, UTC
    Column("revoked_at", Text),
)
_COLUMNS = [tokens.c[name] for name in (
    "id", "actor", "roles", "grids", "unit", "label", "created_at", "revoked_at"
)]  # fmt: skip


def create_tables(engine: Engine) -> None:
    """Create the API tokens' table if it is not there yet (on SQLite or PostgreSQL)."""
    create_tables_of(engine, _METADATA)


class TokenStore:
    """Issues, lists, revokes and checks API tokens, in the store's database.

    `engine` is a SQLAlchemy engine on the store (`adapters.bootstrap.views_engine`, or
    `adapters.storesql.store_engine`); the caller disposes of it.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        try:
            create_tables(engine)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot open the API tokens in {_where(engine)}: {db_error(exc)}"
            ) from exc

    def _query(self, statement: Executable, what: str) -> list[Row[Any]]:
        try:
            with self.engine.begin() as conn:
                return list(conn.execute(statement).all())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot {what}: {db_error(exc)}") from exc

    def create(
        self,
        actor: str,
        roles: Iterable[str],
        grids: Iterable[str] = (),
        unit: str | None = None,
        label: str | None = None,
        *,
        now: datetime | None = None,
    ) -> tuple[TokenInfo, str]:
        """Issue a token; return what is stored of it and the token itself (shown once)."""
        roles = tuple(dict.fromkeys(roles))
        grids = tuple(dict.fromkeys(grids))
        _check(actor, roles, grids, unit)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        info = TokenInfo(
            id="tok_" + secrets.token_hex(6),
            actor=actor,
            roles=roles,
            grids=grids,
            unit=unit,
            label=label,
            created_at=(now or datetime.now(UTC)).astimezone(UTC),
            revoked_at=None,
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(tokens).values(
                        id=info.id,
                        hash=hash_token(token),
                        actor=actor,
                        roles=orjson.dumps(list(roles)).decode(),
                        grids=orjson.dumps(list(grids)).decode(),
                        unit=unit,
                        label=label,
                        created_at=info.created_at.isoformat(),
                    )
                )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the API tokens: {db_error(exc)}") from exc
        return info, token

    def list(self, *, include_revoked: bool = False) -> list[TokenInfo]:
        """The tokens issued (the revoked ones too, if asked), oldest first."""
        created, ident = tokens.c.created_at, tokens.c.id
        if self.engine.dialect.name == "postgresql":
            # By code point, as SQLite compares text: a locale's collation may skip punctuation
            # and put 08:00:00.000001 before 08:00:00 (ICU en-US does).
            created, ident = created.collate("C"), ident.collate("C")  # type: ignore[assignment]
        query = select(*_COLUMNS).order_by(created, ident)
        if not include_revoked:
            query = query.where(tokens.c.revoked_at.is_(None))
        return [_info(row) for row in self._query(query, "read the API tokens")]

    def revoke(self, token_id: str, *, now: datetime | None = None) -> bool:
        """Revoke a token by its id at once; False if no live token has that id."""
        moment = (now or datetime.now(UTC)).astimezone(UTC).isoformat()
        try:
            with self.engine.begin() as conn:
                changed = conn.execute(
                    update(tokens)
                    .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
                    .values(revoked_at=moment)
                ).rowcount
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot revoke the API token {token_id!r}: {db_error(exc)}") from exc
        return bool(changed)

    def authenticate(self, token: str | None) -> Principal:
        """The principal a presented token stands for; Unauthorized if none, unknown or revoked."""
        if not token:
            raise Unauthorized("no API token: send `Authorization: Bearer <token>`")
        rows = self._query(
            select(*_COLUMNS).where(
                tokens.c.hash == hash_token(token), tokens.c.revoked_at.is_(None)
            ),
            "read the API tokens",
        )
        if not rows:
            raise Unauthorized("the API token is unknown or has been revoked")
        return _info(rows[0]).principal

    def principal_of(self, actor: str) -> Principal | None:
        """Everything `actor`'s live tokens allow, as one principal; None if they hold none."""
        rows = self._query(
            select(*_COLUMNS).where(tokens.c.actor == actor, tokens.c.revoked_at.is_(None)),
            "read the API tokens",
        )
        infos = [_info(row) for row in rows]
        if not infos:
            return None
        roles = frozenset(r for info in infos for r in info.roles)
        grids = tuple(dict.fromkeys(g for info in infos for g in info.grids))
        units = [info.unit for info in infos if info.unit]
        return Principal(actor, roles, grids, units[0] if units else None)


def _where(engine: Engine) -> str:
    """The store's database, for messages (never a password)."""
    if engine.dialect.name == "sqlite":
        return str(engine.url.database)
    return engine.url.render_as_string(hide_password=True)


def _info(row: Row[Any]) -> TokenInfo:
    return TokenInfo(
        id=row[0],
        actor=row[1],
        roles=tuple(orjson.loads(row[2])),
        grids=tuple(orjson.loads(row[3])),
        unit=row[4],
        label=row[5],
        created_at=datetime.fromisoformat(row[6]),
        revoked_at=datetime.fromisoformat(row[7]) if row[7] else None,
    )
