"""What the Google connectors share: the token file, the HTTP client, the
service object, retries and the translation of Google's errors.

Credentials
-----------
The token file is the authorized-user JSON `syncd auth NAME` writes
(`connectors.google_auth`): `refresh_token`, `client_id`, `client_secret`,
`token_uri`, `scopes`, and the current access `token` with its `expiry`.
It lives at `token_file` when configured, else `<state_dir>/google-NAME.json`
(NAME is the source name, or `calendar`), and is written with mode 0600,
atomically, after every refresh.

`Credentials.from_authorized_user_file` is deliberately not used: it always
replaces `token_uri` with Google's own endpoint (research protocols.md §2.1),
which would break national endpoints, proxies and the test emulator. The
file's `token_uri` is honoured, as SPEC promises.

HTTP
----
One `httplib2.Http` per connector instance with an explicit `timeout` (the
library default is none for token refreshes: protocols.md §2.3) and
`ca_certs` = the configured `ca_bundle`, else `REQUESTS_CA_BUNDLE` /
`CURL_CA_BUNDLE` from the environment, else httplib2's own default (which
honours `HTTPLIB2_CA_CERTS`). A configured bundle therefore always wins over
the environment. Proxies come from the usual `*_proxy` variables (httplib2's
default `proxy_info_from_environment`). `google_auth_httplib2.AuthorizedHttp`
adds the bearer token and refreshes it once on a 401, through the same Http,
so refreshes get the same timeout and CA.

The service is built once per connector instance from the discovery document
bundled with google-api-python-client (`static_discovery=True`: no network,
no discovery fetch), with `client_options.api_endpoint` when configured.
Building it repeatedly leaks memory in long-running processes
(googleapis/google-api-python-client#535).

Retries
-------
tenacity retries 429, 5xx, 403 `rateLimitExceeded`/`userRateLimitExceeded`
(and their google.rpc form `RATE_LIMIT_EXCEEDED`), retryable token-endpoint
failures and transport errors, with exponential backoff and full jitter; a
`Retry-After` header (seconds or HTTP date) replaces the backoff for that
wait. googleapiclient's own `num_retries` is not used because it ignores
Retry-After (protocols.md §2.3). A Retry-After longer than
`RetryPolicy.max_retry_after` is not slept through inside a cycle: the error
is reported (retryable) and the next cycle tries again. After a transport
error the Http's cached connections are dropped (httplib2 keeps broken
sockets: googleapis/google-api-python-client#563). Permission errors are
never retried. Every try passes through `syncd.retry.call` (once), which
counts it for the cycle's summary and feeds the daemon's watchdog; waits end
early when the daemon is stopping (`syncd.retry.interrupt`), and a rate
limit that outlasts the cycle's retries is raised as `syncd.retry.ServerBusy`
with the server's Retry-After, so the daemon leaves the source alone that
long.

Errors
------
Google's envelopes come in two forms: google.rpc.Status (`error.status`,
`error.details[].reason`, People API) and the Calendar API's legacy
`error.errors[].reason`; both are read. `invalid_grant` from the token
endpoint (revoked, expired, or 7 days old under a Testing consent screen),
401 after a refresh, and missing scopes become `AuthError` whose hint is the
exact command to run: `syncd auth NAME`. Transport failures become a
retryable `RemoteError`, so a network outage never stops the daemon.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import google.auth.exceptions
import httplib2
import structlog
import tenacity
from google.oauth2.credentials import Credentials
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient import discovery
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from syncd import retry
from syncd.errors import AuthError, NotFound, RemoteError
from syncd.settings import CalendarConfig, Connection, SourceConfig

log = structlog.get_logger("syncd")

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/auth"

# Least privilege (scopes per method from the discovery documents).
CONTACTS_SCOPES = ("https://www.googleapis.com/auth/contacts.readonly",)
CALENDAR_SCOPES = (
    # events.insert/get/patch/delete/list in the target and busy calendars
    "https://www.googleapis.com/auth/calendar.events",
    # calendarList.list: find calendars by their name
    "https://www.googleapis.com/auth/calendar.calendarlist.readonly",
    # calendars.insert: create the follow-up calendar when it is missing
    "https://www.googleapis.com/auth/calendar.calendars",
)

_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"})
_SCOPE_REASONS = frozenset({"insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"})
_TRANSPORT_ERRORS = (google.auth.exceptions.TransportError, httplib2.HttpLib2Error, OSError)
_MAX_PAGES = 10_000

Config = SourceConfig | CalendarConfig
# Each try goes through `syncd.retry.call` once (it counts the request for the
# cycle's summary and kicks the daemon's watchdog); the retrying is done here,
# with the Google-specific rules above.
_ONE_TRY = retry.Policy(attempts=1)


# --------------------------------------------------------------------------
# Names, paths, hints


def account_name(cfg: Config) -> str:
    """The NAME of `syncd auth NAME` for this config entry."""
    return "calendar" if isinstance(cfg, CalendarConfig) else cfg.name


def describe(cfg: Config) -> str:
    return "the Google calendar" if isinstance(cfg, CalendarConfig) else (
        f"contact source {cfg.name!r}"
    )


def token_path(cfg: Config, state_dir: Path) -> Path:
    return cfg.connection.token_file or state_dir / f"google-{account_name(cfg)}.json"


def reauth_hint(cfg: Config) -> str:
    """The exact command that fixes a missing or rejected sign-in."""
    return f"syncd auth {account_name(cfg)}"


def required_scopes(cfg: Config) -> tuple[str, ...]:
    return CALENDAR_SCOPES if isinstance(cfg, CalendarConfig) else CONTACTS_SCOPES


# --------------------------------------------------------------------------
# The token file


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically with mode 0600 (directory 0700 when
    created): temp file, fsync, rename, fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when the file was left over with other bits
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def credentials_json(creds: Credentials) -> str:
    info = json.loads(creds.to_json())
    info["type"] = "authorized_user"
    return json.dumps(info, indent=2, sort_keys=True) + "\n"


class _SavingCredentials(Credentials):
    """Credentials that write themselves back to the token file after every
    refresh, so a restart reuses the access token and a rotated refresh token
    is never lost."""

    save_to: Path | None = None

    def refresh(self, request: Any) -> None:
        super().refresh(request)
        if self.save_to is None:
            return
        try:
            write_private(self.save_to, credentials_json(self))
        except OSError as e:  # the next start refreshes again; nothing is lost
            log.warning("cannot save Google token", path=str(self.save_to), error=str(e))


def _expiry(raw: object) -> datetime | None:
    """google-auth keeps expiries as naive UTC datetimes."""
    if not isinstance(raw, str) or not raw:
        return None
    text = raw.rstrip("Z").split(".")[0]
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None


def load_credentials(cfg: Config, state_dir: Path) -> Credentials:
    """The credentials in the token file; `AuthError` (with the command to
    run) when there is none, it is unreadable, or it lacks a needed scope."""
    path = token_path(cfg, state_dir)
    hint = reauth_hint(cfg)
    who = describe(cfg)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AuthError(f"{who}: not signed in to Google (no token file {path})",
                        hint=hint) from None
    except OSError as e:
        raise AuthError(f"{who}: cannot read the token file {path}: {e.strerror or e}",
                        hint=hint) from None
    try:
        info = json.loads(raw)
    except ValueError:
        info = None
    if not isinstance(info, dict) or not all(
        isinstance(info.get(k), str) and info.get(k)
        for k in ("refresh_token", "client_id", "client_secret")
    ):
        raise AuthError(f"{who}: {path} is not a Google authorized-user token file",
                        hint=hint)
    granted = info.get("scopes")
    scopes = [s for s in granted if isinstance(s, str)] if isinstance(granted, list) else None
    if scopes is not None:
        missing = [s for s in required_scopes(cfg) if s not in scopes]
        if missing:
            raise AuthError(
                f"{who}: the Google sign-in in {path} lacks the scope(s) {', '.join(missing)}",
                hint=hint,
            )
    token = info.get("token")
    creds = _SavingCredentials(
        token=token if isinstance(token, str) and token else None,
        refresh_token=info["refresh_token"],
        token_uri=info.get("token_uri") or GOOGLE_TOKEN_URI,
        client_id=info["client_id"],
        client_secret=info["client_secret"],
        # Ask for everything the file was granted (or, when it does not say,
        # name no scope, which means the same): a token file may be shared by
        # a source and the calendar, and a narrower refresh would write a
        # narrower token back for the other one.
        scopes=scopes,
        expiry=_expiry(info.get("expiry")),
    )
    creds.save_to = path
    return creds


# --------------------------------------------------------------------------
# HTTP


def ca_certs(conn: Connection) -> str | None:
    """The CA bundle to verify TLS with (see module doc for the order)."""
    if conn.ca_bundle is not None:
        return str(conn.ca_bundle)
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        value = os.environ.get(var)
        if value:
            return value
    return None


def http_client(conn: Connection) -> httplib2.Http:
    return httplib2.Http(timeout=conn.timeout, ca_certs=ca_certs(conn))


# --------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class ApiError:
    """The parts of a Google error response syncd decides on."""

    status: int
    message: str
    rpc_status: str
    reasons: frozenset[str]
    retry_after: float | None

    @property
    def transient(self) -> bool:
        if self.status == 429 or self.status >= 500:
            return True
        return self.status == 403 and bool(self.reasons & _RATE_REASONS)

    @classmethod
    def of(cls, e: HttpError) -> ApiError:
        status = int(e.resp.status)
        message, rpc = "", ""
        reasons: set[str] = set()
        try:
            data = json.loads(e.content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            rpc = str(err.get("status") or "")
            for key in ("errors", "details"):
                items = err.get(key)
                if isinstance(items, list):
                    reasons.update(str(i["reason"]) for i in items
                                   if isinstance(i, dict) and i.get("reason"))
        return cls(status, message or str(e.resp.reason or ""), rpc, frozenset(reasons),
                   parse_retry_after(e.resp.get("retry-after")))


def parse_retry_after(value: object) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class ApiStatus(Exception):
    """An HTTP error the caller asked to handle itself (`passthrough`)."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(f"HTTP {error.status}: {error.message}")
        self.error = error


