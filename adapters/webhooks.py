"""Push webhooks: subscribers, their filters and tracked positions, and the delivery worker.

Each subscriber has a row in the store's `webhook_subscribers` table (SQLite or PostgreSQL):
URL, filters, its secret (sealed with the store's master key: needed in clear to sign, so never
stored in clear) and the position of the last event it has been given. The worker
(`hazardloop webhooks run`) reads the pull feed after each subscriber's position and POSTs the
events that pass its filters, strictly in log order: the position only moves past an event once
the receiver has answered 2xx, so delivery is at least once, in order per hazard (and across
hazards). Each subscriber has its own thread, HTTP client, timeouts and backoff, so a dead one
never holds up the others; the worker is a separate process that only reads the log, so it never
holds up the engine. See docs/subscriptions.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import hmac
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    case,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from adapters.feed import known_event_types, read_feed
from adapters.logs import get_logger
from adapters.storesql import create_tables as create_tables_of, db_error, session_lock
from loop.application import HazardLoop
from loop.errors import HazardLoopError, InvalidCommand, StoreError

__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "SUBSCRIBERS_TABLE",
    "TIMESTAMP_HEADER",
    "DeliveryOptions",
    "DeliveryWorker",
    "Filters",
    "Subscriber",
    "SubscriberStore",
    "WorkerBusy",
    "WorkerLockLost",
    "body_of",
    "create_tables",
    "sign",
    "subscribers",
    "verify_signature",
]

SUBSCRIBERS_TABLE = "webhook_subscribers"
_METADATA = MetaData()

SIGNATURE_HEADER = "X-Hazardloop-Signature"
TIMESTAMP_HEADER = "X-Hazardloop-Timestamp"
EVENT_ID_HEADER = "X-Hazardloop-Event-Id"
EVENT_TYPE_HEADER = "X-Hazardloop-Event-Type"
SUBSCRIBER_HEADER = "X-Hazardloop-Subscriber"
ATTEMPT_HEADER = "X-Hazardloop-Attempt"
USER_AGENT = "hazardloop-webhooks/1"

#: Associated data of a sealed secret: a sealed value of another kind never opens as one.
_SECRET_AAD = b"hazardloop:webhook-secret:v1"
MIN_SECRET_LENGTH = 16
GRADES = ("general", "major")


# ------------------------------------------------------------------ signatures


def body_of(item: dict[str, Any]) -> bytes:
    """The exact bytes POSTed for a feed item (UTF-8 JSON, keys sorted)."""
    return orjson.dumps(item, option=orjson.OPT_SORT_KEYS)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 over `timestamp` ‖ `.` ‖ body, keyed by the secret's UTF-8."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """Whether a delivery is genuine and fresh (the receiver's side; docs/subscriptions.md)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


# --------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    """Which events a subscriber gets. Each list empty = no restriction; lists combine with AND.

    - `events`: event types, e.g. `Hazard.Assigned`.
    - `grids`: grid codes or glob patterns (`D01-S02*`): a hazard's event matches by the hazard's
      grid, a grid's event by the grid's own code; units' and people's events never match.
    - `grades`: a hazard's grade as of the event (a regrade matches if either grade does);
      other subjects' events never match.
    """

    events: tuple[str, ...] = ()
    grids: tuple[str, ...] = ()
    grades: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls,
        events: Sequence[str] = (),
        grids: Sequence[str] = (),
        grades: Sequence[str] = (),
    ) -> Filters:
        """Check and normalise filters; `InvalidCommand` naming what is wrong."""
        known = known_event_types()
        resolved: list[str] = []
        for name in events:
            if name in known:
                resolved.append(name)
                continue
            matches = [k for k in known if k.split(".", 1)[1] == name]
            if len(matches) == 1:
                resolved.append(matches[0])
            elif matches:
                raise InvalidCommand(
                    f"event type {name!r} is ambiguous: say {' or '.join(matches)}",
                    field="event",
                    value=name,
                )
            else:
                raise InvalidCommand(
                    f"unknown event type {name!r}; known: {', '.join(known)}",
                    field="event",
                    value=name,
                )
        for grid in grids:
            if not grid or grid != grid.strip() or any(ch.isspace() for ch in grid):
                raise InvalidCommand(
                    f"bad grid filter {grid!r}: a grid code, or a pattern like D01-S02*",
                    field="grid",
                    value=grid,
                )
        for grade in grades:
            if grade not in GRADES:
                raise InvalidCommand(
                    f"unknown grade {grade!r}: {' or '.join(GRADES)}", field="grade", value=grade
                )
        return cls(
            tuple(dict.fromkeys(resolved)),
            tuple(dict.fromkeys(grids)),
            tuple(dict.fromkeys(grades)),
        )

    def matches(self, item: dict[str, Any]) -> bool:
        """Whether a feed item passes these filters."""
        if self.events and item["type"] not in self.events:
            return False
        subject = item["subject"]
        if self.grids:
            if subject["kind"] == "hazard":
                code = subject.get("grid")
            elif subject["kind"] == "grid":
                code = subject["id"]
            else:
                return False
            if code is None or not any(fnmatch.fnmatchcase(code, g) for g in self.grids):
                return False
        if self.grades:
            if subject["kind"] != "hazard":
                return False
            grades = {subject.get("grade")}
            if item["type"] == "Hazard.Regraded":
                grades.add(item["data"].get("previous_grade"))
            if not grades & set(self.grades):
                return False
        return True

    def to_dict(self) -> dict[str, list[str]]:
        return {"events": list(self.events), "grids": list(self.grids), "grades": list(self.grades)}


# ----------------------------------------------------------------- subscribers


@dataclass(frozen=True)
class Subscriber:
    """A subscriber as stored, without its secret."""

    id: int
    url: str
    filters: Filters
    created_at: str
    active: bool
    position: int
    failures: int = 0
    last_error: str | None = None
    last_attempt_at: str | None = None
    last_delivered_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "filters": self.filters.to_dict(),
            "created_at": self.created_at,
            "active": self.active,
            "position": self.position,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_attempt_at": self.last_attempt_at,
            "last_delivered_at": self.last_delivered_at,
        }


def check_url(url: str) -> str:
    """An http(s) URL with a host, or `InvalidCommand` saying why not."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number or out of range
    except ValueError as exc:
        raise InvalidCommand(f"bad webhook URL {url!r}: {exc}", field="url", value=url) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidCommand(
            f"bad webhook URL {url!r}: give an http:// or https:// URL with a host",
            field="url",
            value=url,
        )
    if port == 0 or any(ch.isspace() for ch in url) or parts.fragment:
        raise InvalidCommand(
            f"bad webhook URL {url!r}: no spaces, fragments or port 0", field="url", value=url
        )
    return url


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


subscribers = Table(
    SUBSCRIBERS_TABLE,
    _METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),  # never reused after a removal
    Column("url", Text, nullable=False),
    Column("secret_sealed", LargeBinary, nullable=False),  # nonce ‖ AES-GCM(master key, secret)
    Column("filters", Text, nullable=False),  # JSON: events, grids, grades
    Column("created_at", Text, nullable=False),
    Column("active", Integer, nullable=False, server_default="1"),
    Column("position", BigInteger, nullable=False, server_default="0"),  # last event given
    Column("failures", Integer, nullable=False, server_default="0"),  # since the last success
    Column("last_error", Text),
    Column("last_attempt_at", Text),
    Column("last_delivered_at", Text),
    sqlite_autoincrement=True,
)
_COLUMNS = [subscribers.c[name] for name in (
    "id", "url", "filters", "created_at", "active", "position", "failures", "last_error",
    "last_attempt_at", "last_delivered_at",
)]  # fmt: skip


