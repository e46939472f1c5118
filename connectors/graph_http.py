"""HTTP to Microsoft Graph (and to the identity platform, for MSAL): one
`requests.Session` per connector, wrapped with Graph's rules.

TLS and the environment
-----------------------
`trust_env` is off, so `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE` (set machine
wide on many hosts) can no longer override the session's `verify`, which is:
the configured `ca_bundle` when set; else the bundle those variables name
(what requests would have used); else certifi's. Proxies from the usual
`*_proxy` variables are still honoured, passed per request. Every request has
the configured timeout.

Graph's rules (research protocols.md §3.1, §3.6)
------------------------------------------------
* base: `graph_endpoint` (the root without version, national clouds) or
  https://graph.microsoft.com, then `/v1.0`; absolute URLs (nextLink,
  deltaLink) must lie under that base, or they are refused (a corrupted
  cursor must not send our bearer token elsewhere);
* 429, 503, 504: retried, waiting `Retry-After` (seconds, fractional allowed,
  or an HTTP date) or, without it, exponential backoff with full jitter
  (tenacity); a Retry-After longer than `max_wait` is not slept through: the
  cycle fails (retryable) and the next one tries again;
* transport errors are retried for GETs and for requests the caller marks
  idempotent (POST with a transactionId);
* at most 4 requests in flight per mailbox (Outlook's documented limit),
  shared by every connector of this process on that mailbox;
* 401: the token is refreshed once (MSAL) and the request repeated; a second
  401 is an `AuthError` naming `syncd auth NAME`;
* Graph's error JSON is mapped onto `syncd.errors`: 404 → NotFound, 409/412
  (ErrorIrresolvableConflict) → PreconditionFailed, 410 / SyncStateNotFound /
  resyncRequired → DeltaExpired (a CursorExpired with the Location header),
  403 → AuthError, 5xx and throttling → retryable RemoteError, other 4xx →
  non-retryable RemoteError;
* `send_many` (and `get_many`) send requests as JSON batches (`POST
  /$batch`, at most 20 steps: learn.microsoft.com/graph/json-batching): an
  idle cycle of a contact source is one HTTP request, expanded GETs and
  creates go 20 to a request; a step answered 401, 429 or 5xx is sent again
  alone, with the retries above. A batch holds up to 4 mailbox slots.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies
from tenacity import RetryCallState, Retrying
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_random_exponential

from syncd.errors import AuthError, CursorExpired, NotFound, PreconditionFailed, RemoteError
from syncd.settings import Connection

GRAPH_ROOT = "https://graph.microsoft.com"
MAX_CONCURRENCY = 4
RETRY_STATUSES = frozenset({429, 503, 504})
BATCH_MAX = 20  # steps per JSON batch (learn.microsoft.com/graph/json-batching)
_RESYNC_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})
_CONFLICT_CODES = frozenset({"errorirresolvableconflict", "resourcemodified"})


class DeltaExpired(CursorExpired):
    """A delta or skip token the server no longer knows (410 SyncStateNotFound,
    resyncRequired): restart from the initial query, `location` when given."""

    def __init__(self, message: str, location: str | None = None) -> None:
        super().__init__(message)
        self.location = location


class TokenProvider(Protocol):
    """Where bearer tokens come from (connectors.msal_auth.MsalTokens)."""

    @property
    def account_key(self) -> str: ...

    @property
    def sign_in_hint(self) -> str: ...

    def token(self, force_refresh: bool = False) -> str: ...


def verify_setting(conn: Connection) -> bool | str:
    """What TLS verification uses: `ca_bundle` wins over the environment."""
    if conn.ca_bundle is not None:
        return str(conn.ca_bundle)
    env = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return env or True


class GraphSession(requests.Session):
    """A Session that ignores the environment except proxies, verifies with
    `verify_setting`, and applies a default timeout to every request (also
    the ones MSAL makes through it)."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.trust_env = False
        self.verify = verify_setting(conn)
        self.default_timeout = conn.timeout

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        kwargs.setdefault("timeout", self.default_timeout)
        if "proxies" not in kwargs:
            u = url.decode() if isinstance(url, bytes) else url
            kwargs["proxies"] = get_environ_proxies(u)
        return super().request(method, url, *args, **kwargs)


