"""Schemathesis against /openapi.json, in-process, with a valid token: no server error, no
response the document does not describe, whatever the input (valid, invalid, boundary).

The reads run every phase (examples, coverage of boundaries and missing parts, fuzzing); the
command endpoint's coverage phase walks every field of twenty commands and is skipped to keep the
test short, its fuzzing (valid and invalid commands) runs. A case exists for the examples.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from adapters.bootstrap import Settings
from adapters.http import create_app

#: A principal who may do and read everything (roles of every kind, every grid).
EVERYTHING = ("grid_member", "command_centre", "admin", "auditor", "tipster_officer")


def _schema(folder: Path, *, coverage: bool) -> Any:
    """The API over a store in `folder` with one case, loaded by schemathesis with a token."""
    app = create_app(Settings(db=str(folder / "h.db")))
    engine = app.state.engine
    _, token = engine.tokens.create("fuzzer", EVERYTHING, ["*"], None)
    engine.handle(
        {"command": "discover", "hazard_id": "JY-2026-0001", "actor": "fuzzer", "grid": "D01",
         "category": "fire", "grade": "general", "title": "Fire exit blocked"}
    )  # fmt: skip
    config = SchemathesisConfig.from_dict(
        {
            "phases": {"coverage": {"enabled": coverage}},
            "auth": {"openapi": {"HTTPBearer": {"bearer": token}}},
        }
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


# Loaded when the module is collected (schemathesis parametrizes from the document); the
# fixture below closes the stores and removes their folder when the session ends. Not when the
# module ends: under xdist's worksteal a worker may run this module's tests in two stretches,
# and a module fixture is torn down between them, while the stores made at collection are not
# made again (the second stretch then failed with "unable to open database file"). Every xdist
# worker collects the module, but only those that run one of its tests use the fixture: the
# folder is also removed when the process exits, so a worker that only collected leaves none.
_FOLDER = Path(tempfile.mkdtemp(prefix="hazardloop-schemathesis-"))
atexit.register(shutil.rmtree, _FOLDER, ignore_errors=True)
read_schema = _schema(_FOLDER / "reads", coverage=True).exclude(path="/commands")
command_schema = _schema(_FOLDER / "commands", coverage=False).include(path="/commands")


@pytest.fixture(scope="session", autouse=True)
def _clean_up() -> Iterator[None]:
    yield
    for schema in (read_schema, command_schema):
        schema.app.state.engine.close()
    shutil.rmtree(_FOLDER, ignore_errors=True)


#: Valid by the document is not always valid by the contract (a due date before the step's
#: start, a verify that passed with a due date…): those are refused (4xx), which is right.
EXCLUDED = [positive_data_acceptance]


@read_schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_read_endpoint_keeps_to_the_document(case: Any) -> None:
    case.call_and_validate(excluded_checks=EXCLUDED)


@pytest.fixture
def reaches_the_engine() -> Iterator[None]:
    """After the whole fuzzing run (a function-scoped fixture spans all its examples): some
    generated commands were applied, so the fuzzing is not all refusals at the door. Checked
    here, not in a test of its own, which another xdist worker could run first."""
    engine = command_schema.app.state.engine
    before = engine.app.recorder.max_notification_id() or 0
    yield
    assert (engine.app.recorder.max_notification_id() or 0) > before


@command_schema.parametrize()
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_command_endpoint_keeps_to_the_document(case: Any, reaches_the_engine: None) -> None:
    # The token's actor where a string is named, so commands reach the engine's rules, not only
    # the actor check (a wrongly typed actor is left for the negative cases).
    for command in case.body if isinstance(case.body, list) else [case.body]:
        if isinstance(command, dict) and isinstance(command.get("actor"), str):
            command["actor"] = "fuzzer"
    case.call_and_validate(excluded_checks=EXCLUDED)


def test_collecting_the_module_leaves_no_folder_behind(tmp_path: Path) -> None:
    """A process that collects this module and runs none of its tests (an xdist worker given
    other tests, a `-k` that deselects them) removes the stores it made at collection."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist",
         "-p", "no:cacheprovider", __file__],
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_schemathesis.py" in done.stdout  # collected, stores made
    assert not list(scratch.glob("hazardloop-schemathesis-*"))