def create_tables(engine: Engine) -> None:
    """Create the subscribers' table if it is not there yet (on SQLite or PostgreSQL)."""
    create_tables_of(engine, _METADATA)


class SubscriberStore:
    """The subscribers' table in the store's database (one short transaction per call).

    `engine` is a SQLAlchemy engine on the store (`adapters.bootstrap.views_engine`); the caller
    disposes of it.
    """

    def __init__(self, engine: Engine, master_key: bytes) -> None:
        self.engine = engine
        self._master = AESGCM(master_key)
        try:
            create_tables(engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the webhook subscribers: {db_error(exc)}") from exc

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot use the webhook subscribers: {db_error(exc)}") from exc

    def add(
        self, url: str, filters: Filters, *, after: int, secret: str | None = None
    ) -> tuple[Subscriber, str]:
        """Register a subscriber that gets the events after position `after`; its secret."""
        check_url(url)
        if after < 0:
            raise InvalidCommand("`after` must be 0 or more", field="after", value=after)
        if secret is None:
            secret = secrets.token_urlsafe(32)
        elif len(secret) < MIN_SECRET_LENGTH or secret != secret.strip():
            raise InvalidCommand(
                f"a webhook secret needs {MIN_SECRET_LENGTH} characters or more, "
                "without surrounding spaces",
                field="secret",
            )
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._master.encrypt(nonce, secret.encode(), _SECRET_AAD)
        with self._begin() as conn:
            result = conn.execute(
                insert(subscribers).values(
                    url=url,
                    secret_sealed=sealed,
                    filters=orjson.dumps(filters.to_dict()).decode(),
                    created_at=_now_text(),
                    position=after,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            new_id = int(key[0])
        found = self.get(new_id)
        assert found is not None
        return found, secret

    @staticmethod
    def _row(row: Sequence[Any]) -> Subscriber:
        f = orjson.loads(row[2])
        filters = Filters(tuple(f["events"]), tuple(f["grids"]), tuple(f["grades"]))
        return Subscriber(
            int(row[0]), str(row[1]), filters, str(row[3]), bool(row[4]), int(row[5]),
            int(row[6]), row[7], row[8], row[9],
        )  # fmt: skip

    def list(self) -> list[Subscriber]:
        with self._begin() as conn:
            rows = conn.execute(select(*_COLUMNS).order_by(subscribers.c.id)).all()
        return [self._row(r) for r in rows]

    def get(self, subscriber_id: int) -> Subscriber | None:
        with self._begin() as conn:
            row = conn.execute(
                select(*_COLUMNS).where(subscribers.c.id == subscriber_id)
            ).one_or_none()
        return self._row(row) if row else None

    def remove(self, subscriber_id: int) -> bool:
        """Delete a subscriber for good; True if there was one."""
        with self._begin() as conn:
            gone = conn.execute(delete(subscribers).where(subscribers.c.id == subscriber_id))
        return bool(gone.rowcount)

    def secret(self, subscriber_id: int) -> str | None:
        """The subscriber's secret in clear (for signing only; never logged or printed)."""
        with self._begin() as conn:
            row = conn.execute(
                select(subscribers.c.secret_sealed).where(subscribers.c.id == subscriber_id)
            ).one_or_none()
        if row is None:
            return None
        blob = bytes(row[0])
        try:
            return self._master.decrypt(blob[:12], blob[12:], _SECRET_AAD).decode()
        except InvalidTag:
            raise StoreError(
                f"the secret of webhook subscriber {subscriber_id} does not open with this "
                "master key (HAZARDLOOP_CIPHER_KEY or the store's key file)"
            ) from None

    def advance(self, subscriber_id: int, position: int, *, delivered: bool) -> bool:
        """Record that the subscriber has had everything up to `position`; False if it has been
        removed or paused meanwhile (the lane then stops)."""
        now = _now_text()
        t = subscribers.c
        # Never backwards (a lane restarted from an older read must not undo a later advance).
        values: dict[str, Any] = {
            "position": case((t.position < position, position), else_=t.position)
        }
        if delivered:
            values |= {
                "failures": 0,
                "last_error": None,
                "last_attempt_at": now,
                "last_delivered_at": now,
            }
        with self._begin() as conn:
            conn.execute(update(subscribers).where(t.id == subscriber_id).values(**values))
            found = conn.execute(select(t.active).where(t.id == subscriber_id)).one_or_none()
        return found is not None and bool(found[0])

    def record_failure(self, subscriber_id: int, error: str) -> bool:
        """Count a failed attempt; False if the subscriber has been removed or paused meanwhile."""
        t = subscribers.c
        with self._begin() as conn:
            found = conn.execute(
                update(subscribers)
                .where(t.id == subscriber_id, t.active == 1)
                .values(failures=t.failures + 1, last_error=error, last_attempt_at=_now_text())
            ).rowcount
        return bool(found)

    def set_active(self, subscriber_id: int, active: bool) -> bool:
        """Pause (False) or resume (True) deliveries; False if there is no such subscriber."""
        with self._begin() as conn:
            found = conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id)
                .values(active=int(active))
            ).rowcount
        return bool(found)

    @contextlib.contextmanager
    def worker_lock(self) -> Iterator[Callable[[], bool] | None]:
        """Hold the store's one delivery-worker lock while inside. Yields None if another
        process holds it, else a check that says whether it is still held.

        On SQLite: an exclusive `flock` of `<store file>.webhooks.lock`; on PostgreSQL: a
        session advisory lock on a connection of its own, held as long as that connection
        lives (a server restart ends it: the check then says False). Either way the OS or the
        server releases it when the holder dies, even by kill -9.
        """
        if self.engine.dialect.name != "sqlite":
            with session_lock(self.engine, "hazardloop:webhooks-worker") as conn:
                if conn is None:
                    yield None
                    return

                def still_held() -> bool:
                    try:
                        conn.execute(text("SELECT 1"))
                        conn.commit()
                    except SQLAlchemyError:
                        return False
                    return True

                yield still_held
            return
        path = Path(str(self.engine.url.database) + ".webhooks.lock")
        lock_file = path.open("a+b")
        try:
            try:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield None
                return
            lock_file.seek(0)
            lock_file.truncate()
            lock_file.write(f"{os.getpid()}\n".encode())
            lock_file.flush()
            yield lambda: True  # an flock lasts as long as this process
        finally:
            lock_file.close()  # closing drops the flock

    def lock_name(self) -> str:
        """Where the worker lock lives, for messages."""
        if self.engine.dialect.name == "sqlite":
            return f"lock {self.engine.url.database}.webhooks.lock"
        return "an advisory lock in the store's database"


# ---------------------------------------------------------------------- worker


class WorkerBusy(Exception):
    """Raised when another delivery process already runs on this store.

    Not part of the engine's error tree (loop/errors.py): only `webhooks run` meets it.
    """

    code = "webhooks_worker_busy"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WorkerLockLost(WorkerBusy):
    """Raised when a running worker finds it no longer holds the store's worker lock."""

    code = "webhooks_lock_lost"


@dataclass(frozen=True)
class DeliveryOptions:
    """How the worker delivers. Backoff: base × 2^(attempt−1), capped, ±20 % jitter."""

    poll: float = 1.0  # seconds between looks for new events (and new subscribers)
    timeout: float = 10.0  # seconds for one HTTP call (connect, write, read each)
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    page: int = 100  # feed items read at a time
    once: bool = False  # deliver what is pending, then return
    once_attempts: int = 3  # with `once`: attempts per event before leaving it for next run

    def backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2 ** min(attempt - 1, 30))
        return float(delay * random.uniform(0.8, 1.2))


