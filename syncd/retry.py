"""Retries for remote requests, backoff per source, and the request counter.

Two levels, as rclone splits them (retryable vs fatal errors, low-level
retries inside one operation, then the operation itself retried later):

* **Within a cycle** (`call`): one HTTP request is tried again after a
  transport failure (connection refused or reset, timeout, a body cut short)
  or a status a later try may fix (408, 425, 429, 500, 502, 503, 504), with
  exponential backoff and full jitter (tenacity), honouring `Retry-After`
  (RFC 9110 §10.2.3) as the minimum wait. Only idempotent methods are
  retried (RFC 9110 §9.2.2): GET, HEAD, PROPFIND, REPORT, and PUT/DELETE,
  which syncd always sends with `If-None-Match: *` or `If-Match`, so a retry
  of a write that did land meets 412 and the caller adopts or re-reads
  instead of writing twice. MKCALENDAR and POST are never retried here.
  401/403/404/412 are never retried: the user or the caller must act.
* **Across cycles** (`record_outcome`, `due`): a source whose read failed is
  skipped by the daemon until its `next_try`, doubling from `poll_interval`
  up to an hour (at least the server's `Retry-After`, at least 15 minutes
  when the error needs the user). The other sources and the calendar go on
  as usual; `syncd status` shows `last_error` and `next_try`.

A stop request (`interrupt()`, from SIGTERM) ends any wait at once: the
request in flight finishes, the next one is not tried again.
"""

from __future__ import annotations

import json
import random
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TypeVar

import structlog
import tenacity

from syncd.errors import AuthError, RemoteError

log = structlog.get_logger("syncd")
T = TypeVar("T")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND", "REPORT", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Policy:
    attempts: int = 4  # the first try and three more
    initial: float = 0.5  # seconds before the first retry, doubling
    max_wait: float = 8.0  # longest computed wait between two tries
    max_retry_after: float = 30.0  # a longer Retry-After is left to the per-source backoff
    deadline: float = 60.0  # no new try starts after this many seconds


DEFAULT = Policy()


class ServerBusy(RemoteError):
    """The server asked us to come back later (429, or 503 with Retry-After)."""

    def __init__(self, message: str, hint: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, hint, retryable=True)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# ---------------------------------------------------------------------------
# Request counter (the cycle's summary line reports requests made)

_count_lock = threading.Lock()
_count = 0


def count_request() -> None:
    global _count
    with _count_lock:
        _count += 1


def requests_made() -> int:
    """Requests sent by this process so far (every try counts)."""
    with _count_lock:
        return _count


# ---------------------------------------------------------------------------
# Stop requests and progress (the daemon's signals and watchdog)
#
# `interrupt()` is called from a signal handler, so it only assigns a flag:
# taking a lock there (threading.Event.set, a logger's write lock) could
# deadlock with the code the signal interrupted. The daemon installs a sleep
# that a signal ends early (`set_sleep`, a select() on its wakeup pipe).

_stop = False
_sleep_fn: Callable[[float], None] = time.sleep
_progress: list[Callable[[], None]] = []


def interrupt() -> None:
    """Stop waiting between tries (SIGTERM): the last failure is raised at once."""
    global _stop
    _stop = True


def reset_interrupt() -> None:
    global _stop
    _stop = False


def interrupted() -> bool:
    return _stop


def set_sleep(fn: Callable[[float], None] | None) -> None:
    """The wait between tries; it may return early (a signal), `call` re-checks."""
    global _sleep_fn
    _sleep_fn = fn or time.sleep


def on_progress(callback: Callable[[], None] | None) -> None:
    """Call `callback` before every request (the daemon kicks its watchdog)."""
    _progress.clear()
    if callback is not None:
        _progress.append(callback)


class _Interrupted(Exception):
    pass


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not _stop:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        _sleep_fn(left)
    raise _Interrupted


# ---------------------------------------------------------------------------
# One request, with retries


