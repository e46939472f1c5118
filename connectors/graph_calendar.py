"""The `Calendar` port on an Outlook / Microsoft 365 calendar (Microsoft Graph).

Calendar
    Found by name in `/me/calendars` (all pages), created with POST when
    missing (a 409 `ErrorFolderExists` from a racing creator → listed again).
    Looked up once per instance.
Identity
    `ref` is the Graph event id (immutable ids: every request carries
    `Prefer: IdType="ImmutableId"`); `etag` is `@odata.etag`. Our follow-up id
    and UID are two single-value extended properties, `String {GUID} Name
    syncdId` and `... Name syncdUid` (never shown in Outlook). Graph returns
    them only when `$expand`ed, so events are read with
    `$expand=singleValueExtendedProperties($filter=id eq … or id eq …)`.
    Events without them have `syncd_id` None and their `iCalUId` as `uid`.
Create
    A replay (not `checked`) first `$filter`s on syncdId (and then on the UID:
    syncdUid, else iCalUId); a hit raises `AlreadyExists`. Then POST with a
    `transactionId` derived from the calendar and the follow-up id (UUID 5),
    so a POST retried after a lost response returns the event created the
    first time instead of a duplicate. `create_many` sends checked first
    tries 20 to a JSON batch.
Update / delete
    PATCH / DELETE with `If-Match: <@odata.etag>`; 412 (or 409)
    `ErrorIrresolvableConflict` → `PreconditionFailed` (the core re-reads,
    merges, and writes again); 404 → `NotFound` (delete: fine).
Changes
    `GET /me/calendars/{id}/calendarView/delta` over a window from 30 days
    back to 400 days ahead (any sensible `horizon`); the cursor (JSON) holds
    the deltaLink and the window. When the window has drifted a week, a new
    round starts over a fresh window (full=True; events that left the window
    drop out of the listing). An idle read is ONE request: the deltaLink.
    Delta items carry no extended properties, so events that may be ours
    (a `transactionId` set, or not reported) are fetched with `$expand`, 20
    to a JSON batch. `@removed` is not proof of deletion (Graph also reports
    events changed or moved outside the window so): each removed id is looked
    up in the calendar; only a 404 makes it a deletion, an event still there
    (e.g. dragged beyond the window) comes back as changed. 410 /
    SyncStateNotFound → one full re-read; another failure on a nextLink
    restarts the round once.
Times
    Written as wall time plus the draft's IANA zone key (`timeZone`, which
    Graph accepts); read in UTC (`Prefer: outlook.timezone="UTC"`) and
    converted to the zone in `originalStartTimeZone` / `originalEndTimeZone`
    (IANA, or a Windows name from the table below; UTC otherwise), so the
    datetimes are aware and keep the zone they were written with.
Text
    Bodies are written as text and read as text (`Prefer:
    outlook.body-content-type="text"`). Exchange hands text back with CRLF
    line ends, so on write and on read CRLF and bare CR become LF, and C0
    controls other than TAB and LF, DEL, U+FFFE and U+FFFF are dropped (the
    same policy as the CalDAV connector). Every other text round-trips
    exactly. An HTML body (events from other clients) is reduced to text.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connectors.graph_http import BATCH_MAX, DeltaExpired, GraphClient, GraphSession, Step
from connectors.msal_auth import MsalTokens
from syncd.errors import AlreadyExists, NotFound, RemoteError
from syncd.model import EventChanges, EventDraft, RemoteEvent
from syncd.notes import html_to_text
from syncd.ports import find_busy_calendar
from syncd.settings import CalendarConfig

PROP_GUID = "{8c3b7a52-5d1e-4f0a-9b8e-6a2f1c4d7e90}"
PROP_ID = f"String {PROP_GUID} Name syncdId"
PROP_UID = f"String {PROP_GUID} Name syncdUid"
EXPAND = f"singleValueExtendedProperties($filter=id eq '{PROP_ID}' or id eq '{PROP_UID}')"
PREFER = 'outlook.timezone="UTC", outlook.body-content-type="text", IdType="ImmutableId"'
TX_NAMESPACE = uuid.UUID("4a1c2e8b-9f3d-5b6a-8c7e-0d1f2a3b4c5d")
_CURSOR_VERSION = 1
_FORBIDDEN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_DT = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,7}))?Z?")
_PROP_RE = re.compile(r"(\w+) \{([0-9A-Fa-f-]{36})\} (Name|Id) (.+)")

# Windows zone names Outlook writes (CLDR windowsZones, the common ones).
WINDOWS_ZONES = {
    "UTC": "UTC", "Coordinated Universal Time": "UTC",
    "GMT Standard Time": "Europe/London", "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin", "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw", "E. Europe Standard Time":
    "Europe/Chisinau", "FLE Standard Time": "Europe/Kiev", "GTB Standard Time": "Europe/Bucharest",
    "Russian Standard Time": "Europe/Moscow", "Turkey Standard Time": "Europe/Istanbul",
    "Israel Standard Time": "Asia/Jerusalem", "South Africa Standard Time":
    "Africa/Johannesburg", "Arabian Standard Time": "Asia/Dubai",
    "India Standard Time": "Asia/Kolkata", "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore", "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul", "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland", "Eastern Standard Time":
    "America/New_York", "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver", "US Mountain Standard Time": "America/Phoenix",
    "Pacific Standard Time": "America/Los_Angeles", "Alaskan Standard Time":
    "America/Anchorage", "Hawaiian Standard Time": "Pacific/Honolulu",
    "Atlantic Standard Time": "America/Halifax", "E. South America Standard Time":
    "America/Sao_Paulo", "Argentina Standard Time": "America/Buenos_Aires",
    "Mexico Standard Time": "America/Mexico_City", "Central Standard Time (Mexico)":
    "America/Mexico_City", "Canada Central Standard Time": "America/Regina",
}


def clean_text(text: str) -> str:
    """The form of `text` syncd writes and reads back (see the module doc)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _FORBIDDEN_TEXT.sub("", text)