class MailboxSlots:
    """Outlook's concurrent requests per mailbox (4), shared by every
    connector of this process on that mailbox. A JSON batch holds as many
    slots as steps, up to 4: Graph dispatches up to four steps of a batch
    to Outlook at once (learn.microsoft.com/graph/throttling-limits,
    "Outlook service limits"; learn.microsoft.com/answers/questions/1660054)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._free = MAX_CONCURRENCY

    @contextlib.contextmanager
    def hold(self, n: int = 1) -> Iterator[None]:
        n = max(1, min(n, MAX_CONCURRENCY))
        with self._cond:
            self._cond.wait_for(lambda: self._free >= n)
            self._free -= n
        try:
            yield
        finally:
            with self._cond:
                self._free += n
                self._cond.notify_all()


_slots: dict[str, MailboxSlots] = {}
_slots_lock = threading.Lock()


def mailbox_slots(key: str) -> MailboxSlots:
    with _slots_lock:
        slots = _slots.get(key)
        if slots is None:
            slots = _slots[key] = MailboxSlots()
        return slots


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait: `Retry-After` as (fractional) seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        ref = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
        return max(0.0, (when - ref).total_seconds())
    return max(0.0, secs) if secs == secs else None  # NaN is no answer


def graph_error(resp: requests.Response) -> tuple[str, str]:
    """(code, message) from Graph's error JSON (innerError codes ignored)."""
    try:
        body = resp.json()
    except ValueError:
        return "", (resp.text or "")[:200]
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("code") or ""), str(err.get("message") or "")
    return "", ""


class _WaitRetryAfter(wait_base):
    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        if outcome is not None and not outcome.failed:
            resp = outcome.result()
            if isinstance(resp, requests.Response):
                after = parse_retry_after(resp.headers.get("Retry-After"))
                if after is not None:
                    return after
        return float(self.fallback(retry_state))


@dataclass(frozen=True)
class Step:
    """One request of a JSON batch."""

    method: str
    path: str  # relative to the version, or a link the endpoint owns
    body: Any = None
    headers: Mapping[str, str] | None = None

    def as_json(self, sid: str, url: str) -> dict[str, Any]:
        out: dict[str, Any] = {"id": sid, "method": self.method, "url": url}
        headers = dict(self.headers or {})
        if self.body is not None:
            headers["Content-Type"] = "application/json"
            out["body"] = self.body
        if headers:
            out["headers"] = headers
        return out


