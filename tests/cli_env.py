"""A syncd CLI environment for end-to-end tests: a config in a temp dir
pointing at a real CalDAV server, the CLI run as a separate process, and the
server's events read back raw (another client's view)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import caldav
import icalendar
import requests

from tests.servers import DavServer

CONTACTS = """\
BEGIN:VCARD
VERSION:3.0
UID:jane
FN:Jane Roe
ORG:Acme Capital
TEL:+1 212 555 0101
EMAIL:jane@acme.example
CATEGORIES:Hiring managers
END:VCARD
BEGIN:VCARD
VERSION:3.0
UID:bob
FN:Bob Li
ORG:Northwind
TEL:+1 415 555 0102
CATEGORIES:Hiring managers
END:VCARD
"""

USER_LINES = "9:10 no answer\n  she said call after lunch  \n\n✨ مرحبا trailing\t"


@dataclass
class Env:
    config: Path
    calendar_name: str
    server: DavServer

    def run(self, *args: str, now: str = "2026-11-25T15:00:00+00:00",
            check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SYNCD_NOW": now, "E2E_PASSWORD": "not-checked"}
        proc = subprocess.run(
            [sys.executable, "-m", "syncd", "--config", str(self.config),
             "--log-format", "json", *args],
            capture_output=True, text=True, env=env, timeout=120,
        )
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def calendar(self) -> Any:
        client = caldav.DAVClient(url=self.server.principal_url, username="alice",
                                  password="x", timeout=30)
        for cal in client.principal().get_calendars():
            if cal.get_display_name() == self.calendar_name:
                return cal
        raise AssertionError("calendar not created")

    def events(self) -> list[Event]:
        """Listed with caldav, then each fetched raw: caldav's loader "fixes"
        data (it strips trailing whitespace), which would hide what the
        server really holds."""
        out = []
        for ev in self.calendar().get_events():
            got = requests.get(str(ev.url), auth=("alice", "x"), timeout=30)
            got.raise_for_status()
            cal = icalendar.Calendar.from_ical(got.content.decode("utf-8"))
            comp = next(iter(cal.walk("VEVENT")))
            out.append(Event(str(ev.url), got.headers["ETag"], comp))
        return out


@dataclass
class Event:
    url: str
    etag: str
    icalendar_component: Any


def cycles(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "cycle":
            out.append(rec)
    return out


def make_env(tmp_path: Path, dav_server: DavServer) -> Env:
    name = f"Follow-ups {uuid.uuid4().hex[:8]}"
    (tmp_path / "contacts.vcf").write_text(CONTACTS)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""\
timezone: America/New_York
horizon: 14d
state_dir: state
contacts:
  - {{name: cards, type: file, path: contacts.vcf}}
calendar:
  type: caldav
  url: {dav_server.base}/
  calendar: {name}
  username: alice
  password_env: E2E_PASSWORD
cadences:
  pursue: {{channel: call, every: 2 business days, until: reached, then: keep_in_touch}}
  keep_in_touch: {{channel: email, every: 4 weeks}}
rules:
  - {{match: {{label: Hiring managers}}, cadence: pursue}}
""")
    return Env(cfg, name, dav_server)


def user_edit(url: str, change: Callable[[str], str]) -> None:
    got = requests.get(url, auth=("alice", "x"), timeout=30)
    got.raise_for_status()
    cal = icalendar.Calendar.from_ical(got.content.decode("utf-8"))
    for comp in cal.walk("VEVENT"):
        original = str(comp["DESCRIPTION"])
        assert original.endswith("Log attempts below:\n")
        comp["DESCRIPTION"] = icalendar.vText(change(original))
    put = requests.put(url, data=cal.to_ical(), auth=("alice", "x"), timeout=30,
                       headers={"If-Match": got.headers["ETag"],
                                "Content-Type": "text/calendar; charset=utf-8"})
    assert put.status_code in (201, 204), put.text


def marker(ev: Any) -> str | None:
    comp = ev.icalendar_component
    v = comp.get("X-SYNCD-ID")
    return None if v is None else str(v)
