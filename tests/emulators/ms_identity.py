"""A local Microsoft identity platform (Entra ID v2.0 endpoints) over real HTTPS.

What MSAL for Python talks to, as documented in the Entra docs and observed
on the wire (research protocols.md §4):

* `GET /{tenant}/v2.0/.well-known/openid-configuration` (tenant discovery);
  `common`, `organizations`, `consumers`, the tenant GUID and its domain are
  known, anything else is `AADSTS90002` (400).
* `GET /common/discovery/instance?authorization_endpoint=...` (instance
  discovery, for authorities on hosts MSAL does not know).
* `POST /{tenant}/oauth2/v2.0/devicecode` (RFC 8628 device authorization).
* `POST /{tenant}/oauth2/v2.0/token` with the device-code grant (polled:
  `authorization_pending` until the user approves, then tokens) and the
  refresh-token grant. Refresh tokens ROTATE: every redemption issues a new
  one (the old one stays valid, as on Entra, until revoked). `client_info`
  (base64url `{"uid", "utid"}`) is returned when asked for with
  `client_info=1`; the id_token is an unsigned JWT (MSAL does not validate it).
* Errors use Entra's OAuth JSON (`error`, `error_description` starting with
  the AADSTS code, `error_codes`, `timestamp`, `trace_id`, `correlation_id`).

Registered apps are public clients with the device flow allowed unless
registered otherwise; a confidential-only app gets AADSTS7000218, an unknown
client id AADSTS700016 (what a wrong Entra registration looks like).

Tests steer the "user" and the "admin" side through methods:
`approve(user_code)`, `decline(user_code)`, `revoke_refresh_tokens()` (the
next refresh is `invalid_grant`), `require_interaction()` (MFA/Conditional
Access: `interaction_required`), `revoke_access_tokens()` (Graph then answers
401), `issue_token(scopes)` (a token for "another client").

The HTTPS plumbing (`HttpsServer`, `Handler`) is shared with the Graph
emulator. Certificates come from a throwaway `trustme` CA; clients must be
given its PEM (the `ca_pem` path) as `ca_bundle`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

GRAPH_RESOURCE = "https://graph.microsoft.com/"
RESERVED_SCOPES = ("openid", "profile", "offline_access", "email")


# --------------------------------------------------------------------------
# HTTPS plumbing shared by the emulators
# --------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str  # without query, percent-encoded as sent
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float = field(default_factory=time.monotonic)
    batched: bool = False  # one step of a JSON batch (Graph's $batch), not an HTTP request

    def q(self, name: str) -> str | None:
        """A query parameter; OData names ($filter) and others compared
        case-insensitively, as Graph does."""
        for k, v in self.query.items():
            if k.lower() == name.lower():
                return v[0]
        return None

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8")).items()}

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Set by fault injection: close the connection without answering.
    drop: bool = False


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    h = {"Content-Type": "application/json; charset=utf-8"}
    h.update(headers or {})
    return Response(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), h)


App = Callable[[Request], Response]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: App
    log: list[Request]
    log_lock: threading.Lock


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    # One buffered write per response (flushed by handle_one_request) and no
    # Nagle: otherwise header and body segments meet delayed ACKs (~40 ms).
    wbufsize = 1 << 16

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        with self.server.log_lock:
            self.server.log.append(req)
        try:
            resp = self.server.app(req)
        except Exception as e:  # an emulator bug: say so loudly, as a 500
            resp = json_response(
                500, {"error": {"code": "EmulatorBug", "message": f"{type(e).__name__}: {e}"}}
            )
        if resp.drop:
            self.close_connection = True
            self.wfile.flush()
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _handle


class HttpsServer:
    """One TLS server on a loopback port, serving `app` from a thread."""

    def __init__(self, app: App, ca: trustme.CA) -> None:
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.app = app
        self._httpd.log = []
        self._httpd.log_lock = threading.Lock()
        self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self.port = int(self._httpd.server_address[1])
        self.base = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 10.0) -> None:
        """Poll until a TCP connection is accepted (readiness, not a sleep)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @property
    def requests(self) -> list[Request]:
        with self._httpd.log_lock:
            return list(self._httpd.log)

    def note(self, req: Request) -> None:
        """Log a request that arrived inside another (a batch step)."""
        with self._httpd.log_lock:
            self._httpd.log.append(req)

    def clear_log(self) -> None:
        with self._httpd.log_lock:
            self._httpd.log.clear()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def make_ca(directory: Path) -> tuple[trustme.CA, Path]:
    """A throwaway CA and its PEM file (what `ca_bundle` points at)."""
    ca = trustme.CA()
    pem = directory / "emulator-ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    return ca, pem


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned_jwt(claims: dict[str, Any]) -> str:
    header = {"typ": "JWT", "alg": "none"}
    return (
        f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."
    )


