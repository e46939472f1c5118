"""Provider quotas: requests per cycle against the Google and Microsoft Graph
emulators (tests/emulators), counted by the emulators as they answer (every
request that reaches them, token refreshes listed apart).

The emulators run as server threads in this process, so their times say
little; their request counts are exact.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from bench._data import NOW, config_text, people
from syncd import config as config_mod
from syncd.cycle import Cycle, CycleResult
from syncd.store import Store
from syncd.wiring import make_all

Log = Callable[[str], None]


def _kind(method: str, path: str) -> str:
    """What quota a request spends: the method and the path's last segments,
    ids shown as {id} ("GET calendars/{id}/events", "GET contacts/delta")."""
    if "/token" in path or "oauth2" in path:
        return "token"
    segs = [seg for seg in unquote(path).split("/") if seg and seg not in ("v1.0", "v1", "v3")]
    segs = ["{id}" if len(seg) > 16 or "@" in seg or "=" in seg else seg for seg in segs]
    return f"{method} " + "/".join(segs[-3:])


class _Run:
    """A config, store and connectors in a temp dir, cycles at pinned times."""

    def __init__(self, home: Path, text: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.yaml").write_text(text)
        self.cfg = config_mod.load(home / "config.yaml")
        self.store = Store(self.cfg.state_dir)
        self.sources, self.calendar = make_all(self.cfg)
        self.minutes = 0

    def cycle(self) -> tuple[CycleResult, float]:
        at = NOW + timedelta(minutes=self.minutes)
        self.minutes += 2
        t0 = time.perf_counter()
        res = Cycle(self.cfg, self.store, self.sources, self.calendar, now=lambda: at).run()
        return res, time.perf_counter() - t0

    def close(self) -> None:
        for s in self.sources:
            s.close()
        self.calendar.close()
        self.store.close()


def _http(got: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """HTTP requests only: not the steps of a JSON batch (method "step GET"),
    which throttling counts one by one but the network carries in one."""
    return [r for r in got if not r[0].startswith("step ")]


def _measure(run: _Run, requests: Callable[[], list[tuple[str, str]]], cycles: int,
             sources: int) -> dict[str, Any]:
    """First sync, then `cycles` idle cycles; requests per cycle by kind."""
    out: dict[str, Any] = {}
    mark = len(requests())
    res, took = run.cycle()
    got = requests()[mark:]
    assert res.ok, (res.failed_sources, res.calendar_error)
    out["first_sync"] = {"requests": len(_http(got)),
                         "by_kind": dict(Tally(_kind(*r) for r in got)),
                         "events_created": res.events_created, "wall_s": round(took, 2)}
    # The next cycle reads syncd's own writes back (Graph: each one fetched
    # again for its extended properties); the cycles after it are idle.
    mark = len(requests())
    run.cycle()
    out["read_back"] = {"requests": len(_http(requests()[mark:]))}
    idle = []
    for _ in range(cycles):
        mark = len(requests())
        res, took = run.cycle()
        got = requests()[mark:]
        assert res.ok and res.writes == 0, res
        idle.append((len([r for r in _http(got) if _kind(*r) != "token"]), took,
                     dict(Tally(_kind(*r) for r in got))))
    out["idle"] = {"requests": [n for n, _t, _k in idle], "by_kind": idle[-1][2],
                   "wall_s": round(statistics.median(t for _n, t, _k in idle), 3),
                   "target": sources + 1}
    return out


# ---------------------------------------------------------------------------- Google


def google(sizes: tuple[int, ...], events: int, cycles: int, tmp: Path,
           log: Log) -> dict[str, Any]:
    try:
        from tests.emulators.google import CALENDAR_SCOPES, CONTACTS_READONLY, GoogleEmulator
    except ImportError as e:  # the Google emulator (or its connectors) not there yet
        return {"status": "n/a", "why": f"Google emulator not importable: {e}"}
    out: dict[str, Any] = {"status": "ok", "sizes": {}}
    for n in sizes:
        log(f"google: {n} contacts")
        with _google(GoogleEmulator, tmp / f"google-{n}", CONTACTS_READONLY,
                     CALENDAR_SCOPES) as (emu, home):
            for p in people(n):
                emu.people.add_contact(p.name, [p.email], [p.phone] if p.phone else [],
                                       p.org, p.title, labels=["Job search", p.label],
                                       note=p.note)
            run = _Run(home, config_text(_google_source(emu), _google_calendar(emu)))
            try:
                out["sizes"][n] = _measure(run, lambda e=emu: _google_log(e), cycles, 1)
            finally:
                run.close()
    log(f"google: one edited event among {events}")
    with _google(GoogleEmulator, tmp / "google-change", CONTACTS_READONLY,
                 CALENDAR_SCOPES) as (emu, home):
        for p in people(20):
            emu.people.add_contact(p.name, [p.email], [p.phone] if p.phone else [], p.org,
                                   labels=["Job search", p.label])
        run = _Run(home, config_text(_google_source(emu), _google_calendar(emu)))
        try:
            run.calendar.url()  # finds or creates the calendar
            cal = emu.calendar.calendar_named("Follow-ups")
            assert cal is not None
            _google_seed(emu, cal, events - 20)
            out["change"] = _change(run, lambda: _google_log(emu),
                                    lambda ref: _google_user_edit(emu, cal.id, ref))
        finally:
            run.close()
    return out


@contextlib.contextmanager
def _google(emulator: Any, home: Path, contacts_scope: str,
            calendar_scopes: tuple[str, ...]) -> Iterator[tuple[Any, Path]]:
    emu = emulator()
    try:
        home.mkdir(parents=True, exist_ok=True)
        emu.write_token_file(home / "contacts-token.json", [contacts_scope])
        emu.write_token_file(home / "calendar-token.json", calendar_scopes)
        yield emu, home
        assert not emu.server.bugs, emu.server.bugs
    finally:
        emu.stop()


def _google_source(emu: Any) -> str:
    return (f"  - {{name: google, type: google, labels: [Job search], "
            f'api_endpoint: "{emu.people_endpoint}", token_file: contacts-token.json, '
            "timeout: 30}\n")


def _google_calendar(emu: Any) -> str:
    return (f'  type: google\n  calendar: Follow-ups\n  api_endpoint: "{emu.calendar_endpoint}"\n'
            "  token_file: calendar-token.json\n  timeout: 30\n")


def _google_log(emu: Any) -> list[tuple[str, str]]:
    return [(("step " if r.batched else "") + r.method, r.path) for r in emu.server.requests()]


def _google_seed(emu: Any, cal: Any, n: int) -> None:
    """Another client's events, straight into the emulator's calendar."""
    from tests.emulators import google_calendar as gc

    start = NOW - timedelta(days=700)
    with emu.calendar._lock:
        for i in range(n):
            at = start + timedelta(days=i * 1400 // max(n, 1), hours=i % 9)
            data = {"summary": f"Meeting {i}", "description": "Agenda",
                    "start": {"dateTime": at.isoformat(), "timeZone": "America/New_York"},
                    "end": {"dateTime": (at + timedelta(minutes=30)).isoformat(),
                            "timeZone": "America/New_York"}}
            eid = gc._new_id()
            stamp = emu.calendar._now()
            e = gc._Event(eid, {}, f"{eid}@bench.example", "", 0, stamp, stamp)
            emu.calendar._store(cal, e, data)
            cal.events[eid] = e


def _google_user_edit(emu: Any, cal_id: str, ref: str) -> None:
    from urllib.parse import quote

    import requests as rq

    s = rq.Session()
    s.headers.update(emu.bearer(("https://www.googleapis.com/auth/calendar.events",)))
    url = f"{emu.calendar_endpoint}calendars/{quote(cal_id, safe='')}/events/{ref}"
    ev = s.get(url, timeout=10).json()
    r = s.patch(url, json={"description": ev["description"] + "9:10 left voicemail\n"},
                timeout=10)
    assert r.status_code == 200, r.text
    s.close()


# ---------------------------------------------------------------------------- Graph


def graph(sizes: tuple[int, ...], events: int, cycles: int, tmp: Path,
          log: Log) -> dict[str, Any]:
    try:
        from tests.conftest_microsoft import MsCloud
        from tests.emulators.graph import GraphEmulator
        from tests.emulators.ms_identity import IdentityEmulator, make_ca
    except ImportError as e:
        return {"status": "n/a", "why": f"Graph emulator not importable: {e}"}
    (tmp / "ms-ca").mkdir(exist_ok=True)
    ca, pem = make_ca(tmp / "ms-ca")
    out: dict[str, Any] = {"status": "ok", "sizes": {}}

    @contextlib.contextmanager
    def cloud(home: Path) -> Iterator[Any]:
        identity = IdentityEmulator(ca)
        g = GraphEmulator(ca, identity)
        g.page_cap = 1000
        try:
            home.mkdir(parents=True, exist_ok=True)
            yield MsCloud(identity, g, pem, home)
        finally:
            g.stop()
            identity.stop()

    def config(ms: Any) -> str:
        common = (f"authority: {ms.identity.authority()}, graph_endpoint: {ms.graph.base}, "
                  f"ca_bundle: {ms.ca_pem}, timeout: 30")
        return config_text(
            f"  - {{name: work, type: outlook, client_id: {ms.client_id}, "
            f"token_cache: tokens.json, {common}}}\n",
            f"  type: graph\n  calendar: Follow-ups\n  client_id: {ms.client_id}\n"
            f"  token_cache: tokens.json\n  {common.replace(', ', chr(10) + '  ')}\n")

    def log_of(ms: Any) -> list[tuple[str, str]]:
        return [(("step " if r.batched else "") + r.method, r.path) for r in ms.graph.requests]

    def sign_in(ms: Any, home: Path) -> None:
        from syncd.settings import Connection

        conn = Connection(graph_endpoint=ms.graph.base, authority=ms.identity.authority(),
                          ca_bundle=ms.ca_pem, timeout=30, token_cache=home / "tokens.json")
        with contextlib.redirect_stdout(io.StringIO()):  # MSAL's "To sign in, ..." line
            ms.sign_in(ms.source_cfg(connection=conn), home / "state")

    for n in sizes:
        log(f"graph: {n} contacts")
        with cloud(tmp / f"graph-{n}") as ms:
            for p in people(n):
                ms.graph.put_contact({
                    "displayName": p.name, "givenName": p.first, "surname": p.last,
                    "emailAddresses": [{"name": p.name, "address": p.email}],
                    "businessPhones": [p.phone] if p.phone else [], "companyName": p.org,
                    "jobTitle": p.title or None, "categories": [p.label]})
            sign_in(ms, ms.tmp)
            run = _Run(ms.tmp, config(ms))
            try:
                out["sizes"][n] = _measure(run, lambda m=ms: log_of(m), cycles, 1)
            finally:
                run.close()
    log(f"graph: one edited event among {events}")
    with cloud(tmp / "graph-change") as ms:
        for p in people(20):
            ms.graph.put_contact({"displayName": p.name, "givenName": p.first,
                                  "surname": p.last, "categories": [p.label],
                                  "emailAddresses": [{"name": p.name, "address": p.email}]})
        sign_in(ms, ms.tmp)
        run = _Run(ms.tmp, config(ms))
        try:
            cal_id = run.calendar.url().rsplit("/", 1)[1]
            _graph_seed(ms.graph, cal_id, events - 20)
            out["change"] = _change(run, lambda: log_of(ms),
                                    lambda ref: _graph_user_edit(ms, ref))
        finally:
            run.close()
    return out


def _graph_seed(g: Any, cal_id: str, n: int) -> None:
    """Events inside the connector's window (30 days back, 400 ahead)."""
    start = NOW - timedelta(days=25)
    for i in range(n):
        at = (start + timedelta(days=i * 400 // max(n, 1), hours=i % 9)).astimezone(UTC)
        g.import_event(cal_id, {
            "subject": f"Meeting {i}", "body": {"contentType": "text", "content": "Agenda"},
            "start": {"dateTime": at.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {"dateTime": (at + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"),
                    "timeZone": "UTC"}}, ical_uid=f"bench-{i}@example.com")


def _graph_user_edit(ms: Any, ref: str) -> None:
    rec = ms.graph.events[ref]
    body = rec.data["body"]
    rec.data["body"] = {"contentType": "text", "content": body["content"] + "9:10 left vm\n"}
    ms.graph._touch(rec)


# ---------------------------------------------------------------------------- change


def _change(run: _Run, requests: Callable[[], list[tuple[str, str]]],
            edit: Callable[[str], None]) -> dict[str, Any]:
    """First sync over the seeded calendar, the user edits one follow-up's
    notes; requests of the incremental read (the stored cursor) and of the
    naive one (no cursor: list the whole calendar), with the same code."""
    res, _took = run.cycle()
    assert res.ok, (res.failed_sources, res.calendar_error)
    run.cycle()  # reads its own writes back
    total = run.store.db.execute("SELECT count(*) FROM events").fetchone()[0]
    ref = run.store.db.execute("SELECT ref FROM followups WHERE status='live' "
                               "ORDER BY start LIMIT 1").fetchone()[0]
    edit(ref)
    cycle = Cycle(run.cfg, run.store, [], run.calendar, now=lambda: NOW)
    mark = len(requests())
    inc = CycleResult()
    cycle.read_calendar(inc)
    inc_req = requests()[mark:]
    edit(ref)
    with run.store.tx():
        run.store.kv_set("calendar.cursor", None)
    mark = len(requests())
    full = CycleResult()
    cycle.read_calendar(full)
    full_req = requests()[mark:]
    return {"events": total, "incremental": {"requests": len(_http(inc_req)),
                                             "by_kind": dict(Tally(_kind(*r) for r in inc_req)),
                                             "attempts_read": inc.attempts_read},
            "naive": {"requests": len(_http(full_req)),
                      "by_kind": dict(Tally(_kind(*r) for r in full_req)),
                      "attempts_read": full.attempts_read}}
