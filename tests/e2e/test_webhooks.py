"""Webhooks end to end: real worker processes, real HTTP receivers on loopback.

The issue's "done when": a receiver that is down for a while, then up, receives every event
exactly as recorded, in order per hazard, with valid signatures; killing the delivery process
(kill -9) and restarting it loses nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy import select, text

from adapters import webhooks
from adapters.bootstrap import Settings
from adapters.feed import MAX_LIMIT, read_feed
from adapters.store import parse_db
from adapters.storesql import store_engine
from adapters.tipsters import load_master_key
from adapters.webhooks import (
    DeliveryOptions,
    DeliveryWorker,
    Filters,
    SubscriberStore,
    WorkerLockLost,
    body_of,
    check_url,
)
from loop.application import HazardLoop
from loop.commands import parse_command
from loop.errors import InvalidCommand
from tests.e2e.receiver import TIPSTER, Delivery, Receiver, case_commands, free_port, wait_until

SECRET = "test-secret-0123456789abcdef"
FAST = ["--poll", "0.05", "--backoff", "0.05", "--backoff-max", "0.2", "--timeout", "0.5"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return env | {"HAZARDLOOP_LOG_LEVEL": "info"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        capture_output=True, text=True, check=False, env=_env(), timeout=60,
    )  # fmt: skip


class Worker:
    """`hazardloop webhooks run` as a real process, its logs kept in a file."""

    def __init__(self, db: str, log: Path, *extra: str) -> None:
        self.log_path = log
        self._log: IO[bytes] = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", "webhooks", "run", "--db", db, *FAST,
             *extra],
            stdout=subprocess.DEVNULL, stderr=self._log, env=_env(),
        )  # fmt: skip

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no chance to finish anything
        self.proc.wait()
        self._log.close()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        self._log.close()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.stop()


def _load(engine: HazardLoop, commands: list[dict[str, Any]]) -> None:
    for cmd in commands:
        engine.handle(parse_command(cmd))


@pytest.fixture
def subscribers(store: str) -> Iterator[SubscriberStore]:
    """The store's subscribers, as the CLI opens them (the same master key)."""
    settings = Settings(db=store)
    location = parse_db(store)
    tables = store_engine(location)
    master = load_master_key(settings.cipher_key, location.file, settings.cipher_key_file)
    yield SubscriberStore(tables, master)
    tables.dispose()


def _check_deliveries(
    engine: HazardLoop, got: list[Delivery], *, max_duplicates: int
) -> list[dict[str, Any]]:
    """Every event exactly as in the feed, each signature valid, first copies in log order."""
    feed = {e["position"]: e for e in read_feed(engine, 0, MAX_LIMIT)}
    for d in got:
        assert d.verified, d.headers
        assert d.body == body_of(feed[d.position])  # byte for byte the feed's item
        assert d.headers["X-Hazardloop-Event-Type"] == feed[d.position]["type"]
    counts = Counter(d.position for d in got)
    assert set(counts) == set(feed), "every event, and nothing else"
    assert sum(n - 1 for n in counts.values()) <= max_duplicates
    first: list[int] = list(dict.fromkeys(d.position for d in got))
    assert first == sorted(first)  # log order, hence order per hazard
    per_hazard: dict[str, list[int]] = {}
    for position in first:
        per_hazard.setdefault(feed[position]["subject"]["id"], []).append(feed[position]["version"])
    for versions in per_hazard.values():
        assert versions == list(range(1, len(versions) + 1))
    return list(feed.values())


