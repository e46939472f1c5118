"""Fixtures for the Microsoft connectors: the identity platform and Graph
emulators over HTTPS (a throwaway trustme CA per session), and helpers that
sign a config in through the real MSAL device-code flow."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC as UTC_
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme

from connectors.msal_auth import sign_in
from syncd.settings import CalendarConfig, Connection, SourceConfig
from tests.emulators.graph import GraphEmulator
from tests.emulators.ms_identity import IdentityEmulator, make_ca
from tests.servers import count_requests


@dataclass
class MsCloud:
    identity: IdentityEmulator
    graph: GraphEmulator
    ca_pem: Path
    tmp: Path

    @property
    def client_id(self) -> str:
        return self.identity.client_id

    def connection(self, **overrides: Any) -> Connection:
        conn = Connection(
            graph_endpoint=self.graph.base,
            authority=self.identity.authority(),
            ca_bundle=self.ca_pem,
            timeout=10,
        )
        return replace(conn, **overrides)

    def source_cfg(self, name: str = "work", **kw: Any) -> SourceConfig:
        conn = kw.pop("connection", None) or self.connection()
        kw.setdefault("client_id", self.client_id)
        return SourceConfig(name=name, type="outlook", connection=conn, **kw)

    def calendar_cfg(self, calendar: str | None = None, **kw: Any) -> CalendarConfig:
        conn = kw.pop("connection", None) or self.connection()
        name = calendar or f"Follow-ups {uuid.uuid4().hex[:8]}"
        kw.setdefault("client_id", self.client_id)
        return CalendarConfig(type="graph", calendar=name, connection=conn, **kw)

    def sign_in(self, cfg: SourceConfig | CalendarConfig, state_dir: Path) -> str:
        """`syncd auth NAME` through real MSAL, the user approving at once."""
        self.identity.auto_approve = True
        try:
            return sign_in(cfg, state_dir, True)
        finally:
            self.identity.auto_approve = False

    def other_client(self, scopes: tuple[str, ...] = ("Calendars.ReadWrite",
                                                       "Contacts.ReadWrite")) -> requests.Session:
        """Another Graph client of the same user (Outlook on the web, a phone)."""
        s = requests.Session()
        s.trust_env = False
        s.verify = str(self.ca_pem)
        s.headers["Authorization"] = f"Bearer {self.identity.issue_token(scopes)}"
        return s


@pytest.fixture(scope="session")
def ms_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    return make_ca(tmp_path_factory.mktemp("ms-ca"))


@pytest.fixture
def ms(ms_ca: tuple[trustme.CA, Path], tmp_path: Path) -> Iterator[MsCloud]:
    """A fresh tenant and mailbox per test (contacts are mailbox-wide)."""
    ca, pem = ms_ca
    identity = IdentityEmulator(ca)
    graph = GraphEmulator(ca, identity)
    yield MsCloud(identity, graph, pem, tmp_path)
    graph.stop()
    identity.stop()


# --------------------------------------------------------------------------
# The Graph backend of the calendar contract suite (tests/test_calendar_contract.py)
# --------------------------------------------------------------------------


class GraphBackend:
    """GraphCalendar on the Graph emulator, signed in once through MSAL."""

    id = "graph"
    # Graph (Exchange) stores text bodies faithfully; CRLF is normalised (module doc).
    text_defects: tuple[str, ...] = ()

    def __init__(self, cloud: MsCloud) -> None:
        from connectors.graph_calendar import GraphCalendar

        self._cls = GraphCalendar
        self.ms = cloud
        self.state = cloud.tmp / "graph-backend-state"
        self.state.mkdir(exist_ok=True)
        cloud.sign_in(cloud.calendar_cfg("sign-in"), self.state)
        self.http = cloud.other_client()
        self.opened: list[Any] = []

    def open(self, calendar: str, busy: tuple[str, ...] = ()) -> Any:
        # The suite writes events months apart (a DST test in March): read a
        # wide window instead of the daemon's 30 days back (module doc).
        cal = self._cls(self.ms.calendar_cfg(calendar, busy_calendars=busy), self.state,
                        lookback=timedelta(days=730))
        self.opened.append(cal)
        return cal

    def count_calendars(self, name: str) -> int:
        url: str | None = f"{self.ms.graph.root_url}/me/calendars"
        n = 0
        while url:
            page = self.http.get(url, timeout=10).json()
            n += sum(1 for c in page["value"] if c["name"] == name)
            url = page.get("@odata.nextLink")
        return n

    def foreign_create(self, calendar: str, uid: str, summary: str, start: Any, end: Any,
                       rrule: str | None = None) -> None:
        """An invitation accepted in Outlook: its UID becomes the iCalUId."""
        cal_id = self.open(calendar).url().rsplit("/", 1)[1]
        utc = {"dateTime": "", "timeZone": "UTC"}
        body: dict[str, Any] = {
            "subject": summary,
            "body": {"contentType": "html", "content": ""},
            "start": {**utc, "dateTime": start.astimezone(UTC_).strftime("%Y-%m-%dT%H:%M:%S")},
            "end": {**utc, "dateTime": end.astimezone(UTC_).strftime("%Y-%m-%dT%H:%M:%S")},
            "attendees": [{"type": "required", "status": {"response": "none"},
                           "emailAddress": {"name": "Bob Li", "address": "bob@example.com"}}],
        }
        if rrule:
            rule = dict(p.split("=", 1) for p in rrule.split(";"))
            assert rule["FREQ"] == "DAILY", rrule
            body["recurrence"] = {
                "pattern": {"type": "daily", "interval": int(rule.get("INTERVAL", 1))},
                "range": {"type": "numbered", "startDate": start.astimezone(UTC_).date()
                          .isoformat(), "numberOfOccurrences": int(rule["COUNT"])},
            }
        self.ms.graph.import_event(cal_id, body, ical_uid=uid)

    def foreign_edit(self, cal: Any, ev: Any, summary: str) -> None:
        r = self.http.patch(f"{self.ms.graph.root_url}/me/events/{ev.ref}",
                            json={"subject": summary}, timeout=10)
        assert r.status_code == 200, r.text

    def stale_cursor(self, cursor: str) -> str | None:
        state = json.loads(cursor)
        link, _, _tok = state["link"].partition("$deltatoken=")
        state["link"] = link + "$deltatoken=" + "A" * 40  # well formed, never issued
        return json.dumps(state)

    def count_requests(self, cal: Any) -> Any:
        return count_requests(cal.http_session)

    def close(self) -> None:
        for cal in self.opened:
            cal.close()
        self.http.close()


# --------------------------------------------------------------------------
# The Outlook driver of the contact-source contract suite
# --------------------------------------------------------------------------


class OutlookDriver:
    """Contacts in the Graph emulator's mailbox, spread over the default
    Contacts folder and a child folder; read with small pages so every
    round follows nextLinks."""

    def __init__(self, cloud: MsCloud) -> None:
        self.ms = cloud
        self.state = cloud.tmp / "outlook-driver-state"
        self.state.mkdir(exist_ok=True)
        self.cfg = cloud.source_cfg("work")
        cloud.sign_in(self.cfg, self.state)
        self.child = cloud.graph.add_folder("Recruiters")
        self.ids: dict[str, str] = {}
        self.bad = 0

    def put(self, person: Any) -> None:
        first, *_, last = person.name.split()
        data = {
            "displayName": person.name, "givenName": first, "surname": last,
            "emailAddresses": [{"name": person.name, "address": person.email}],
            "mobilePhone": person.phone or None, "jobTitle": person.title or None,
            "companyName": "Acme",
        }
        folder = self.child if len(self.ids) % 2 else None
        known = self.ids.get(person.key)
        self.ids[person.key] = self.ms.graph.put_contact(data, folder=folder, contact_id=known)

    def remove(self, key: str) -> None:
        self.ms.graph.delete_contact(self.ids.pop(key))

    def add_malformed(self) -> str:
        self.bad += 1
        cid = self.ms.graph.put_contact(
            {"emailAddresses": [{"name": "", "address": f"nobody{self.bad}@example.com"}]})
        return f"{self.ms.graph.root_url}/me/contacts/{cid}"

    def source(self) -> Any:
        from connectors.outlook_contacts import OutlookContactsSource

        return OutlookContactsSource(self.cfg, self.state, page_size=2)

    def close(self) -> None:
        pass
