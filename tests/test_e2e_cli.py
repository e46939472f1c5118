"""End to end through the real CLI (a separate process) and a real CalDAV
server: contacts file → `syncd sync` → events → the user types a line into
an event's notes with another client → `syncd sync` → attempt recorded, next
follow-up written, the user's lines untouched."""

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
import pytest
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


@pytest.fixture
def env(tmp_path: Path, dav_server: DavServer) -> Env:
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


def test_contacts_to_events_to_attempts_and_back(env: Env) -> None:
    first = env.run("sync")
    assert cycles(first.stderr)[-1]["created"] == 2

    events = env.events()
    summaries = sorted(str(e.icalendar_component["SUMMARY"]) for e in events)
    assert summaries == ["Call Bob Li (Northwind) #1", "Call Jane Roe (Acme Capital) #1"]
    assert all(marker(e) for e in events)

    status = env.json("status")
    jane = next(c for c in status["contacts"] if c["name"] == "Jane Roe")
    assert jane["state"] == "active" and jane["cadence"] == "pursue"
    assert jane["next_followup"]["channel"] == "call"
    jane_ev = next(e for e in events if "Jane" in str(e.icalendar_component["SUMMARY"]))
    assert jane["next_followup"]["event_uid"] == str(jane_ev.icalendar_component["UID"])

    # The user logs a call in Jane's event, with another CalDAV client (raw
    # GET + PUT with If-Match, so no client library rewrites the text).
    user_edit(jane_ev.url, lambda d: d + USER_LINES)

    second = env.run("sync", now="2026-11-25T20:00:00+00:00")
    rec = cycles(second.stderr)[-1]
    assert rec["attempts_read"] == 1
    assert rec["created"] == 1  # Jane's next follow-up

    attempts = env.json("attempts")
    assert [(a["contact"], a["at"], a["outcome"], a["time_inferred"]) for a in attempts] == [
        ("Jane Roe", "2026-11-25T09:10:00-05:00", "no_answer", False)]

    events = env.events()
    assert len(events) == 3
    assert len({marker(e) for e in events}) == 3  # no duplicates
    jane_events = sorted((e for e in events if "Jane" in str(e.icalendar_component["SUMMARY"])),
                         key=lambda e: e.icalendar_component.decoded("DTSTART"))
    # The user's lines are still there, byte for byte.
    desc = str(jane_events[0].icalendar_component["DESCRIPTION"])
    assert desc.endswith("Log attempts below:\n" + USER_LINES)
    nxt = jane_events[1].icalendar_component
    assert str(nxt["SUMMARY"]) == "Call Jane Roe (Acme Capital) #2"
    # Two business days after Wednesday's attempt: Friday.
    assert nxt.decoded("DTSTART").strftime("%a") == "Fri"
    status = env.json("status")
    jane = next(c for c in status["contacts"] if c["name"] == "Jane Roe")
    assert jane["attempts"] == 1
    assert jane["last_attempt"]["outcome"] == "no_answer"
    assert jane["next_followup"]["event_uid"] == str(nxt["UID"])
    assert jane["unparsed"] == ["she said call after lunch", "✨ مرحبا trailing"]

    # Nothing changed: the next cycles write nothing and duplicate nothing.
    etags = sorted((e.url, e.etag) for e in events)
    for _ in range(2):
        idle = env.run("sync", now="2026-11-25T20:05:00+00:00")
        rec = cycles(idle.stderr)[-1]
        assert (rec["created"], rec["updated"], rec["deleted"]) == (0, 0, 0)
    assert sorted((e.url, e.etag) for e in env.events()) == etags
    assert len(env.json("attempts")) == 1


def test_second_daemon_on_the_same_state_is_refused(env: Env) -> None:
    env.run("sync")
    holder = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(env.config), "--log-format", "json",
         "run"],
        env={**os.environ, "E2E_PASSWORD": "x"}, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Wait for the holder's first cycle: it has the lock once it logs.
        assert holder.stderr is not None
        for line in holder.stderr:
            if '"cycle"' in line:
                break
        second = env.run("sync", check=False)
        assert second.returncode == 1
        assert f"another syncd (pid {holder.pid}) holds the state directory" in second.stderr
    finally:
        holder.terminate()
        assert holder.wait(timeout=15) == 0


def test_config_error_names_file_line_and_key(env: Env) -> None:
    env.config.write_text(env.config.read_text().replace("horizon: 14d", "horizn: 14d"))
    proc = env.run("config", "check", check=False)
    assert proc.returncode == 2
    assert f"{env.config}:2: horizn: unknown key (did you mean 'horizon'?)" in proc.stderr
    assert "Traceback" not in proc.stderr
