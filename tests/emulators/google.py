"""One loopback server with Google's OAuth endpoints, the People API and the
Calendar API v3 (each in its own module), as the real client libraries see
them when `api_endpoint` and the token file's `token_uri` point here.

Batch requests (developers.google.com/calendar/api/guides/batch): `POST
/batch/calendar/v3` with a multipart/mixed body of `application/http` parts,
each an HTTP request to the Calendar API (at most 1000; the outer
Authorization applies to parts without their own). The answer is
multipart/mixed too, one `application/http` part per request with
`Content-ID: <response-ID>`; each part is served (faults, auth, quotas) as if
sent alone and logged with `batched=True`."""

from __future__ import annotations

import email
import json
import os
import ssl
import time
import uuid
from email.message import Message
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

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
        if req.method == "POST" and req.path == "/batch/calendar/v3":
            return self._batch(req)
        for handler in (self.oauth.handle, self.people.handle, self.calendar.handle):
            resp = handler(req)
            if resp is not None:
                return resp
        return Response(404, b"<!DOCTYPE html><title>Error 404 (Not Found)!!1</title>",
                        {"Content-Type": "text/html; charset=UTF-8"})

    def _batch(self, req: Request) -> Response:
        fault = self.calendar.faults.take(req)  # `fail(..., path="/batch/")`: nothing ran
        if fault is not None:
            return self.calendar._fault(fault)
        ctype = req.header("Content-Type") or ""
        msg = email.message_from_bytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n"
                                       + req.body)
        parts = msg.get_payload() if msg.is_multipart() else None
        if not isinstance(parts, list) or not parts:
            return Response.json(400, {"error": {"code": 400, "message": "Invalid batch "
                                                 "request: not multipart/mixed",
                                                 "status": "INVALID_ARGUMENT"}})
        if len(parts) > 1000:
            return Response.json(400, {"error": {"code": 400, "message": "Too many requests "
                                                 "in batch (limit 1000)",
                                                 "status": "INVALID_ARGUMENT"}})
        boundary = f"batch_{uuid.uuid4().hex}"
        out: list[str] = []
        for part in parts:
            raw = part.get_payload(decode=True) or b""
            head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
            lines = head.decode("utf-8").split("\n")
            method, target, _version = lines[0].split(" ", 2)
            headers = Message()
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip()] = value.strip()
            if headers.get("Authorization") is None and req.header("Authorization"):
                headers["Authorization"] = req.header("Authorization") or ""
            url = urlsplit(target)
            sub = Request(method=method, path=url.path,
                          query=parse_qs(url.query, keep_blank_values=True),
                          headers=headers, body=body)
            at = time.monotonic()
            if not url.path.startswith("/calendar/v3/"):
                resp = Response.json(400, {"error": {"code": 400, "message": "Batch parts "
                                                     "must call the Calendar API",
                                                     "status": "INVALID_ARGUMENT"}})
            else:
                resp = self.calendar.handle(sub) or Response(404)
            self.server.record(sub, at, resp.status, batched=True)
            try:
                reason = HTTPStatus(resp.status).phrase
            except ValueError:
                reason = ""
            lines_out = [f"HTTP/1.1 {resp.status} {reason}"]
            lines_out += [f"{k}: {v}" for k, v in resp.headers.items()]
            out.append(f"--{boundary}\r\nContent-Type: application/http\r\n"
                       f"Content-ID: <response-{str(part.get('Content-ID', '')).strip('<>')}>"
                       f"\r\n\r\n" + "\r\n".join(lines_out) + "\r\n\r\n"
                       + resp.body.decode("utf-8") + "\r\n")
        out.append(f"--{boundary}--\r\n")
        return Response(200, "".join(out).encode("utf-8"),
                        {"Content-Type": f"multipart/mixed; boundary={boundary}"})

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
        """HTTP requests (a batch is one, whatever it carries)."""
        return len([r for r in self.server.requests(prefix) if not r.batched])

    def stop(self) -> None:
        self.server.stop()
