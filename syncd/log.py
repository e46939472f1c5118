"""Logging: structlog to stderr, JSON lines (journald-friendly) or console.

Secrets never reach a log call: config objects hold where a secret comes from
(`Secret`), never its value, and connectors never log credentials. As a second
guard, values of keys that look like secrets are masked.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = ("password", "token", "secret", "authorization", "cookie")


def _mask(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event):
        if any(s in k.lower() for s in _SECRET_KEYS):
            event[k] = "***"
    return event


def setup(fmt: str = "console", verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _mask,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries (urllib3, caldav) log through stdlib logging: keep them quiet
    # unless -v, and even then never at DEBUG (their DEBUG dumps headers).
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for name in ("caldav", "urllib3", "niquests", "requests"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
