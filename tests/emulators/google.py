"""One loopback server with Google's OAuth endpoints, the People API and the
Calendar API v3 (each in its own module), as the real client libraries see
them when `api_endpoint` and the token file's `token_uri` point here."""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path

from tests.emulators._http import Clock, Request, Response, Server
from tests.emulators.google_calendar import CalendarEmulator
from tests.emulators.google_oauth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, OAuth
from tests.emulators.google_people import PeopleEmulator

CONTACTS_READONLY = "https://www.googleapis.com/auth/contacts.readonly"
CALENDAR_SCOPES = (
    "https://www.googleapis.com/auth/calendar.events",
    "https://www.googleapis.com/auth/calendar.calendarlist.readonly",
    "https://www.googleapis.com/auth/calendar.calendars",
)


class GoogleEmulator:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.clock = Clock()
        self.oauth = OAuth(self.clock)
        self.people = PeopleEmulator(self.oauth, self.clock)
        self.calendar = CalendarEmulator(self.oauth, self.clock)
        self.server = Server(self._app, tls)

    def _app(self, req: Request) -> Response:
        for handler in (self.oauth.handle, self.people.handle, self.calendar.handle):
            resp = handler(req)
            if resp is not None:
                return resp
        return Response(404, b"<!DOCTYPE html><title>Error 404 (Not Found)!!1</title>",
                        {"Content-Type": "text/html; charset=UTF-8"})

    # ---- where clients point ---------------------------------------------------

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def people_endpoint(self) -> str:
        return self.base + "/"

    @property
    def calendar_endpoint(self) -> str:
        return self.base + "/calendar/v3/"

    @property
    def token_uri(self) -> str:
        return self.base + "/token"

    @property
    def auth_uri(self) -> str:
        return self.base + "/o/oauth2/auth"

    # ---- credentials -------------------------------------------------------------

    def write_token_file(self, path: Path, scopes: tuple[str, ...] | list[str]) -> str:
        """An authorized-user file as `syncd auth` leaves it (refresh token,
        client, this server's token_uri; no access token yet). Returns the
        refresh token so a test can revoke it."""
        refresh = self.oauth.grant(tuple(scopes))
        info = {
            "refresh_token": refresh,
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "token_uri": self.token_uri,
            "scopes": list(scopes),
            "type": "authorized_user",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        return refresh

    def bearer(self, scopes: tuple[str, ...] | list[str]) -> dict[str, str]:
        """Headers for "another client" calling the APIs directly."""
        resp = self.oauth._issue(frozenset(scopes))
        token = json.loads(resp.body)["access_token"]
        return {"Authorization": f"Bearer {token}"}

    def api_requests(self, prefix: str = "") -> int:
        return len(self.server.requests(prefix))

    def stop(self) -> None:
        self.server.stop()
