"""Confidential tipsters: a public tip's reporter, sealed with a key of its own case.

Each case that has a confidential reporter gets a random 256-bit data key; the reporter is
stored in the event only as AES-GCM ciphertext under that key (bound to the hazard id). Data keys
live in the store's `tipster_keys` table, themselves wrapped (AES-GCM) with the master key from
settings (HAZARDLOOP_CIPHER_KEY) or from a key file created beside the store. Erasing a tipster
destroys the case's data key for good (SQLite `secure_delete`, WAL checkpointed): the event and
every hash chain over its ciphertext stay exactly as they were, but nobody can read the name.
While another connection reads an older snapshot (a running server, a report) the checkpoint
cannot finish: the erase retries it for a few seconds, then says the key's old bytes may still be
in the files (`Erasure.final_on_disk` False) until those readers end and it is run again.

On a PostgreSQL store the data keys live in the same database, in the same table; there is no
store file to put a key file beside, so the master key comes from HAZARDLOOP_CIPHER_KEY or from a
key file named by HAZARDLOOP_CIPHER_KEY_FILE. Erasing there deletes the row and rewrites the
table (`VACUUM FULL`), so the key's bytes leave the table's files (docs/postgres.md says what a
server's WAL and backups still hold).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hmac
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from loop.errors import StoreError
from loop.hazard import Erasure, Vault

__all__ = [
    "CONFIDENTIAL",
    "ERASED",
    "SEALED_PREFIX",
    "TipsterVault",
    "is_confidential",
    "load_master_key",
    "shown_reporter",
]

#: What a confidential reporter reads as when not revealed, and once its key is erased.
CONFIDENTIAL = "(confidential)"
ERASED = "(erased)"


def is_confidential(fields: Any, source: str | None = None) -> bool:
    """Whether the `reporter` of a case's state or an event's payload (`fields`) is a
    confidential tipster's: sealed, or any public tip's — a Discovered v1 event stored the
    reporter in clear, and it is no less confidential for that. `source`: the case's, when
    `fields` do not carry it (a later event's payload). Every reader asks this one question."""
    if fields.get("reporter_sealed"):
        return True
    return (source if source is not None else fields.get("source")) == "public_tip"


def shown_reporter(
    vault: Vault | None, hazard_id: str, value: str, *, sealed: bool, reveal: bool
) -> str:
    """A confidential reporter as shown: `CONFIDENTIAL` unless `reveal` (the caller checks that
    it may, and logs the reveal), then the name; `ERASED` once its key is gone."""
    opened: str | None = value
    if sealed:  # a token: its name, or None once the key is erased (or with no vault)
        opened = vault.open(hazard_id, value) if vault is not None else None
    if not reveal:
        return CONFIDENTIAL if opened is not None else ERASED
    return opened if opened is not None else ERASED


#: Every sealed value starts with this, so readers can tell a token from a name.
SEALED_PREFIX = "sealed:v1:"
KEYS_TABLE = "tipster_keys"
#: How long an erase retries its checkpoint while other connections read an older snapshot.
CHECKPOINT_WAIT = 3.0
_CHECKPOINT_TRY_MS = 100
#: The advisory lock under which a PostgreSQL store's key table is created.
_KEYS_LOCK = 0x68_6C_6B_65_79_73  # "hlkeys"


def key_file_path(store: Path | None, key_file: Path | None) -> Path:
    """Where the master key is kept: `key_file` (HAZARDLOOP_CIPHER_KEY_FILE), else `<store>.key`
    beside a SQLite store."""
    if key_file is not None:
        return key_file.expanduser()
    if store is None:
        raise ValueError("a PostgreSQL store has no default key file")
    return store.with_name(store.name + ".key")


def load_master_key(
    setting: str | None, store: Path | None, key_file: Path | None = None, *, create: bool = True
) -> bytes | None:
    """The master key: HAZARDLOOP_CIPHER_KEY (base64 of 32 bytes), or the key file
    (`key_file`, HAZARDLOOP_CIPHER_KEY_FILE; by default `<store>.key` beside a SQLite store),
    created with mode 0600 on first use (not with `create` False: None when it is missing). A
    PostgreSQL store (`store` None) has no default."""
    if setting:
        try:
            key = base64.b64decode(setting, validate=True)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise StoreError("HAZARDLOOP_CIPHER_KEY must be the base64 of 32 random bytes")
        return key
    if key_file is not None or store is not None:
        path = key_file_path(store, key_file)
    else:
        raise StoreError(
            "a PostgreSQL store keeps no key file beside it: set HAZARDLOOP_CIPHER_KEY (base64 of "
            "32 random bytes) or HAZARDLOOP_CIPHER_KEY_FILE (a key file, created if missing)"
        )
    if not create and not path.exists():
        return None  # a read-only command makes no key: see KeylessVault
    try:
        _create_key_file(path)  # unless it exists
    except OSError as exc:
        raise StoreError(f"cannot create the key file {path}: {exc.strerror}") from exc
    try:
        data = _read_key_file(path)
    except OSError as exc:
        raise StoreError(f"cannot read the key file {path}: {exc.strerror}") from exc
    try:
        key = base64.b64decode(data, validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise StoreError(f"the key file {path} is damaged: it must hold 32 bytes in base64")
    return key


#: Errors of `os.link` on a file system without hard links (then the key file is written in
#: place, as before 2026-11-29).
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV})


