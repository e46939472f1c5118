"""Signing in to Microsoft 365 / Outlook.com with MSAL (public client).

`syncd auth NAME` runs the device-code flow (RFC 8628; works over SSH and on
headless machines, so `--no-browser` changes nothing): MSAL prints a code,
the user enters it at https://microsoft.com/devicelogin, and the tokens land
in a `SerializableTokenCache` written to `state_dir/msal-NAME.json` (or the
`token_cache` path), mode 0600, atomically (temp file + rename).

Every cycle the connectors call `acquire_token_silent` (memoised for 30 s so
one cycle's requests share it); when MSAL refreshes, the refresh token
rotates and the cache is written again at once. `invalid_grant`,
`interaction_required` and friends become an `AuthError` whose hint is the
exact command to run; other failures are retryable `RemoteError`s.

The cache file may be shared (a source and the calendar on one account, the
SPEC allows it): it is re-read whenever it changed on disk, and each
read-acquire-write runs under an advisory lock (`.lock` beside it), so a
rotated refresh token written by one connector is what the other uses next.
One account per cache: a new sign-in replaces the previous account.

Authority: the `authority` override (national clouds, tests) or
`https://login.microsoftonline.com/{tenant}`. For hosts MSAL does not know
(an explicit `authority`), instance discovery is off: MSAL would otherwise
send the host to login.microsoftonline.com for validation and alias lookups. All of MSAL's HTTP goes
through `connectors.graph_http.GraphSession`: `ca_bundle` wins over
`REQUESTS_CA_BUNDLE`, and every request has the configured timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msal
import requests

from connectors.graph_http import GraphSession
from syncd.errors import AuthError, RemoteError, UserError
from syncd.settings import CalendarConfig, SourceConfig

SCOPES = ("Contacts.Read", "Calendars.ReadWrite")
LOGIN_HOST = "https://login.microsoftonline.com"
# MSAL's own list (msal.authority.WELL_KNOWN_AUTHORITY_HOSTS): no discovery needed.
_KNOWN_HOSTS = frozenset({
    "login.microsoftonline.com", "login.microsoft.com", "login.windows.net", "sts.windows.net",
    "login.chinacloudapi.cn", "login.partner.microsoftonline.cn", "login.microsoftonline.de",
    "login-us.microsoftonline.com", "login.microsoftonline.us", "login.usgovcloudapi.net",
})
_REAUTH_ERRORS = frozenset({
    "invalid_grant", "interaction_required", "consent_required", "login_required",
    "invalid_client", "unauthorized_client", "no_account",
})
_MEMO_SECONDS = 30.0

MsConfig = SourceConfig | CalendarConfig


def auth_name(cfg: MsConfig) -> str:
    """The NAME of `syncd auth NAME` for this config."""
    return cfg.name if isinstance(cfg, SourceConfig) else "calendar"


def cache_path(cfg: MsConfig, state_dir: Path) -> Path:
    if cfg.connection.token_cache is not None:
        return cfg.connection.token_cache.expanduser()
    return state_dir / f"msal-{auth_name(cfg)}.json"


def authority_url(cfg: MsConfig) -> str:
    if cfg.connection.authority:
        return cfg.connection.authority.rstrip("/")
    return f"{LOGIN_HOST}/{cfg.tenant or 'common'}"


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically with mode 0600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class MsalTokens:
    """Bearer tokens for Graph from the MSAL cache of one config."""

    def __init__(self, cfg: MsConfig, state_dir: Path, *, session: GraphSession) -> None:
        self.cfg = cfg
        self.name = auth_name(cfg)
        self.path = cache_path(cfg, state_dir)
        self.session = session
        self.cache = msal.SerializableTokenCache()
        self._seen: tuple[int, int, int] | None = None
        self._app: msal.PublicClientApplication | None = None
        self._lock = threading.RLock()
        self._memo: tuple[str, float] | None = None
        self._account_key = str(self.path)

    # ---- the TokenProvider protocol ---------------------------------------------

    @property
    def sign_in_hint(self) -> str:
        return f"syncd auth {self.name}"

    @property
    def account_key(self) -> str:
        return self._account_key

    def token(self, force_refresh: bool = False) -> str:
        with self._lock:
            now = time.monotonic()
            if not force_refresh and self._memo is not None and self._memo[1] > now:
                return self._memo[0]
            with self._locked():
                self._reload()
                app = self.app()
                accounts = app.get_accounts()
                if not accounts:
                    raise AuthError(
                        f"{self._what()}: not signed in to Microsoft (no account in {self.path})",
                        hint=f"run `{self.sign_in_hint}`",
                    )
                account = accounts[0]
                try:
                    result = app.acquire_token_silent_with_error(
                        list(SCOPES), account, force_refresh=force_refresh
                    )
                except requests.exceptions.RequestException as e:
                    raise self._transport_error(e) from None
                finally:
                    self._save_if_changed()
            if not result:
                raise AuthError(
                    f"{self._what()}: the Microsoft sign-in in {self.path} holds no usable token",
                    hint=f"run `{self.sign_in_hint}`",
                )
            if "access_token" not in result:
                raise self._token_error(result)
            self._account_key = str(account.get("home_account_id") or self.path)
            token = str(result["access_token"])
            self._memo = (token, now + _MEMO_SECONDS)
            return token

    # ---- MSAL ------------------------------------------------------------------------

    def app(self) -> msal.PublicClientApplication:
        if self._app is not None:
            return self._app
        if not self.cfg.client_id:
            raise AuthError(
                f"{self._what()}: no client_id configured for Microsoft sign-in",
                hint="register an app in Entra ID and set client_id (README: Microsoft 365 / "
                "Outlook setup)",
            )
        authority = authority_url(self.cfg)
        host = urlsplit(authority).hostname or ""
        kwargs: dict[str, Any] = {}
        if host not in _KNOWN_HOSTS:
            # MSAL would validate (and later look up aliases of) an unknown host
            # at login.microsoftonline.com; an explicit authority is trusted.
            kwargs["instance_discovery"] = False
        try:
            self._app = msal.PublicClientApplication(
                self.cfg.client_id,
                authority=authority,
                token_cache=self.cache,
                http_client=self.session,
                **kwargs,
            )
        except requests.exceptions.RequestException as e:
            raise self._transport_error(e) from None
        except ValueError as e:
            raise RemoteError(
                f"{self._what()}: Microsoft sign-in authority {authority} is not usable: {e}",
                hint="check tenant (common, organizations, consumers or your tenant id) and "
                "authority in the config",
                retryable=False,
            ) from None
        return self._app

    def device_sign_in(self) -> dict[str, Any]:
        """The device-code flow; prints MSAL's instructions on stdout."""
        app = self.app()
        try:
            flow = app.initiate_device_flow(scopes=list(SCOPES))
            if "user_code" not in flow:
                raise AuthError(
                    f"{self._what()}: the device sign-in could not start: "
                    f"{flow.get('error')}: {_first_line(flow.get('error_description'))}",
                    hint="check client_id and that the app registration allows public "
                    "client flows (README: Microsoft 365 / Outlook setup)",
                )
            print(flow["message"], flush=True)
            result: dict[str, Any] = app.acquire_token_by_device_flow(flow)
        except requests.exceptions.RequestException as e:
            raise self._transport_error(e) from None
        if "access_token" not in result:
            raise AuthError(
                f"{self._what()}: sign-in failed: {result.get('error')}: "
                f"{_first_line(result.get('error_description'))}",
                hint=f"run `{self.sign_in_hint}` again",
            )
        with self._locked():
            keep = (result.get("id_token_claims") or {}).get("oid")
            for acc in app.get_accounts():
                if keep and not str(acc.get("home_account_id", "")).startswith(str(keep)):
                    app.remove_account(acc)
            write_private(self.path, self.cache.serialize())
            self._remember_file()
        self._memo = None
        return result

    # ---- the cache file -------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.path.with_name(self.path.name + ".lock")
        lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _remember_file(self) -> None:
        self._seen = self._signature()

    def _reload(self) -> None:
        sig = self._signature()
        if sig is None or sig == self._seen:
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as e:
            raise AuthError(f"{self._what()}: cannot read the token cache {self.path}: "
                            f"{e.strerror or e}", hint=f"run `{self.sign_in_hint}`") from None
        try:
            self.cache.deserialize(text)
        except ValueError:
            raise AuthError(f"{self._what()}: the token cache {self.path} is corrupt",
                            hint=f"run `{self.sign_in_hint}`") from None
        self._seen = sig

    def _save_if_changed(self) -> None:
        if self.cache.has_state_changed:
            write_private(self.path, self.cache.serialize())
            self._remember_file()

    # ---- errors ------------------------------------------------------------------

    def _what(self) -> str:
        return "calendar" if self.name == "calendar" else f"contact source {self.name!r}"

    def _token_error(self, result: dict[str, Any]) -> RemoteError:
        err = str(result.get("error") or "")
        desc = _first_line(result.get("error_description"))
        if err in _REAUTH_ERRORS:
            return AuthError(
                f"{self._what()}: Microsoft sign-in expired or was revoked ({err}: {desc})",
                hint=f"run `{self.sign_in_hint}`",
            )
        return RemoteError(f"{self._what()}: Microsoft sign-in failed ({err}: {desc})")

    def _transport_error(self, e: requests.exceptions.RequestException) -> RemoteError:
        host = urlsplit(authority_url(self.cfg)).netloc
        if isinstance(e, requests.exceptions.SSLError):
            return RemoteError(
                f"{self._what()}: TLS verification failed for {host}",
                hint="set ca_bundle to the CA that signs the authority, or check the "
                "system's certificates",
                retryable=False,
            )
        return RemoteError(f"{self._what()}: Microsoft sign-in service {host} unreachable: "
                           f"{type(e).__name__}")


def _first_line(text: Any) -> str:
    return str(text or "").strip().splitlines()[0] if text else ""


def sign_in(cfg: MsConfig, state_dir: Path, no_browser: bool) -> str:
    """`syncd auth NAME` for `type: outlook` sources and `type: graph` calendars."""
    del no_browser  # the device-code flow never opens a browser
    if not cfg.client_id:
        where = "calendar" if isinstance(cfg, CalendarConfig) else f"contacts[{cfg.name}]"
        raise UserError(
            f"{where}: client_id is required for Microsoft sign-in",
            hint="register an app in Entra ID (README: Microsoft 365 / Outlook setup) and set "
            "client_id",
        )
    session = GraphSession(cfg.connection)
    try:
        tokens = MsalTokens(cfg, state_dir, session=session)
        result = tokens.device_sign_in()
    finally:
        session.close()
    who = (result.get("id_token_claims") or {}).get("preferred_username") or "your account"
    return f"signed in to Microsoft as {who}; tokens stored in {tokens.path} (mode 0600)"
