"""Fixtures for the Google emulators (imported by tests/conftest.py).

Each test gets its own emulator (a server thread on a free loopback port,
started in milliseconds), so no state leaks between tests.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import pytest
import requests

from connectors.google_calendar import GoogleCalendar
from connectors.google_people import GooglePeopleSource
from syncd.model import RemoteEvent
from syncd.ports import Calendar
from syncd.settings import CalendarConfig, Connection, SourceConfig
from tests.emulators.google import CALENDAR_SCOPES, CONTACTS_READONLY, GoogleEmulator

ALL_SCOPES = (CONTACTS_READONLY, *CALENDAR_SCOPES)


@pytest.fixture
def google() -> Iterator[GoogleEmulator]:
    emu = GoogleEmulator()
    yield emu
    emu.stop()
    assert not emu.server.bugs, "the emulator raised:\n" + "\n".join(emu.server.bugs)


@pytest.fixture
def google_token(google: GoogleEmulator, tmp_path: Path) -> Path:
    """An authorized-user token file for the emulator, with every scope syncd asks for."""
    path = tmp_path / "google-token.json"
    google.write_token_file(path, ALL_SCOPES)
    return path


@dataclass
class TlsGoogle:
    emulator: GoogleEmulator
    ca_file: Path  # the CA that signed the server's certificate
    other_ca_file: Path  # a CA that did not


@pytest.fixture
def google_tls(tmp_path: Path) -> Iterator[TlsGoogle]:
    """The emulator over HTTPS with a certificate from a throwaway CA."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    ca_file = tmp_path / "emulator-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    emu = GoogleEmulator(tls=ctx)
    yield TlsGoogle(emu, ca_file, other)
    emu.stop()
    assert not emu.server.bugs, "the emulator raised:\n" + "\n".join(emu.server.bugs)


# --------------------------------------------------------------------------
# Contract-suite adapters (tests/test_calendar_contract.py, test_contact_sources.py)


class _PersonLike(Protocol):
    key: str
    name: str
    email: str
    phone: str
    title: str


class GooglePeopleDriver:
    """The contact-source contract's driver for Google Contacts: the emulated
    user edits contacts (as in the Contacts web UI); the source reads them
    through the People API."""

    def __init__(self, emu: GoogleEmulator, token: Path, state_dir: Path) -> None:
        self.emu = emu
        self.token = token
        self.state_dir = state_dir
        self.keys: dict[str, str] = {}  # Person.key -> resource name

    def put(self, person: _PersonLike) -> None:
        fields = {
            "name": person.name,
            "emails": [person.email],
            "phones": [person.phone] if person.phone else [],
            "title": person.title,
        }
        rn = self.keys.get(person.key)
        if rn is None:
            self.keys[person.key] = self.emu.people.add_contact(**fields)
        else:
            self.emu.people.update_contact(rn, **fields)

    def remove(self, key: str) -> None:
        self.emu.people.delete_contact(self.keys.pop(key))

    def add_malformed(self) -> str:
        # A contact with neither name, e-mail nor phone: nobody to follow up.
        return self.emu.people.add_contact(note="met at the conference, no details")

    def source(self) -> GooglePeopleSource:
        return GooglePeopleSource(
            SourceConfig(
                name="google",
                type="google",
                connection=Connection(
                    api_endpoint=self.emu.people_endpoint, token_file=self.token, timeout=10
                ),
            ),
            self.state_dir,
        )


@dataclass
class GoogleCalendarBackend:
    """The calendar contract's backend for Google Calendar: the connector
    talks to the emulator through google-api-python-client; "other clients"
    are plain HTTP calls with their own bearer token."""

    emu: GoogleEmulator
    token: Path
    state_dir: Path
    id: str = "google"
    text_defects: tuple[str, ...] = ()
    opened: list[GoogleCalendar] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = requests.Session()
        self.http.headers.update(self.emu.bearer(CALENDAR_SCOPES))

    def open(self, calendar: str, busy: tuple[str, ...] = ()) -> GoogleCalendar:
        cfg = CalendarConfig(
            type="google",
            calendar=calendar,
            busy_calendars=busy,
            connection=Connection(
                api_endpoint=self.emu.calendar_endpoint, token_file=self.token, timeout=10
            ),
        )
        cal = GoogleCalendar(cfg, self.state_dir)
        self.opened.append(cal)
        return cal

    def _calendars(self) -> list[dict[str, Any]]:
        r = self.http.get(f"{self.emu.calendar_endpoint}users/me/calendarList",
                          params={"maxResults": 250}, timeout=10)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    def _calendar_url(self, name: str) -> str:
        cid = next(c["id"] for c in self._calendars() if c["summary"] == name)
        return f"{self.emu.calendar_endpoint}calendars/{quote(cid, safe='')}"

    def count_calendars(self, name: str) -> int:
        return sum(1 for c in self._calendars() if c["summary"] == name)

    def foreign_create(self, calendar: str, uid: str, summary: str, start: datetime,
                       end: datetime, rrule: str | None = None) -> None:
        self.open(calendar).url()  # make sure it exists, as the CalDAV backend does
        body: dict[str, Any] = {
            "iCalUID": uid,
            "summary": summary,
            "start": {"dateTime": start.astimezone(UTC).isoformat(), "timeZone": "UTC"},
            "end": {"dateTime": end.astimezone(UTC).isoformat(), "timeZone": "UTC"},
            "attendees": [{"email": "bob@example.com", "displayName": "Bob Li"}],
        }
        if rrule:
            body["recurrence"] = [f"RRULE:{rrule}"]
        # events.import: how another client stores an event under its own UID.
        r = self.http.post(f"{self._calendar_url(calendar)}/events/import", json=body,
                           timeout=10)
        assert r.status_code == 200, r.text

    def foreign_edit(self, cal: Calendar, ev: RemoteEvent, summary: str) -> None:
        assert isinstance(cal, GoogleCalendar)
        r = self.http.patch(f"{cal.url()}/events/{ev.ref}", json={"summary": summary},
                            timeout=10)
        assert r.status_code == 200, r.text

    def stale_cursor(self, cursor: str) -> str | None:
        state = json.loads(cursor)
        state["t"] = self.emu.calendar.forge_sync_token()  # well formed, never issued
        return json.dumps(state)

    def count_requests(self, cal: Calendar) -> Callable[[], int]:
        start = self.emu.api_requests()
        return lambda: self.emu.api_requests() - start

    def close(self) -> None:
        for cal in self.opened:
            cal.close()
        self.http.close()


def google_calendar_backend(request: pytest.FixtureRequest) -> GoogleCalendarBackend:
    tmp: Path = request.getfixturevalue("tmp_path")
    return GoogleCalendarBackend(
        request.getfixturevalue("google"), request.getfixturevalue("google_token"), tmp
    )