def _create_key_file(path: Path) -> None:
    """Create the key file (mode 0600) with a new key, unless it exists.

    The key is written (and synced) to a file of its own and linked in under the final name,
    so that the file appears whole or not at all: a process opening a new store beside another
    one doing the same reads the key the other wrote, never a file still empty, and the two
    never hold different keys (`link` fails for the second). On a file system without hard
    links the file is created in place (O_EXCL: still one key), and a reader that finds it
    empty waits for its key (`_read_key_file`).
    """
    if path.exists():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    key = base64.b64encode(secrets.token_bytes(32)) + b"\n"
    _write_new(tmp, key)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process's came first: that one
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            with contextlib.suppress(FileExistsError):  # as above
                _write_new(path, key)
    finally:
        tmp.unlink(missing_ok=True)


def _write_new(path: Path, data: bytes) -> None:
    """Create `path` (mode 0600; FileExistsError if it exists) holding `data`, synced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_key_file(path: Path, wait: float = 2.0) -> bytes:
    """The key file's content; an empty file (another process is writing it in place, on a
    file system without hard links) is read again for up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        data = path.read_bytes().strip()
        if data or time.monotonic() >= deadline:
            return data
        time.sleep(0.01)


#: Opens a connection to a PostgreSQL store in autocommit mode (e.g. the engine's own pool).
PgConnect = Callable[[], AbstractContextManager[Any]]


