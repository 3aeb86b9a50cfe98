"""Confidential tipsters: a public tip's reporter, sealed with a key of its own case.

Each case that has a confidential reporter gets a random 256-bit data key; the reporter is
stored in the event only as AES-GCM ciphertext under that key (bound to the hazard id). Data keys
live in the store's `tipster_keys` table, themselves wrapped (AES-GCM) with the master key from
settings (HAZARDLOOP_CIPHER_KEY) or from a key file created beside the store. Erasing a tipster
destroys the case's data key for good (SQLite `secure_delete`, WAL checkpointed): the event and
every hash chain over its ciphertext stay exactly as they were, but nobody can read the name.
"""

from __future__ import annotations

import base64
import os
import secrets
import sqlite3
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from loop.errors import StoreError

__all__ = ["SEALED_PREFIX", "TipsterVault", "load_master_key"]

#: Every sealed value starts with this, so readers can tell a token from a name.
SEALED_PREFIX = "sealed:v1:"
KEYS_TABLE = "tipster_keys"


def load_master_key(setting: str | None, store: Path) -> bytes:
    """The master key: HAZARDLOOP_CIPHER_KEY (base64 of 32 bytes), or `<store>.key`, created
    with mode 0600 on first use."""
    if setting:
        try:
            key = base64.b64decode(setting, validate=True)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise StoreError("HAZARDLOOP_CIPHER_KEY must be the base64 of 32 random bytes")
        return key
    path = store.with_name(store.name + ".key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        data = path.read_bytes().strip()
        try:
            key = base64.b64decode(data, validate=True)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise StoreError(
                f"the key file {path} is damaged: it must hold 32 bytes in base64"
            ) from None
        return key
    except OSError as exc:
        raise StoreError(f"cannot create the key file {path}: {exc.strerror}") from exc
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(key) + b"\n")
    return key


class TipsterVault:
    """Seals, opens and erases confidential reporters, one data key per case."""

    def __init__(self, store: Path, master_key: bytes) -> None:
        self.store = store
        self._master = AESGCM(master_key)
        conn = self._connect()
        try:
            with conn:
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {KEYS_TABLE} ("
                    "hazard_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL)"
                )
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.store, timeout=30)
            conn.execute("PRAGMA secure_delete=ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the tipster keys in {self.store}: {exc}") from exc
        return conn

    def _data_key(self, hazard_id: str, *, create: bool) -> bytes | None:
        conn = self._connect()
        try:
            with conn:
                if create:
                    # Written before the event: a crash in between leaves an unused key, never
                    # an event nobody can read. A retried discover finds and reuses it.
                    nonce = secrets.token_bytes(12)
                    wrapped = nonce + self._master.encrypt(
                        nonce, secrets.token_bytes(32), hazard_id.encode()
                    )
                    conn.execute(
                        f"INSERT OR IGNORE INTO {KEYS_TABLE} (hazard_id, wrapped) VALUES (?, ?)",
                        (hazard_id, wrapped),
                    )
                row = conn.execute(
                    f"SELECT wrapped FROM {KEYS_TABLE} WHERE hazard_id=?", (hazard_id,)
                ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the tipster keys: {exc}") from exc
        finally:
            conn.close()
        if row is None:
            return None
        blob = bytes(row[0])
        try:
            return self._master.decrypt(blob[:12], blob[12:], hazard_id.encode())
        except InvalidTag:
            raise StoreError(
                f"the tipster key of {hazard_id!r} does not open with this master key"
            ) from None

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

    def erase(self, hazard_id: str) -> bool:
        """Destroy the case's data key for good; True if there was one."""
        conn = self._connect()
        try:
            with conn:
                gone = conn.execute(
                    f"DELETE FROM {KEYS_TABLE} WHERE hazard_id=?", (hazard_id,)
                ).rowcount
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot erase the tipster key of {hazard_id!r}: {exc}") from exc
        finally:
            conn.close()
        return bool(gone)
