"""Logging, configured once at the edge: structlog, JSON lines when stderr is not a terminal.

`loop/` never logs; the CLI and the scripts log one line per command through `command_logger`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from loop.application import Result

__all__ = ["configure_logging", "get_logger", "log_result"]

_configured = False


def configure_logging(level: str | None = None, *, json: bool | None = None) -> None:
    """Configure structlog for this process (idempotent). Level from HAZARDLOOP_LOG_LEVEL."""
    global _configured
    name = (level or os.environ.get("HAZARDLOOP_LOG_LEVEL") or "info").upper()
    numeric = logging.getLevelName(name)
    if not isinstance(numeric, int):
        numeric = logging.INFO
    as_json = (not sys.stderr.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str = "hazardloop") -> Any:
    """A bound structlog logger (configuring defaults first if nobody has)."""
    if not _configured:
        configure_logging()
    return structlog.get_logger(name)


def log_result(log: Any, result: Result, line: int | None = None) -> None:
    """One line per command, the same from the CLI and the HTTP API (docs/operations.md, Logs):
    the case (`hazard_id`, or the organisation subject's kind), command, actor, outcome (the
    event recorded or the error code), duration, and the input line or batch index if any."""
    subject = result.subject
    fields: dict[str, Any] = {
        "hazard_id" if subject is None or subject.kind == "hazard" else subject.kind: (
            subject.id if subject is not None else None
        ),
        "command": result.extra.get("command"),
        "actor": result.extra.get("actor"),
        "outcome": result.event if result.ok else result.error.code if result.error else None,
        "duration_ms": result.extra.get("duration_ms"),
    }
    if line is not None:
        fields["line"] = line
    if result.replayed:
        fields["replayed"] = True
    if result.ok:
        log.info("command", **fields)
    else:
        log.warning("command refused", **fields)