class KeylessVault:
    """The vault of a store whose key file is missing, for the read-only commands, which create
    no key (a new one would never open the tips sealed with the real one, and would seal new
    tips with the wrong one): anything that needs the key says which file is missing."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file

    def _missing(self) -> StoreError:
        return StoreError(
            f"the tipster key file {self.key_file} is missing: confidential reporters cannot be "
            "opened or sealed; restore it beside the store or name it in "
            "HAZARDLOOP_CIPHER_KEY_FILE (a read-only command creates no key)"
        )

    def seal(self, hazard_id: str, text: str) -> str:
        raise self._missing()

    def open(self, hazard_id: str, token: str) -> str | None:
        raise self._missing()

    def erase(self, hazard_id: str) -> Erasure:
        raise self._missing()

    def digest(self, text: str) -> str:
        raise self._missing()


class TipsterVault:
    """Seals, opens and erases confidential reporters, one data key per case.

    The keys live in the store: a SQLite file (`store`), or a PostgreSQL database reached
    through `pg_connect` (the engine's own connection pool).
    """

    def __init__(
        self, store: Path | None, master_key: bytes, *, pg_connect: PgConnect | None = None
    ) -> None:
        if (store is None) == (pg_connect is None):
            raise ValueError("a vault lives in a SQLite file or in a PostgreSQL store")
        self.store = store
        self._pg = pg_connect
        self._master = AESGCM(master_key)
        #: The keyed digests' key: derived from the master key, never the master key itself.
        self._digest_key = hmac.digest(
            master_key, b"hazard-loop idempotency fingerprint v1", "sha256"
        )
        if self._pg is not None:
            # A table that is there is not created again: a runtime role that may not create
            # tables (the schema made by `hazardloop db init` as its owner) opens the store.
            # Engines opening a fresh store at once: PostgreSQL does not serialise
            # CREATE TABLE IF NOT EXISTS among themselves, so one at a time.
            with self._pg_cursor("open the tipster keys") as cur, cur.connection.transaction():
                cur.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (KEYS_TABLE,))
                row = cur.fetchone()
                if not (row["present"] if isinstance(row, dict) else row[0]):
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_KEYS_LOCK,))
                    cur.execute(
                        f"CREATE TABLE IF NOT EXISTS {KEYS_TABLE} ("
                        "hazard_id text PRIMARY KEY, wrapped bytea NOT NULL)"
                    )
            return
        conn = self._connect()
        try:
            with conn:
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {KEYS_TABLE} ("
                    "hazard_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL)"
                )
        finally:
            conn.close()

    @contextmanager
    def _pg_cursor(self, doing: str) -> Iterator[Any]:
        import psycopg
        from eventsourcing.persistence import PersistenceError

        assert self._pg is not None
        try:
            with self._pg() as conn, conn.cursor() as cur:
                yield cur
        except (psycopg.Error, PersistenceError) as exc:
            raise StoreError(f"cannot {doing}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.store or "", timeout=30)
            conn.execute("PRAGMA secure_delete=ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the tipster keys in {self.store}: {exc}") from exc
        return conn

    def _wrapped(self, hazard_id: str, *, create: bool) -> bytes | None:
        new = b""
        if create:
            # Written before the event: a crash in between leaves an unused key, never
            # an event nobody can read. A retried discover finds and reuses it.
            nonce = secrets.token_bytes(12)
            new = nonce + self._master.encrypt(nonce, secrets.token_bytes(32), hazard_id.encode())
        if self._pg is not None:
            with self._pg_cursor("read the tipster keys") as cur:
                if create:
                    cur.execute(
                        f"INSERT INTO {KEYS_TABLE} (hazard_id, wrapped) VALUES (%s, %s) "
                        "ON CONFLICT (hazard_id) DO NOTHING",
                        (hazard_id, new),
                    )
                cur.execute(f"SELECT wrapped FROM {KEYS_TABLE} WHERE hazard_id=%s", (hazard_id,))
                row = cur.fetchone()
            return (
                None if row is None else bytes(row["wrapped"] if isinstance(row, dict) else row[0])
            )
        conn = self._connect()
        try:
            with conn:
                if create:
                    conn.execute(
                        f"INSERT OR IGNORE INTO {KEYS_TABLE} (hazard_id, wrapped) VALUES (?, ?)",
                        (hazard_id, new),
                    )
                found = conn.execute(
                    f"SELECT wrapped FROM {KEYS_TABLE} WHERE hazard_id=?", (hazard_id,)
                ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the tipster keys: {exc}") from exc
        finally:
            conn.close()
        return None if found is None else bytes(found[0])

    def _data_key(self, hazard_id: str, *, create: bool) -> bytes | None:
        blob = self._wrapped(hazard_id, create=create)
        if blob is None:
            return None
        try:
            return self._master.decrypt(blob[:12], blob[12:], hazard_id.encode())
        except InvalidTag:
            raise StoreError(
                f"the tipster key of {hazard_id!r} does not open with this master key"
            ) from None

    def digest(self, text: str) -> str:
        """HMAC-SHA256 of `text` under a key derived from the master key (hex)."""
        return hmac.new(self._digest_key, text.encode("utf-8"), "sha256").hexdigest()

    def seal(self, hazard_id: str, text: str) -> str:
        """The token stored in place of `text` (fresh nonce each time)."""
        key = self._data_key(hazard_id, create=True)
        assert key is not None
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(key).encrypt(nonce, text.encode(), hazard_id.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, hazard_id: str, token: str) -> str | None:
        """The clear text of a token, or None once the case's key has been erased."""
        if not token.startswith(SEALED_PREFIX):
            return token
        key = self._data_key(hazard_id, create=False)
        if key is None:
            return None
        blob = base64.urlsafe_b64decode(token[len(SEALED_PREFIX) :])
        try:
            return AESGCM(key).decrypt(blob[:12], blob[12:], hazard_id.encode()).decode()
        except InvalidTag:
            raise StoreError(f"the sealed reporter of {hazard_id!r} has been altered") from None

    def erase(self, hazard_id: str, *, wait: float = CHECKPOINT_WAIT) -> Erasure:
        """Destroy the case's data key for good, then get its old bytes out of the store's files.

        On SQLite the key row is deleted (`secure_delete` zeroes it) and the WAL checkpointed
        back into the file and truncated, retried for up to `wait` seconds while another
        connection still reads an older snapshot (a running server, a report); if one still
        does, the key is destroyed all the same but its old bytes may remain in the files until
        that reader finishes: `final_on_disk` False, and erasing again then finishes the job.
        """
        if self._pg is not None:
            with self._pg_cursor(f"erase the tipster key of {hazard_id!r}") as cur:
                cur.execute(f"DELETE FROM {KEYS_TABLE} WHERE hazard_id=%s", (hazard_id,))
                gone = cur.rowcount
                # Rewrite the table so the deleted row's bytes leave its files (autocommit).
                # VACUUM FULL waits for its exclusive lock: done, the old files are unlinked.
                cur.execute(f"VACUUM FULL {KEYS_TABLE}")
            return Erasure(erased=bool(gone), final_on_disk=True)
        conn = self._connect()
        try:
            with conn:
                gone = conn.execute(
                    f"DELETE FROM {KEYS_TABLE} WHERE hazard_id=?", (hazard_id,)
                ).rowcount
            final = _checkpoint(conn, wait)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot erase the tipster key of {hazard_id!r}: {exc}") from exc
        finally:
            conn.close()
        return Erasure(erased=bool(gone), final_on_disk=final)


def _checkpoint(conn: sqlite3.Connection, wait: float) -> bool:
    """Copy the WAL back into the file and truncate it; True once done, False if a reader of an
    older snapshot still holds it back after `wait` seconds of retrying (the result row's
    `busy` column: 1 when the checkpoint could not finish)."""
    conn.execute(f"PRAGMA busy_timeout={_CHECKPOINT_TRY_MS}")  # each try short; we retry
    deadline = time.monotonic() + wait
    while True:
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_CHECKPOINT_TRY_MS / 1000)
