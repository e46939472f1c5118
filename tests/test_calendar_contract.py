"""The Calendar port contract, run against every backend in `BACKENDS`.

Every test talks to a real server (no mocks, no sleeps) and works in a
calendar of its own (a fresh display name per test), so tests never see each
other's events. To add a backend (the Google or Graph emulator), write a class
with the `Backend` methods and append `(id, factory)` to `BACKENDS`; the factory
gets the pytest request and pulls whatever fixtures it needs from it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin
from zoneinfo import ZoneInfo

import pytest
import requests
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from connectors.caldav_calendar import CalDavCalendar
from syncd.errors import AlreadyExists, AuthError, NotFound, PreconditionFailed, RemoteError
from syncd.model import EventChanges, EventDraft, RemoteEvent
from syncd.ports import Calendar
from syncd.settings import CalendarConfig, Connection
from tests.conftest_google import google_calendar_backend
from tests.conftest_microsoft import GraphBackend
from tests.servers import DavServer, count_requests, free_port

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------


class Backend(Protocol):
    """What the contract suite needs from one calendar backend."""

    id: str
    # Substrings the server itself is known to corrupt in TEXT values; the
    # round-trip property skips them and `test_known_text_defects` pins them.
    text_defects: tuple[str, ...]

    def open(self, calendar: str, busy: tuple[str, ...] = ()) -> Calendar:
        """A fresh connector for the calendar with this display name (no state
        shared with earlier connectors)."""
        ...

    def count_calendars(self, name: str) -> int:
        """How many calendars with this display name the account holds."""
        ...

    def foreign_create(
        self,
        calendar: str,
        uid: str,
        summary: str,
        start: datetime,
        end: datetime,
        rrule: str | None = None,
    ) -> None:
        """Another client creates an event without the syncd marker (with an
        RFC 5545 RRULE when given)."""
        ...

    def foreign_edit(self, cal: Calendar, ev: RemoteEvent, summary: str) -> None:
        """Another client changes the event's summary (no precondition)."""
        ...

    def stale_cursor(self, cursor: str) -> str | None:
        """A well-formed cursor whose server-side token the server rejects
        (None when the cursor holds no server token)."""
        ...

    def count_requests(self, cal: Calendar) -> Callable[[], int]:
        """Count the HTTP requests `cal` makes from now on; returns the reader."""
        ...

    def close(self) -> None: ...


@dataclass
class CalDavBackend:
    """CalDavCalendar on a real CalDAV server (Radicale or Xandikos)."""

    server: DavServer
    use_sync_collection: bool | None = None
    id: str = ""
    text_defects: tuple[str, ...] = ()
    opened: list[CalDavCalendar] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = requests.Session()
        self.http.auth = ("alice", "x")

    def _cfg(self, calendar: str, busy: tuple[str, ...] = ()) -> CalendarConfig:
        return CalendarConfig(
            type="caldav",
            url=self.server.base + "/",
            calendar=calendar,
            username="alice",
            busy_calendars=busy,
            connection=Connection(timeout=10),
        )

    def open(self, calendar: str, busy: tuple[str, ...] = ()) -> Calendar:
        cal = CalDavCalendar(
            self._cfg(calendar, busy), "x", use_sync_collection=self.use_sync_collection
        )
        self.opened.append(cal)
        return cal

    def count_calendars(self, name: str) -> int:
        body = (
            '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:">'
            "<D:prop><D:displayname/></D:prop></D:propfind>"
        )
        r = self.http.request(
            "PROPFIND",
            self.server.calendar_home,
            data=body.encode(),
            headers={"Depth": "1", "Content-Type": "application/xml"},
            timeout=10,
        )
        assert r.status_code == 207
        names = re.findall(r"displayname>([^<]*)<", r.text)
        return sum(1 for n in names if n == name)

    def foreign_create(
        self,
        calendar: str,
        uid: str,
        summary: str,
        start: datetime,
        end: datetime,
        rrule: str | None = None,
    ) -> None:
        url = self.open(calendar).url()
        ics = (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//other client//EN\r\n"
            f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\n"
            f"DTSTART:{start.astimezone(UTC):%Y%m%dT%H%M%SZ}\r\n"
            f"DTEND:{end.astimezone(UTC):%Y%m%dT%H%M%SZ}\r\n"
            f"SUMMARY:{summary}\r\n"
            + (f"RRULE:{rrule}\r\n" if rrule else "")
            +             "ATTENDEE;CN=Bob Li:mailto:bob@example.com\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n"
        )
        r = self.http.put(
            urljoin(url, f"other-{uuid.uuid4().hex}.ics"),
            data=ics.encode(),
            headers={"Content-Type": "text/calendar; charset=utf-8"},
            timeout=10,
        )
        assert r.status_code in (201, 204), r.text

    def foreign_edit(self, cal: Calendar, ev: RemoteEvent, summary: str) -> None:
        url = urljoin(cal.url(), ev.ref)
        got = self.http.get(url, timeout=10)
        assert got.status_code == 200
        text = re.sub(r"(?m)^SUMMARY:.*$", f"SUMMARY:{summary}\r", got.text)
        r = self.http.put(
            url,
            data=text.encode(),
            headers={"Content-Type": "text/calendar; charset=utf-8"},
            timeout=10,
        )
        assert r.status_code in (200, 201, 204), r.text

    def stale_cursor(self, cursor: str) -> str | None:
        state = json.loads(cursor)
        if "s" not in state:
            return None  # an ETag-listing cursor holds no server token
        state["s"] = state["s"][:-8] + "0badc0de"  # a sync token never issued
        return json.dumps(state)

    def count_requests(self, cal: Calendar) -> Callable[[], int]:
        assert isinstance(cal, CalDavCalendar)
        return count_requests(cal.http_session)

    def close(self) -> None:
        for cal in self.opened:
            cal.close()
        self.http.close()


