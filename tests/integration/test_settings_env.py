"""Our HAZARDLOOP_* settings never reach eventsourcing as its own settings.

eventsourcing reads each setting first under the application's name, so HAZARDLOOP_CIPHER_KEY
(the tipsters' master key) once turned on the library's AES for every stored event: a process
given the key through Settings instead of the variable could not read the store any more.
"""

from __future__ import annotations

import base64
import os

import pytest

from adapters.bootstrap import Settings, build_engine
from loop.commands import parse_command
from tests.conftest import FakeClock
from tests.integration.test_transitions import T0, command
from tests.stores import rows

KEY = base64.b64encode(bytes(range(32))).decode()


def test_the_master_key_variable_does_not_encrypt_the_events(
    store: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAZARDLOOP_CIPHER_KEY", KEY)
    writer = build_engine(Settings(db=store), clock=clock)
    try:
        assert writer.mapper.cipher is None
        writer.handle(parse_command(command("discover", "ENV-1", T0, title="blocked exit ENV")))
    finally:
        writer.close()
    states = [bytes(r[0]) for r in rows(store, "SELECT state FROM stored_events")]
    assert any(b"blocked exit ENV" in s for s in states)  # stored as JSON, not ciphertext

    monkeypatch.delenv("HAZARDLOOP_CIPHER_KEY")
    assert "HAZARDLOOP_CIPHER_KEY" not in os.environ
    reader = build_engine(Settings(db=store, cipher_key=KEY), clock=clock)
    try:
        assert reader.get_hazard("ENV-1").title == "blocked exit ENV"
    finally:
        reader.close()


def test_library_settings_given_by_the_store_still_apply(
    store: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAZARDLOOP_IS_SNAPSHOTTING_ENABLED", "y")
    app = build_engine(Settings(db=store), clock=clock)
    try:
        assert app.snapshots is None  # ours say no snapshots; the variable is not the library's
    finally:
        app.close()