def test_down_then_up_gets_everything_in_order_and_kill_9_loses_nothing(
    engine: HazardLoop, store: str, store_kind: str, subscribers: SubscriberStore,
    tmp_path: Path, workers: list[Worker], receivers: list[Receiver],
) -> None:  # fmt: skip
    receiver = Receiver(secret=SECRET)  # down: nothing listens on its port yet
    receivers.append(receiver)
    added = _cli("webhooks", "add", receiver.url, "--secret", SECRET, "--after", "0",
                 "--db", store)  # fmt: skip
    assert added.returncode == 0, added.stderr
    log = tmp_path / "worker.log"
    workers.append(Worker(store, log))
    _load(engine, case_commands("DN", 10, day=2))  # written while the receiver is down
    wait_until(lambda: subscribers.list()[0].failures >= 3, what="failed attempts while down")
    assert receiver.positions() == []
    receiver.start()  # up
    total = len(read_feed(engine, 0, MAX_LIMIT))
    wait_until(lambda: len(set(receiver.positions())) == total, what="catch-up after down")
    _check_deliveries(engine, receiver.snapshot(), max_duplicates=0)
    # The receiver has the last event a moment before the worker records the position.
    wait_until(lambda: subscribers.list()[0].position == total, what="position recorded")
    assert subscribers.list()[0].failures == 0

    # Kill -9 the worker in the middle of a backlog; write more while it is dead; restart.
    receiver.delay = 0.05  # slow enough that the kill lands mid-backlog, even on a busy machine
    before = len(receiver.positions())
    _load(engine, case_commands("KL", 20, day=3))
    wait_until(lambda: len(receiver.positions()) >= before + 10, what="deliveries under way")
    workers[0].kill()
    stopped_at = len(receiver.positions())
    assert stopped_at < len(read_feed(engine, 0, MAX_LIMIT)), "killed mid-backlog"
    _load(engine, case_commands("RS", 5, day=4))
    receiver.delay = 0.0
    workers.append(Worker(store, log))
    total = len(read_feed(engine, 0, MAX_LIMIT))
    wait_until(lambda: len(set(receiver.positions())) == total, what="catch-up after restart")
    assert workers[1].terminate() == 0  # SIGTERM: a clean stop
    feed = _check_deliveries(engine, receiver.snapshot(), max_duplicates=1)
    assert any(e["data"].get("reporter_sealed") for e in feed)  # the tips went out sealed
    text = log.read_text(encoding="utf-8")
    assert "webhook.failed" in text
    assert "webhook.delivered" in text
    for secret_bytes in (SECRET, TIPSTER, "sha256="):
        assert secret_bytes not in text  # no secret, no signature, no tipster in the logs
    assert SECRET.encode() not in _sealed(subscribers)  # the secret is sealed at rest
    if store_kind == "sqlite":  # and appears nowhere in the store's files (WAL included)
        name = Path(store).name
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(name))
        assert SECRET.encode() not in raw


def _sealed(subscribers: SubscriberStore) -> bytes:
    """Every subscriber's stored secret column, as read from the store."""
    with subscribers.engine.connect() as conn:
        rows = conn.execute(select(webhooks.subscribers.c.secret_sealed)).scalars().all()
    assert rows
    return b"".join(bytes(r) for r in rows)


def test_a_dead_subscriber_never_holds_up_a_healthy_one_or_the_engine(
    engine: HazardLoop, store: str, subscribers: SubscriberStore, tmp_path: Path,
    workers: list[Worker], receivers: list[Receiver],
) -> None:  # fmt: skip
    healthy = Receiver(secret=SECRET).start()
    failing = Receiver(secret=SECRET, status=500).start()
    hanging = Receiver(secret=SECRET).start()
    hanging.delay = 2.0  # accepts, never answers within the worker's 0.5 s timeout
    receivers += [healthy, failing, hanging]
    urls = [f"http://127.0.0.1:{free_port()}/closed", failing.url, hanging.url, healthy.url]
    subs = [subscribers.add(url, Filters(), after=0, secret=SECRET)[0] for url in urls]
    workers.append(Worker(store, tmp_path / "worker.log"))
    _load(engine, case_commands("A", 6, day=2))

    def failures() -> list[int]:
        return [s.failures for s in subscribers.list()][:3]

    wait_until(lambda: min(failures()) >= 2, what="every dead subscriber failing")
    # The engine keeps writing at its usual pace, and the healthy one keeps receiving.
    started = time.perf_counter()
    _load(engine, case_commands("B", 6, day=3))
    assert time.perf_counter() - started < 5
    total = len(read_feed(engine, 0, MAX_LIMIT))
    wait_until(lambda: len(healthy.positions()) == total, what="the healthy one, everything")
    _check_deliveries(engine, healthy.snapshot(), max_duplicates=0)
    seen = failures()
    wait_until(lambda: all(a > b for a, b in zip(failures(), seen, strict=True)), what="retries")
    listed = {s.id: s for s in subscribers.list()}
    assert [listed[s.id].position for s in subs] == [0, 0, 0, total]
    assert listed[subs[0].id].last_error == "ConnectError"
    assert listed[subs[1].id].last_error == "HTTP 500"
    assert listed[subs[2].id].last_error == "ReadTimeout"
    # Only one worker delivers per store.
    second = _cli("webhooks", "run", "--once", "--db", store)
    assert second.returncode == 1
    assert "webhooks_worker_busy" in second.stderr
    stopping = time.perf_counter()
    assert workers[0].terminate() == 0
    assert time.perf_counter() - stopping < 5  # stops promptly, even mid-backoff
    # `--once` delivers what it can and says, by its exit status, that some are left behind.
    once = _cli("webhooks", "run", "--once", "--db", store, *FAST, "--attempts", "1")
    assert once.returncode == 1
    assert "pending" in once.stderr