BackendFactory = Callable[[pytest.FixtureRequest], Backend]

BACKENDS: list[tuple[str, BackendFactory]] = [
    ("caldav-radicale", lambda r: CalDavBackend(r.getfixturevalue("radicale"), id="radicale")),
    (
        "caldav-xandikos",
        # Xandikos re-serialises with icalendar, whose TEXT escaping (7.3) turns a
        # literal backslash + "N" into a line break before escaping.
        lambda r: CalDavBackend(
            r.getfixturevalue("xandikos"), id="xandikos", text_defects=("\\N",)
        ),
    ),
    # The fallback for servers without RFC 6578 sync-collection, on a real server.
    (
        "caldav-radicale-etag-listing",
        lambda r: CalDavBackend(
            r.getfixturevalue("radicale"), use_sync_collection=False, id="radicale-etags"
        ),
    ),
    # Microsoft Graph (Outlook) on the local Graph + identity emulators.
    ("graph", lambda r: GraphBackend(r.getfixturevalue("ms"))),
    # Google Calendar API v3 on the local emulator (tests/emulators/google_calendar.py).
    ("google", google_calendar_backend),
]


@pytest.fixture(params=[f for _, f in BACKENDS], ids=[i for i, _ in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    b = request.param(request)
    yield b
    b.close()


@pytest.fixture
def name() -> str:
    """A calendar display name no other test uses."""
    return f"Follow-ups {uuid.uuid4().hex[:10]}"


@pytest.fixture
def cal(backend: Backend, name: str) -> Calendar:
    return backend.open(name)


def draft(
    summary: str = "Call Jane Roe (Acme Capital) #1",
    description: str = "syncd block\nLog attempts below:\n",
    start: datetime | None = None,
    minutes: int = 15,
    uid: str | None = None,
) -> EventDraft:
    start = start or datetime(2026, 12, 1, 9, 0, tzinfo=NY)
    fid = uuid.uuid4().hex
    return EventDraft(
        syncd_id=f"fu-{fid}",
        uid=uid or f"syncd-{fid}@syncd",
        summary=summary,
        start=start,
        end=start + timedelta(minutes=minutes),
        description=description,
    )


def by_uid(ch: EventChanges) -> dict[str, RemoteEvent]:
    return {e.uid: e for e in ch.events}


# --------------------------------------------------------------------------
# Calendar discovery
# --------------------------------------------------------------------------


def test_calendar_created_when_missing_then_found_by_name(backend: Backend, name: str) -> None:
    assert backend.count_calendars(name) == 0
    first = backend.open(name)
    url = first.url()
    assert backend.count_calendars(name) == 1
    second = backend.open(name)  # a new connector: discovers by name again
    assert second.url() == url
    assert backend.count_calendars(name) == 1


# --------------------------------------------------------------------------
# Writes
# --------------------------------------------------------------------------


def test_create_then_get(cal: Calendar) -> None:
    d = draft()
    made = cal.create(d)
    assert made.uid == d.uid and made.syncd_id == d.syncd_id and made.etag
    got = cal.get(d.uid)
    assert got is not None
    assert (got.ref, got.etag, got.summary, got.description) == (
        made.ref,
        made.etag,
        d.summary,
        d.description,
    )
    assert got.syncd_id == d.syncd_id
    assert got.start == d.start and got.end == d.end
    assert cal.get(f"missing-{uuid.uuid4().hex}") is None


def test_conflicting_create_raises_already_exists(cal: Calendar) -> None:
    d = draft()
    cal.create(d)
    with pytest.raises(AlreadyExists):
        cal.create(d)  # a retried create after a crash
    with pytest.raises(AlreadyExists):
        cal.create(draft(summary="other text", uid=d.uid))


def test_a_checked_first_create_is_one_request_and_a_repeat_never_duplicates(
    backend: Backend, cal: Calendar
) -> None:
    cal.changes(None)  # the calendar is found (and made) before counting
    d = draft()
    count = backend.count_requests(cal)
    made = cal.create(d, checked=True)
    assert count() == 1  # no look-up before the create
    try:  # a repeat that thinks it is a first try: the remote's own guard holds
        again = cal.create(d, checked=True)
        assert again.ref == made.ref  # Graph: the transactionId answers with the event
    except AlreadyExists:
        pass  # CalDAV (If-None-Match) and Google (the client-chosen id)
    mine = [e for e in cal.changes(None).events if e.syncd_id == d.syncd_id]
    assert [e.ref for e in mine] == [made.ref]


def test_create_many_creates_each_and_a_repeat_never_duplicates(
    backend: Backend, cal: Calendar
) -> None:
    cal.changes(None)
    drafts = [draft(start=datetime(2026, 12, 2 + i, 15, 0, tzinfo=UTC)) for i in range(3)]
    count = backend.count_requests(cal)
    made = cal.create_many(drafts)
    assert [m.syncd_id if isinstance(m, RemoteEvent) else m for m in made] == [
        d.syncd_id for d in drafts]
    assert count() == (1 if cal.batch_size >= 3 else 3)  # one batch, or one each
    again = cal.create_many(drafts)  # a repeat: the remote's guard answers each
    for first, second in zip(made, again, strict=True):
        assert isinstance(first, RemoteEvent)
        assert isinstance(second, AlreadyExists) or (
            isinstance(second, RemoteEvent) and second.ref == first.ref)
    mine = sorted(e.ref for e in cal.changes(None).events
                  if e.syncd_id in {d.syncd_id for d in drafts})
    assert mine == sorted(m.ref for m in made if isinstance(m, RemoteEvent))


def test_create_with_uid_taken_by_another_client(backend: Backend, name: str) -> None:
    cal = backend.open(name)
    uid = f"taken-{uuid.uuid4().hex}@elsewhere"
    start = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    backend.foreign_create(name, uid, "Their event", start, start + timedelta(hours=1))
    with pytest.raises(AlreadyExists):
        cal.create(draft(uid=uid))
    found = cal.get(uid)  # found by UID although it lives under another name
    assert found is not None and found.summary == "Their event" and found.syncd_id is None


def test_update_with_current_etag(cal: Calendar) -> None:
    d = draft()
    made = cal.create(d)
    d2 = draft(summary="Call Jane Roe (Acme Capital) #2", uid=d.uid)
    updated = cal.update(made.ref, made.etag, d2)
    assert updated.ref == made.ref and updated.etag and updated.etag != made.etag
    got = cal.get(d.uid)
    assert got is not None and got.summary == d2.summary and got.etag == updated.etag


def test_update_with_stale_etag_fails(cal: Calendar) -> None:
    d = draft()
    made = cal.create(d)
    cal.update(made.ref, made.etag, draft(summary="second", uid=d.uid))
    with pytest.raises(PreconditionFailed):
        cal.update(made.ref, made.etag, draft(summary="third", uid=d.uid))
    got = cal.get(d.uid)
    assert got is not None and got.summary == "second"


def test_update_of_deleted_event_is_not_found(cal: Calendar) -> None:
    d = draft()
    made = cal.create(d)
    cal.delete(made.ref, made.etag)
    with pytest.raises(NotFound):
        cal.update(made.ref, made.etag, d)


def test_delete_with_stale_etag_fails_and_missing_is_fine(cal: Calendar) -> None:
    d = draft()
    made = cal.create(d)
    now = cal.update(made.ref, made.etag, draft(summary="changed", uid=d.uid))
    with pytest.raises(PreconditionFailed):
        cal.delete(made.ref, made.etag)
    assert cal.get(d.uid) is not None
    cal.delete(now.ref, now.etag)
    assert cal.get(d.uid) is None
    cal.delete(now.ref, now.etag)  # already gone: fine


# --------------------------------------------------------------------------
# Reading changes
# --------------------------------------------------------------------------


def test_changes_without_cursor_lists_everything(cal: Calendar) -> None:
    empty = cal.changes(None)
    assert empty.full and empty.events == () and empty.cursor
    made = [cal.create(draft(summary=f"Call #{i}")) for i in range(3)]
    ch = cal.changes(None)
    assert ch.full and ch.deleted == ()
    assert {e.ref for e in ch.events} == {m.ref for m in made}
    assert {e.etag for e in ch.events} == {m.etag for m in made}


def test_incremental_changes(backend: Backend, cal: Calendar) -> None:
    keep, edit, drop = (cal.create(draft(summary=s)) for s in ("keep", "edit", "drop"))
    base = cal.changes(None)
    assert base.cursor

    added = cal.create(draft(summary="added"))
    backend.foreign_edit(cal, edit, "edited elsewhere")
    cal.delete(drop.ref, drop.etag)

    ch = cal.changes(base.cursor)
    assert not ch.full
    seen = by_uid(ch)
    assert set(seen) == {added.uid, edit.uid}
    assert seen[added.uid].etag == added.etag
    assert seen[edit.uid].summary == "edited elsewhere"
    assert seen[edit.uid].etag != edit.etag
    assert seen[edit.uid].syncd_id == edit.syncd_id  # other clients keep the marker
    assert ch.deleted == (drop.ref,)
    assert keep.uid not in seen

    idle = cal.changes(ch.cursor)
    assert (idle.events, idle.deleted, idle.full) == ((), (), False)
    assert idle.cursor


def test_rejected_or_corrupted_cursor_rereads_in_full(backend: Backend, cal: Calendar) -> None:
    made = [cal.create(draft(summary=f"Call #{i}")) for i in range(3)]
    good = cal.changes(None).cursor
    assert good
    cal.create(draft(summary="later"))
    expected = {m.ref for m in made} | {e.ref for e in cal.changes(None).events}
    stale = backend.stale_cursor(good)
    for bad in ([stale] if stale else []) + ["garbage", good[: len(good) // 2], "{}"]:
        ch = cal.changes(bad)
        assert ch.full, bad
        refs = [e.ref for e in ch.events]
        assert len(refs) == len(set(refs)) == 4  # no duplicates
        assert set(refs) == expected
        assert ch.cursor
        assert cal.changes(ch.cursor).events == ()  # the new cursor works


def test_marker_less_events_are_listed_with_syncd_id_none(
    backend: Backend, cal: Calendar, name: str
) -> None:
    ours = cal.create(draft())
    base = cal.changes(None)
    start = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)
    uid = f"other-{uuid.uuid4().hex}"
    backend.foreign_create(name, uid, "Interview with Acme", start, start + timedelta(hours=1))
    ch = cal.changes(base.cursor)
    theirs = by_uid(ch)[uid]
    assert theirs.syncd_id is None
    assert theirs.summary == "Interview with Acme"
    assert theirs.start == start and theirs.end == start + timedelta(hours=1)
    assert theirs.attendees == ("bob@example.com",)
    full = by_uid(cal.changes(None))
    assert full[uid].syncd_id is None and full[ours.uid].syncd_id == ours.syncd_id


# Anything an RFC 5545 TEXT value can carry (see connectors.caldav_calendar:
# no CR, no C0 controls but TAB/LF, no DEL, no U+FFFE/U+FFFF; no lone surrogates).
_FORBIDDEN = "".join(chr(c) for c in range(0x20) if c not in (9, 10)) + "\x7f\ufffe\uffff"
_PIECES = [
    ",", ";", "\\", "\\n", "\\N", "\\,", "\\;", ":", "\n", "\n\n", "  ", " \n", "\t", '"', "'",
    "<", ">", "&", "]]>", "&amp;", "😀", "👩‍💻", "🇺🇸", "שלום", "مرحبا", "\u200f", "\u202e",
    "é", "ß", "日本語", "x" * 90, "é" * 50, "9:10 no answer", "Log attempts below:",
    "DESCRIPTION:", "END:VEVENT", "\u0085", "\u00a0", "\u2028", " " * 80, "\t\t",
]
descriptions = st.one_of(
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters=_FORBIDDEN),
        max_size=300,
    ),
    st.lists(st.sampled_from(_PIECES), max_size=25).map("".join),
)


def test_description_round_trips_exactly(backend: Backend, cal: Calendar) -> None:
    cursor = cal.changes(None).cursor

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(text=descriptions)
    # Regressions: trailing spaces landing on a fold (vobject drops a
    # whitespace-only continuation line), and a long run of spaces.
    @example(text="a" * 63 + "  ")
    @example(text="a" * 63 + " " * 200 + "b\n\n \t")
    @example(text="Log attempts below:\n9:10 no answer, 14:05 vm; spoke\\ok 😀 שלום\n\n")
    def round_trip(text: str) -> None:
        nonlocal cursor
        assume(not any(bad in text for bad in backend.text_defects))
        d = draft(description=text, summary="Call " + text[:40])
        made = cal.create(d)
        assert made.description == text
        got = cal.get(d.uid)  # GET: text/calendar body
        assert got is not None and got.description == text
        ch = cal.changes(cursor)  # REPORT: calendar-data inside XML
        cursor = ch.cursor
        listed = by_uid(ch)[d.uid]
        assert listed.description == text
        assert listed.summary == d.summary

    round_trip()


def test_known_text_defects(
    backend: Backend, cal: Calendar, request: pytest.FixtureRequest
) -> None:
    """Texts the round trip skips for a backend really are corrupted there
    (strict xfail: when the server is fixed, drop the entry); on every other
    backend they round-trip."""
    texts = ["\\N", "C:\\New folder\\Notes", "a\\Nb\\nc"]
    if backend.text_defects:
        request.applymarker(pytest.mark.xfail(strict=True, reason="server corrupts TEXT"))
    for text in texts:
        d = draft(description=text)
        cal.create(d)
        got = cal.get(d.uid)
        assert got is not None and got.description == text


def test_carriage_returns_become_line_feeds(cal: Calendar) -> None:
    d = draft(description="a\r\nb\rc\n")
    made = cal.create(d)
    got = cal.get(d.uid)
    assert made.description == "a\nb\nc\n"
    assert got is not None and got.description == "a\nb\nc\n"


def test_tzid_is_preserved(cal: Calendar) -> None:
    # Across a DST change, so a fixed offset would show.
    starts = (datetime(2026, 3, 29, 9, 30, tzinfo=BERLIN), datetime(2026, 11, 2, 8, 0, tzinfo=NY))
    for start in starts:
        d = draft(start=start, minutes=45)
        cal.create(d)
        got = cal.get(d.uid)
        assert got is not None
        assert got.start == start and got.end == start + timedelta(minutes=45)
        assert isinstance(got.start.tzinfo, ZoneInfo)
        assert got.start.tzinfo.key == start.tzinfo.key  # type: ignore[union-attr]
        assert got.start.utcoffset() == start.utcoffset()
        listed = by_uid(cal.changes(None))[d.uid]
        assert listed.start == start
        assert isinstance(listed.start.tzinfo, ZoneInfo)
        assert listed.start.tzinfo.key == start.tzinfo.key  # type: ignore[union-attr]


# --------------------------------------------------------------------------
# Busy times
# --------------------------------------------------------------------------


def test_busy_returns_intervals_from_the_named_calendar(backend: Backend, name: str) -> None:
    work = f"Work {uuid.uuid4().hex[:8]}"
    day = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    meeting = (day + 14 * hour, day + 15 * hour)
    backend.foreign_create(work, f"m-{uuid.uuid4().hex}", "Standup", *meeting)
    later = day + timedelta(days=8)
    backend.foreign_create(work, f"m-{uuid.uuid4().hex}", "Next week", later, later + hour)
    # A daily series that began two days earlier: only its instance today counts.
    series = day - timedelta(days=2) + 8 * hour
    backend.foreign_create(
        work, f"s-{uuid.uuid4().hex}", "Daily", series, series + hour, rrule="FREQ=DAILY;COUNT=5"
    )
    target = backend.open(name, busy=(work,))
    target.create(draft(start=day + 10 * hour))  # the target calendar is not busy
    got = target.busy(day, day + timedelta(days=1))
    assert [(s.astimezone(UTC), e.astimezone(UTC)) for s, e in got] == [
        (day + 8 * hour, day + 9 * hour),
        meeting,
    ]
    assert target.busy(day + timedelta(days=3), day + timedelta(days=4)) == []


def test_busy_events_give_the_events_of_the_named_calendar(backend: Backend, name: str) -> None:
    """The events themselves, with their titles (interviews are found there)."""
    work = f"Work {uuid.uuid4().hex[:8]}"
    day = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    backend.foreign_create(work, f"i-{uuid.uuid4().hex}", "Interview at Acme",
                           day + 14 * hour, day + 15 * hour)
    backend.foreign_create(work, f"m-{uuid.uuid4().hex}", "Next week",
                           day + timedelta(days=8), day + timedelta(days=8) + hour)
    target = backend.open(name, busy=(work,))
    got = target.busy_events(day, day + timedelta(days=1))
    assert [(e.summary, e.start.astimezone(UTC), e.syncd_id) for e in got] == [
        ("Interview at Acme", day + 14 * hour, None)]


def test_busy_with_unknown_calendar_names_it_and_the_available_ones(
    backend: Backend, name: str
) -> None:
    work = f"Work {uuid.uuid4().hex[:8]}"
    backend.open(work).url()
    missing = f"Nope {uuid.uuid4().hex[:8]}"
    target = backend.open(name, busy=(work, missing))
    with pytest.raises(RemoteError) as info:
        target.busy(datetime(2026, 12, 7, tzinfo=UTC), datetime(2026, 12, 8, tzinfo=UTC))
    assert not info.value.retryable
    assert missing in info.value.message and work in info.value.message


# --------------------------------------------------------------------------
# Performance
# --------------------------------------------------------------------------


def test_idle_changes_is_one_request(backend: Backend, cal: Calendar) -> None:
    cal.create(draft())
    cursor = cal.changes(None).cursor
    count = backend.count_requests(cal)
    for _ in range(3):
        ch = cal.changes(cursor)
        assert ch.events == () and ch.deleted == ()
        cursor = ch.cursor
    assert count() == 3


# --------------------------------------------------------------------------
# CalDAV specifics (not part of the port contract)
# --------------------------------------------------------------------------


def test_caldav_configured_ca_bundle_is_what_every_request_verifies_with(
    radicale: DavServer, tmp_path: Path
) -> None:
    """REQUESTS_CA_BUNDLE may be set in the environment; a configured bundle is
    passed explicitly as `verify=`, which the session prefers over the env."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    cfg = CalendarConfig(
        type="caldav",
        url=radicale.base + "/",
        calendar=f"TLS {uuid.uuid4().hex[:8]}",
        username="alice",
        connection=Connection(ca_bundle=bundle, timeout=7),
    )
    cal = CalDavCalendar(cfg, "x")
    seen: list[tuple[object, object]] = []
    inner = cal.http_session.request

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((kwargs.get("verify"), kwargs.get("timeout")))
        return inner(*args, **kwargs)

    cal.http_session.request = spy
    try:
        cal.changes(None)
    finally:
        cal.close()
    assert seen and all(v == (str(bundle), 7) for v in seen)


def test_caldav_url_may_be_a_calendar(radicale: DavServer) -> None:
    """A calendar URL whose display name is the configured one is used as is;
    any other name is looked up (or created) next to it, in the same home."""
    name = f"Direct {uuid.uuid4().hex[:8]}"
    other = f"Other {uuid.uuid4().hex[:8]}"

    def connect(url: str, calendar: str) -> CalDavCalendar:
        cfg = CalendarConfig(type="caldav", url=url, username="alice", calendar=calendar)
        return CalDavCalendar(cfg, "x")

    first = connect(radicale.principal_url, name)
    url = first.url()
    direct = connect(url, name)
    beside = connect(url, other)
    from_root = connect(radicale.base + "/", other)
    try:
        assert direct.url() == url
        assert beside.url() != url
        assert beside.url().startswith(radicale.calendar_home)
        assert from_root.url() == beside.url()
    finally:
        for c in (first, direct, beside, from_root):
            c.close()


def test_caldav_unreachable_server_is_retryable_and_messages_hold_no_secrets() -> None:
    port = free_port()  # nothing listens there
    cfg = CalendarConfig(
        type="caldav",
        url=f"http://alice:s3cret@127.0.0.1:{port}/",
        username="alice",
        connection=Connection(timeout=2),
    )
    cal = CalDavCalendar(cfg, "hunter2")
    try:
        with pytest.raises(RemoteError) as info:
            cal.changes(None)
    finally:
        cal.close()
    assert info.value.retryable and not isinstance(info.value, AuthError)
    shown = info.value.render()
    assert "s3cret" not in shown and "hunter2" not in shown
