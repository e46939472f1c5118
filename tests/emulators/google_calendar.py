"""An emulator of the Google Calendar API v3, served at `/calendar/v3/...`
(point a client's `api_endpoint` at `<server>/calendar/v3/`).

Methods: calendarList.list; calendars.insert/get/delete; events.insert,
import, get, update, patch, delete, list. Faithful to the published
reference (the bundled discovery document calendar.v3.json, the "Handle API
errors", "Synchronize resources efficiently" and "Get specific versions of
resources" guides) rather than convenient:

* bearer tokens from the OAuth emulator, and each method's scopes taken
  from the discovery document (401 authError / 403 insufficientPermissions);
* errors in the Calendar API's documented envelope
  `{"error": {"errors": [{"domain", "reason", "message", ...}], "code", "message"}}`;
* client-chosen event ids must be base32hex (a-v, 0-9), 5..1024 characters;
  an id that exists, also as a deleted event, is 409 `duplicate` ("The
  requested identifier already exists."), as is an `iCalUID` already used;
* deleting marks the event `cancelled` (get still returns it, a second
  delete is 410 `deleted`, "Resource has been deleted");
* every change makes a new ETag; `If-Match` on update/patch/delete is
  checked (412 `conditionNotMet`), `If-None-Match` on get gives 304;
* start/end validation (time zone required for floating times and for
  recurring events, 400 `timeRangeEmpty` for an end before the start),
  reminders (at most 5 overrides, not together with useDefault);
* events.list: `maxResults` (250 by default, never more than 2500), page
  tokens bound to every other parameter, `nextSyncToken` only on the last
  page; `syncToken` rejects the parameters the reference says cannot go with
  it and `showDeleted=false`, always returns deletions (as minimal
  cancelled entries: "Deleted events are only guaranteed to have the id
  field populated"), and a token that expired (or one this server never
  issued) is 410 `fullSyncRequired`; `singleEvents` expands recurrences;
  `timeMin`/`timeMax` (RFC 3339 with a mandatory offset), `iCalUID`,
  `privateExtendedProperty`, `orderBy` (startTime only with singleEvents);
* faults (429, 403 rateLimitExceeded/userRateLimitExceeded, 5xx, with or
  without Retry-After) can be queued.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule

from tests.emulators._http import Clock, Fault, Faults, Request, Response
from tests.emulators._tokens import Page, Sync, Tokens, binding
from tests.emulators.google_oauth import OAuth

USER = "alice@example.com"
GLOBAL_PARAMS = frozenset(
    {"alt", "fields", "key", "oauth_token", "prettyPrint", "quotaUser", "userIp",
     "access_token", "$.xgafv", "callback", "uploadType", "upload_protocol"}
)
# "There are several query parameters that cannot be specified together with
# nextSyncToken to ensure consistency of the client state." (events.list)
NOT_WITH_SYNC = ("iCalUID", "orderBy", "privateExtendedProperty", "q",
                 "sharedExtendedProperty", "timeMin", "timeMax", "updatedMin")
SYNC_TTL = timedelta(days=30)  # not published; long enough for any test
_BASE32HEX = re.compile(r"[a-v0-9]{5,1024}")
_WRITABLE = ("summary", "description", "location", "start", "end", "recurrence",
             "attendees", "extendedProperties", "reminders", "transparency", "visibility",
             "status", "colorId", "source", "guestsCanModify")


def _method_scopes() -> dict[str, frozenset[str]]:
    doc = json.loads(
        resources.files("googleapiclient")
        .joinpath("discovery_cache/documents/calendar.v3.json")
        .read_text(encoding="utf-8")
    )
    out: dict[str, frozenset[str]] = {}
    for res, body in doc["resources"].items():
        for name, m in body.get("methods", {}).items():
            out[f"{res}.{name}"] = frozenset(m.get("scopes", []))
    return out


SCOPES = _method_scopes()


def error(code: int, reason: str, message: str, domain: str = "global",
          location: str | None = None, location_type: str | None = None,
          headers: dict[str, str] | None = None) -> Response:
    item: dict[str, Any] = {"domain": domain, "reason": reason, "message": message}
    if location is not None:
        item["locationType"] = location_type or "parameter"
        item["location"] = location
    return Response.json(
        code, {"error": {"errors": [item], "code": code, "message": message}}, headers
    )


def _bad(message: str, reason: str = "invalid", location: str | None = None) -> Response:
    return error(400, reason, message, location=location)


_NOT_FOUND = ("notFound", "Not Found")
_FAULTS = {
    429: ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    500: ("global", "backendError", "Backend Error"),
    502: ("global", "backendError", "Backend Error"),
    503: ("global", "backendError", "Backend Error"),
    401: ("global", "authError", "Invalid Credentials"),
}
_FAULTS_403 = {
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "userRateLimitExceeded": ("usageLimits", "User Rate Limit Exceeded"),
    "forbidden": ("global", "Forbidden"),
    "insufficientPermissions": ("global", "Insufficient Permission"),
}


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _rfc3339(dt: datetime) -> str:
    text = dt.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _parse_stamp(text: str) -> datetime | None:
    """An RFC 3339 timestamp with a mandatory offset (timeMin/timeMax/updatedMin)."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else None


