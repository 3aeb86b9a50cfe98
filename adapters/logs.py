"""Logging, configured once at the edge: structlog, JSON lines when stderr is not a terminal.

`loop/` never logs; the CLI and the scripts log one line per command through `command_logger`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger"]

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