# --------------------------------------------------------------------------
# The identity platform
# --------------------------------------------------------------------------


@dataclass
class User:
    oid: str
    upn: str
    name: str


@dataclass
class AppRegistration:
    client_id: str
    public_client: bool = True  # "Allow public client flows" = Yes


@dataclass
class DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: float
    state: str = "pending"  # pending | approved | declined | redeemed


@dataclass
class AccessToken:
    token: str
    client_id: str
    scopes: frozenset[str]
    user: User
    expires_at: float
    revoked: bool = False


@dataclass
class RefreshToken:
    token: str
    client_id: str
    scopes: frozenset[str]
    user: User
    revoked: bool = False


def _norm_scope(s: str) -> str:
    return s[len(GRAPH_RESOURCE) :] if s.startswith(GRAPH_RESOURCE) else s


class IdentityEmulator:
    """Microsoft identity platform v2.0 endpoints for one tenant and one user."""

    def __init__(
        self,
        ca: trustme.CA,
        *,
        client_ids: tuple[str, ...] = ("00000000-aaaa-bbbb-cccc-000000000001",),
        interval: int = 1,
        access_token_lifetime: int = 3600,
    ) -> None:
        self.tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
        self.tenant_domain = "contoso.example"
        self.user = User(str(uuid.uuid4()), "alice@contoso.example", "Alice Example")
        self.apps = {c: AppRegistration(c) for c in client_ids}
        self.interval = interval
        self.access_token_lifetime = access_token_lifetime
        self.device_codes: dict[str, DeviceCode] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.interaction_required = False
        self.auto_approve = False  # the user approves every device code at once
        self.token_requests: list[dict[str, str]] = []
        self._lock = threading.RLock()
        self.server = HttpsServer(self._app, ca)
        self.base = self.server.base

    @property
    def client_id(self) -> str:
        return next(iter(self.apps))

    def authority(self, tenant: str | None = None) -> str:
        return f"{self.base}/{tenant or self.tenant_id}"

    def stop(self) -> None:
        self.server.stop()

    # ---- test controls ------------------------------------------------------

    def pending_user_codes(self) -> list[str]:
        with self._lock:
            return [d.user_code for d in self.device_codes.values() if d.state == "pending"]

    def approve(self, user_code: str) -> None:
        with self._lock:
            dc = next(d for d in self.device_codes.values() if d.user_code == user_code)
            dc.state = "approved"

    def decline(self, user_code: str) -> None:
        with self._lock:
            dc = next(d for d in self.device_codes.values() if d.user_code == user_code)
            dc.state = "declined"

    def revoke_refresh_tokens(self) -> None:
        """What a password reset or an admin's "revoke sessions" does."""
        with self._lock:
            for rt in self.refresh_tokens.values():
                rt.revoked = True

    def revoke_client(self, client_id: str) -> None:
        """An admin removes the consent of one app: its tokens stop working."""
        with self._lock:
            for tok in (*self.refresh_tokens.values(), *self.access_tokens.values()):
                if tok.client_id == client_id:
                    tok.revoked = True

    def register(self, client_id: str, public_client: bool = True) -> None:
        with self._lock:
            self.apps[client_id] = AppRegistration(client_id, public_client)

    def revoke_refresh_tokens_except_latest(self) -> None:
        """Strict rotation: only the newest refresh token still works."""
        with self._lock:
            latest = list(self.refresh_tokens)[-1]
            for t, rt in self.refresh_tokens.items():
                rt.revoked = rt.revoked or t != latest

    def revoke_access_tokens(self) -> None:
        with self._lock:
            for at in self.access_tokens.values():
                at.revoked = True

    def require_interaction(self, on: bool = True) -> None:
        with self._lock:
            self.interaction_required = on

    def live_refresh_tokens(self) -> list[str]:
        with self._lock:
            return [t for t, rt in self.refresh_tokens.items() if not rt.revoked]

    def latest_refresh_token(self) -> str:
        with self._lock:
            return list(self.refresh_tokens)[-1]

    def issue_token(self, scopes: tuple[str, ...]) -> str:
        """An access token for "another client" of the same user."""
        with self._lock:
            at = self._new_access_token(self.client_id, frozenset(scopes))
            return at.token

    def check_access_token(self, token: str) -> AccessToken | None:
        with self._lock:
            at = self.access_tokens.get(token)
            if at is None or at.revoked or at.expires_at < time.time():
                return None
            return at

    # ---- HTTP -------------------------------------------------------------------

    def _app(self, req: Request) -> Response:
        parts = [p for p in req.path.split("/") if p]
        with self._lock:
            if req.method == "GET" and parts == ["common", "discovery", "instance"]:
                return self._instance_discovery(req)
            if len(parts) >= 2 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                return self._openid_configuration(parts[0])
            if req.method == "POST" and len(parts) == 4 and parts[1:3] == ["oauth2", "v2.0"]:
                if not self._known_tenant(parts[0]):
                    return self._tenant_not_found(parts[0])
                if parts[3] == "devicecode":
                    return self._devicecode(req)
                if parts[3] == "token":
                    return self._token(req, parts[0])
        return json_response(404, {"error": "not_found", "error_description": req.path})

    def _known_tenant(self, tenant: str) -> bool:
        return tenant in (
            "common",
            "organizations",
            "consumers",
            self.tenant_id,
            self.tenant_domain,
        )

    def _oauth_error(self, error: str, code: int, text: str, status: int = 400) -> Response:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        trace = str(uuid.uuid4())
        return json_response(
            status,
            {
                "error": error,
                "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\n"
                f"Correlation ID: {uuid.uuid4()}\r\nTimestamp: {now}",
                "error_codes": [code],
                "timestamp": now,
                "trace_id": trace,
                "correlation_id": str(uuid.uuid4()),
                "error_uri": f"{self.base}/error?code={code}",
            },
        )

    def _tenant_not_found(self, tenant: str) -> Response:
        return self._oauth_error(
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )

    def _instance_discovery(self, req: Request) -> Response:
        endpoint = req.q("authorization_endpoint") or ""
        # MSAL sends the authority's host name (without the port).
        host = urlsplit(endpoint).hostname
        path = [p for p in urlsplit(endpoint).path.split("/") if p]
        if host != urlsplit(self.base).hostname or not path:
            return json_response(
                400,
                {
                    "error": "invalid_instance",
                    "error_description": "AADSTS50049: Unknown or invalid instance.",
                    "error_codes": [50049],
                },
            )
        tenant = path[0]
        return json_response(
            200,
            {
                "tenant_discovery_endpoint": f"{self.base}/{tenant}/v2.0/.well-known/"
                "openid-configuration",
                "api-version": "1.1",
                "metadata": [
                    {"preferred_network": urlsplit(self.base).netloc,
                     "preferred_cache": urlsplit(self.base).netloc,
                     "aliases": [urlsplit(self.base).netloc]}
                ],
            },
        )

    def _openid_configuration(self, tenant: str) -> Response:
        if not self._known_tenant(tenant):
            return self._tenant_not_found(tenant)
        issuer_tenant = (
            "{tenantid}" if tenant in ("common", "organizations", "consumers") else self.tenant_id
        )
        b = f"{self.base}/{tenant}"
        return json_response(
            200,
            {
                "token_endpoint": f"{b}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{b}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{self.base}/{issuer_tenant}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{self.base}/oidc/userinfo",
                "authorization_endpoint": f"{b}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{b}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{b}/oauth2/v2.0/logout",
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "tid", "ver"],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
            },
        )

    def _client(self, client_id: str | None) -> AppRegistration | Response:
        app = self.apps.get(client_id or "")
        if app is None:
            return self._oauth_error(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant_domain}'. This can happen if the application has not been "
                "installed by the administrator of the tenant or consented to by any user in "
                "the tenant.",
            )
        return app

    def _devicecode(self, req: Request) -> Response:
        form = req.form()
        app = self._client(form.get("client_id"))
        if isinstance(app, Response):
            return app
        scopes = tuple(_norm_scope(s) for s in form.get("scope", "").split())
        user_code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(9))
        dc = DeviceCode(
            device_code=b64url(secrets.token_bytes(48)),
            user_code=user_code,
            client_id=app.client_id,
            scopes=scopes,
            expires_at=time.time() + 900,
            state="approved" if self.auto_approve else "pending",
        )
        self.device_codes[dc.device_code] = dc
        uri = "https://microsoft.com/devicelogin"
        return json_response(
            200,
            {
                "user_code": user_code,
                "device_code": dc.device_code,
                "verification_uri": uri,
                "expires_in": 900,
                "interval": self.interval,
                "message": f"To sign in, use a web browser to open the page {uri} and enter "
                f"the code {user_code} to authenticate.",
            },
        )

    def _token(self, req: Request, tenant: str) -> Response:
        form = req.form()
        self.token_requests.append(form)
        app = self._client(form.get("client_id"))
        if isinstance(app, Response):
            return app
        if "client_secret" not in form and "client_assertion" not in form and not app.public_client:
            return self._oauth_error(
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
                status=401,
            )
        grant = form.get("grant_type")
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            return self._device_grant(form, app)
        if grant == "refresh_token":
            return self._refresh_grant(form, app)
        return self._oauth_error(
            "unsupported_grant_type", 70003,
            f"The app requested an unsupported grant type '{grant}'.",
        )

    def _device_grant(self, form: dict[str, str], app: AppRegistration) -> Response:
        dc = self.device_codes.get(form.get("device_code", ""))
        if dc is None or dc.client_id != app.client_id:
            return self._oauth_error("bad_verification_code", 70019, "Verification code expired.")
        if dc.expires_at < time.time():
            return self._oauth_error("expired_token", 70019, "Verification code expired.")
        if dc.state == "pending":
            return self._oauth_error(
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            )
        if dc.state == "declined":
            return self._oauth_error(
                "authorization_declined", 70000, "The user declined the authorization request."
            )
        if dc.state == "redeemed":
            return self._oauth_error(
                "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed."
            )
        dc.state = "redeemed"
        return self._tokens(app, frozenset(dc.scopes), form.get("client_info") == "1")

    def _refresh_grant(self, form: dict[str, str], app: AppRegistration) -> Response:
        rt = self.refresh_tokens.get(form.get("refresh_token", ""))
        if rt is None or rt.revoked or rt.client_id != app.client_id:
            return self._oauth_error(
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to "
                "inactivity. Send a new interactive authorization request for this user "
                "and resource.",
            )
        if self.interaction_required:
            return self._oauth_error(
                "interaction_required",
                50076,
                "Due to a configuration change made by your administrator, or because you "
                "moved to a new location, you must use multi-factor authentication to access "
                f"'{GRAPH_RESOURCE}'.",
            )
        asked = frozenset(_norm_scope(s) for s in form.get("scope", "").split())
        resource = {s for s in asked if s not in RESERVED_SCOPES}
        if not resource <= rt.scopes:
            return self._oauth_error(
                "invalid_grant",
                65001,
                f"The user or administrator has not consented to use the application with ID "
                f"'{app.client_id}'. Send an interactive authorization request for this user "
                "and resource.",
            )
        return self._tokens(app, asked or rt.scopes, form.get("client_info") == "1")

    def _new_access_token(self, client_id: str, scopes: frozenset[str]) -> AccessToken:
        now = int(time.time())
        claims = {
            "aud": "00000003-0000-0000-c000-000000000000",
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + self.access_token_lifetime,
            "appid": client_id,
            "oid": self.user.oid,
            "tid": self.tenant_id,
            "scp": " ".join(sorted(s for s in scopes if s not in RESERVED_SCOPES)),
            "upn": self.user.upn,
            "uti": b64url(secrets.token_bytes(12)),
        }
        token = unsigned_jwt(claims)
        at = AccessToken(
            token, client_id, scopes, self.user, time.time() + self.access_token_lifetime
        )
        self.access_tokens[token] = at
        return at

    def _tokens(self, app: AppRegistration, scopes: frozenset[str], client_info: bool) -> Response:
        resource = frozenset(s for s in scopes if s not in RESERVED_SCOPES)
        at = self._new_access_token(app.client_id, resource)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            # Entra answers with the granted resource scopes plus the OIDC ones.
            "scope": " ".join([*sorted(resource), "openid", "profile", "email"]),
            "expires_in": self.access_token_lifetime - 1,
            "ext_expires_in": self.access_token_lifetime - 1,
            "access_token": at.token,
        }
        if "offline_access" in scopes:
            rt = RefreshToken(
                "1.A" + b64url(secrets.token_bytes(64)), app.client_id, resource, self.user
            )
            self.refresh_tokens[rt.token] = rt
            body["refresh_token"] = rt.token
        if "openid" in scopes:
            now = int(time.time())
            body["id_token"] = unsigned_jwt(
                {
                    "aud": app.client_id,
                    "iss": f"{self.base}/{self.tenant_id}/v2.0",
                    "iat": now,
                    "nbf": now,
                    "exp": now + 3600,
                    "name": self.user.name,
                    "oid": self.user.oid,
                    "preferred_username": self.user.upn,
                    "sub": b64url(self.user.oid.encode())[:43],
                    "tid": self.tenant_id,
                    "ver": "2.0",
                }
            )
        if client_info:
            body["client_info"] = b64url(
                json.dumps({"uid": self.user.oid, "utid": self.tenant_id}).encode()
            )
        return json_response(200, body)