def _case_index(item: dict[str, Any]) -> int:
    return int(item["subject"]["id"].split("-")[1])


def test_filters_choose_the_events_each_subscriber_gets(
    engine: HazardLoop, subscribers: SubscriberStore, receivers: list[Receiver]
) -> None:
    _load(engine, [
        {"command": "establish_grid", "grid": "D01", "name": "District", "level": "district",
         "actor": "centre", "at": "2026-11-01T08:00:00+08:00"},
        {"command": "establish_grid", "grid": "D01-S02", "name": "Street", "level": "street",
         "parent": "D01", "actor": "centre", "at": "2026-11-01T08:00:00+08:00"},
        {"command": "register_unit", "unit": "fire-brigade", "name": "Fire brigade",
         "grid": "D01", "actor": "centre", "at": "2026-11-01T08:00:00+08:00"},
    ])  # fmt: skip
    _load(engine, case_commands("F", 12))
    _load(engine, [{
        "command": "regrade", "hazard_id": "F-004", "actor": "centre.li",
        "at": "2026-11-02T12:00:00+08:00", "grade": "general", "reason": "fixed",
    }])  # fmt: skip
    feed = read_feed(engine, 0, MAX_LIMIT)
    hazards = [e for e in feed if e["subject"]["kind"] == "hazard"]

    def major(e: dict[str, Any]) -> bool:
        i = _case_index(e)  # major from discovery (F-004's regrade down still heard); or by regrade
        return i % 4 == 0 or (i % 4 == 2 and e["type"] == "Hazard.Regraded")

    expected = {
        "regrades": [e["position"] for e in hazards if e["type"] == "Hazard.Regraded"],
        "street": [e["position"] for e in feed
                   if (e["subject"]["kind"] == "hazard" and _case_index(e) % 3 == 1)
                   or e["subject"] == {"kind": "grid", "id": "D01-S02"}],
        "major": [e["position"] for e in hazards if major(e)],
        "assigned_s1": [e["position"] for e in hazards
                        if e["type"] == "Hazard.Assigned" and _case_index(e) % 3 == 0],
        "district_grid": [e["position"] for e in feed
                          if e["subject"] == {"kind": "grid", "id": "D01"}],
    }  # fmt: skip
    filters = {
        "regrades": Filters.parse(["Regraded"]),
        "street": Filters.parse(grids=["D01-S02*"]),
        "major": Filters.parse(grades=["major"]),
        "assigned_s1": Filters.parse(["Hazard.Assigned"], ["D01-S01-C01"]),
        "district_grid": Filters.parse(grids=["D01"]),
    }
    store = subscribers
    by_name: dict[str, Receiver] = {}
    for name, f in [*filters.items(), ("paused", Filters())]:
        by_name[name] = Receiver(secret=SECRET).start()
        receivers.append(by_name[name])
        store.add(by_name[name].url, f, after=0, secret=SECRET)
    assert store.set_active(len(by_name), False)
    options = DeliveryOptions(once=True, poll=0.05, backoff_base=0.01, backoff_max=0.05)
    assert DeliveryWorker(engine, store, options).run() is True
    for name, receiver in by_name.items():
        assert receiver.positions() == expected.get(name, []), name
        assert all(d.verified for d in receiver.snapshot())
    assert expected["major"][-1] == feed[-1]["position"]  # the regrade down to general, heard
    positions = [s.position for s in store.list()]
    assert positions == [feed[-1]["position"]] * len(filters) + [0]  # skipped ones count too
    assert store.set_active(len(by_name), True)
    assert DeliveryWorker(engine, store, options).run() is True
    assert by_name["paused"].positions() == [e["position"] for e in feed]  # resumed: all of it


