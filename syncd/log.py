"""Logging: structlog to stderr, JSON lines (journald-friendly) or console.

Secrets never reach a log call: config objects hold where a secret comes from
(`Secret`), never its value, and connectors never log credentials. Three more
guards, for what a mistake or a library could still let through:

* values of keys that look like secrets are masked (`password=…` → `***`);
* every secret value read at run time is registered (`register_secret`) and
  replaced by `***` wherever it appears, in structlog events and in records
  of libraries logging through the standard `logging` module;
* tracebacks are plain (no local variables: rich's pretty tracebacks, which
  structlog uses when rich is installed, print locals such as a password).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = ("password", "token", "secret", "authorization", "cookie")
_MASK = "***"
# Shorter values would mask ordinary words; real passwords and tokens are longer.
_MIN_SECRET = 4

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask `value` wherever it would be logged from now on."""
    if value and len(value) >= _MIN_SECRET:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for s in known:
        if s in text:
            text = text.replace(s, _MASK)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value


def _mask(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event):
        if any(s in k.lower() for s in _SECRET_KEYS):
            event[k] = _MASK
        else:
            event[k] = _scrub(event[k])
    return event


class _RedactFilter(logging.Filter):
    """For records of libraries (urllib3, caldav, google, msal)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a library's broken format string: keep the record
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class _RedactFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _Stderr:
    """Whatever sys.stderr is at the time of writing (it is replaced under
    test runners and by daemonising), not the one set up first."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def setup(fmt: str = "console", verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors += [structlog.processors.format_exc_info, _mask,
                       structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.processors.format_exc_info, _mask,
                       structlog.dev.ConsoleRenderer(
                           colors=sys.stderr.isatty(),
                           exception_formatter=structlog.dev.plain_traceback)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # Libraries (urllib3, caldav) log through stdlib logging: keep them quiet
    # unless -v, and even then never at DEBUG (their DEBUG dumps headers).
    root = logging.getLogger()
    if not any(getattr(h, "_syncd", False) for h in root.handlers):
        handler = logging.StreamHandler(_Stderr())
        handler.setFormatter(_RedactFormatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_RedactFilter())
        handler._syncd = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in ("caldav", "urllib3", "urllib3_future", "niquests", "requests", "httplib2",
                 "googleapiclient", "google", "msal"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