@dataclass
class _Event:
    id: str
    data: dict[str, Any]
    ical_uid: str
    etag: str
    seq: int
    created: str
    updated: str
    sequence: int = 0

    @property
    def cancelled(self) -> bool:
        return self.data.get("status") == "cancelled"


@dataclass
class _Cal:
    id: str
    summary: str
    time_zone: str
    etag: str
    seq: int
    primary: bool = False
    deleted: bool = False
    events: dict[str, _Event] = field(default_factory=dict)


class CalendarEmulator:
    def __init__(self, oauth: OAuth, clock: Clock) -> None:
        self.oauth = oauth
        self.clock = clock
        self.seq = 0
        self._etag_base = 3181161784712000
        self.calendars: dict[str, _Cal] = {}
        self.faults = Faults()
        self.tokens = Tokens()
        self.list_tokens = Tokens()
        self._lock = threading.RLock()
        self.calendars[USER] = _Cal(USER, USER, "UTC", self._etag(), self._bump(), primary=True)

    # ------------------------------------------------------------------ test side

    def fail(self, status: int, *, reason: str | None = None, message: str = "",
             retry_after: str | None = None, times: int = 1, path: str = "",
             method: str | None = None) -> None:
        self.faults.add(Fault(status, reason or "", message, method, path, retry_after, times))

    def expire_sync_tokens(self) -> None:
        self.tokens.expire_all()

    def forge_sync_token(self) -> str:
        return self.tokens.forge_sync()

    def calendar_named(self, summary: str) -> _Cal | None:
        for c in self.calendars.values():
            if c.summary == summary and not c.deleted:
                return c
        return None

    def events_of(self, summary: str) -> list[dict[str, Any]]:
        """Every event (also cancelled ones) of the named calendar, as get returns it."""
        cal = self.calendar_named(summary)
        if cal is None:
            return []
        with self._lock:
            return [self._render(cal, e) for e in cal.events.values()]

    # ------------------------------------------------------------------ internals

    def _bump(self) -> int:
        self.seq += 1
        return self.seq

    def _etag(self) -> str:
        # Google's event ETags are quoted decimal numbers that grow with time.
        self._etag_base += 1000 + secrets.randbelow(1000)
        return f'"{self._etag_base}"'

    def _now(self) -> str:
        return _stamp(self.clock.now())

    def _calendar(self, cid: str) -> _Cal | None:
        if cid == "primary":
            cid = USER
        cal = self.calendars.get(cid)
        return None if cal is None or cal.deleted else cal

    def _render(self, cal: _Cal, e: _Event, minimal: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "calendar#event", "etag": e.etag, "id": e.id}
        status = e.data.get("status", "confirmed")
        out["status"] = status
        if minimal and status == "cancelled":
            return out
        eid = base64.urlsafe_b64encode(f"{e.id} {cal.id}".encode()).decode().rstrip("=")
        out["htmlLink"] = f"https://www.google.com/calendar/event?eid={eid}"
        out["created"] = e.created
        out["updated"] = e.updated
        for k in ("summary", "description", "location", "colorId"):
            if k in e.data:
                out[k] = e.data[k]
        out["creator"] = {"email": USER, "self": True}
        out["organizer"] = (
            {"email": USER, "self": True} if cal.primary
            else {"email": cal.id, "displayName": cal.summary, "self": True}
        )
        out["start"] = self._render_time(e.data["start"], cal)
        out["end"] = self._render_time(e.data["end"], cal)
        for k in ("recurrence", "transparency", "visibility"):
            if k in e.data:
                out[k] = copy.deepcopy(e.data[k])
        out["iCalUID"] = e.ical_uid
        out["sequence"] = e.sequence
        if "attendees" in e.data:
            out["attendees"] = copy.deepcopy(e.data["attendees"])
        if "extendedProperties" in e.data:
            out["extendedProperties"] = copy.deepcopy(e.data["extendedProperties"])
        out["reminders"] = copy.deepcopy(e.data.get("reminders", {"useDefault": True}))
        out["eventType"] = "default"
        return out

    @staticmethod
    def _render_time(t: dict[str, Any], cal: _Cal) -> dict[str, Any]:
        if "date" in t:
            return {"date": t["date"]}
        zone = _zone(t.get("timeZone") or cal.time_zone) or ZoneInfo("UTC")
        out: dict[str, Any] = {"dateTime": _rfc3339(_instant(t).astimezone(zone))}
        if t.get("timeZone"):
            out["timeZone"] = t["timeZone"]
        return out

    # ------------------------------------------------------------------ HTTP

    def handle(self, req: Request) -> Response | None:
        if not req.path.startswith("/calendar/v3/"):
            return None
        fault = self.faults.take(req)
        if fault is not None:
            return self._fault(fault)
        seg = req.segments[2:]
        route = self._route(req.method, seg)
        if route is None:
            return error(404, *_NOT_FOUND)
        method, args = route
        scopes = self.oauth.lookup(req.header("Authorization"))
        if scopes is None:
            return error(401, "authError", "Invalid Credentials", location="Authorization",
                         location_type="header",
                         headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        if not scopes & SCOPES[method]:
            return error(403, "insufficientPermissions", "Insufficient Permission")
        if req.param("alt") not in (None, "json"):
            return _bad(f"Invalid value '{req.param('alt')}'. Values must match the following "
                        "regular expression: 'json'", location="alt")
        with self._lock:
            handler = getattr(self, "_" + method.replace(".", "_"))
            result: Response = handler(req, *args)
            return result

    @staticmethod
    def _route(verb: str, seg: list[str]) -> tuple[str, tuple[str, ...]] | None:
        if seg == ["users", "me", "calendarList"] and verb == "GET":
            return "calendarList.list", ()
        if seg == ["calendars"] and verb == "POST":
            return "calendars.insert", ()
        if len(seg) == 2 and seg[0] == "calendars":
            verbs = {"GET": "calendars.get", "DELETE": "calendars.delete"}
            return (verbs[verb], (seg[1],)) if verb in verbs else None
        if len(seg) == 3 and seg[0] == "calendars" and seg[2] == "events":
            verbs = {"GET": "events.list", "POST": "events.insert"}
            return (verbs[verb], (seg[1],)) if verb in verbs else None
        if len(seg) == 4 and seg[0] == "calendars" and seg[2] == "events":
            if seg[3] == "import" and verb == "POST":
                return "events.import", (seg[1],)
            verbs = {"GET": "events.get", "PUT": "events.update", "PATCH": "events.patch",
                     "DELETE": "events.delete"}
            return (verbs[verb], (seg[1], seg[3])) if verb in verbs else None
        return None

    def _fault(self, f: Fault) -> Response:
        headers = {"Retry-After": f.retry_after} if f.retry_after is not None else {}
        if f.status == 403:
            domain, message = _FAULTS_403.get(f.reason or "forbidden", ("global", "Forbidden"))
            return error(403, f.reason or "forbidden", f.message or message, domain,
                         headers=headers)
        domain, reason, message = _FAULTS.get(f.status, ("global", "backendError", "Error"))
        return error(f.status, f.reason or reason, f.message or message, domain, headers=headers)

    # ---- calendars -------------------------------------------------------------

    def _calendarList_list(self, req: Request) -> Response:
        size = _max_results(req, 100, 250)
        if isinstance(size, Response):
            return size
        bound = binding(req.query, {"pageToken"} | GLOBAL_PARAMS)
        token = req.param("pageToken")
        if token is not None:
            page = self.list_tokens.page(token)
            if page is None or page.binding != bound:
                return _bad("Invalid page token value.", location="pageToken")
        else:
            show_deleted = req.param("showDeleted") == "true"
            items = [self._list_entry(c) for c in self.calendars.values()
                     if show_deleted or not c.deleted]
            page = Page(bound, items, 0, self.seq)
        body: dict[str, Any] = {"kind": "calendar#calendarList", "etag": f'"p{self.seq}"'}
        chunk = page.items[page.offset:page.offset + size]
        if page.offset + size < len(page.items):
            body["nextPageToken"] = self.list_tokens.new_page(
                Page(page.binding, page.items, page.offset + size, page.snapshot_seq))
        else:
            body["nextSyncToken"] = self.list_tokens.new_sync(
                Sync(bound, page.snapshot_seq, self.clock.now()))
        body["items"] = chunk
        return Response.json(200, body)

    @staticmethod
    def _list_entry(c: _Cal) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "calendar#calendarListEntry", "etag": c.etag, "id": c.id,
            "summary": c.summary, "timeZone": c.time_zone, "colorId": "14",
            "backgroundColor": "#9fe1e7", "foregroundColor": "#000000", "selected": True,
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 30}] if c.primary else [],
            "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
        }
        if c.primary:
            out["primary"] = True
        if c.deleted:
            out["deleted"] = True
        return out

    def _calendars_insert(self, req: Request) -> Response:
        body = req.json() or {}
        summary = body.get("summary")
        if not summary:
            return _bad("Missing title.", reason="required")
        tz = body.get("timeZone") or "UTC"
        if _zone(tz) is None:
            return _bad("Invalid time zone definition.", location="timeZone")
        cid = secrets.token_hex(26)[:52] + "@group.calendar.google.com"
        cal = _Cal(cid, summary, tz, self._etag(), self._bump())
        self.calendars[cid] = cal
        return Response.json(200, self._calendar_resource(cal))

    def _calendar_resource(self, c: _Cal) -> dict[str, Any]:
        return {"kind": "calendar#calendar", "etag": c.etag, "id": c.id, "summary": c.summary,
                "timeZone": c.time_zone,
                "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]}}

    def _calendars_get(self, req: Request, cid: str) -> Response:
        cal = self._calendar(cid)
        if cal is None:
            return error(404, *_NOT_FOUND)
        return Response.json(200, self._calendar_resource(cal))

    def _calendars_delete(self, req: Request, cid: str) -> Response:
        cal = self._calendar(cid)
        if cal is None:
            return error(404, *_NOT_FOUND)
        if cal.primary:
            return _bad("Cannot delete primary calendar.", reason="cannotDeletePrimaryCalendar")
        cal.deleted = True
        return Response(204)

    # ---- events: writes ----------------------------------------------------------

    def _validate(self, data: dict[str, Any], cal: _Cal) -> Response | None:
        for key in ("start", "end"):
            t = data.get(key)
            if not isinstance(t, dict) or not ("dateTime" in t or "date" in t):
                return _bad(f"Missing {key} time.", reason="required")
            if "date" in t:
                try:
                    date.fromisoformat(t["date"])
                except (TypeError, ValueError):
                    return _bad("Bad Request", reason="badRequest")
                continue
            tz = t.get("timeZone")
            if tz is not None and _zone(tz) is None:
                return _bad(f"Invalid time zone definition for {key} time.")
            try:
                dt = datetime.fromisoformat(t["dateTime"])
            except (TypeError, ValueError):
                return _bad("Bad Request", reason="badRequest")
            if dt.tzinfo is None and tz is None:
                return _bad(f"Missing time zone definition for {key} time.", reason="required")
            if data.get("recurrence") and tz is None:
                return _bad(f"Missing time zone definition for {key} time.", reason="required")
        if ("date" in data["start"]) != ("date" in data["end"]):
            return _bad("Bad Request", reason="badRequest")
        if _instant(data["end"]) < _instant(data["start"]):
            return _bad("The specified time range is empty.", reason="timeRangeEmpty",
                        location="end.dateTime")
        reminders = data.get("reminders")
        if reminders is not None:
            overrides = reminders.get("overrides") or []
            if reminders.get("useDefault") and overrides:
                return _bad("Cannot specify both default reminders and overrides at the same "
                            "time.", reason="cannotUseDefaultRemindersAndSpecifyOverride")
            if len(overrides) > 5:
                return _bad("Too many reminders.", reason="tooManyReminders")
            for r in overrides:
                if r.get("method") not in ("email", "popup"):
                    return _bad("Invalid reminder method.", reason="invalid")
                if not isinstance(r.get("minutes"), int) or not 0 <= r["minutes"] <= 40320:
                    return _bad("Invalid reminder minutes.", reason="invalid")
        ext = data.get("extendedProperties") or {}
        for scope in ("private", "shared"):
            for k, v in (ext.get(scope) or {}).items():
                if not isinstance(v, str) or len(v) > 1024:
                    return _bad("Invalid extended property value.", reason="invalid")
                if len(k) > 44:
                    return _bad("Invalid extended property name.", reason="invalid")
        if data.get("status") not in (None, "confirmed", "tentative", "cancelled"):
            return _bad("Invalid value for: status.", reason="invalid")
        return None

    def _store(self, cal: _Cal, e: _Event, data: dict[str, Any]) -> None:
        times_changed = any(e.data.get(k) != data.get(k) for k in ("start", "end", "recurrence"))
        if e.data and times_changed:
            e.sequence += 1
        e.data = data
        e.etag = self._etag()
        e.seq = self._bump()
        e.updated = self._now()
        cal.seq = e.seq

    def _events_insert(self, req: Request, cid: str) -> Response:
        cal = self._calendar(cid)
        if cal is None:
            return error(404, *_NOT_FOUND)
        body = req.json() or {}
        eid = body.get("id")
        if eid is not None and not (isinstance(eid, str) and _BASE32HEX.fullmatch(eid)):
            return _bad("Invalid resource id value.")
        data = {k: copy.deepcopy(body[k]) for k in _WRITABLE if k in body}
        bad = self._validate(data, cal)
        if bad is not None:
            return bad
        uid = body.get("iCalUID")
        if eid is not None and eid in cal.events:
            return error(409, "duplicate", "The requested identifier already exists.")
        if uid is not None and any(e.ical_uid == uid for e in cal.events.values()):
            return error(409, "duplicate", "The requested identifier already exists.")
        eid = eid or _new_id()
        now = self._now()
        e = _Event(eid, {}, uid or f"{eid}@google.com", "", 0, now, now)
        self._store(cal, e, data)
        cal.events[eid] = e
        return Response.json(200, self._render(cal, e))

    def _events_import(self, req: Request, cid: str) -> Response:
        cal = self._calendar(cid)
        if cal is None:
            return error(404, *_NOT_FOUND)
        body = req.json() or {}
        uid = body.get("iCalUID")
        if not uid:
            return _bad("Missing iCalUID.", reason="required")
        data = {k: copy.deepcopy(body[k]) for k in _WRITABLE if k in body}
        bad = self._validate(data, cal)
        if bad is not None:
            return bad
        existing = next((e for e in cal.events.values() if e.ical_uid == uid), None)
        if existing is not None:  # import updates the copy with this iCalUID
            self._store(cal, existing, data)
            return Response.json(200, self._render(cal, existing))
        now = self._now()
        eid = _new_id()
        e = _Event(eid, {}, uid, "", 0, now, now)
        self._store(cal, e, data)
        cal.events[eid] = e
        return Response.json(200, self._render(cal, e))

    def _target(self, req: Request, cid: str, eid: str) -> tuple[_Cal, _Event] | Response:
        cal = self._calendar(cid)
        if cal is None or eid not in cal.events:
            return error(404, *_NOT_FOUND)
        return cal, cal.events[eid]

    @staticmethod
    def _precondition(req: Request, e: _Event) -> Response | None:
        want = req.header("If-Match")
        if want is not None and want.strip() != "*" and want.strip() != e.etag:
            return error(412, "conditionNotMet", "Precondition Failed", location="If-Match",
                         location_type="header")
        return None

    def _events_get(self, req: Request, cid: str, eid: str) -> Response:
        got = self._target(req, cid, eid)
        if isinstance(got, Response):
            return got
        cal, e = got
        if req.header("If-None-Match") == e.etag:
            return Response(304, b"", {"ETag": e.etag})
        # "The get method always returns them" (cancelled events).
        return Response.json(200, self._render(cal, e))

    def _events_update(self, req: Request, cid: str, eid: str) -> Response:
        return self._events_write(req, cid, eid, patch=False)

    def _events_patch(self, req: Request, cid: str, eid: str) -> Response:
        return self._events_write(req, cid, eid, patch=True)

    def _events_write(self, req: Request, cid: str, eid: str, *, patch: bool) -> Response:
        """update replaces the writable fields; patch merges into them."""
        got = self._target(req, cid, eid)
        if isinstance(got, Response):
            return got
        cal, e = got
        failed = self._precondition(req, e)
        if failed is not None:
            return failed
        body = req.json() or {}
        if patch:
            data = _merge(copy.deepcopy(e.data), {k: body[k] for k in _WRITABLE if k in body})
        else:
            data = {k: copy.deepcopy(body[k]) for k in _WRITABLE if k in body}
        bad = self._validate(data, cal)
        if bad is not None:
            return bad
        self._store(cal, e, data)
        return Response.json(200, self._render(cal, e))

    def _events_delete(self, req: Request, cid: str, eid: str) -> Response:
        got = self._target(req, cid, eid)
        if isinstance(got, Response):
            return got
        cal, e = got
        if e.cancelled:
            return error(410, "deleted", "Resource has been deleted")
        failed = self._precondition(req, e)
        if failed is not None:
            return failed
        data = dict(e.data)
        data["status"] = "cancelled"
        self._store(cal, e, data)
        return Response(204)

    # ---- events.list -------------------------------------------------------------

    def _events_list(self, req: Request, cid: str) -> Response:
        cal = self._calendar(cid)
        if cal is None:
            return error(404, *_NOT_FOUND)
        size = _max_results(req, 250, 2500)
        if isinstance(size, Response):
            return size
        bound = binding(req.query, {"pageToken"} | GLOBAL_PARAMS)
        token = req.param("pageToken")
        if token is not None:
            page = self.tokens.page(token)
            if page is None or page.binding != bound:
                return _bad("Invalid page token value.", location="pageToken")
        else:
            got = self._select(req, cal)
            if isinstance(got, Response):
                return got
            items, sync_extra = got
            page = Page(bound, items, 0, cal.seq, sync_extra)
        body: dict[str, Any] = {
            "kind": "calendar#events", "etag": f'"p{cal.seq}"', "summary": cal.summary,
            "description": "", "updated": self._now(), "timeZone": cal.time_zone,
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 30}] if cal.primary else [],
        }
        chunk = page.items[page.offset:page.offset + size]
        if page.offset + size < len(page.items):
            body["nextPageToken"] = self.tokens.new_page(
                Page(page.binding, page.items, page.offset + size, page.snapshot_seq,
                     page.extra))
        else:
            body["nextSyncToken"] = self.tokens.new_sync(
                Sync(page.extra["sync_bound"], page.snapshot_seq, self.clock.now(),
                     {"calendar": cal.id, "filters": page.extra["filters"]}))
        body["items"] = chunk
        return Response.json(200, body)

    def _select(self, req: Request,
                cal: _Cal) -> tuple[list[dict[str, Any]], dict[str, Any]] | Response:
        single = req.param("singleEvents") == "true"
        show_deleted = req.param("showDeleted")
        order = req.param("orderBy")
        if order not in (None, "startTime", "updated"):
            return _bad(f"Invalid value '{order}'.", location="orderBy")
        if order == "startTime" and not single:
            return _bad("The requested ordering is not available for the particular query.",
                        reason="badRequest")
        # Compatible parameters a sync token carries over (the reference says
        # "should be the same"; drifting here is the client's bug).
        sync_bound = binding({k: v for k, v in req.query.items()
                              if k in ("singleEvents", "showHiddenInvitations", "eventTypes")},
                             set())
        sync_token = req.param("syncToken")
        if sync_token is not None:
            clash = [p for p in NOT_WITH_SYNC if p in req.query]
            if clash:
                return _bad(f"The {clash[0]} parameter cannot be used together with syncToken.",
                            location=clash[0])
            if show_deleted == "false":
                return _bad("showDeleted cannot be false when syncToken is set.",
                            location="showDeleted")
            sync = self.tokens.sync(sync_token)
            if sync is None and not self.tokens.sync_well_formed(sync_token):
                return _bad("Invalid sync token value.", location="syncToken")
            if (sync is None or self.tokens.expired(sync, self.clock.now(), SYNC_TTL)
                    or sync.extra.get("calendar") != cal.id):
                return error(410, "fullSyncRequired",
                             "Sync token is no longer valid, a full sync is required.")
            if sync.binding != sync_bound:
                return _bad("The sync token was issued for a different query.",
                            location="syncToken")
            filters = sync.extra["filters"]
            events = [e for e in cal.events.values() if e.seq > sync.seq]
            keep_deleted = True
        else:
            filters = {k: req.query[k] for k in NOT_WITH_SYNC if k in req.query}
            bad = _check_filters(filters)
            if bad is not None:
                return bad
            events = list(cal.events.values())
            keep_deleted = show_deleted == "true" or "updatedMin" in filters
        out: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        for e in events:
            if e.cancelled:
                if keep_deleted and (sync_token is not None or _matches(e, filters, cal, None)):
                    out.append(((e.seq,), self._render(cal, e, minimal=True)))
                continue
            if single and e.data.get("recurrence"):
                for inst in _instances(e, cal, filters):
                    rendered = self._render(cal, e)
                    rendered.update(inst)
                    rendered.pop("recurrence", None)
                    out.append(((_instant(inst["start"]), e.seq), rendered))
                continue
            if not _matches(e, filters, cal, None):
                continue
            out.append(((_instant(e.data["start"]), e.seq), self._render(cal, e)))
        if order == "startTime":
            floor = datetime.min.replace(tzinfo=UTC)
            out.sort(key=lambda x: x[0][0] if isinstance(x[0][0], datetime) else floor)
        elif order == "updated":
            out.sort(key=lambda x: str(x[1].get("updated", "")))
        return [item for _, item in out], {"sync_bound": sync_bound, "filters": filters}


