"""Helpers for the tests of issue 7: a real `syncd` process whose JSON log
lines are read as they come (readiness, not sleeps), a systemd notification
socket, configs, and an outside view of the calendar.

Used by test_daemon.py, test_faults.py, test_no_leaks.py and test_hostile.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import icalendar
import requests

from tests.servers import DavServer

NOW = "2026-11-25T15:00:00+00:00"  # a Wednesday; events land from Thursday on
Record = dict[str, Any]


def vcards(n: int | list[int], prefix: str = "p", label: str | None = None) -> str:
    """n cards (or the cards numbered in n): UID p0…, FN "Person P0"…"""
    cat = f"CATEGORIES:{label}\n" if label else ""
    return "".join(
        f"BEGIN:VCARD\nVERSION:3.0\nUID:{prefix}{i}\nFN:Person {prefix.upper()}{i}\n"
        f"TEL:+1212555{i:04d}\n{cat}END:VCARD\n"
        for i in (range(n) if isinstance(n, int) else n))


@dataclass
class Setup:
    """A config in a temp dir pointing at a calendar on a real server."""

    dir: Path
    server_base: str  # the calendar server (or a proxy in front of it)
    calendar: str = field(default_factory=lambda: f"Follow-ups {uuid.uuid4().hex[:8]}")
    contacts: str = ""  # extra YAML list items under contacts:
    extra: str = ""  # extra top-level YAML
    calendar_extra: str = ""  # extra keys of the calendar mapping
    password_key: str = "password_env: CAL_PASSWORD"

    @property
    def config(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def state(self) -> Path:
        return self.dir / "state"

    def write(self, cards: str | None = None) -> Path:
        if cards is not None:
            (self.dir / "cards.vcf").write_text(cards)
        self.config.write_text(f"""\
timezone: America/New_York
horizon: 14d
state_dir: state
contacts:
  - {{name: cards, type: file, path: cards.vcf}}
{self.contacts}calendar:
  type: caldav
  url: {self.server_base}/
  calendar: {self.calendar}
  username: alice
  {self.password_key}
{self.calendar_extra}cadences:
  pursue: {{channel: call, every: 2 business days, until: reached, then: keep_in_touch}}
  keep_in_touch: {{channel: email, every: 4 weeks}}
rules:
  - {{match: {{label: Hiring managers}}, cadence: pursue}}
  - {{cadence: pursue}}
{self.extra}""")
        return self.config


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                        "SYNCD_TEST_STOP_AFTER_STEP")}
    env.update({"CAL_PASSWORD": "not-checked", "SYNCD_NOW": NOW, "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def syncd(setup: Setup, *args: str, env: dict[str, str] | None = None, verbose: bool = False,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "syncd", "--config", str(setup.config), "--log-format", "json"]
    if verbose:
        cmd.append("-v")
    return subprocess.run([*cmd, *args], capture_output=True, text=True,
                          env=env or base_env(), timeout=timeout, cwd=setup.dir)


def records(stderr: str) -> list[Record]:
    out = []
    for line in stderr.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            rec = {"raw": line}
        out.append(rec if isinstance(rec, dict) else {"raw": line})
    return out


def cycle_lines(stderr: str) -> list[Record]:
    return [r for r in records(stderr) if r.get("event") == "cycle"]


class Proc:
    """A running `syncd … run`, its stderr read line by line on a thread."""

    def __init__(self, setup: Setup, *args: str, env: dict[str, str] | None = None,
                 verbose: bool = False) -> None:
        cmd = [sys.executable, "-m", "syncd", "--config", str(setup.config),
               "--log-format", "json"]
        if verbose:
            cmd.append("-v")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([*cmd, *(args or ("run",))], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=env or base_env(), cwd=setup.dir)
        self.lines: list[str] = []
        self.records: list[Record] = []
        self.stdout = ""
        self._q: queue.Queue[Record | None] = queue.Queue()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        self._o = threading.Thread(target=self._read_out, daemon=True)
        self._o.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            rec = records(line)[0] if line.strip() else {"raw": ""}
            self.records.append(rec)
            self._q.put(rec)
        self._q.put(None)

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for(self, pred: Callable[[Record], bool], timeout: float = 60) -> Record:
        """The next log record satisfying `pred` (records seen before are consumed)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such log line within {timeout}s:\n{self.text()}")
            try:
                rec = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if rec is None:
                self._q.put(None)
                raise AssertionError(f"syncd exited ({self.proc.wait()}) before the log "
                                     f"line came:\n{self.text()}")
            if pred(rec):
                return rec

    def wait_event(self, event: str, timeout: float = 60, **match: Any) -> Record:
        return self.wait_for(
            lambda r: r.get("event") == event and all(r.get(k) == v for k, v in match.items()),
            timeout)

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._t.join(timeout=10)
        self._o.join(timeout=10)
        return rc

    def text(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


class NotifySocket:
    """What systemd would read: an AF_UNIX datagram socket, given to syncd as
    NOTIFY_SOCKET (a path, or a name in the abstract namespace)."""

    def __init__(self, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"syncd-test-{uuid.uuid4().hex}"
            self.sock.bind(b"\0" + name.encode())
            self.address = "@" + name
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.messages: list[dict[str, str]] = []

    def recv(self, timeout: float = 30) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        msg = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
        self.messages.append(msg)
        return msg

    def wait_for(self, key: str, timeout: float = 60) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}= within {timeout}s; got {self.messages}")
            try:
                msg = self.recv(left)
            except TimeoutError:
                continue
            if key in msg:
                return msg

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------------
# The calendar as another client sees it


def calendar_url(server: DavServer, name: str) -> str | None:
    """The calendar whose display name is `name` (PROPFIND of alice's home)."""
    body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:displayname/>'
            '</D:prop></D:propfind>')
    r = requests.request("PROPFIND", f"{server.base}/alice/", data=body,
                         headers={"Depth": "1"}, auth=("alice", "x"), timeout=30)
    import xml.etree.ElementTree as ET

    for resp in ET.fromstring(r.content).iter("{DAV:}response"):
        dn = resp.find(".//{DAV:}displayname")
        if dn is not None and dn.text == name:
            href = resp.findtext("{DAV:}href") or ""
            return server.base + href
    return None


