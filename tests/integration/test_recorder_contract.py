"""Our recorders pass eventsourcing's own recorder test cases, and keep their chains.

The abstract cases shipped in `eventsourcing.tests` (insert/select, notification ids, concurrent
writers, non-interleaving ids) run against `HazardLoopSQLiteRecorder` on a real SQLite file and
against `HazardLoopPostgresRecorder` on a fresh database of a real PostgreSQL server; after each
case the hash chains the recorder wrote alongside verify intact.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore
from eventsourcing.tests.persistence import (
    ApplicationRecorderTestCase,
    NonInterleavingNotificationIDsBaseCase,
)

from adapters.audit import verify
from adapters.store import HazardLoopPostgresRecorder, HazardLoopSQLiteRecorder, parse_db
from tests.conftest import PgCluster, selected_stores
from tests.integration.test_pg_store import assert_chains_intact


class _OnAFile:
    """A fresh SQLite file per test case; the chains are verified when the case ends."""

    path: Path
    _tmp: tempfile.TemporaryDirectory[str]

    def setUp(self) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self.path = Path(self._tmp.name) / "recorder.db"

    def tearDown(self) -> None:
        try:
            if self.path.exists():
                result = verify(self.path)
                assert result.ok, result.to_dict()
        finally:
            self._tmp.cleanup()

    def create_recorder(self) -> HazardLoopSQLiteRecorder:
        datastore = SQLiteDatastore(db_name=str(self.path), lock_timeout=30, pool_size=20)
        recorder = HazardLoopSQLiteRecorder(datastore)
        recorder.create_table()
        return recorder


class TestHazardLoopRecorderContract(
    _OnAFile, ApplicationRecorderTestCase[HazardLoopSQLiteRecorder]
):
    """eventsourcing's ApplicationRecorderTestCase, every case."""


class TestHazardLoopRecorderNonInterleaving(_OnAFile, NonInterleavingNotificationIDsBaseCase):
    """Two writers racing: each one's notification ids come out in one unbroken run."""

    def create_stack(self, originator_id: UUID | str) -> list[StoredEvent]:
        return [
            StoredEvent(originator_id=originator_id, originator_version=i, topic="", state=b"")
            for i in range(self.insert_num)
        ]


class _OnAServer:
    """A fresh PostgreSQL database per test case; the chains are verified when the case ends."""

    cluster: PgCluster
    name: str = ""
    datastore: PostgresDatastore | None = None

    @pytest.fixture(autouse=True)
    def _cluster(self, pg_cluster: PgCluster) -> None:
        self.cluster = pg_cluster

    def setUp(self) -> None:
        self.name = self.cluster.create("contract")
        self.datastore = None

    def tearDown(self) -> None:
        try:
            if self.datastore is not None:
                self.datastore.close()
                assert_chains_intact(self.cluster.url(self.name))
        finally:
            self.cluster.drop(self.name)

    def create_recorder(self) -> HazardLoopPostgresRecorder:
        pg = parse_db(self.cluster.url(self.name)).pg
        assert pg is not None
        if self.datastore is None:
            self.datastore = PostgresDatastore(
                dbname=pg.dbname, host=pg.host, port=pg.port, user=pg.user,
                password=pg.password, pool_size=10, max_overflow=10, lock_timeout=30,
            )  # fmt: skip
        recorder = HazardLoopPostgresRecorder(self.datastore)
        recorder.create_table()
        return recorder


@pytest.mark.skipif("postgres" not in selected_stores(), reason="HAZARDLOOP_TEST_STORES")
class TestHazardLoopPostgresRecorderContract(
    _OnAServer, ApplicationRecorderTestCase[HazardLoopPostgresRecorder]
):
    """eventsourcing's ApplicationRecorderTestCase, every case, on PostgreSQL."""


@pytest.mark.skipif("postgres" not in selected_stores(), reason="HAZARDLOOP_TEST_STORES")
class TestHazardLoopPostgresRecorderNonInterleaving(
    _OnAServer, NonInterleavingNotificationIDsBaseCase
):
    """Two writers racing on PostgreSQL: each one's notification ids come out unbroken."""

    def create_stack(self, originator_id: UUID | str) -> list[StoredEvent]:
        return [
            StoredEvent(originator_id=originator_id, originator_version=i, topic="", state=b"")
            for i in range(self.insert_num)
        ]
