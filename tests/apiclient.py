"""Helpers for the HTTP API's tests: a synchronous in-process client (httpx over ASGI), tokens,
and `hazardloop serve` in a subprocess on a free port."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
from fastapi import FastAPI

from adapters.embed import EmbeddedEngine


class ApiClient:
    """Sends requests to the ASGI app, no server, no sockets; each call waits for its answer."""

    def __init__(self, app: FastAPI, token: str | None = None) -> None:
        self.app = app
        self.token = token

    def as_(self, token: str | None) -> ApiClient:
        """The same app, with another token (None: no Authorization header)."""
        return ApiClient(self.app, token)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hazardloop") as c:
                return await c.request(method, url, headers=headers, **kwargs)

        return anyio.run(send)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


def issue(
    engine: EmbeddedEngine,
    actor: str,
    *roles: str,
    grids: tuple[str, ...] = (),
    unit: str | None = None,
) -> str:
    """A fresh API token for `actor` with `roles`."""
    _, token = engine.tokens.create(actor, roles, grids, unit)
    return token


ROOT = Path(__file__).resolve().parents[1]
#: The environment the server and the CLI run in (quiet logs, the venv's tools on PATH).
ENV = {
    "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
    "HAZARDLOOP_LOG_LEVEL": "warning",
    "PYTHONPATH": str(ROOT),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def hazardloop(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        capture_output=True, text=True, check=False, cwd=cwd or ROOT, env=_env(),
    )  # fmt: skip


def _env() -> dict[str, str]:
    """ENV, plus what a PostgreSQL test store needs (its master key file)."""
    from tests.conftest import store_env

    return {**ENV, **store_env()}


@contextmanager
def running_server(db: Path | str, *, cwd: Path | None = None) -> Iterator[str]:
    """`hazardloop serve` on a free port in a subprocess; yields its base URL once it answers,
    then stops it with SIGTERM and checks it exits cleanly."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "adapters.cli", "serve", "--db", str(db), "--port", str(port)],
        cwd=cwd or ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the server stopped: {process.stderr.read() if process.stderr else ''}"
                )
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer within 30 s")
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0, process.returncode