@dataclass
class DeltaRound:
    """What one delta round returned: live items by id, removed ids, and the
    deltaLink for the next round."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    link: str = ""


class GraphClient:
    """Graph requests for one connector (`who` names it in messages)."""

    def __init__(
        self,
        conn: Connection,
        tokens: TokenProvider,
        *,
        who: str,
        session: GraphSession | None = None,
        max_tries: int = 5,
        max_wait: float = 60.0,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        root = (conn.graph_endpoint or GRAPH_ROOT).rstrip("/")
        self.base = f"{root}/v1.0"
        self.session = session or GraphSession(conn)
        self.tokens = tokens
        self.who = who
        self.max_tries = max_tries
        self.max_wait = max_wait
        self._backoff = wait_random_exponential(multiplier=backoff, max=30)
        self._sleep = sleep

    def close(self) -> None:
        self.session.close()

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("https://", "http://")):
            if not self.owns(path_or_url):
                raise RemoteError(
                    f"{self.who}: refusing a link outside {self.base}: {path_or_url[:80]}",
                    retryable=False,
                )
            return path_or_url
        return self.base + ("" if path_or_url.startswith("/") else "/") + path_or_url

    def owns(self, url: str) -> bool:
        b, u = urlsplit(self.base), urlsplit(url)
        return (u.scheme, u.netloc.lower()) == (b.scheme, b.netloc.lower()) and (
            u.path == b.path or u.path.startswith(b.path + "/")
        )

    # ---- requests -------------------------------------------------------------

    def get_json(self, path_or_url: str, *, params: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        resp = self.request("GET", path_or_url, params=params, headers=headers)
        return self.json_of(resp)

    def get_many(self, paths: Sequence[str], *, headers: Mapping[str, str] | None = None
                 ) -> list[dict[str, Any] | RemoteError]:
        """GETs in JSON batches (see `send_many`)."""
        return self.send_many([Step("GET", p, headers=headers) for p in paths])

    def send_many(self, steps: Sequence[Step]) -> list[dict[str, Any] | RemoteError]:
        """Requests in JSON batches: one HTTP request per 20. Each result is
        the step's JSON body, or the error `request` would have raised for it
        alone. Steps answered 401 (a token that expired in between), 429 or
        5xx, and steps missing from the answer, are sent again alone (with
        `request`'s retries): only steps safe to repeat belong in a batch
        (GETs; POSTs with a transactionId)."""
        out: list[dict[str, Any] | RemoteError] = []
        for lo in range(0, len(steps), BATCH_MAX):
            chunk = list(steps[lo:lo + BATCH_MAX])
            body = {"requests": [s.as_json(str(i), self._relative(s.path))
                                 for i, s in enumerate(chunk)]}
            answer = self.json_of(self.request("POST", "/$batch", json_body=body,
                                               idempotent=True))
            by_id = {str(a.get("id")): a for a in answer.get("responses") or []
                     if isinstance(a, dict)}
            for i, s in enumerate(chunk):
                step = by_id.get(str(i))
                sub = _step_response(step) if step is not None else None
                try:
                    if sub is None or sub.status_code == 401 \
                            or sub.status_code in RETRY_STATUSES or sub.status_code >= 500:
                        out.append(self.json_of(self.request(
                            s.method, s.path, json_body=s.body, headers=s.headers,
                            idempotent=True)))
                    elif sub.status_code < 300:
                        out.append(self.json_of(sub))
                    else:
                        out.append(self.error_for(sub, s.method, self.url(s.path)))
                except RemoteError as e:
                    out.append(e)
        return out

    def delta_round(self, start: str, headers: Mapping[str, str], what: str,
                    first_page: dict[str, Any] | RemoteError | None = None) -> DeltaRound:
        """One change-tracking round from `start` to its deltaLink, following
        nextLinks (`first_page`: the answer to `start`, fetched in a batch).
        Within a round a later entry for an id wins (a removal drops the
        upsert, and back). DeltaExpired propagates; another failure on a
        nextLink restarts the round once from `start`, dropping the pages
        already read (learn.microsoft.com/graph/delta-query-overview)."""
        for attempt in (1, 2):
            r, url, first = DeltaRound(), start, True
            while True:
                try:
                    if first and attempt == 1 and first_page is not None:
                        if isinstance(first_page, RemoteError):
                            raise first_page
                        page = first_page
                    else:
                        page = self.get_json(url, headers=headers)
                except DeltaExpired:
                    raise
                except RemoteError:
                    if first or attempt == 2:
                        raise
                    break  # a failing nextLink: the round again, once
                first = False
                for item in page.get("value") or []:
                    if not isinstance(item, dict) or not item.get("id"):
                        continue
                    iid = str(item["id"])
                    if "@removed" in item:
                        r.items.pop(iid, None)
                        r.removed.add(iid)
                    else:
                        r.removed.discard(iid)
                        r.items[iid] = item
                nxt = page.get("@odata.nextLink")
                if isinstance(nxt, str) and nxt:
                    url = nxt
                    continue
                link = page.get("@odata.deltaLink")
                if not isinstance(link, str) or not link:
                    raise RemoteError(f"{what}: a delta page without nextLink or deltaLink")
                r.link = link
                return r
        raise AssertionError("unreachable: the second try returns or raises")

    def _relative(self, path_or_url: str) -> str:
        """A step's url: relative to the version (`/me/...`)."""
        url = self.url(path_or_url)  # refuses links outside the endpoint
        return url[len(self.base):] or "/"

    def json_of(self, resp: requests.Response) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            raise RemoteError(f"{self.who}: Graph sent a body that is not JSON "
                              f"(HTTP {resp.status_code})") from None
        if not isinstance(body, dict):
            raise RemoteError(f"{self.who}: Graph sent unexpected JSON")
        return body

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> requests.Response:
        """One Graph request with retries; returns a 2xx response, raises the
        mapped `syncd.errors` type otherwise."""
        url = self.url(path_or_url)
        retry_transport = method == "GET" if idempotent is None else idempotent
        resp = self._with_retries(method, url, params, json_body, headers, retry_transport,
                                  force_refresh=False)
        if resp.status_code == 401:
            # The token may have been revoked or expired early: refresh once.
            resp = self._with_retries(method, url, params, json_body, headers,
                                      retry_transport, force_refresh=True)
        if resp.status_code < 300:
            return resp
        raise self.error_for(resp, method, url)

    def _with_retries(self, method: str, url: str, params: Mapping[str, str] | None,
                      json_body: Any, headers: Mapping[str, str] | None,
                      retry_transport: bool, *, force_refresh: bool) -> requests.Response:
        first = [force_refresh]

        def attempt() -> requests.Response:
            refresh, first[0] = first[0], False
            return self._send(method, url, params, json_body, headers, refresh)

        def should_retry(state: RetryCallState) -> bool:
            o = state.outcome
            if o is None:
                return False
            if o.failed:
                e = o.exception()
                return retry_transport and isinstance(e, _Transport)
            r = o.result()
            return isinstance(r, requests.Response) and r.status_code in RETRY_STATUSES

        def should_stop(state: RetryCallState) -> bool:
            if state.attempt_number >= self.max_tries:
                return True
            o = state.outcome
            if o is not None and not o.failed:
                r = o.result()
                if isinstance(r, requests.Response):
                    after = parse_retry_after(r.headers.get("Retry-After"))
                    if after is not None and after > self.max_wait:
                        return True
            return False

        retrying = Retrying(
            retry=_Pred(should_retry),
            stop=_Stop(should_stop),
            wait=_WaitRetryAfter(self._backoff),
            sleep=self._sleep,
            retry_error_callback=_last_outcome,
            reraise=True,
        )
        try:
            result = retrying(attempt)
        except _Transport as e:
            raise e.as_remote_error(self.who, method, url) from None
        if isinstance(result, _Transport):
            raise result.as_remote_error(self.who, method, url)
        assert isinstance(result, requests.Response)
        return result

    def _send(self, method: str, url: str, params: Mapping[str, str] | None, json_body: Any,
              headers: Mapping[str, str] | None, force_refresh: bool) -> requests.Response:
        token = self.tokens.token(force_refresh=force_refresh)
        h = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if headers:
            h.update(headers)
        data = None
        if json_body is not None:
            h["Content-Type"] = "application/json"
            data = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
        steps = len(json_body.get("requests") or []) \
            if url.endswith("/$batch") and isinstance(json_body, dict) else 1
        with mailbox_slots(f"{self.base}|{self.tokens.account_key}").hold(steps):
            try:
                return self.session.request(method, url, params=params, data=data, headers=h)
            except requests.exceptions.SSLError as e:
                raise _Transport(e, tls=True) from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                    requests.exceptions.ChunkedEncodingError) as e:
                raise _Transport(e) from None

    def error_for(self, resp: requests.Response, method: str, url: str) -> RemoteError:
        code, message = graph_error(resp)
        status = resp.status_code
        where = f"{method} {urlsplit(url).path}"
        text = f"{self.who}: Graph {status} {code or ''} on {where}: {message}".replace("  ", " ")
        lc = code.lower()
        if status == 410 or (status in (400, 404) and lc in _RESYNC_CODES):
            return DeltaExpired(text, resp.headers.get("Location"))
        if status == 401:
            return AuthError(f"{self.who}: Microsoft Graph rejected the sign-in ({code})",
                             hint=f"run `{self.tokens.sign_in_hint}`")
        if status == 403:
            return AuthError(
                f"{self.who}: Microsoft Graph denied access ({code or 'Forbidden'}: {message})",
                hint="grant the app Contacts.Read and Calendars.ReadWrite (README: Microsoft "
                f"365 / Outlook setup), then run `{self.tokens.sign_in_hint}`",
            )
        if status == 404:
            return NotFound(text, retryable=False)
        if status == 412 or (status == 409 and lc in _CONFLICT_CODES):
            return PreconditionFailed(text, retryable=False)
        if status in RETRY_STATUSES:
            after = parse_retry_after(resp.headers.get("Retry-After"))
            hint = f"Graph asked to wait {after:.0f} s; the next cycle retries" if after else ""
            return RemoteError(text, hint=hint, retryable=True)
        return RemoteError(text, retryable=status >= 500)