# ------------------------------------------------------------------ helpers


def _new_id() -> str:
    return base64.b32hexencode(secrets.token_bytes(16)).decode().lower().rstrip("=")


def _instant(t: dict[str, Any]) -> datetime:
    if "date" in t:
        return datetime.combine(date.fromisoformat(t["date"]), datetime.min.time(), UTC)
    dt = datetime.fromisoformat(t["dateTime"])
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(t["timeZone"]))
    return dt


def _max_results(req: Request, default: int, ceiling: int) -> int | Response:
    raw = req.param("maxResults")
    if raw is None:
        return default
    try:
        n = int(raw)
    except ValueError:
        return _bad(f"Invalid value '{raw}'. Values must match the following regular "
                    "expression: '[0-9]+'", location="maxResults")
    if n < 1:
        return _bad(f"Invalid value '{raw}'. Values must be within the range: [1, ...]",
                    location="maxResults")
    return min(n, ceiling)  # "The page size can never be larger than" the ceiling


def _check_filters(filters: dict[str, list[str]]) -> Response | None:
    for key in ("timeMin", "timeMax", "updatedMin"):
        if key in filters and _parse_stamp(filters[key][-1]) is None:
            return _bad("Bad Request", reason="badRequest")
    if "timeMin" in filters and "timeMax" in filters:
        lo, hi = _parse_stamp(filters["timeMin"][-1]), _parse_stamp(filters["timeMax"][-1])
        if lo is not None and hi is not None and hi <= lo:
            return _bad("The specified time range is empty.", reason="timeRangeEmpty",
                        location="timeMax")
    for key in ("privateExtendedProperty", "sharedExtendedProperty"):
        for c in filters.get(key, []):
            if "=" not in c:
                return _bad("Bad Request", reason="badRequest")
    return None


