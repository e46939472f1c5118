"""Reconciliation against a real CalDAV server: user edits, moves, deletions,
removed markers, edited titles, `syncd log` next to note lines, and a second
client writing between our read and our write."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest
import requests

from connectors.caldav_calendar import CalDavCalendar
from connectors.files import FileSource
from syncd.config import load_text
from syncd.cycle import Cycle, CycleResult
from syncd.model import EventDraft, RemoteEvent
from syncd.settings import Config
from syncd.status import attempts, collect, log_attempt
from syncd.store import Store
from tests.servers import DavServer

UTC = ZoneInfo("UTC")
NY = ZoneInfo("America/New_York")
T0 = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # Wed 10:00 in New York
CARD = "BEGIN:VCARD\nVERSION:3.0\nUID:jane\nFN:Jane Roe\nTEL:+12125550101\nEND:VCARD\n"


@dataclass
class World:
    cfg: Config
    server: DavServer
    before_update: Callable[[str], None] | None = None

    def cycle(self, now: datetime) -> CycleResult:
        assert self.cfg.calendar is not None
        cal = Interposed(self.cfg.calendar, "x", world=self)
        src = FileSource(self.cfg.contacts[0])
        store = Store(self.cfg.state_dir)
        try:
            return Cycle(self.cfg, store, [src], cal, now=lambda: now).run()
        finally:
            cal.close()
            src.close()
            store.close()

    def events(self) -> dict[str, tuple[str, icalendar.Event, str]]:
        """Every event on the server by UID: (url, component, etag), read raw."""
        assert self.cfg.calendar is not None
        cal = CalDavCalendar(self.cfg.calendar, "x")
        try:
            refs = [e.ref for e in cal.changes(None).events]
            base = cal.url()
        finally:
            cal.close()
        out = {}
        for ref in refs:
            url = requests.compat.urljoin(base, ref)
            r = requests.get(url, auth=("alice", "x"), timeout=30)
            comp = next(iter(icalendar.Calendar.from_ical(r.content.decode()).walk("VEVENT")))
            out[str(comp["UID"])] = (url, comp, r.headers["ETag"])
        return out

    def ours(self) -> list[tuple[str, icalendar.Event, str]]:
        return sorted((v for v in self.events().values() if v[1].get("X-SYNCD-ID")),
                      key=lambda v: v[1].decoded("DTSTART"))

    def attempts(self) -> list[tuple[str, str]]:
        return [(a["at"], a["outcome"]) for a in attempts(self.cfg, None)]


class Interposed(CalDavCalendar):
    """The real connector; a test may have a second client write to the
    server just before our update goes out (a real concurrent writer)."""

    def __init__(self, *args: object, world: World, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.world = world

    def update(self, ref: str, etag: str, draft: EventDraft) -> RemoteEvent:
        hook = self.world.before_update
        if hook is not None:
            self.world.before_update = None
            hook(ref)
        return super().update(ref, etag, draft)


def edit(url: str, change: Callable[[icalendar.Event], None]) -> None:
    """Another client: GET, change, PUT with If-Match (raw, no library rewrite)."""
    got = requests.get(url, auth=("alice", "x"), timeout=30)
    cal = icalendar.Calendar.from_ical(got.content.decode())
    for comp in cal.walk("VEVENT"):
        change(comp)
    put = requests.put(url, data=cal.to_ical(), auth=("alice", "x"), timeout=30,
                       headers={"If-Match": got.headers["ETag"],
                                "Content-Type": "text/calendar; charset=utf-8"})
    assert put.status_code in (201, 204), put.text


def append(text: str) -> Callable[[icalendar.Event], None]:
    def change(comp: icalendar.Event) -> None:
        comp["DESCRIPTION"] = icalendar.vText(str(comp["DESCRIPTION"]) + text)
    return change


def replace_notes(old: str, new: str) -> Callable[[icalendar.Event], None]:
    def change(comp: icalendar.Event) -> None:
        desc = str(comp["DESCRIPTION"])
        assert old in desc
        comp["DESCRIPTION"] = icalendar.vText(desc.replace(old, new))
    return change


@pytest.fixture
def world(tmp_path: Path, radicale: DavServer) -> Iterator[World]:
    (tmp_path / "cards.vcf").write_text(CARD)
    cfg = load_text(f"""\
timezone: America/New_York
state_dir: state
contacts: [{{name: cards, type: file, path: cards.vcf}}]
calendar: {{type: caldav, url: "{radicale.base}/", calendar: "r-{uuid.uuid4().hex[:8]}",
           username: alice}}
