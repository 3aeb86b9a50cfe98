"""A throwaway PostgreSQL server for the tests and benchmarks: initdb, pg_ctl, removed afterwards.

PostgreSQL refuses to run as root, so when we are root the server runs as an unprivileged user
(`postgres` if the machine has one, else `nobody`) through `runuser`. The cluster lives in a
fresh temporary directory, listens on 127.0.0.1 on a free port (and on a private socket
directory), trusts local connections, and is stopped and deleted on exit.

    with PostgresServer() as pg:
        url = pg.url("hazards")          # postgresql://hazardloop@127.0.0.1:PORT/hazards

`python -m tests.pgserver` starts one for a development session and prints its URL until
stopped (Ctrl-C). Set HAZARDLOOP_TEST_PG_URL to a server of your own to use it instead
(`server_url()`); then nothing is started.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresServer", "pg_available", "server_url"]

USER = "hazardloop"
#: Settings for a test server: durability traded for speed (a crash loses a throwaway cluster).
FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def pg_available() -> bool:
    """Whether initdb and pg_ctl are on PATH (they are on these machines and in CI)."""
    return shutil.which("initdb") is not None and shutil.which("pg_ctl") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    """The unprivileged user to run the server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run as")


class PostgresServer:
    """One PostgreSQL cluster, started on enter and removed on exit."""

    def __init__(self, *, durable: bool = False, max_connections: int = 200) -> None:
        self.durable = durable
        self.max_connections = max_connections
        self.port = 0
        self.root: Path | None = None
        self.user = _run_as()

    # ------------------------------------------------------------ paths
    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        assert self.root is not None
        return self.root / "run"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    # ------------------------------------------------------------ running
    def _cmd(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *argv] if self.user else list(argv)

    def _run(self, *argv: str) -> None:
        done = subprocess.run(self._cmd(*argv), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {done.stderr.strip() or done.stdout}")

    def start(self) -> PostgresServer:
        if not pg_available():
            raise RuntimeError("PostgreSQL is not installed: initdb/pg_ctl are not on PATH")
        self.root = Path(tempfile.mkdtemp(prefix="hazardloop-pg-"))
        self.sockets.mkdir()
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chmod(self.root, 0o755)
            for path in (self.root, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")  # fmt: skip
        self.port = _free_port()
        options = [
            f"-p {self.port}",
            f"-k {self.sockets}",
            "-c listen_addresses=127.0.0.1",
            f"-c max_connections={self.max_connections}",
        ]
        if not self.durable:
            options += [f"-c {o}" for o in FAST]
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", " ".join(options), "-w", "-t", "60", "start")  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.root is None:
            return
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "immediate") -> None:
        """Stop the server (`immediate`: as if it crashed) and start it again on the same port."""
        self.stop(mode)
        options = [f"-p {self.port}", f"-k {self.sockets}", "-c listen_addresses=127.0.0.1",
                   f"-c max_connections={self.max_connections}"]  # fmt: skip
        if not self.durable:
            options += [f"-c {o}" for o in FAST]
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),  # type: ignore[operator]
                  "-o", " ".join(options), "-w", "-t", "60", "start")  # fmt: skip

    def remove(self) -> None:
        self.stop("immediate")
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def create_database(self, name: str) -> str:
        """Create a database (template0, UTF-8) and return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.remove()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


@contextlib.contextmanager
def server_url() -> Iterator[str]:
    """The URL of a server's maintenance database: HAZARDLOOP_TEST_PG_URL's, or a throwaway one."""
    given = os.environ.get("HAZARDLOOP_TEST_PG_URL")
    if given:
        yield given
        return
    with PostgresServer() as pg:
        yield pg.url()


def main() -> None:
    with PostgresServer(durable="--durable" in sys.argv) as pg:
        print(pg.url(), flush=True)
        stop = False

        def _stop(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        try:
            while not stop:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