@dataclass
class _Lane:
    """One subscriber's delivery thread and what it reports back."""

    thread: threading.Thread
    caught_up: bool = False


class DeliveryWorker:
    """Delivers every subscriber's pending events, one thread per subscriber.

    `run()` returns True when, with `once`, every active subscriber got everything pending
    (without `once` it returns after `stop()`). Only one worker runs per store: it holds the
    store's worker lock (`SubscriberStore.worker_lock`), released even on kill -9.
    """

    def __init__(
        self,
        app: HazardLoop,
        store: SubscriberStore,
        options: DeliveryOptions | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.options = options or DeliveryOptions()
        self.transport = transport
        self.log = get_logger("hazardloop.webhooks")
        self._stop = threading.Event()
        self._lanes: dict[int, _Lane] = {}
        self._held: contextlib.ExitStack | None = None
        self._still_held: Callable[[], bool] = lambda: True

    # -- lifecycle

    def stop(self) -> None:
        """Ask every lane to finish its current attempt and return (signal-safe)."""
        self._stop.set()

    def _acquire(self) -> None:
        held = contextlib.ExitStack()
        check = held.enter_context(self.store.worker_lock())
        if check is None:
            held.close()
            raise WorkerBusy(
                f"another `webhooks run` already delivers for this store ({self.store.lock_name()})"
            )
        self._held = held
        self._still_held = check

    def _release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def run(self) -> bool:
        self._acquire()
        try:
            self.log.info(
                "webhooks.started", once=self.options.once, poll=self.options.poll, pid=os.getpid()
            )
            while True:
                self._reconcile()
                if self.options.once:
                    for lane in self._lanes.values():
                        lane.thread.join()
                    return all(lane.caught_up for lane in self._lanes.values())
                if self._stop.wait(self.options.poll):
                    break
                if not self._still_held():
                    # Another worker may take the lock now: stop rather than deliver beside it.
                    self.log.error("webhooks.lock_lost", lock=self.store.lock_name())
                    self._stop.set()
                    for lane in self._lanes.values():
                        lane.thread.join()
                    raise WorkerLockLost(
                        "the webhook worker's lock was lost (its database connection ended): "
                        "stopped; start `webhooks run` again"
                    )
            for lane in self._lanes.values():
                lane.thread.join()
            return True
        finally:
            self._release()
            self.log.info("webhooks.stopped")

    def _reconcile(self) -> None:
        """Start a lane for each active subscriber that has none (or whose lane ended)."""
        subscribers = self.store.list()
        present = {sub.id for sub in subscribers}
        for gone in [i for i, lane in self._lanes.items() if i not in present]:
            if not self._lanes[gone].thread.is_alive():
                del self._lanes[gone]
        for sub in subscribers:
            lane = self._lanes.get(sub.id)
            if not sub.active or (lane is not None and lane.thread.is_alive()):
                continue
            if lane is not None and self.options.once:
                continue
            thread = threading.Thread(
                target=self._lane, args=(sub.id,), name=f"webhook-{sub.id}", daemon=True
            )
            self._lanes[sub.id] = _Lane(thread)
            thread.start()

    # -- one subscriber

    def _lane(self, subscriber_id: int) -> None:
        lane = self._lanes[subscriber_id]
        client = httpx.Client(
            timeout=self.options.timeout,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            transport=self.transport,
        )
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    done = self._deliver_pending(subscriber_id, client)
                    failures = 0
                except Exception as exc:  # e.g. the store could not be read: try again later
                    failures += 1
                    delay = self.options.backoff(failures)
                    self.log.error(
                        "webhook.lane_error",
                        subscriber=subscriber_id,
                        error=exc.code if isinstance(exc, HazardLoopError) else type(exc).__name__,
                        message=str(exc),
                        retry_in=round(delay, 3),
                    )
                    if self.options.once or self._stop.wait(delay):
                        return
                    continue
                if done is None:  # removed, deactivated, or told to stop
                    return
                if self.options.once:
                    lane.caught_up = done
                    return
                if done:
                    self._stop.wait(self.options.poll)
        finally:
            client.close()

    def _deliver_pending(self, subscriber_id: int, client: httpx.Client) -> bool | None:
        """Deliver what is pending; True if caught up, False if an event is left (`once`), None
        if the subscriber is gone or the worker is stopping."""
        sub = self.store.get(subscriber_id)
        secret = self.store.secret(subscriber_id)
        if sub is None or secret is None or not sub.active:
            return None
        position = sub.position
        while True:
            items = read_feed(self.app, position, self.options.page)
            if not items:
                return True
            skipped = False
            for item in items:
                if self._stop.is_set():
                    if skipped:
                        self.store.advance(subscriber_id, position, delivered=False)
                    return None
                if not sub.filters.matches(item):
                    position = item["position"]
                    skipped = True
                    continue
                delivered = self._post(sub, secret, item, client)
                if not delivered:
                    if skipped:
                        self.store.advance(subscriber_id, position, delivered=False)
                    return None if self._stop.is_set() else False
                position = item["position"]
                skipped = False
                if not self.store.advance(subscriber_id, position, delivered=True):
                    return None
            if skipped and not self.store.advance(subscriber_id, position, delivered=False):
                return None

    def _post(
        self, sub: Subscriber, secret: str, item: dict[str, Any], client: httpx.Client
    ) -> bool:
        """POST one event until a 2xx (True), or until stopped / out of attempts (False)."""
        body = body_of(item)
        attempt = 0
        while True:
            attempt += 1
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(secret, timestamp, body),
                TIMESTAMP_HEADER: timestamp,
                EVENT_ID_HEADER: str(item["position"]),
                EVENT_TYPE_HEADER: item["type"],
                SUBSCRIBER_HEADER: str(sub.id),
                ATTEMPT_HEADER: str(attempt),
            }
            started = time.perf_counter()
            status: int | None = None
            try:
                # Streamed so the receiver's answer is never read into memory: only its status.
                with client.stream("POST", sub.url, content=body, headers=headers) as response:
                    status = response.status_code
                error = None if 200 <= status < 300 else f"HTTP {status}"
            except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError) as exc:
                error = type(exc).__name__
            millis = round((time.perf_counter() - started) * 1000, 1)
            if error is None:
                self.log.info(
                    "webhook.delivered",
                    subscriber=sub.id,
                    position=item["position"],
                    type=item["type"],
                    status=status,
                    attempt=attempt,
                    ms=millis,
                )
                return True
            if not self.store.record_failure(sub.id, error):
                return False  # removed meanwhile: stop trying
            give_up = self.options.once and attempt >= self.options.once_attempts
            delay = self.options.backoff(attempt)
            self.log.warning(
                "webhook.failed",
                subscriber=sub.id,
                position=item["position"],
                type=item["type"],
                status=status,
                error=error,
                attempt=attempt,
                ms=millis,
                retry_in=None if give_up else round(delay, 3),
            )
            if give_up or self._stop.wait(delay):
                return False


def run_worker(
    app: HazardLoop,
    store: SubscriberStore,
    options: DeliveryOptions,
    *,
    install_signals: Callable[[Callable[[], None]], None] | None = None,
) -> bool:
    """Build a worker, let the caller hook `stop` to signals, and run it."""
    worker = DeliveryWorker(app, store, options)
    if install_signals is not None:
        install_signals(worker.stop)
    return worker.run()
