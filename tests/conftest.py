"""Shared fixtures: a real event store — a SQLite file and a PostgreSQL database — and a clock.

Every test that asks for `store` (directly, or through `engine`) runs once per store:
`[sqlite]` on a file in a temporary folder, `[postgres]` on a fresh database of a throwaway
PostgreSQL server (`tests/pgserver.py`) started once per session, or the server named by
HAZARDLOOP_TEST_PG_URL. Each PostgreSQL database is copied from a template that already holds
the schema (`CREATE DATABASE … TEMPLATE`), and dropped after the test.

- HAZARDLOOP_TEST_STORES=sqlite (or postgres) runs one store only.
- `@pytest.mark.sqlite_only("why")` keeps a test on SQLite (it opens the file itself).
- `store` is the `--db` value (a path or a URL); `store_kind` is "sqlite" or "postgres".
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adapters.bootstrap import Settings, build_engine
from loop.application import HazardLoop
from tests.pgserver import PostgresServer, pg_available

SHANGHAI = ZoneInfo("Asia/Shanghai")
STORES = ("sqlite", "postgres")
#: The schema template, one per test session (sessions may share a server of their own).
TEMPLATE = f"hazardloop_template_{os.getpid()}"


def selected_stores() -> list[str]:
    """The stores this run tests: HAZARDLOOP_TEST_STORES (comma-separated), default both."""
    raw = os.environ.get("HAZARDLOOP_TEST_STORES", "").strip()
    if not raw:
        return list(STORES)
    chosen = [s.strip() for s in raw.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STORES]
    if unknown:
        raise pytest.UsageError(
            f"HAZARDLOOP_TEST_STORES: unknown store {unknown[0]!r} (known: {', '.join(STORES)})"
        )
    return chosen


def store_env() -> dict[str, str]:
    """The settings a CLI process needs to open this test's store, for tests that give a
    subprocess an environment of their own (the PostgreSQL tests' master key file)."""
    names = ("HAZARDLOOP_CIPHER_KEY_FILE", "HAZARDLOOP_TEST_PG_URL")
    return {n: os.environ[n] for n in names if n in os.environ}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only(reason): the test opens the SQLite file itself; it runs on SQLite only",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that touches a store once per selected store."""
    if "store_kind" not in metafunc.fixturenames:
        return
    stores = selected_stores()
    marker = metafunc.definition.get_closest_marker("sqlite_only")
    if marker is not None:
        if not marker.args:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: sqlite_only needs a reason")
        stores = [s for s in stores if s == "sqlite"]
    metafunc.parametrize("store_kind", stores, scope="module")


class PgCluster:
    """The session's PostgreSQL server, and fresh databases copied from the schema template."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url  # the maintenance database ("postgres")
        self._names = itertools.count(1)
        self._template_ready = False

    def url(self, name: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + name

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def _build_template(self) -> None:
        """A database holding the whole schema: events, chains, keys, read models."""
        from sqlalchemy import create_engine

        from projections.tables import METADATA

        self._admin(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        self._admin(f"CREATE DATABASE \"{TEMPLATE}\" TEMPLATE template0 ENCODING 'UTF8'")
        url = self.url(TEMPLATE)
        app = build_engine(Settings(db=url, cipher_key="A" * 43 + "="))
        app.close()
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            METADATA.create_all(engine)
        finally:
            engine.dispose()
        self._template_ready = True

    def close(self) -> None:
        """Drop the session's template (the throwaway server goes anyway; a given one stays)."""
        if self._template_ready:
            with contextlib.suppress(Exception):
                self._admin(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')

    def create(self, hint: str = "t", *, empty: bool = False) -> str:
        """A fresh database with the schema (`empty`: without, as an operator creates one);
        its name."""
        name = f"{hint}_{os.getpid()}_{next(self._names)}"
        if empty:
            self._admin(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
            return name
        if not self._template_ready:
            self._build_template()
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        return name

    def drop(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    given = os.environ.get("HAZARDLOOP_TEST_PG_URL")
    if given:
        cluster = PgCluster(given)
        yield cluster
        cluster.close()
        return
    if not pg_available():
        pytest.fail(
            "PostgreSQL is not installed (initdb, pg_ctl): set HAZARDLOOP_TEST_STORES=sqlite"
        )
    # A run stopped by SIGTERM (`timeout`, CI) tears down like Ctrl-C, so the server goes too.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    with PostgresServer() as server:
        yield PgCluster(server.url())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class StoreFactory:
    """Makes fresh stores of one kind: `make(folder, name)` gives a `--db` value."""

    def __init__(self, kind: str, cluster: PgCluster | None) -> None:
        self.kind = kind
        self.cluster = cluster
        self.made: list[str] = []

    def __call__(self, folder: Path, name: str = "hazards", *, empty: bool = False) -> str:
        if self.cluster is None:
            return str(folder / f"{name}.db")
        db = self.cluster.create(name.replace("-", "_").replace(".", "_")[:30], empty=empty)
        self.made.append(db)
        return self.cluster.url(db)

    def drop(self, location: str) -> None:
        """Drop one store made here now (a PostgreSQL database; a file goes with its folder)."""
        if self.cluster is None:
            return
        name = location.rsplit("/", 1)[-1]
        if name in self.made:
            self.made.remove(name)
            self.cluster.drop(name)

    def drop_all(self) -> None:
        """Drop the PostgreSQL databases made so far (SQLite files go with their folder)."""
        while self.made:
            db = self.made.pop()
            if self.cluster is not None:
                with contextlib.suppress(Exception):
                    self.cluster.drop(db)


def _factory(request: pytest.FixtureRequest, kind: str) -> StoreFactory:
    cluster = request.getfixturevalue("pg_cluster") if kind == "postgres" else None
    return StoreFactory(kind, cluster)


@pytest.fixture(scope="module")
def store_factory(
    request: pytest.FixtureRequest, store_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoreFactory]:
    """Stores for module-scoped fixtures (a district built once); dropped when the module ends.

    On PostgreSQL the tipsters' master key comes from a key file of the module's
    (HAZARDLOOP_CIPHER_KEY_FILE, inherited by the CLI processes a test starts): there is no
    store file to keep one beside.
    """
    factory = _factory(request, store_kind)
    with pytest.MonkeyPatch.context() as mp:
        if store_kind == "postgres":
            key = tmp_path_factory.mktemp("master-key") / "master.key"
            mp.setenv("HAZARDLOOP_CIPHER_KEY_FILE", str(key))
        yield factory
    factory.drop_all()


@pytest.fixture
def store(
    request: pytest.FixtureRequest, store_kind: str, store_factory: StoreFactory, tmp_path: Path
) -> Iterator[str]:
    """A fresh, empty store for this test: the `--db` value (a file path or a URL); a
    PostgreSQL database is dropped after the test."""
    factory = _factory(request, store_kind)
    yield factory(tmp_path, "hazards")
    factory.drop_all()


@pytest.fixture
def db_path(store: str, store_kind: str) -> Path:
    """The store's SQLite file, for tests that open the file itself (mark them sqlite_only)."""
    if store_kind != "sqlite":
        raise RuntimeError("db_path is a SQLite file: mark the test sqlite_only(reason)")
    return Path(store)


class FakeClock:
    """The engine's clock, moved by the test (the only thing we fake: never the store)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now = self.now + timedelta(**kwargs)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 20, 18, 0, tzinfo=SHANGHAI))


@pytest.fixture
def engine(store: str, clock: FakeClock) -> Iterator[HazardLoop]:
    app = build_engine(Settings(db=store), clock=clock)
    yield app
    app.close()