def _matches(e: _Event, filters: dict[str, list[str]], cal: _Cal,
             span: tuple[datetime, datetime] | None) -> bool:
    if "iCalUID" in filters and e.ical_uid != filters["iCalUID"][-1]:
        return False
    ext = e.data.get("extendedProperties") or {}
    for key, scope in (("privateExtendedProperty", "private"),
                       ("sharedExtendedProperty", "shared")):
        for c in filters.get(key, []):
            name, _, value = c.partition("=")
            if (ext.get(scope) or {}).get(name) != value:
                return False
    if "q" in filters:
        q = filters["q"][-1].lower()
        text = " ".join(str(e.data.get(k, "")) for k in ("summary", "description", "location"))
        text += " ".join(a.get("email", "") for a in e.data.get("attendees", []))
        if not all(word in text.lower() for word in q.split()):
            return False
    if "updatedMin" in filters:
        lo = _parse_stamp(filters["updatedMin"][-1])
        if lo is not None and datetime.fromisoformat(e.updated) < lo:
            return False
    start, end = span or (_instant(e.data["start"]), _instant(e.data["end"]))
    # timeMin bounds an event's end, timeMax its start (both exclusive).
    if "timeMin" in filters:
        lo = _parse_stamp(filters["timeMin"][-1])
        if lo is not None and not end > lo and not (e.data.get("recurrence") and span is None):
            return False
    if "timeMax" in filters:
        hi = _parse_stamp(filters["timeMax"][-1])
        if hi is not None and not start < hi:
            return False
    return True