@dataclass
class RawEvent:
    href: str
    etag: str
    text: str

    @property
    def cal(self) -> Any:
        return icalendar.Calendar.from_ical(self.text)

    @property
    def vevents(self) -> list[Any]:
        return list(self.cal.walk("VEVENT"))

    @property
    def marker(self) -> str | None:
        evs = self.vevents
        v = evs[0].get("X-SYNCD-ID") if evs else None
        return None if v is None else str(v)


def raw_events(server: DavServer, name: str) -> list[RawEvent]:
    """Every object in the calendar, fetched raw with one calendar-query."""
    url = calendar_url(server, name)
    if url is None:
        return []
    body = ('<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" '
            'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/>'
            '</D:prop><C:filter><C:comp-filter name="VCALENDAR"/></C:filter>'
            '</C:calendar-query>')
    r = requests.request("REPORT", url, data=body, headers={"Depth": "1"},
                         auth=("alice", "x"), timeout=60)
    assert r.status_code == 207, r.text
    import xml.etree.ElementTree as ET

    out = []
    for resp in ET.fromstring(r.content).iter("{DAV:}response"):
        data = resp.find(".//{urn:ietf:params:xml:ns:caldav}calendar-data")
        if data is None or not data.text:
            continue
        out.append(RawEvent(resp.findtext("{DAV:}href") or "",
                            resp.findtext(".//{DAV:}getetag") or "", data.text))
    return sorted(out, key=lambda e: e.href)


def type_note(server: DavServer, ev: RawEvent, line: str) -> None:
    """The user types a line at the end of an event's notes (another client:
    raw GET + PUT with If-Match)."""
    url = server.base + ev.href
    got = requests.get(url, auth=("alice", "x"), timeout=30)
    got.raise_for_status()
    cal = icalendar.Calendar.from_ical(got.content.decode())
    for comp in cal.walk("VEVENT"):
        desc = str(comp.get("DESCRIPTION", ""))
        comp["DESCRIPTION"] = icalendar.vText(desc + line + "\n")
    put = requests.put(url, data=cal.to_ical(), auth=("alice", "x"), timeout=30,
                       headers={"If-Match": got.headers["ETag"],
                                "Content-Type": "text/calendar; charset=utf-8"})
    assert put.status_code in (201, 204), put.text


@contextlib.contextmanager
def state_db(setup: Setup) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(setup.state / "state.db", timeout=30)
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


def check_consistent(setup: Setup, server: DavServer) -> list[RawEvent]:
    """No duplicate, no orphan, at most one open follow-up per contact, and the
    state's view of our events equal to the server's."""
    evs = raw_events(server, setup.calendar)
    ours = [e for e in evs if e.marker]
    markers = [str(e.marker) for e in ours]
    assert len(markers) == len(set(markers)), f"duplicate X-SYNCD-ID: {sorted(markers)}"
    for e in ours:
        assert len(e.vevents) == 1
    with state_db(setup) as db:
        rows = {r["id"]: r for r in db.execute("SELECT * FROM followups")}
        per_contact: dict[str, int] = {}
        for r in rows.values():
            if r["status"] in ("planned", "live", "creating"):
                per_contact[r["contact_id"]] = per_contact.get(r["contact_id"], 0) + 1
        assert all(n <= 1 for n in per_contact.values()), per_contact
        for e in ours:
            assert e.marker in rows, f"event {e.href} unknown to the state (an orphan)"
        live = {r["ref"]: r for r in rows.values() if r["status"] == "live"}
        by_href = {e.href: e for e in ours}
        for ref, r in live.items():
            assert ref in by_href, f"live follow-up {r['id']} has no event on the server"
        open_markers = [e.marker for e in ours
                        if rows[str(e.marker)]["status"] in ("live", "creating")]
        contacts = [rows[str(m)]["contact_id"] for m in open_markers]
        assert len(contacts) == len(set(contacts)), "two open follow-ups for one contact"
    return evs
