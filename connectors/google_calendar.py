"""The `Calendar` port on Google Calendar, via the Calendar API v3.

Identity
--------
Each follow-up event gets a client-chosen event id derived from the draft's
UID: the UID's UTF-8 bytes in base32hex, lower case, unpadded (the alphabet
Google allows: a-v and 0-9, 5..1024 characters; a UID too long or too short
for that becomes "h" + its SHA-256, a length no encoding can have). So a
create retried after a crash meets 409 `duplicate` and raises
`AlreadyExists` instead of making a second event (Google guarantees that an
insert with a given id only succeeds when no entry has that id, deleted ones
included), and `get(uid)` is one GET by id. `ref` is the event id.

The syncd marker and the UID live in `extendedProperties.private`
(`syncdId`, `syncdUid`): private properties belong to this calendar's copy
and no other client shows or edits them. Only `id` is sent on insert, not
`iCalUID` ("only one of them should be supplied at event creation time",
Event.iCalUID reference), so `RemoteEvent.uid` is read back from `syncdUid`;
events of other clients report their `iCalUID`. A replayed create (not
`checked`) first looks for an event another client stored under the same
iCalUID (events.list `iCalUID`), and raises `AlreadyExists` when there is
one. `create_many` sends checked first tries 50 to a batch request
(`/batch/calendar/v3`). `get(uid)` falls back to the
`privateExtendedProperty` and `iCalUID` filters when the id is not there.

Writes
------
`events.insert` with explicit `reminders` overrides (a popup at the
follow-up's start, whatever the calendar's defaults), `events.patch` for
updates (fields syncd does not own, like a colour or location the user set,
are kept) and `events.delete`, both with `If-Match: <ETag>`: 412 raises
`PreconditionFailed`, unless the event turns out to be deleted (a deletion
changes the ETag too), which is `NotFound` for an update and fine for a
delete. `RemoteEvent.etag` is the event's `etag`. Notifications are off
(`sendUpdates=none`).

Reading changes
---------------
`events.list` with `showDeleted=true` and `maxResults=2500` (fewest pages):
a full read returns the `nextSyncToken` of its last page; later reads send
`syncToken` and get changes only, deleted events as `cancelled` entries
(reported as deleted refs). An idle read is one request. 410
`fullSyncRequired` (or a 400 for a token the server cannot read) makes one
full re-read, returned with `full=True`. The cursor is JSON holding the
calendar id and the token, so a cursor made for another calendar, or one
that does not parse, also means a full read.

Calendars
---------
The target calendar is found by its name in calendarList (`summaryOverride`,
which is what the user sees, or `summary`) or created with calendars.insert,
once per instance. `busy()` lists the `busy_calendars`, found the same way
(the word `primary` names the main calendar), with `timeMin`/`timeMax` and
`singleEvents=true` so recurring events come as instances; cancelled and
"free" (`transparency: transparent`) events are not busy.

Text policy
-----------
The same as the CalDAV connector, so notes behave the same on every
calendar: CRLF and CR become LF, and C0 controls other than TAB and LF, DEL,
U+FFFE and U+FFFF are dropped; everything else round-trips exactly.

Times are written as `dateTime` with the offset plus the IANA `timeZone` of
the draft's zone, and read back in that zone. All-day events read as
midnight UTC of their date.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from connectors.google_common import ApiError, ApiStatus, GoogleApi
from syncd.errors import AlreadyExists, NotFound, PreconditionFailed, RemoteError
from syncd.model import EventChanges, EventDraft, RemoteEvent
from syncd.notes import html_to_text, looks_like_html
from syncd.ports import create_one_by_one
from syncd.settings import CalendarConfig

log = structlog.get_logger("syncd")
# From the Calendar v3 discovery document: where batch requests go.
SERVICE_PATH, BATCH_PATH = "calendar/v3/", "batch/calendar/v3"

MARKER = "syncdId"
UID_KEY = "syncdUid"
REMINDER_MINUTES = 0  # a popup when the follow-up is due
PAGE_SIZE = 2500  # the most events.list returns per page
_CURSOR_VERSION = 1
_FORBIDDEN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _FORBIDDEN_TEXT.sub("", text)


def event_id(uid: str) -> str:
    """The Google event id for a UID (see module doc)."""
    raw = uid.encode("utf-8")
    enc = base64.b32hexencode(raw).decode("ascii").lower().rstrip("=")
    if 5 <= len(enc) <= 1024:
        return enc
    return "h" + hashlib.sha256(raw).hexdigest()


def _rfc3339(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _when(dt: datetime) -> dict[str, str]:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    key = getattr(dt.tzinfo, "key", None)
    if isinstance(key, str) and key:
        return {"dateTime": dt.isoformat(timespec="seconds"), "timeZone": key}
    if dt.utcoffset() == timedelta(0):
        return {"dateTime": _rfc3339(dt), "timeZone": "UTC"}
    return {"dateTime": dt.isoformat(timespec="seconds")}


def _zone(name: object) -> ZoneInfo | None:
    if not isinstance(name, str) or not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _when_of(t: object) -> datetime | None:
    if not isinstance(t, dict):
        return None
    if "dateTime" in t:
        try:
            dt = datetime.fromisoformat(str(t["dateTime"]))
        except ValueError:
            return None
        zone = _zone(t.get("timeZone"))
        if dt.tzinfo is None:
            return dt.replace(tzinfo=zone or UTC)
        return dt.astimezone(zone) if zone is not None else dt
    if "date" in t:
        try:
            return datetime.combine(date.fromisoformat(str(t["date"])), time(0), UTC)
        except ValueError:
            return None
    return None


def parse_event(ev: dict[str, Any]) -> RemoteEvent | None:
    """A RemoteEvent from an Events resource, or None when it has no usable time."""
    start, end = _when_of(ev.get("start")), _when_of(ev.get("end"))
    if start is None or not ev.get("id"):
        return None
    ext = ev.get("extendedProperties")
    private = ext.get("private") if isinstance(ext, dict) else None
    private = private if isinstance(private, dict) else {}
    marker = private.get(MARKER)
    uid = private.get(UID_KEY) or ev.get("iCalUID") or ev["id"]
    attendees = tuple(
        str(a["email"]) for a in ev.get("attendees", []) or []
        if isinstance(a, dict) and a.get("email") and not a.get("self") and not a.get("resource")
    )
    return RemoteEvent(
        ref=str(ev["id"]),
        uid=str(uid),
        etag=str(ev.get("etag") or ""),
        start=start,
        end=end or start,
        summary=clean_text(str(ev.get("summary") or "")),
        description=clean_text(_as_text(str(ev.get("description") or ""))),
        syncd_id=str(marker) if isinstance(marker, str) and marker else None,
        attendees=attendees,
    )


def _body(draft: EventDraft) -> dict[str, Any]:
    return {
        "summary": clean_text(draft.summary),
        "description": clean_text(draft.description),
        "start": _when(draft.start),
        "end": _when(draft.end),
        "extendedProperties": {"private": {MARKER: draft.syncd_id, UID_KEY: draft.uid}},
        "reminders": {
            "useDefault": False,
            "overrides": [{"method": "popup", "minutes": REMINDER_MINUTES}],
        },
    }


class _TokenRejected(Exception):
    pass


class GoogleCalendar:
    """Google Calendar as the follow-up calendar. Not thread-safe."""

    kind = "google"
    # Inserts per batch request (the Calendar batch guide allows 1000; a
    # smaller batch keeps one slow answer from holding up many events).
    batch_size = 50

    def __init__(self, cfg: CalendarConfig, state_dir: Path) -> None:
        self.cfg = cfg
        self.api = GoogleApi("calendar", "v3", cfg, state_dir)
        self._cal_id: str | None = None
        self._names: dict[str, str] | None = None  # calendar name -> id

    def close(self) -> None:
        self.api.close()

    # ---- calendars -------------------------------------------------------------

    def _calendar_names(self) -> dict[str, str]:
        if self._names is None:
            names: dict[str, str] = {}

            def build(service: Any, page_token: str | None) -> Any:
                kwargs: dict[str, Any] = {"maxResults": 250}
                if page_token is not None:
                    kwargs["pageToken"] = page_token
                return service.calendarList().list(**kwargs)

            for page in self.api.pages(build, "listing Google calendars"):
                for entry in page.get("items", []):
                    if not isinstance(entry, dict) or entry.get("deleted") or not entry.get("id"):
                        continue
                    for key in ("summaryOverride", "summary"):
                        if entry.get(key):
                            names.setdefault(str(entry[key]), str(entry["id"]))
            self._names = names
        return self._names

    def _calendar_id(self) -> str:
        if self._cal_id is None:
            name = self.cfg.calendar
            if name == "primary":
                self._cal_id = "primary"
                return self._cal_id
            cid = self._calendar_names().get(name)
            if cid is None:
                made = self.api.execute(
                    lambda s: s.calendars().insert(body={"summary": name}),
                    f"creating the Google calendar {name!r}",
                )
                if not made.get("id"):
                    raise RemoteError(f"creating the Google calendar {name!r}: no id returned")
                cid = str(made["id"])
                self._calendar_names()[name] = cid
                log.info("google calendar created", calendar=name)
            self._cal_id = cid
        return self._cal_id

    def _forget(self) -> None:
        self._cal_id = None
        self._names = None

    def url(self) -> str:
        cid = self._calendar_id()
        endpoint = self.cfg.connection.api_endpoint
        if endpoint:
            return f"{endpoint.rstrip('/')}/calendars/{quote(cid, safe='')}"
        return f"https://calendar.google.com/calendar/embed?src={quote(cid, safe='')}"

    # ---- reading ---------------------------------------------------------------

    def _list(self, cid: str, what: str, passthrough: frozenset[int],
              **params: Any) -> tuple[list[dict[str, Any]], str | None]:
        """Every page of one events.list, and the last page's nextSyncToken."""
        def build(service: Any, page_token: str | None) -> Any:
            kwargs = {"calendarId": cid, **params}
            if page_token is not None:
                kwargs["pageToken"] = page_token
            return service.events().list(**kwargs)

        items: list[dict[str, Any]] = []
        token: str | None = None
        for page in self.api.pages(build, what, passthrough):
            items.extend(i for i in page.get("items", []) if isinstance(i, dict))
            token = page.get("nextSyncToken") or token
        return items, token

    def _read(self, cid: str, token: str | None) -> tuple[list[dict[str, Any]], str]:
        params: dict[str, Any] = {"showDeleted": True, "maxResults": PAGE_SIZE}
        if token is not None:
            params["syncToken"] = token
        what = f"reading the Google calendar {self.cfg.calendar!r}"
        try:
            items, nxt = self._list(cid, what, frozenset({400, 404, 410}), **params)
        except ApiStatus as e:
            if e.error.status == 404:
                self._forget()
                raise RemoteError(f"{what}: the calendar disappeared; it is looked up (or "
                                  "created) again next time") from None
            if token is not None:
                raise _TokenRejected(f"HTTP {e.error.status} "
                                     f"{','.join(sorted(e.error.reasons))}") from None
            raise self.api.translate(e.error, what) from None
        if not nxt:
            raise RemoteError(f"{what}: the last page carried no nextSyncToken")
        return items, nxt

    def changes(self, cursor: str | None) -> EventChanges:
        cid = self._calendar_id()
        token = self._cursor_token(cursor, cid)
        if token is not None:
            try:
                items, nxt = self._read(cid, token)
            except _TokenRejected as e:
                log.info("google calendar: sync token rejected, reading in full", reason=str(e))
            else:
                return self._changes(items, nxt, cid, full=False)
        items, nxt = self._read(cid, None)
        return self._changes(items, nxt, cid, full=True)

    def _changes(self, items: list[dict[str, Any]], token: str, cid: str,
                 *, full: bool) -> EventChanges:
        events: dict[str, RemoteEvent] = {}
        deleted: dict[str, None] = {}
        for item in items:
            ref = str(item.get("id") or "")
            if item.get("status") == "cancelled":
                events.pop(ref, None)
                deleted[ref] = None
                continue
            ev = parse_event(item)
            if ev is not None:
                deleted.pop(ref, None)
                events[ref] = ev
        cursor = json.dumps({"v": _CURSOR_VERSION, "c": cid, "t": token},
                            separators=(",", ":"), sort_keys=True)
        return EventChanges(
            events=tuple(sorted(events.values(), key=lambda e: e.ref)),
            deleted=() if full else tuple(sorted(deleted)),
            cursor=cursor,
            full=full,
        )

    @staticmethod
    def _cursor_token(cursor: str | None, cid: str) -> str | None:
        if not cursor:
            return None
        try:
            state = json.loads(cursor)
        except ValueError:
            return None
        if not isinstance(state, dict) or state.get("v") != _CURSOR_VERSION:
            return None
        token = state.get("t")
        if state.get("c") != cid or not isinstance(token, str) or not token:
            return None
        return token

    def _get_raw(self, cid: str, ref: str) -> dict[str, Any] | None:
        try:
            return self.api.execute(
                lambda s: s.events().get(calendarId=cid, eventId=ref),
                f"reading event {ref}", passthrough=frozenset({404, 410}),
            )
        except ApiStatus:
            return None

    def _find(self, cid: str, **params: Any) -> RemoteEvent | None:
        items, _ = self._list(cid, "looking up an event", frozenset(), maxResults=10, **params)
        for item in items:
            if item.get("status") != "cancelled":
                ev = parse_event(item)
                if ev is not None:
                    return ev
        return None

    def get(self, uid: str) -> RemoteEvent | None:
        cid = self._calendar_id()
        raw = self._get_raw(cid, event_id(uid))
        if raw is not None and raw.get("status") != "cancelled":
            return parse_event(raw)
        return (self._find(cid, privateExtendedProperty=f"{UID_KEY}={uid}")
                or self._find(cid, iCalUID=uid))

    # ---- writing -----------------------------------------------------------------

    def create(self, draft: EventDraft, *, checked: bool = False) -> RemoteEvent:
        cid = self._calendar_id()
        # The client-chosen id answers a retried insert with 409; the look-up
        # by iCalUID also finds an event imported under another id (replays only).
        if not checked and self._find(cid, iCalUID=draft.uid) is not None:
            raise AlreadyExists(f"an event with UID {draft.uid} is already in the calendar")
        body = {"id": event_id(draft.uid), **_body(draft)}
        try:
            made = self.api.execute(
                lambda s: s.events().insert(calendarId=cid, body=body, sendUpdates="none"),
                "creating a follow-up event", passthrough=frozenset({409}),
            )
        except ApiStatus:
            raise AlreadyExists(
                f"event {body['id']} (UID {draft.uid}) already exists in the calendar"
            ) from None
        ev = parse_event(made)
        if ev is None:
            raise RemoteError("Google returned an event without a start", retryable=False)
        return ev

    def create_many(self, drafts: list[EventDraft]) -> list[RemoteEvent | RemoteError]:
        """Inserts in one batch request; a part answered 409 is AlreadyExists,
        a throttled or failed part is sent again alone (the client-chosen
        id makes a repeat safe)."""
        if len(drafts) < 2:
            return create_one_by_one(self, drafts)
        cid = self._calendar_id()
        bodies = [{"id": event_id(d.uid), **_body(d)} for d in drafts]
        got = self.api.batch(
            lambda s: [s.events().insert(calendarId=cid, body=b, sendUpdates="none")
                       for b in bodies],
            "creating follow-up events", service_path=SERVICE_PATH, batch_path=BATCH_PATH)
        out: list[RemoteEvent | RemoteError] = []
        for d, b, r in zip(drafts, bodies, got, strict=True):
            if isinstance(r, ApiError) and r.status == 409:
                out.append(AlreadyExists(
                    f"event {b['id']} (UID {d.uid}) already exists in the calendar"))
            elif isinstance(r, ApiError) and not r.transient:
                out.append(self.api.translate(r, "creating a follow-up event"))
            elif isinstance(r, dict) and (ev := parse_event(r)) is not None:
                out.append(ev)
            else:  # throttled, failed or missing: alone, with the usual retries
                out.extend(create_one_by_one(self, [d]))
        return out

    def update(self, ref: str, etag: str, draft: EventDraft) -> RemoteEvent:
        cid = self._calendar_id()
        body = _body(draft)
        try:
            got = self.api.execute(
                lambda s: s.events().patch(calendarId=cid, eventId=ref, body=body,
                                           sendUpdates="none"),
                f"updating event {ref}", if_match=etag,
                passthrough=frozenset({404, 410, 412}),
            )
        except ApiStatus as e:
            if e.error.status != 412:
                raise NotFound(f"event {ref} is gone", retryable=False) from None
            now = self._get_raw(cid, ref)
            if now is None or now.get("status") == "cancelled":
                raise NotFound(f"event {ref} was deleted", retryable=False) from None
            raise PreconditionFailed(f"event {ref} changed since ETag {etag}") from None
        if got.get("status") == "cancelled":
            raise NotFound(f"event {ref} was deleted", retryable=False)
        ev = parse_event(got)
        if ev is None:
            raise RemoteError("Google returned an event without a start", retryable=False)
        return ev

    def delete(self, ref: str, etag: str) -> None:
        cid = self._calendar_id()
        try:
            self.api.execute(
                lambda s: s.events().delete(calendarId=cid, eventId=ref, sendUpdates="none"),
                f"deleting event {ref}", if_match=etag,
                passthrough=frozenset({404, 410, 412}),
            )
        except ApiStatus as e:
            if e.error.status != 412:
                return  # already gone (410 "Resource has been deleted")
            now = self._get_raw(cid, ref)
            if now is None or now.get("status") == "cancelled":
                return
            raise PreconditionFailed(f"event {ref} changed since ETag {etag}") from None

    # ---- busy ------------------------------------------------------------------------

    def busy_events(self, start: datetime, end: datetime) -> list[RemoteEvent]:
        out: list[RemoteEvent] = []
        for item in self._busy_items(start, end):
            ev = parse_event(item)
            if ev is not None and ev.start < end and ev.end > start:
                out.append(ev)
        return out

    def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        out: list[tuple[datetime, datetime]] = []
        for item in self._busy_items(start, end):
            if item.get("transparency") == "transparent":
                continue
            s, e = _when_of(item.get("start")), _when_of(item.get("end"))
            if s is None:
                continue
            e = e or s
            if s < end and e > start:
                out.append((s, e))
        return sorted(out)

    def _busy_items(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Events of the busy_calendars in the window (single instances)."""
        wanted = self.cfg.busy_calendars
        if not wanted:
            return []
        names = self._calendar_names()
        missing = [n for n in wanted if n not in names and n != "primary"]
        if missing:
            raise RemoteError(
                "calendar.busy_calendars: no Google calendar named "
                + ", ".join(repr(m) for m in missing)
                + "; available: " + (", ".join(sorted(names)) or "none"),
                hint="fix calendar.busy_calendars in the config",
                retryable=False,
            )
        out: list[dict[str, Any]] = []
        for name in wanted:
            cid = names.get(name, "primary")
            items, _ = self._list(
                cid, f"reading busy times from {name!r}", frozenset(),
                timeMin=_rfc3339(start), timeMax=_rfc3339(end), singleEvents=True,
                orderBy="startTime", maxResults=PAGE_SIZE,
            )
            out.extend(item for item in items if item.get("status") != "cancelled")
        return out


def _as_text(description: str) -> str:
    """Google Calendar's web UI saves notes as HTML (<br> between lines);
    read them as the text the user sees."""
    return html_to_text(description) if looks_like_html(description) else description