def _instances(e: _Event, cal: _Cal,
               filters: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The occurrences of a recurring event (RFC 5545 RRULE/RDATE/EXDATE lines
    in `recurrence`), expanded in the event's time zone, capped at 1000."""
    start = _instant(e.data["start"])
    length = _instant(e.data["end"]) - start
    zone = _zone(e.data["start"].get("timeZone") or cal.time_zone) or ZoneInfo("UTC")
    local = start.astimezone(zone)
    rules = rrule.rrulestr("\n".join(e.data["recurrence"]), dtstart=local, forceset=True)
    hi = _parse_stamp(filters["timeMax"][-1]) if "timeMax" in filters else None
    out: list[dict[str, Any]] = []
    for i, occ in enumerate(rules):
        if i >= 1000 or (hi is not None and occ >= hi):
            break
        if not _matches(e, filters, cal, (occ, occ + length)):
            continue
        stamp = occ.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        tz = e.data["start"].get("timeZone")
        st: dict[str, Any] = {"dateTime": _rfc3339(occ)}
        en: dict[str, Any] = {"dateTime": _rfc3339((occ + length).astimezone(zone))}
        if tz:
            st["timeZone"] = en["timeZone"] = tz
        out.append({"id": f"{e.id}_{stamp}", "recurringEventId": e.id, "start": st, "end": en,
                    "originalStartTime": dict(st)})
    return out


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Patch semantics: objects merge key by key, arrays and scalars replace,
    null removes."""
    for k, v in patch.items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = _merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base