def zone_of(name: str | None) -> tzinfo:
    if not name:
        return UTC
    key = WINDOWS_ZONES.get(name, name)
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def parse_graph_time(obj: Any) -> datetime | None:
    """A Graph dateTimeTimeZone as an aware datetime."""
    if not isinstance(obj, dict):
        return None
    m = _DT.fullmatch(str(obj.get("dateTime") or ""))
    if m is None:
        return None
    frac = (m.group(2) or "").ljust(6, "0")[:6]
    dt = datetime.fromisoformat(m.group(1)).replace(microsecond=int(frac))
    return dt.replace(tzinfo=zone_of(str(obj.get("timeZone") or "UTC")))


def _wall(dt: datetime) -> tuple[str, str]:
    """(dateTime, timeZone) for writing `dt`: its IANA key, or UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    key = getattr(dt.tzinfo, "key", None)
    if not isinstance(key, str):
        dt, key = dt.astimezone(UTC), "UTC"
    local = dt.replace(tzinfo=None)
    spec = "microseconds" if local.microsecond else "seconds"
    return local.isoformat(timespec=spec), key


def _same_prop(a: str, b: str) -> bool:
    ma, mb = _PROP_RE.fullmatch(a.strip()), _PROP_RE.fullmatch(b.strip())
    if ma is None or mb is None:
        return a == b
    return (ma.group(1).lower(), ma.group(2).lower(), ma.group(3).lower(), ma.group(4)) == (
        mb.group(1).lower(), mb.group(2).lower(), mb.group(3).lower(), mb.group(4))


def _odata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _qs(params: dict[str, str]) -> str:
    return "&".join(f"{k}={quote(v, safe=chr(36) + chr(39) + '(),:/{}')}"
                    for k, v in params.items())


@dataclass(frozen=True)
class _Cal:
    id: str
    name: str


class GraphCalendar:
    """The `syncd.ports.Calendar` port on Microsoft Graph."""

    kind = "graph"
    batch_size = BATCH_MAX  # creates go 20 to a JSON batch

    def __init__(
        self,
        cfg: CalendarConfig,
        state_dir: Path,
        *,
        client: GraphClient | None = None,
        page_size: int = 100,
        lookback: timedelta = timedelta(days=30),
        lookahead: timedelta = timedelta(days=400),
        reanchor: timedelta = timedelta(days=7),
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.cfg = cfg
        if client is None:
            session = GraphSession(cfg.connection)
            tokens = MsalTokens(cfg, state_dir, session=session)
            client = GraphClient(cfg.connection, tokens, who="calendar", session=session)
        self.client = client
        self.page_size = page_size
        self.lookback, self.lookahead, self.reanchor = lookback, lookahead, reanchor
        self._now = now or (lambda: datetime.now(UTC))
        self._cal: _Cal | None = None
        self._listing: list[_Cal] | None = None
        self._headers = {"Prefer": PREFER}
        self._delta_headers = {"Prefer": f"{PREFER}, odata.maxpagesize={page_size}"}

    @property
    def http_session(self) -> GraphSession:
        return self.client.session

    def url(self) -> str:
        return f"{self.client.base}/me/calendars/{quote(self._calendar().id, safe='')}"

    def close(self) -> None:
        self.client.close()

    # ---- reads -------------------------------------------------------------------

    def get(self, uid: str) -> RemoteEvent | None:
        cal = self._calendar()
        for ev in self._search(cal, self._prop_filter(PROP_UID, uid)):
            if ev.uid == uid:
                return ev
        for ev in self._search(cal, f"iCalUId eq {_odata_string(uid)}"):
            if ev.uid == uid:
                return ev
        return None

    def changes(self, cursor: str | None) -> EventChanges:
        cal = self._calendar()
        now = self._now()
        state = self._parse_cursor(cursor, cal)
        if state is not None:
            link, ws, we = state
            fresh = now - ws <= self.lookback + self.reanchor and \
                we - now >= self.lookahead - self.reanchor
            if fresh:
                try:
                    return self._delta(cal, link, (ws, we), full=False)
                except DeltaExpired:
                    pass  # evicted or expired: one full re-read below
        ws = (now - self.lookback).astimezone(UTC).replace(second=0, microsecond=0)
        we = (now + self.lookahead).astimezone(UTC).replace(second=0, microsecond=0)
        initial = (
            f"/me/calendars/{quote(cal.id, safe='')}/calendarView/delta?"
            + _qs({"startDateTime": ws.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "endDateTime": we.strftime("%Y-%m-%dT%H:%M:%SZ")})
        )
        try:
            return self._delta(cal, initial, (ws, we), full=True)
        except DeltaExpired:
            raise RemoteError("calendar: Graph expired the change-tracking state during a "
                              "full read; the next cycle tries again") from None

    def busy_events(self, start: datetime, end: datetime) -> list[RemoteEvent]:
        out: list[RemoteEvent] = []
        for item in self._busy_items(start, end):
            ev = self._to_event(item)
            if ev is not None and ev.start < end and ev.end > start:
                out.append(ev)
        return out

    def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        out: list[tuple[datetime, datetime]] = []
        for item in self._busy_items(start, end):
            if str(item.get("showAs") or "busy").lower() in ("free", "workingelsewhere"):
                continue
            s, e = parse_graph_time(item.get("start")), parse_graph_time(item.get("end"))
            if s is not None and e is not None and s < end and e > start:
                out.append((s, e))
        out.sort()
        return out

    def _busy_items(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Events of the busy_calendars in the window (calendarView expands
        series), cancelled ones left out."""
        out: list[dict[str, Any]] = []
        for name in self.cfg.busy_calendars:
            cal = self._named(name)
            url: str | None = (
                f"/me/calendars/{quote(cal.id, safe='')}/calendarView?"
                + _qs({"startDateTime": start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "endDateTime": end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "$top": str(self.page_size)})
            )
            while url:
                page = self.client.get_json(url, headers=self._headers)
                out.extend(item for item in page.get("value") or []
                           if isinstance(item, dict) and not item.get("isCancelled"))
                nxt = page.get("@odata.nextLink")
                url = nxt if isinstance(nxt, str) and nxt else None
        return out

    # ---- writes ------------------------------------------------------------------

    def create_many(self, drafts: list[EventDraft]) -> list[RemoteEvent | RemoteError]:
        """Checked first tries in JSON batches; the transactionId makes each
        POST safe to send again alone (what `send_many` does on 429/5xx)."""
        cal = self._calendar()
        path = f"/me/calendars/{quote(cal.id, safe='')}/events"
        got = self.client.send_many([Step("POST", path, self._create_body(cal, d),
                                          self._headers)
                                     for d in drafts])
        return [body if isinstance(body, RemoteError) else self._ours(body, d)
                for d, body in zip(drafts, got, strict=True)]

    def _create_body(self, cal: _Cal, draft: EventDraft) -> dict[str, Any]:
        body = self._payload(draft)
        # transactionId de-duplicates POSTs across the whole mailbox: the
        # calendar is part of it, so that two calendars (two configs) with
        # the same contacts never answer each other's creates.
        body["transactionId"] = str(uuid.uuid5(TX_NAMESPACE, f"{cal.id}/{draft.syncd_id}"))
        body["singleValueExtendedProperties"] = [
            {"id": PROP_ID, "value": draft.syncd_id},
            {"id": PROP_UID, "value": draft.uid},
        ]
        return body

    def create(self, draft: EventDraft, *, checked: bool = False) -> RemoteEvent:
        cal = self._calendar()
        # Before a replay, look for an event an earlier try created: by our
        # property, then by UID (3 requests). A checked first try skips them;
        # the transactionId still de-duplicates a retried POST.
        if not checked:
            for ev in self._search(cal, self._prop_filter(PROP_ID, draft.syncd_id)):
                if ev.syncd_id == draft.syncd_id:
                    raise AlreadyExists(f"event for follow-up {draft.syncd_id!r} already "
                                        f"exists ({ev.ref})")
            if self.get(draft.uid) is not None:
                raise AlreadyExists(f"event {draft.uid!r} already exists in {cal.name!r}")
        resp = self.client.request(
            "POST", f"/me/calendars/{quote(cal.id, safe='')}/events",
            json_body=self._create_body(cal, draft),
            headers=self._headers, idempotent=True,  # transactionId de-duplicates a retry
        )
        return self._ours(self.client.json_of(resp), draft)

    def update(self, ref: str, etag: str, draft: EventDraft) -> RemoteEvent:
        resp = self.client.request(
            "PATCH", self._event_path(ref), json_body=self._payload(draft),
            headers={**self._headers, "If-Match": etag},
        )
        return self._ours(self.client.json_of(resp), draft)

    def delete(self, ref: str, etag: str) -> None:
        try:
            self.client.request("DELETE", self._event_path(ref),
                                headers={**self._headers, "If-Match": etag})
        except NotFound:
            return

    # ---- delta -------------------------------------------------------------------

    def _delta(self, cal: _Cal, start: str, window: tuple[datetime, datetime], *, full: bool
               ) -> EventChanges:
        r = self.client.delta_round(start, self._delta_headers, "calendar")
        items, removed, link = r.items, r.removed, r.link
        # Which items need a GET: possibly ours (props only come with $expand),
        # and every @removed id of an incremental round (out-of-window or gone?).
        fetch = [eid for eid, it in items.items()
                 if "transactionId" not in it or it.get("transactionId") is not None]
        lookups = [] if full else sorted(removed)
        fetched = self._fetch_many(cal, [*fetch, *lookups])
        events: dict[str, RemoteEvent] = {}
        deleted: set[str] = set()
        for eid, it in items.items():
            if eid in fetch:
                got_ev = fetched.get(eid)
                if got_ev is None:
                    if not full:
                        deleted.add(eid)  # gone between the listing and the GET
                    continue
                events[eid] = got_ev
            else:
                ev = self._to_event(it)
                if ev is not None:
                    events[eid] = ev
        for eid in lookups:
            got_ev = fetched.get(eid)
            if got_ev is None:
                deleted.add(eid)
            else:
                events[eid] = got_ev  # still there, e.g. moved outside our window
        return EventChanges(
            events=tuple(sorted(events.values(), key=lambda e: e.ref)),
            deleted=() if full else tuple(sorted(deleted)),
            cursor=self._make_cursor(cal, link, window),
            full=full,
        )

    def _fetch_many(self, cal: _Cal, ids: list[str]) -> dict[str, RemoteEvent | None]:
        if not ids:
            return {}

        paths = [f"/me/calendars/{quote(cal.id, safe='')}/events/{quote(eid, safe='')}?"
                 + _qs({"$expand": EXPAND}) for eid in ids]
        # One GET alone; more in JSON batches of 20 (one request each).
        got: list[dict[str, Any] | RemoteError]
        if len(ids) == 1:
            try:
                got = [self.client.get_json(paths[0], headers=self._headers)]
            except NotFound as e:
                got = [e]
        else:
            got = self.client.get_many(paths, headers=self._headers)
        out: dict[str, RemoteEvent | None] = {}
        for eid, body in zip(ids, got, strict=True):
            if isinstance(body, NotFound):
                out[eid] = None
            elif isinstance(body, RemoteError):
                raise body
            else:
                out[eid] = self._to_event(body)
        return out

    # ---- helpers ------------------------------------------------------------------

    def _prop_filter(self, prop: str, value: str) -> str:
        return (f"singleValueExtendedProperties/Any(ep: ep/id eq {_odata_string(prop)} "
                f"and ep/value eq {_odata_string(value)})")

    def _search(self, cal: _Cal, flt: str) -> list[RemoteEvent]:
        url: str | None = (f"/me/calendars/{quote(cal.id, safe='')}/events?"
                           + _qs({"$filter": flt, "$expand": EXPAND, "$top": "10"}))
        out: list[RemoteEvent] = []
        while url:
            page = self.client.get_json(url, headers=self._headers)
            for item in page.get("value") or []:
                if isinstance(item, dict):
                    ev = self._to_event(item)
                    if ev is not None:
                        out.append(ev)
            nxt = page.get("@odata.nextLink")
            url = nxt if isinstance(nxt, str) and nxt else None
        return out

    def _event_path(self, ref: str) -> str:
        return f"/me/calendars/{quote(self._calendar().id, safe='')}/events/{quote(ref, safe='')}"

    def _payload(self, draft: EventDraft) -> dict[str, Any]:
        s, stz = _wall(draft.start)
        e, etz = _wall(draft.end)
        return {
            "subject": clean_text(draft.summary),
            "body": {"contentType": "text", "content": clean_text(draft.description)},
            "start": {"dateTime": s, "timeZone": stz},
            "end": {"dateTime": e, "timeZone": etz},
            "categories": [clean_text(c) for c in draft.categories],
        }

    def _ours(self, body: dict[str, Any], draft: EventDraft) -> RemoteEvent:
        """The event a write returned (Graph leaves the properties out)."""
        ev = self._to_event(body)
        if ev is None:
            raise RemoteError("calendar: Graph returned an event without id, times or ETag")
        return RemoteEvent(
            ref=ev.ref, uid=draft.uid, etag=ev.etag, start=ev.start, end=ev.end,
            summary=ev.summary, description=ev.description, syncd_id=draft.syncd_id,
            attendees=ev.attendees,
        )

    def _to_event(self, item: dict[str, Any]) -> RemoteEvent | None:
        eid, etag = item.get("id"), item.get("@odata.etag")
        start, end = parse_graph_time(item.get("start")), parse_graph_time(item.get("end"))
        if not eid or not etag or start is None or end is None:
            return None
        start = start.astimezone(zone_of(item.get("originalStartTimeZone")))
        end = end.astimezone(zone_of(item.get("originalEndTimeZone")))
        props: dict[str, str] = {}
        for p in item.get("singleValueExtendedProperties") or []:
            if not isinstance(p, dict):
                continue
            for want in (PROP_ID, PROP_UID):
                if _same_prop(str(p.get("id", "")), want):
                    props[want] = str(p.get("value", ""))
        body = item.get("body") or {}
        content = str(body.get("content") or "") if isinstance(body, dict) else ""
        if isinstance(body, dict) and str(body.get("contentType", "")).lower() == "html":
            content = html_to_text(content)
        attendees = tuple(
            str(a["emailAddress"]["address"])
            for a in item.get("attendees") or []
            if isinstance(a, dict) and isinstance(a.get("emailAddress"), dict)
            and a["emailAddress"].get("address")
        )
        return RemoteEvent(
            ref=str(eid),
            uid=props.get(PROP_UID) or str(item.get("iCalUId") or eid),
            etag=str(etag),
            start=start,
            end=end,
            summary=clean_text(str(item.get("subject") or "")),
            description=clean_text(content),
            syncd_id=props.get(PROP_ID) or None,
            attendees=attendees,
        )

    # ---- the calendar ---------------------------------------------------------------

    def _calendar(self) -> _Cal:
        if self._cal is None:
            name = self.cfg.calendar
            found = next((c for c in self._calendars() if c.name == name), None)
            self._cal = found or self._make_calendar(name)
        return self._cal

    def _calendars(self, refresh: bool = False) -> list[_Cal]:
        if self._listing is not None and not refresh:
            return self._listing
        out: list[_Cal] = []
        url: str | None = "/me/calendars?$top=100"
        while url:
            page = self.client.get_json(url, headers=self._headers)
            out.extend(_Cal(str(c["id"]), str(c.get("name") or ""))
                       for c in page.get("value") or [] if isinstance(c, dict) and c.get("id"))
            nxt = page.get("@odata.nextLink")
            url = nxt if isinstance(nxt, str) and nxt else None
        self._listing = out
        return out

    def _make_calendar(self, name: str) -> _Cal:
        try:
            resp = self.client.request("POST", "/me/calendars", json_body={"name": name},
                                       headers=self._headers)
        except RemoteError as e:
            if "ErrorFolderExists" not in e.message:
                raise
            found = next((c for c in self._calendars(refresh=True) if c.name == name), None)
            if found is None:
                raise
            return found
        body = self.client.json_of(resp)
        return _Cal(str(body["id"]), str(body.get("name") or name))

    def _named(self, name: str) -> _Cal:
        return find_busy_calendar(name, lambda refresh: self._calendars(refresh=refresh),
                                  lambda c: c.name)

    # ---- cursor ------------------------------------------------------------------------

    def _make_cursor(self, cal: _Cal, link: str, window: tuple[datetime, datetime]) -> str:
        return json.dumps(
            {"v": _CURSOR_VERSION, "cal": cal.id, "link": link,
             "ws": window[0].isoformat(), "we": window[1].isoformat()},
            separators=(",", ":"), sort_keys=True,
        )

    def _parse_cursor(self, cursor: str | None, cal: _Cal
                      ) -> tuple[str, datetime, datetime] | None:
        if not cursor:
            return None
        try:
            st = json.loads(cursor)
            if not isinstance(st, dict) or st.get("v") != _CURSOR_VERSION:
                return None
            link, ws, we = st["link"], st["ws"], st["we"]
            if st.get("cal") != cal.id or not isinstance(link, str) or not self.client.owns(link):
                return None
            return link, datetime.fromisoformat(ws), datetime.fromisoformat(we)
        except (ValueError, KeyError, TypeError):
            return None