""", tmp_path / "config.yaml")
    yield World(cfg, radicale)


def test_edit_delete_and_reorder_lines(world: World) -> None:
    world.cycle(T0)
    ((url, _c, _e),) = world.ours()
    edit(url, append("9:10 no answer\n2:30pm vm\n"))
    world.cycle(T0 + timedelta(hours=5))
    assert world.attempts() == [("2026-11-25T09:10:00-05:00", "no_answer"),
                                ("2026-11-25T14:30:00-05:00", "voicemail")]
    # Reordering changes nothing; editing a line updates its attempt.
    edit(url, replace_notes("9:10 no answer\n2:30pm vm\n", "2:30pm vm\n9:15 no answer\n"))
    world.cycle(T0 + timedelta(hours=6))
    assert world.attempts() == [("2026-11-25T09:15:00-05:00", "no_answer"),
                                ("2026-11-25T14:30:00-05:00", "voicemail")]
    # Deleting a line removes its attempt.
    edit(url, replace_notes("2:30pm vm\n", ""))
    world.cycle(T0 + timedelta(hours=7))
    assert world.attempts() == [("2026-11-25T09:15:00-05:00", "no_answer")]


def test_syncd_log_and_a_note_line_for_the_same_call_count_once(world: World) -> None:
    world.cycle(T0)
    log_attempt(world.cfg, "jane", "no_answer", "9:10", "", None, T0.astimezone(NY))
    assert world.attempts() == [("2026-11-25T09:10:00-05:00", "no_answer")]
    ((url, _c, _e), *_rest) = world.ours()
    edit(url, append("9:12 no answer\n"))
    world.cycle(T0 + timedelta(hours=1))
    assert world.attempts() == [("2026-11-25T09:12:00-05:00", "no_answer")]
    assert collect(world.cfg, lambda: T0)["contacts"][0]["attempts"] == 1


def test_user_lines_above_and_inside_the_block_survive_a_move(world: World) -> None:
    world.cycle(T0)
    ((url, comp, _e),) = world.ours()
    block_line = str(comp["DESCRIPTION"]).splitlines()[1]

    def scribble(c: icalendar.Event) -> None:
        lines = str(c["DESCRIPTION"]).split("\n")
        lines.insert(0, "  typed on top  ")
        lines.insert(3, "between our lines ✨")
        c["DESCRIPTION"] = icalendar.vText("\n".join(lines))
    edit(url, scribble)
    # Its time passes with nothing logged: the user touched it, so it is not
    # moved; it lapses and a new follow-up is planned.
    world.cycle(T0 + timedelta(days=1))
    events = world.ours()
    assert len(events) == 2
    old = str(events[0][1]["DESCRIPTION"])
    assert old.startswith("  typed on top  \n")
    assert "between our lines ✨" in old and block_line in old


def test_moved_event_is_respected_and_title_edit_kept(world: World) -> None:
    world.cycle(T0)
    ((url, comp, _e),) = world.ours()
    start = comp.decoded("DTSTART")

    def move(c: icalendar.Event) -> None:
        c["DTSTART"] = icalendar.vDDDTypes(start + timedelta(days=2))
        c["DTEND"] = icalendar.vDDDTypes(start + timedelta(days=2, minutes=15))
        c["SUMMARY"] = icalendar.vText("Ring Jane (my title)")
    edit(url, move)
    for hours in (1, 2, 3):
        res = world.cycle(T0 + timedelta(hours=hours))
        assert res.writes == 0
    ((_u, comp, _e),) = world.ours()
    assert comp.decoded("DTSTART") == start + timedelta(days=2)
    assert str(comp["SUMMARY"]) == "Ring Jane (my title)"
    # Logged on: it stays, with the user's title (no history prefix forced).
    edit(url, append("spoke\n"))
    world.cycle(T0 + timedelta(days=3))
    first = world.ours()[0][1]
    assert str(first["SUMMARY"]) == "Ring Jane (my title)"


def test_deleted_event_is_a_skip_and_never_comes_back(world: World) -> None:
    world.cycle(T0)
    ((url, comp, _e),) = world.ours()
    uid = str(comp["UID"])
    requests.delete(url, auth=("alice", "x"), timeout=30).raise_for_status()
    world.cycle(T0 + timedelta(hours=1))
    events = world.events()
    assert uid not in events
    (nxt,) = world.ours()
    # The next one follows the cadence (2 business days) from the deleted one.
    assert nxt[1].decoded("DTSTART").astimezone(NY).date().isoformat() >= "2026-11-27"
    assert world.cycle(T0 + timedelta(hours=2)).writes == 0


def test_removed_marker_releases_the_event(world: World) -> None:
    world.cycle(T0)
    ((url, comp, _e),) = world.ours()
    uid = str(comp["UID"])

    def unmark(c: icalendar.Event) -> None:
        del c["X-SYNCD-ID"]
        c["DESCRIPTION"] = icalendar.vText("mine now")
    edit(url, unmark)
    world.cycle(T0 + timedelta(hours=1))
    events = world.events()
    assert str(events[uid][1]["DESCRIPTION"]) == "mine now"  # never touched again
    assert len(world.ours()) == 1  # a new follow-up was planned
    etag = events[uid][2]
    world.cycle(T0 + timedelta(days=2))
    assert world.events()[uid][2] == etag


def test_a_second_client_writing_between_our_read_and_write(world: World) -> None:
    world.cycle(T0)
    ((url, _c, _e),) = world.ours()
    edit(url, append("9:10 no answer\n"))

    # Just before we write the history title, another client logs a line.
    def concurrent(_ref: str) -> None:
        edit(url, append("9:40 vm\n"))
    world.before_update = concurrent
    world.cycle(T0 + timedelta(hours=3))
    first = world.ours()[0][1]
    desc = str(first["DESCRIPTION"])
    assert desc.endswith("Log attempts below:\n9:10 no answer\n9:40 vm\n")
    assert world.attempts() == [("2026-11-25T09:10:00-05:00", "no_answer"),
                                ("2026-11-25T09:40:00-05:00", "voicemail")]
    assert str(first["SUMMARY"]).endswith("— no answer, voicemail")
    assert world.before_update is None  # the concurrent write really happened
