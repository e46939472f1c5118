"""`syncd auth NAME` for a Google contact source or calendar.

google-auth-oauthlib's installed-app flow (research protocols.md §2.2): a
loopback redirect on a free port (RFC 8252 §7.3), PKCE, `access_type=offline`
so Google issues a refresh token, and `prompt=consent` so it issues one again
on a repeated sign-in. `--no-browser` prints the URL instead of opening a
browser; the redirect still goes to `http://localhost:PORT/` on this machine
(forward that port when signing in from elsewhere, e.g. `ssh -L`).

Scopes are the least the connector needs (`connectors.google_common`):
contacts.readonly for a source; calendar.events, calendar.calendarlist.readonly
and calendar.calendars for the calendar. When the token file already holds a
sign-in of the same OAuth client (a source and the calendar may share one
file, SPEC "Connection overrides"), its scopes are asked for again too, so
signing in for one never takes access away from the other.

The token (authorized-user JSON) is written with mode 0600, atomically, to
`token_file` or `<state_dir>/google-NAME.json`. An existing file's
`token_uri` is kept for the code exchange; otherwise Google's endpoints are
used. The client comes from the config: `client_id` and one of
`client_secret_env` / `_file` / `_command` (an OAuth client of type "Desktop
app", see README "Google setup").
"""

from __future__ import annotations

import json
import webbrowser
from pathlib import Path
from typing import Any

from google_auth_oauthlib.flow import InstalledAppFlow, WSGITimeoutError
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from connectors.google_common import (
    GOOGLE_AUTH_URI,
    GOOGLE_TOKEN_URI,
    Config,
    account_name,
    credentials_json,
    describe,
    required_scopes,
    token_path,
    write_private,
)
from syncd.errors import AuthError, RemoteError, UserError
from syncd.settings import CalendarConfig

PROMPT = (
    "Open this URL in a browser on this machine and allow access for {who}:\n\n"
    "    {{url}}\n\n"
    "(Google redirects back to http://localhost on this machine; from another "
    "machine, forward the port in the URL's redirect_uri, e.g. ssh -L PORT:localhost:PORT.)"
)
SUCCESS = "syncd is signed in to Google. You may close this window."
TIMEOUT_SECONDS = 300


def sign_in(cfg: Config, state_dir: Path, no_browser: bool) -> str:
    """Entry point of `syncd auth NAME` (see `syncd.wiring.SIGN_IN`)."""
    return run_sign_in(cfg, state_dir, no_browser)


def _where(cfg: Config) -> str:
    return "calendar" if isinstance(cfg, CalendarConfig) else f"contacts[{cfg.name}]"


def _existing(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def run_sign_in(
    cfg: Config,
    state_dir: Path,
    no_browser: bool,
    *,
    auth_uri: str = GOOGLE_AUTH_URI,
    token_uri: str | None = None,
    timeout: int = TIMEOUT_SECONDS,
) -> str:
    """The sign-in itself; `auth_uri`/`token_uri` are parameters for tests
    and private deployments (a configured token file's `token_uri` wins over
    Google's default)."""
    from syncd.config import resolve_secret

    where = _where(cfg)
    if not cfg.client_id:
        raise UserError(
            f"{where}.client_id: required for `syncd auth {account_name(cfg)}`",
            hint="create an OAuth client of type Desktop app in Google Cloud (README: "
            f"Google setup), then set {where}.client_id and {where}.client_secret_env "
            "(or _file / _command)",
        )
    secret = resolve_secret(cfg.client_secret, f"{where}.client_secret")
    path = token_path(cfg, state_dir)
    existing = _existing(path)
    scopes = set(required_scopes(cfg))
    if existing.get("client_id") == cfg.client_id and isinstance(existing.get("scopes"), list):
        scopes |= {str(s) for s in existing["scopes"]}
    token_uri = token_uri or str(existing.get("token_uri") or GOOGLE_TOKEN_URI)
    client = {
        "installed": {
            "client_id": cfg.client_id,
            "client_secret": secret,
            "auth_uri": auth_uri,
            "token_uri": token_uri,
            "redirect_uris": ["http://localhost"],
        }
    }
    flow = InstalledAppFlow.from_client_config(client, scopes=sorted(scopes))
    if cfg.connection.ca_bundle is not None:
        flow.oauth2session.verify = str(cfg.connection.ca_bundle)
    prompt = PROMPT.format(who=describe(cfg))
    try:
        try:
            creds = flow.run_local_server(
                host="localhost", port=0, open_browser=not no_browser,
                authorization_prompt_message=prompt, success_message=SUCCESS,
                timeout_seconds=timeout, prompt="consent",
            )
        except webbrowser.Error:  # no browser here: print the URL instead
            creds = flow.run_local_server(
                host="localhost", port=0, open_browser=False,
                authorization_prompt_message=prompt, success_message=SUCCESS,
                timeout_seconds=timeout, prompt="consent",
            )
    except WSGITimeoutError:
        raise AuthError(f"no sign-in completed within {timeout} s",
                        hint=f"run `syncd auth {account_name(cfg)}` again") from None
    except OAuth2Error as e:  # the token endpoint refused the code (or the client)
        raise AuthError(f"Google sign-in failed: {type(e).__name__}: {e}",
                        hint="check client_id and the client secret in the config") from None
    except (OSError, ValueError) as e:  # network, TLS; requests' errors are OSErrors
        raise RemoteError(f"Google sign-in failed: {type(e).__name__}: {e}") from None
    write_private(path, credentials_json(creds))
    return f"signed in to Google for {describe(cfg)}; token saved to {path} (mode 0600)"
