"""Our SQLite recorder passes eventsourcing's own recorder test cases, and keeps its chains.

The abstract cases shipped in `eventsourcing.tests` (insert/select, notification ids, concurrent
writers, non-interleaving ids) run against `HazardLoopSQLiteRecorder` on a real SQLite file;
after each case the hash chains the recorder wrote alongside verify intact.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteDatastore
from eventsourcing.tests.persistence import (
    ApplicationRecorderTestCase,
    NonInterleavingNotificationIDsBaseCase,
)

from adapters.audit import verify
from adapters.store import HazardLoopSQLiteRecorder


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