def _step_response(step: dict[str, Any]) -> requests.Response | None:
    """A batch step's answer as a `requests.Response`, so that it is read and
    mapped to errors exactly like a response of its own."""
    try:
        status = int(step.get("status"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    resp = requests.Response()
    resp.status_code = status
    raw = step.get("headers")
    resp.headers = CaseInsensitiveDict(
        {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {})
    body = step.get("body")
    resp._content = b"" if body is None else json.dumps(body).encode("utf-8")
    resp.encoding = "utf-8"
    return resp


def _last_outcome(state: RetryCallState) -> object:
    """When retries run out: the last response (mapped to an error by the
    caller), or the last transport failure (returned, raised by the caller)."""
    o = state.outcome
    if o is None:
        return None
    return o.exception() if o.failed else o.result()


class _Transport(Exception):
    def __init__(self, cause: Exception, tls: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.tls = tls

    def as_remote_error(self, who: str, method: str, url: str) -> RemoteError:
        host = urlsplit(url).netloc
        if self.tls:
            return RemoteError(
                f"{who}: TLS verification failed for {host} ({method})",
                hint="set ca_bundle to the CA that signs this endpoint (graph_endpoint / "
                "authority), or check the system's certificates",
                retryable=False,
            )
        return RemoteError(f"{who}: {host} unreachable ({method}): "
                           f"{type(self.cause).__name__}")


class _Pred(retry_base):
    def __init__(self, fn: Callable[[RetryCallState], bool]) -> None:
        self.fn = fn

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.fn(retry_state)


class _Stop(stop_base):
    def __init__(self, fn: Callable[[RetryCallState], bool]) -> None:
        self.fn = fn

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.fn(retry_state)
