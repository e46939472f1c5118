"""Google's OAuth 2.0 endpoints as the installed-app flow and google-auth use them.

* `GET /o/oauth2/auth`: the consent page. The emulated user consents at once:
  302 to the loopback `redirect_uri` with `code` and `state` (RFC 6749 §4.1.2,
  RFC 8252 §7.3 loopback redirects, RFC 7636 PKCE recorded for the exchange).
* `POST /token`: `authorization_code` (checks client secret, redirect_uri,
  PKCE S256 verifier, single use) and `refresh_token` grants. Errors use
  Google's shapes (client authentication in the body or as HTTP Basic,
  RFC 6749 §2.3.1): 400 `{"error": "invalid_grant", "error_description":
  "Token has been expired or revoked."}`, 401 `invalid_client`.
  (research protocols.md §2.1.)

Access tokens expire after `expires_in` seconds by the emulator's clock, can
be expired or revoked on demand; `lookup()` tells the API emulators which
scopes a bearer token carries.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

from tests.emulators._http import Clock, Request, Response

DEFAULT_CLIENT_ID = "123456789012-syncdtest.apps.googleusercontent.com"
DEFAULT_CLIENT_SECRET = "GOCSPX-syncd-test-secret"
ACCESS_TOKEN_TTL = 3599


@dataclass
class _Grant:
    client_id: str
    scopes: frozenset[str]
    revoked: bool = False


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scopes: frozenset[str]
    challenge: str | None
    method: str | None


@dataclass
class _Access:
    scopes: frozenset[str]
    expires: datetime
    revoked: bool = False


@dataclass
class OAuth:
    clock: Clock
    clients: dict[str, str] = field(
        default_factory=lambda: {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET}
    )
    refresh_grants: dict[str, _Grant] = field(default_factory=dict)
    access: dict[str, _Access] = field(default_factory=dict)
    codes: dict[str, _Code] = field(default_factory=dict)
    token_requests: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    # ---- test controls -------------------------------------------------------

    def grant(self, scopes: tuple[str, ...] | list[str],
              client_id: str = DEFAULT_CLIENT_ID) -> str:
        """A refresh token as if the user had consented to `scopes`."""
        token = "1//0" + secrets.token_urlsafe(32)
        with self._lock:
            self.refresh_grants[token] = _Grant(client_id, frozenset(scopes))
        return token

    def revoke(self, refresh_token: str) -> None:
        """The user revoked access (or a Testing consent screen's 7 days ran out)."""
        with self._lock:
            self.refresh_grants[refresh_token].revoked = True

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is now expired (401 on use)."""
        with self._lock:
            for a in self.access.values():
                a.expires = self.clock.now() - timedelta(seconds=1)

    def lookup(self, authorization: str | None) -> frozenset[str] | None:
        """The scopes of a valid bearer token, or None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        token = authorization[len("Bearer "):].strip()
        with self._lock:
            a = self.access.get(token)
            if a is None or a.revoked or a.expires <= self.clock.now():
                return None
            return a.scopes

    # ---- endpoints -----------------------------------------------------------

    def handle(self, req: Request) -> Response | None:
        if req.path == "/token" and req.method == "POST":
            return self._token(req)
        if req.path == "/o/oauth2/auth" and req.method == "GET":
            return self._authorize(req)
        return None

    def _authorize(self, req: Request) -> Response:
        client_id = req.param("client_id") or ""
        redirect_uri = req.param("redirect_uri") or ""
        if client_id not in self.clients:
            return _page(401, "Error 401: invalid_client. The OAuth client was not found.")
        host = urlsplit(redirect_uri).hostname
        if urlsplit(redirect_uri).scheme != "http" or host not in ("localhost", "127.0.0.1"):
            return _page(400, "Error 400: redirect_uri_mismatch")
        if req.param("response_type") != "code":
            return _page(400, "Error 400: unsupported_response_type")
        scopes = frozenset((req.param("scope") or "").split())
        if not scopes:
            return _page(400, "Error 400: invalid_request. Missing required parameter: scope")
        method = req.param("code_challenge_method")
        challenge = req.param("code_challenge")
        if challenge is not None and method not in ("S256", "plain"):
            return _page(400, "Error 400: invalid_request. Invalid code_challenge_method")
        code = "4/0" + secrets.token_urlsafe(24)
        with self._lock:
            self.codes[code] = _Code(client_id, redirect_uri, scopes, challenge, method)
        query = {"state": req.param("state") or "", "code": code, "scope": " ".join(sorted(scopes))}
        sep = "&" if "?" in redirect_uri else "?"
        return Response(302, b"", {"Location": f"{redirect_uri}{sep}{urlencode(query)}"})

    def _token(self, req: Request) -> Response:
        with self._lock:
            self.token_requests += 1
        form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8")).items()}
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        basic = req.header("Authorization") or ""
        if basic.startswith("Basic "):  # RFC 6749 §2.3.1 client_secret_basic
            try:
                pair = base64.b64decode(basic[6:]).decode("utf-8")
            except ValueError:
                return _err(401, "invalid_client", "Unauthorized")
            user, _, password = pair.partition(":")
            client_id, secret = unquote_plus(user), unquote_plus(password)
        if not client_id or self.clients.get(client_id) != secret:
            return _err(401, "invalid_client", "Unauthorized")
        grant_type = form.get("grant_type")
        if grant_type == "refresh_token":
            return self._refresh(form, client_id)
        if grant_type == "authorization_code":
            return self._exchange(form, client_id)
        return _err(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _refresh(self, form: dict[str, str], client_id: str) -> Response:
        with self._lock:
            g = self.refresh_grants.get(form.get("refresh_token", ""))
        if g is None or g.revoked or g.client_id != client_id:
            return _err(400, "invalid_grant", "Token has been expired or revoked.")
        wanted = frozenset(form.get("scope", "").split()) or g.scopes
        if not wanted <= g.scopes:
            return _err(400, "invalid_scope", "Some requested scopes were invalid.")
        return self._issue(wanted)

    def _exchange(self, form: dict[str, str], client_id: str) -> Response:
        with self._lock:
            code = self.codes.pop(form.get("code", ""), None)  # single use
        if code is None or code.client_id != client_id:
            return _err(400, "invalid_grant", "Malformed auth code.")
        if form.get("redirect_uri") != code.redirect_uri:
            return _err(400, "redirect_uri_mismatch", "Bad Request")
        if code.challenge is not None:
            verifier = form.get("code_verifier", "")
            if code.method == "S256":
                digest = hashlib.sha256(verifier.encode("ascii")).digest()
                computed = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
            else:
                computed = verifier
            if not verifier or computed != code.challenge:
                return _err(400, "invalid_grant", "Invalid code verifier.")
        refresh = self.grant(tuple(code.scopes), client_id)
        resp = self._issue(code.scopes)
        payload = json.loads(resp.body)
        payload["refresh_token"] = refresh
        return Response.json(200, payload)

    def _issue(self, scopes: frozenset[str]) -> Response:
        token = "ya29." + secrets.token_urlsafe(40)
        with self._lock:
            self.access[token] = _Access(
                scopes, self.clock.now() + timedelta(seconds=ACCESS_TOKEN_TTL)
            )
        return Response.json(
            200,
            {
                "access_token": token,
                "expires_in": ACCESS_TOKEN_TTL,
                "scope": " ".join(sorted(scopes)),
                "token_type": "Bearer",
            },
            {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
             "Pragma": "no-cache"},
        )


def _err(status: int, error: str, description: str) -> Response:
    return Response.json(status, {"error": error, "error_description": description})


def _page(status: int, text: str) -> Response:
    return Response(status, text.encode("utf-8"), {"Content-Type": "text/html; charset=utf-8"})