@dataclass
class RetryPolicy:
    attempts: int = 5  # in all, for HTTP errors
    transport_attempts: int = 3  # in all, for connection errors and timeouts
    backoff: float = 0.5  # seconds; doubled per attempt, fully jittered
    max_backoff: float = 20.0
    max_retry_after: float = 60.0  # a longer Retry-After ends the cycle's try


class _Interrupted(Exception):
    """The daemon is stopping: no further try (the last error is reported)."""


def interruptible_sleep(seconds: float) -> None:
    """Sleep between tries; a stop request (`syncd.retry.interrupt`, SIGTERM)
    ends the wait and the retrying at once."""
    deadline = time.monotonic() + seconds
    while True:
        if retry.interrupted():
            raise _Interrupted
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.2))


class _Wait(tenacity.wait.wait_base):
    """Retry-After when the server sent one, else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.fallback = tenacity.wait_random_exponential(
            multiplier=policy.backoff, max=policy.max_backoff
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, HttpError):
            after = ApiError.of(exc).retry_after
            if after is not None:
                return after
        return float(self.fallback(retry_state))


# --------------------------------------------------------------------------
# The service


GOOGLE_ROOT = "https://www.googleapis.com/"  # rootUrl of the discovery documents


class GoogleApi:
    """One authorized googleapiclient service for one connector instance.

    Built lazily on first use (a missing sign-in then fails that source's
    read, not the construction of every connector) and dropped after an
    `AuthError`, so a daemon picks up a new `syncd auth` without a restart.
    Not thread-safe (httplib2 is not): one instance per thread.
    """

    def __init__(self, api: str, version: str, cfg: Config, state_dir: Path,
                 policy: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = interruptible_sleep) -> None:
        self.api = api
        self.version = version
        self.cfg = cfg
        self.state_dir = state_dir
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self._service: Any = None
        self._http: AuthorizedHttp | None = None

    @property
    def service(self) -> Any:
        if self._service is None:
            creds = load_credentials(self.cfg, self.state_dir)
            self._http = AuthorizedHttp(creds, http=http_client(self.cfg.connection))
            endpoint = self.cfg.connection.api_endpoint
            self._service = discovery.build(
                self.api,
                self.version,
                http=self._http,
                static_discovery=True,
                cache_discovery=False,
                client_options={"api_endpoint": endpoint} if endpoint else None,
            )
        return self._service

    def close(self) -> None:
        if self._service is not None:
            self._service.close()
        self._service = None
        self._http = None

    def _drop_connections(self) -> None:
        http = self._http.http if self._http is not None else None
        conns = getattr(http, "connections", None)
        if isinstance(conns, dict):
            for conn in list(conns.values()):
                with contextlib.suppress(OSError):
                    conn.close()
            conns.clear()

    def execute(
        self,
        build: Callable[[Any], Any],
        what: str,
        *,
        if_match: str | None = None,
        passthrough: frozenset[int] = frozenset(),
    ) -> dict[str, Any]:
        """Build a request from the service, run it with retries, and return
        the decoded body ({} for an empty one). HTTP errors whose status is in
        `passthrough` raise `ApiStatus` for the caller; everything else is
        translated into `syncd.errors`."""
        request = build(self.service)
        if if_match is not None:
            request.headers["If-Match"] = if_match
        policy = self.policy

        def should_retry(exc: BaseException) -> bool:
            if retry.interrupted():  # SIGTERM: no more tries, report the last error
                return False
            if isinstance(exc, HttpError):
                err = ApiError.of(exc)
                if err.retry_after is not None and err.retry_after > policy.max_retry_after:
                    return False
                return err.transient
            if isinstance(exc, google.auth.exceptions.RefreshError):
                return bool(exc.retryable)
            # A certificate that does not verify will not verify next time either.
            return isinstance(exc, _TRANSPORT_ERRORS) and not retry.is_tls_failure(exc)

        def stop(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            limit = policy.attempts
            if isinstance(exc, _TRANSPORT_ERRORS) and not isinstance(exc, HttpError):
                limit = policy.transport_attempts
            return state.attempt_number >= limit

        last: list[BaseException] = []

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            last[:] = [exc] if exc is not None else []
            if isinstance(exc, _TRANSPORT_ERRORS):
                self._drop_connections()
            wait = state.next_action.sleep if state.next_action else 0.0
            status = exc.resp.status if isinstance(exc, HttpError) else type(exc).__name__
            log.info("google request retried", what=what, status=status,
                     attempt=state.attempt_number, wait=round(wait, 3))

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(should_retry),
            stop=stop,
            wait=_Wait(policy),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

        def one_try() -> Any:
            return retry.call(lambda: request.execute(num_retries=0), method=request.method,
                              what=what, policy=_ONE_TRY)

        try:
            try:
                result = retrying(one_try)
            except _Interrupted:
                if not last:
                    raise RemoteError(f"{what}: interrupted") from None
                raise last[0] from None  # reported below like any final failure
        except HttpError as e:
            err = ApiError.of(e)
            if err.status in passthrough:
                raise ApiStatus(err) from None
            raise self.translate(err, what) from None
        except google.auth.exceptions.RefreshError as e:
            raise self._refresh_failed(e, what) from None
        except _TRANSPORT_ERRORS as e:
            self._drop_connections()
            tls = retry.is_tls_failure(e)
            raise RemoteError(
                f"Google {'TLS verification failed' if tls else 'unreachable'} ({what}): "
                f"{type(e).__name__}: {e}",
                hint="check ca_bundle in the config (a proxy's CA?)" if tls
                else "check the network, and api_endpoint / ca_bundle in the config",
            ) from None
        if isinstance(result, dict):
            return result
        if result in (None, "", b""):  # 204 No Content (delete)
            return {}
        # A 2xx that is not JSON: a captive portal, a proxy's page, a wrong api_endpoint.
        raise RemoteError(
            f"{what}: the answer was not JSON ({str(result)[:60]!r}...)",
            hint="check api_endpoint in the config and any proxy in between",
        )

    def batch(self, build: Callable[[Any], list[Any]], what: str, *, service_path: str,
              batch_path: str) -> list[dict[str, Any] | ApiError | None]:
        """The requests `build` makes, sent as one batch request
        (developers.google.com/calendar/api/guides/batch). The batch POST is
        retried like any request; each result is the part's decoded body, its
        `ApiError`, or None when the answer had no such part. Only requests
        safe to send twice belong in a batch (inserts with client ids)."""
        requests = build(self.service)
        results: dict[str, Any] = {}

        def collect(rid: str, response: Any, exception: Exception | None) -> None:
            results[rid] = exception if exception is not None else response

        batch = BatchHttpRequest(callback=collect,
                                 batch_uri=self._batch_uri(service_path, batch_path))
        for i, r in enumerate(requests):
            batch.add(r, request_id=str(i))

        class _Send:  # the shape `execute` runs: one try per call
            method = "POST"
            headers: ClassVar[dict[str, str]] = {}

            def execute(self, num_retries: int = 0) -> dict[str, Any]:
                results.clear()
                batch.execute()
                return {}

        self.execute(lambda _s: _Send(), what)
        out: list[dict[str, Any] | ApiError | None] = []
        for i in range(len(requests)):
            r = results.get(str(i))
            out.append(ApiError.of(r) if isinstance(r, HttpError)
                       else r if isinstance(r, dict) else None)
        return out

    def _batch_uri(self, service_path: str, batch_path: str) -> str:
        """googleapiclient builds batch URIs from the discovery document's
        rootUrl, ignoring `api_endpoint`: derive it from the endpoint."""
        endpoint = self.cfg.connection.api_endpoint
        if not endpoint:
            return GOOGLE_ROOT + batch_path
        root = endpoint if endpoint.endswith("/") else endpoint + "/"
        if root.endswith("/" + service_path):
            root = root[:-len(service_path)]
        return root + batch_path

    def pages(
        self,
        build: Callable[[Any, str | None], Any],
        what: str,
        passthrough: frozenset[int] = frozenset(),
    ) -> Iterator[dict[str, Any]]:
        """Every page of a list call: `build(service, page_token)` must make
        the same request each time but for the page token."""
        token: str | None = None
        for _ in range(_MAX_PAGES):
            page = self.execute(functools.partial(_with_token, build, token), what,
                                passthrough=passthrough)
            yield page
            token = page.get("nextPageToken") or None
            if token is None:
                return
        raise RemoteError(f"{what}: more than {_MAX_PAGES} pages", retryable=False)

    def _refresh_failed(self, e: google.auth.exceptions.RefreshError,
                        what: str) -> RemoteError:
        detail = str(e.args[0]) if e.args else str(e)
        if e.retryable:
            return RemoteError(f"Google token endpoint failed ({what}): {detail}")
        self.close()  # re-read the token file next time (after `syncd auth`)
        return AuthError(
            f"{describe(self.cfg)}: Google rejected the sign-in ({detail})",
            hint=reauth_hint(self.cfg),
        )

    def translate(self, err: ApiError, what: str) -> RemoteError:
        who = describe(self.cfg)
        text = f"{what}: HTTP {err.status} {err.message}".rstrip()
        if err.status == 401:
            self.close()
            return AuthError(f"{who}: Google rejected the credentials ({text})",
                             hint=reauth_hint(self.cfg))
        if err.status == 403 and err.reasons & _SCOPE_REASONS:
            self.close()
            return AuthError(f"{who}: the Google sign-in lacks a permission ({text})",
                             hint=reauth_hint(self.cfg))
        if err.transient:
            hint = (f"Google asked to wait {err.retry_after:.0f} s; the next cycle retries"
                    if err.retry_after is not None else "the next cycle retries")
            if err.status in (403, 429) or err.retry_after is not None:
                # The daemon leaves this source alone at least that long.
                return retry.ServerBusy(f"{who}: Google is rate limiting ({text})", hint=hint,
                                        retry_after=err.retry_after)
            return RemoteError(f"{who}: Google is failing ({text})", hint=hint)
        if err.status == 403:
            return RemoteError(f"{who}: Google refused the request ({text})",
                               hint="check that the signed-in account may access it",
                               retryable=False)
        if err.status in (404, 410):
            return NotFound(f"{who}: not found ({text})", retryable=False)
        return RemoteError(f"{who}: {text}", retryable=False)


def _with_token(build: Callable[[Any, str | None], Any], token: str | None, service: Any) -> Any:
    return build(service, token)
