"""A webhook receiver for the tests: a real HTTP server on loopback, in a thread of the test.

It can be up (answering `status`), slow (`delay` per request) or down (not listening at all),
and records every request it gets: headers, the raw body, and whether the signature verified
with the Python function of docs/subscriptions.md.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "subscriptions.md"


def doc_blocks(language: str) -> list[str]:
    """The fenced code blocks of docs/subscriptions.md in `language`, in order."""
    text = DOC.read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)\n```", text, re.S)


def doc_verify() -> Callable[[str, str, bytes, str], bool]:
    """`verify(secret, timestamp, body, signature)` exactly as the docs' receiver defines it."""
    namespace: dict[str, Any] = {"__name__": "doc_receiver"}
    source = next(b for b in doc_blocks("python") if "def verify(" in b)
    exec(compile(source, str(DOC), "exec"), namespace)
    verify: Callable[[str, str, bytes, str], bool] = namespace["verify"]
    return verify


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (the worker timed out, or was killed): nothing to report


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def position(self) -> int:
        return int(self.headers["X-Hazardloop-Event-Id"])

    @property
    def item(self) -> Any:
        return orjson.loads(self.body)


class Receiver:
    """Records deliveries; `start()` (up) and `stop()` (down) may be called again and again."""

    def __init__(self, port: int | None = None, secret: str = "", status: int = 204) -> None:
        self.port = port or free_port()
        self.secret = secret
        self.status = status
        self.delay = 0.0
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        self._verify = doc_verify()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.delay:
                    time.sleep(receiver.delay)
                headers = dict(self.headers.items())
                ok = receiver._verify(
                    receiver.secret,
                    headers.get("X-Hazardloop-Timestamp", ""),
                    body,
                    headers.get("X-Hazardloop-Signature", ""),
                )
                status = receiver.status
                if 200 <= status < 300:
                    with receiver.lock:
                        receiver.deliveries.append(Delivery(headers, body, ok))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = _QuietServer(("127.0.0.1", self.port), Handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def positions(self) -> list[int]:
        with self.lock:
            return [d.position for d in self.deliveries]

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


# -------------------------------------------------------------- a workload

TIPSTER = "举报人李秀兰"  # a public tip's reporter: must stay sealed in the feed and deliveries


def case_commands(prefix: str, count: int, day: int = 2) -> list[dict[str, Any]]:
    """Commands for `count` cases, interleaved step by step (so the log mixes cases): discover,
    report, assign, and for some a regrade. Grids D01-S01-C01…D01-S03-C01; every fourth case is
    major; the first is a public tip. All before the test clock (2026-11-20 18:00 +08:00)."""

    def at(step: int, i: int) -> str:
        return f"2026-11-{day:02d}T{8 + step:02d}:{i % 60:02d}:00+08:00"

    ids = [f"{prefix}-{i:03d}" for i in range(count)]
    out: list[dict[str, Any]] = []
    for i, hid in enumerate(ids):
        discover: dict[str, Any] = {
            "command": "discover", "hazard_id": hid, "actor": "wang.grid", "at": at(0, i),
            "grid": f"D01-S0{i % 3 + 1}-C01", "category": "fire",
            "grade": "major" if i % 4 == 0 else "general", "title": f"case {hid}",
        }  # fmt: skip
        if i == 0:
            discover |= {"source": "public_tip", "reporter": TIPSTER}
        out.append(discover)
    for i, hid in enumerate(ids):
        out.append({"command": "report", "hazard_id": hid, "actor": "wang.grid", "at": at(1, i)})
    for i, hid in enumerate(ids):
        assign: dict[str, Any] = {
            "command": "assign", "hazard_id": hid, "actor": "centre.li", "at": at(2, i),
            "unit": "fire-brigade", "person": "zhao",
        }  # fmt: skip
        if i % 4 == 0:
            assign["due"] = "2026-12-31T18:00:00+08:00"
        out.append(assign)
    for i, hid in enumerate(ids):
        if i % 4 == 2:
            out.append({
                "command": "regrade", "hazard_id": hid, "actor": "centre.li", "at": at(3, i),
                "grade": "major", "reason": "crowded site",
            })  # fmt: skip
    return out