@pytest.mark.parametrize(
    "url", ["ftp://example.org/x", "example.org/hook", "http://", "http://h:99999/", "http://h/ x"]
)
def test_a_bad_url_is_refused(url: str) -> None:
    with pytest.raises(InvalidCommand, match="bad webhook URL"):
        check_url(url)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"events": ["Hazard.Nope"]}, "unknown event type 'Hazard.Nope'; known: Grid.Appointed"),
        ({"events": ["Registered"]}, "say Person.Registered or Unit.Registered"),
        ({"grids": ["D01 S02"]}, "bad grid filter"),
        ({"grids": [""]}, "bad grid filter"),
        ({"grades": ["huge"]}, "unknown grade 'huge'"),
    ],
)
def test_bad_filters_are_refused(kwargs: dict[str, list[str]], message: str) -> None:
    with pytest.raises(InvalidCommand, match=message.replace(".", r"\.")):
        Filters.parse(**kwargs)


def test_the_cli_refuses_clearly_and_never_shows_a_secret_twice(
    engine: HazardLoop, store: str, subscribers: SubscriberStore
) -> None:
    db = store
    bad_url = _cli("webhooks", "add", "ftp://example.org/x", "--db", db)
    assert bad_url.returncode == 2
    assert "InvalidCommand: invalid_command: bad webhook URL 'ftp://example.org/x'" in (
        bad_url.stderr
    )
    bad_event = _cli("webhooks", "add", "https://example.org/x", "--event", "Nope",
                     "--secret", "short", "--db", db)  # fmt: skip
    assert bad_event.returncode == 2
    assert "unknown event type 'Nope'" in bad_event.stderr
    gone = _cli("webhooks", "remove", "42", "--db", db)
    assert gone.returncode == 1
    assert "no webhook subscriber 42" in gone.stderr
    with pytest.raises(InvalidCommand, match="16 characters"):
        subscribers.add("https://example.org/x", Filters(), after=0, secret="short")
    sub, secret = subscribers.add("https://example.org/x", Filters.parse(["Assigned"]), after=0)
    assert len(secret) >= 32
    assert subscribers.secret(sub.id) == secret
    listed = _cli("webhooks", "list", "--db", db)
    assert listed.returncode == 0
    assert secret not in listed.stdout
    assert '"events":["Hazard.Assigned"]' in listed.stdout
    assert secret.encode() not in _sealed(subscribers)


def test_a_worker_that_loses_its_lock_stops(
    engine: HazardLoop, store_kind: str, subscribers: SubscriberStore, receivers: list[Receiver]
) -> None:
    """On PostgreSQL the worker lock lives as long as its connection: if that ends (a server
    restart, an administrator), another worker could start, so this one stops, saying why."""
    if store_kind != "postgres":
        pytest.skip("an flock lasts as long as its process: it cannot be lost")
    receiver = Receiver(secret=SECRET).start()
    receivers.append(receiver)
    subscribers.add(receiver.url, Filters(), after=0, secret=SECRET)
    _load(engine, case_commands("LL", 2, day=2))
    worker = DeliveryWorker(engine, subscribers, DeliveryOptions(poll=0.05, backoff_base=0.01))
    outcome: list[BaseException | bool] = []

    def run() -> None:
        try:
            outcome.append(worker.run())
        except BaseException as exc:  # the outcome is the test's to judge
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        total = len(read_feed(engine, 0, MAX_LIMIT))
        wait_until(lambda: len(receiver.positions()) == total, what="deliveries")
        here = "SELECT oid FROM pg_database WHERE datname = current_database()"
        with subscribers.engine.connect() as conn:
            holders = (
                conn.execute(
                    text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        f"AND database = ({here})"
                    )
                )
                .scalars()
                .all()
            )
            assert len(holders) == 1
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": holders[0]})
        thread.join(10)
        assert not thread.is_alive()
    finally:
        worker.stop()
        thread.join(10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], WorkerLockLost)
    # The lock is free again: the next worker takes it and has nothing left to deliver.
    again = DeliveryOptions(once=True, backoff_base=0.01, backoff_max=0.05)
    assert DeliveryWorker(engine, subscribers, again).run() is True
    assert len(receiver.positions()) == total