def is_tls_failure(e: BaseException) -> bool:
    """Whether a transport error is a failed TLS verification or handshake
    (never worth another try), looking through the exception's causes."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError) or type(cur).__name__ in ("SSLError",
                                                                    "CertificateError"):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def retry_after_of(e: BaseException) -> float | None:
    return e.retry_after if isinstance(e, ServerBusy) else None


def call(
    fn: Callable[[], T],
    *,
    method: str,
    result_delay: Callable[[T], float | None] = lambda _r: None,
    what: str = "",
    policy: Policy = DEFAULT,
) -> T:
    """Run `fn` (one HTTP request) and try it again while that is safe and useful.

    `fn` raises `RemoteError` for a failure (`retryable` says whether another
    try may succeed; a `ServerBusy` carries the server's `Retry-After`).
    `result_delay(result)` is None for a final answer, or for an answer worth
    another try (a 5xx status) the seconds the server asked us to wait (0 when
    it did not say). When the tries run out, the last answer is returned or
    the last error raised, so callers interpret it exactly as without retries.
    """
    idempotent = method.upper() in IDEMPOTENT
    last: dict[str, object] = {}

    def attempt() -> T:
        for cb in _progress:
            cb()
        count_request()
        last.clear()
        try:
            result = fn()
        except BaseException as e:
            last["error"] = e
            raise
        last["result"] = result
        return result

    def wanted_delay(state: tenacity.RetryCallState) -> float | None:
        """The server's wish for the next try, or None when there is none to make."""
        if not idempotent or _stop:
            return None
        out = state.outcome
        if out is None:
            return None
        if out.failed:
            e = out.exception()
            if not isinstance(e, RemoteError) or isinstance(e, AuthError) or not e.retryable:
                return None
            delay = retry_after_of(e) or 0.0
        else:
            got = result_delay(out.result())
            if got is None:
                return None
            delay = got
        return delay if delay <= policy.max_retry_after else None

    def should_retry(state: tenacity.RetryCallState) -> bool:
        return wanted_delay(state) is not None

    jittered = tenacity.wait_random_exponential(multiplier=policy.initial, max=policy.max_wait)

    def wait(state: tenacity.RetryCallState) -> float:
        # Full jitter (AWS architecture blog, "Exponential Backoff and Jitter"),
        # never shorter than what the server asked for.
        delay = max(jittered(state), wanted_delay(state) or 0.0)
        log.info("retrying request", what=what or method, attempt=state.attempt_number,
                 wait=round(delay, 2), error=_describe(state))
        return delay

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts)
        | tenacity.stop_after_delay(policy.deadline),
        wait=wait,
        retry=should_retry,
        sleep=_sleep,
        reraise=True,
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )
    try:
        return retrying(attempt)
    except _Interrupted:
        if "error" in last:
            raise last["error"] from None  # type: ignore[misc]
        return last["result"]  # type: ignore[return-value]


def _describe(state: tenacity.RetryCallState) -> str:
    out = state.outcome
    if out is None:
        return ""
    if out.failed:
        e = out.exception()
        return e.message if isinstance(e, RemoteError) else type(e).__name__
    return "retryable answer"


# ---------------------------------------------------------------------------
# Backoff per source, across cycles (kept in the state's kv table)

MAX_BACKOFF = timedelta(hours=1)
FATAL_BACKOFF = timedelta(minutes=15)  # an error that needs the user
MAX_RETRY_AFTER = timedelta(hours=24)
_PREFIX = "backoff:"


def key_for_source(name: str) -> str:
    return f"{_PREFIX}source:{name}"


KEY_CALENDAR = f"{_PREFIX}calendar"


@dataclass(frozen=True)
class Backoff:
    failures: int
    next_try: datetime


def next_delay(failures: int, poll_interval: float, error: BaseException,
               rng: random.Random | None = None) -> timedelta:
    """How long to leave a source alone after its `failures`-th failure in a row."""
    base = timedelta(seconds=poll_interval) * (1 << min(failures - 1, 20))
    delay = min(base, MAX_BACKOFF)
    if isinstance(error, RemoteError) and not error.retryable:
        delay = max(delay, min(FATAL_BACKOFF, MAX_BACKOFF))
    # ±10 % so that many daemons (or sources) do not come back in step.
    jitter: float = 0.9 + 0.2 * (rng or random).random()
    delay = delay * jitter
    after = retry_after_of(error)
    if after is not None:
        delay = max(delay, min(timedelta(seconds=after), MAX_RETRY_AFTER))
    return delay


def record_outcome(db: sqlite3.Connection, key: str, error: BaseException | None,
                   poll_interval: float, now: datetime | None = None) -> None:
    """Inside the caller's transaction: clear the backoff after a success,
    else count the failure and set the next try."""
    if error is None:
        db.execute("DELETE FROM kv WHERE key=?", (key,))
        return
    now = now or datetime.now(UTC)
    old = _load_one(db, key)
    failures = (old.failures if old else 0) + 1
    nxt = now + next_delay(failures, poll_interval, error)
    db.execute(
        "INSERT INTO kv(key, value) VALUES(?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, json.dumps({"failures": failures, "next_try": nxt.isoformat()})),
    )


def load(db: sqlite3.Connection) -> dict[str, Backoff]:
    out: dict[str, Backoff] = {}
    for row in db.execute("SELECT key, value FROM kv WHERE key LIKE ?", (_PREFIX + "%",)):
        b = _parse(row[1])
        if b is not None:
            out[str(row[0])] = b
    return out


def _load_one(db: sqlite3.Connection, key: str) -> Backoff | None:
    row = db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
    return _parse(row[0]) if row else None


def _parse(value: str | None) -> Backoff | None:
    try:
        d = json.loads(value or "")
        return Backoff(int(d["failures"]), datetime.fromisoformat(d["next_try"]))
    except (ValueError, KeyError, TypeError):
        return None


def due(backoffs: dict[str, Backoff], key: str, now: datetime | None = None,
        slack: timedelta = timedelta(0)) -> bool:
    b = backoffs.get(key)
    return b is None or b.next_try - slack <= (now or datetime.now(UTC))


def clear_waits(db: sqlite3.Connection) -> None:
    """Forget every next_try (a reloaded config may have fixed the problem);
    the failure counts stay, so a source still broken backs off as before."""
    for key, b in load(db).items():
        db.execute("UPDATE kv SET value=? WHERE key=?", (json.dumps(
            {"failures": b.failures, "next_try": datetime.now(UTC).isoformat()}), key))
