"""The `Calendar` port on any CalDAV server (RFC 4791), via python-caldav's `DAVClient`.

How requests are issued
-----------------------
One `caldav.DAVClient` per instance owns the HTTP session (niquests, or
requests when niquests is missing), the timeout, TLS verification and the
401 -> Basic/Digest negotiation (Basic is sent up front when a username is
configured; a Digest server's 401 drops that guess once and the library
negotiates). Every request goes through
`DAVClient.request()` with a body and headers written here; the library's
object layer (`Calendar.add_event`, `Event.save`, `get_objects_by_sync_token`)
is deliberately not used because:

* `save()` runs the data through vobject "fixes" and bumps SEQUENCE
  (research protocols.md §5.2), so what is stored would not be what we wrote;
* we need exact control over preconditions (`If-None-Match: *`, strong
  `If-Match`), over the sync-collection request (one REPORT when idle, with
  `calendar-data` asked for in the same request) and over token rejection,
  which the library turns into a silent full fetch (protocols.md §5.3).

TLS: `ssl_verify_cert` is the configured `ca_bundle` path, else True; it is
never False. caldav passes it as `verify=` on every request, and niquests'
`merge_environment_settings` only consults `REQUESTS_CA_BUNDLE` /
`CURL_CA_BUNDLE` when `verify is True`, so a configured bundle always wins
over the environment (`trust_env` stays on so proxies still work).

Text policy (DESCRIPTION, SUMMARY)
----------------------------------
RFC 5545 §3.3.11 TEXT carries line breaks only as the `\\n` escape and forbids
other control characters; XML 1.0 (the REPORT bodies of RFC 4791 / RFC 6578)
cannot carry U+FFFE/U+FFFF or most C0 controls either. So, on write and on read:

* CRLF and bare CR become LF (a bare CR cannot survive the round trip);
* C0 controls other than TAB and LF, DEL, U+FFFE and U+FFFF are dropped.

Every other string (commas, semicolons, backslashes, emoji, right-to-left
text, trailing spaces, blank lines, very long lines that get folded) comes
back from `changes()` and `get()` exactly as it went into the draft; the
contract suite proves it with hypothesis on Radicale and Xandikos. Two
library details matter for that, so both are done here rather than by
icalendar: TEXT escaping (`escape_text`; icalendar 7.3 turns a literal
backslash + "N" into a line break) and folding (`fold_line`; vobject, which
Radicale parses with, drops a whitespace-only continuation line). One server
defect remains: Xandikos re-serialises stored data with icalendar, so there
a literal backslash + "N" comes back as a line break.

Cursor
------
JSON: `{"v": 1, "u": <calendar path>, "s": <RFC 6578 sync token>}`, or with
`"e": {href: etag}` instead of "s" on servers without sync-collection (the
ETag-listing fallback: one PROPFIND Depth 1 when idle, a calendar-multiget for
what changed). A cursor that is unreadable, made for another calendar, or
whose token the server rejects leads to one full read (`full=True`).

Reading events
--------------
* `ref` is the event's href path (percent-encoding canonicalised).
* Recurring events: the master's DTSTART/DTEND (first instance) is reported;
  `busy()` does expand recurrences (recurring-ical-events, a caldav dependency).
* All-day events: midnight UTC of the date; floating times are read as UTC.
* `attendees`: the addresses of `mailto:` ATTENDEEs, without the scheme.

Discovery
---------
`cfg.url` may be a server root, a principal, a calendar home or a calendar.
A calendar URL whose display name is `cfg.calendar` is used as is; otherwise
the calendar named `cfg.calendar` is looked up in the calendar home (RFC 4791
§6.2.1, via RFC 5397 current-user-principal) and created with MKCALENDAR when
missing (RFC 4791 §5.3.1). This happens once per instance, lazily on first
use, and the URL is cached (re-discovered only if the calendar disappears).
Not thread-safe: use one instance per thread.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NoReturn
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit
from xml.sax.saxutils import escape as xml_escape

import icalendar
from caldav.davclient import DAVClient
from caldav.lib import error as dav_error

from syncd import log as syncd_log
from syncd import retry
from syncd.errors import (
    AlreadyExists,
    AuthError,
    NotFound,
    PreconditionFailed,
    RemoteError,
)
from syncd.model import EventChanges, EventDraft, RemoteEvent
from syncd.ports import create_one_by_one, find_busy_calendar
from syncd.settings import CalendarConfig

PRODID = "-//syncd//EN"
MARKER = "X-SYNCD-ID"

_DAV = "{DAV:}"
_CAL = "{urn:ietf:params:xml:ns:caldav}"
_XML_HEAD = '<?xml version="1.0" encoding="utf-8"?>'
_NS = 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"'
_XML_CT = "application/xml; charset=utf-8"
_ICS_CT = "text/calendar; charset=utf-8"
_CURSOR_VERSION = 1
_MULTIGET_CHUNK = 500
_SYNC_MAX_PAGES = 50

# RFC 5545 §3.3.11 CONTROL minus HTAB/LF, plus what XML 1.0 §2.2 cannot carry.
_FORBIDDEN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_TEXT_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
# Characters RFC 3986 allows unencoded in a path segment, plus "/".
_PATH_SAFE = "/-._~!$&'()*+,;=:@"


def clean_text(text: str) -> str:
    """The form of `text` an iCalendar TEXT value can carry (see module doc)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _FORBIDDEN_TEXT.sub("", text)


def href_name(uid: str) -> str:
    """The deterministic, URL-safe resource name for a UID: `<uid>.ics` when the
    UID is made of safe characters, else a digest of it (RFC 4791 §5.3.2 leaves
    the name to the client; hostile UIDs must not create odd paths)."""
    if _SAFE_NAME.fullmatch(uid) and ".." not in uid:
        return f"{uid}.ics"
    return f"{hashlib.sha256(uid.encode('utf-8')).hexdigest()[:40]}.ics"


def _canon_path(url_or_path: str) -> str:
    """The path of a URL with one canonical percent-encoding, so the href a
    server reports and the one we PUT to compare equal."""
    path = urlsplit(url_or_path).path or "/"
    return quote(unquote(path), safe=_PATH_SAFE)


def escape_text(text: str) -> str:
    """RFC 5545 §3.3.11 TEXT escaping, backslash first. (icalendar's own escaping
    first rewrites a literal backslash-N into a line break, so `\\N` typed by
    a user would not survive; hence this.)"""
    return (
        text.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\n", "\\n")
    )


class _Text(icalendar.vText):
    """A TEXT value serialised with `escape_text` (folding stays icalendar's)."""

    def to_ical(self) -> bytes:
        return escape_text(str(self)).encode("utf-8")


def _unescape_text(raw: str) -> str:
    """RFC 5545 §3.3.11 TEXT unescaping (for the X- marker, which icalendar
    hands back raw)."""

    def sub(m: re.Match[str]) -> str:
        c = m.group(1)
        return "\n" if c in "nN" else c

    return _TEXT_ESCAPE.sub(sub, raw)


def _status_code(text: str | None) -> int:
    """200 from "HTTP/1.1 200 OK"."""
    parts = (text or "").split()
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return 0


def _utc_stamp(dt: datetime) -> str:
    """RFC 5545 §3.3.5 UTC form (`...Z`) for time-range filters."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), UTC)
    return None


# --------------------------------------------------------------------------
# HTTP and WebDAV multistatus plumbing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Resp:
    status: int
    headers: Mapping[str, str]
    tree: Any  # lxml element of an XML body, or None
    text: str  # a non-XML body (iCalendar), "" otherwise
    preconditions: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        v = self.headers.get(name)
        return str(v) if v is not None else None


@dataclass
class _Item:
    """One `DAV:response` of a multistatus (RFC 4918 §14.24)."""

    path: str
    status: int  # the response-level status (404: removed, RFC 6578 §3.5), else 200
    props: dict[str, Any] = field(default_factory=dict)  # tag -> element, 200 propstats only

    def text(self, tag: str) -> str | None:
        el = self.props.get(tag)
        if el is None or el.text is None:
            return None
        return str(el.text)

    def child_tags(self, tag: str) -> set[str]:
        el = self.props.get(tag)
        if el is None:
            return set()
        return {str(c.tag) for c in el.iter() if c is not el and isinstance(c.tag, str)}

    def href(self, tag: str) -> str | None:
        el = self.props.get(tag)
        if el is None:
            return None
        h = el.find(f"{_DAV}href")
        return str(h.text).strip() if h is not None and h.text else None


@dataclass
class _Multistatus:
    items: list[_Item]
    sync_token: str | None = None
    truncated: bool = False


def _parse_multistatus(tree: Any, base: str) -> _Multistatus:
    out = _Multistatus(items=[])
    if tree is None:
        return out
    root = tree
    if root.tag != f"{_DAV}multistatus":
        found = root.find(f".//{_DAV}multistatus")
        if found is None:
            return out
        root = found
    tok = root.find(f"{_DAV}sync-token")
    if tok is not None and tok.text:
        out.sync_token = str(tok.text).strip()
    for resp in root.findall(f"{_DAV}response"):
        hrefs = [str(h.text).strip() for h in resp.findall(f"{_DAV}href") if h.text]
        st = resp.find(f"{_DAV}status")
        status = _status_code(st.text) if st is not None else 200
        if status == 507:
            # RFC 6578 §3.6: the request-URI reported as 507 marks a truncated reply.
            out.truncated = True
            continue
        props: dict[str, Any] = {}
        for ps in resp.findall(f"{_DAV}propstat"):
            pst = ps.find(f"{_DAV}status")
            if pst is not None and _status_code(pst.text) != 200:
                continue
            prop = ps.find(f"{_DAV}prop")
            if prop is None:
                continue
            for child in prop:
                if isinstance(child.tag, str):
                    props[str(child.tag)] = child
        for h in hrefs:
            out.items.append(_Item(path=_canon_path(urljoin(base, h)), status=status, props=props))
    return out


# --------------------------------------------------------------------------
# iCalendar
# --------------------------------------------------------------------------


def render_ical(draft: EventDraft, dtstamp: datetime | None = None) -> str:
    """The VCALENDAR syncd stores for `draft` (RFC 5545; one VEVENT, no METHOD as
    RFC 4791 §4.1 requires, VTIMEZONE for every TZID per RFC 5545 §3.2.19)."""
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    ev = icalendar.Event()
    ev.add("uid", draft.uid)
    ev.add("dtstamp", (dtstamp or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0))
    ev.add("dtstart", _aware(draft.start))
    ev.add("dtend", _aware(draft.end))
    ev.add("summary", _Text(clean_text(draft.summary)))
    ev.add("description", _Text(clean_text(draft.description)))
    if draft.categories:
        ev.add("categories", [clean_text(c) for c in draft.categories])
    # X- properties default to TEXT (RFC 5545 §3.8.8.2), so the value is escaped.
    ev.add(MARKER.lower(), _Text(clean_text(draft.syncd_id)))
    cal.add_component(ev)
    cal.add_missing_timezones()
    return refold(bytes(cal.to_ical()).decode("utf-8"))


_UNFOLD = re.compile(r"\r\n[ \t]")


def refold(ical: str) -> str:
    """Re-fold every content line with `fold_line` (RFC 5545 §3.1)."""
    lines = _UNFOLD.sub("", ical).split("\r\n")
    return "\r\n".join(fold_line(line) for line in lines)


def fold_line(line: str, limit: int = 75) -> str:
    """RFC 5545 §3.1 folding: physical lines of at most `limit` octets, never
    splitting a UTF-8 sequence nor a backslash escape.

    One deliberate exception to the 75-octet SHOULD: a continuation line is
    never whitespace only. vobject (Radicale's parser) reads such a physical
    line as a blank line and drops it, so a DESCRIPTION ending in spaces at a
    fold point would lose them; the whitespace run is kept on the line before.
    """
    segs: list[str] = []
    cur: list[str] = []
    size = 0
    for ch in line:
        n = len(ch.encode("utf-8"))
        room = limit if not segs else limit - 1  # continuations carry the fold space
        if cur and size + n > room:
            trailing = len(cur) - len("".join(cur).rstrip("\\"))
            if trailing % 2 == 1 and len(cur) > 1:  # an unfinished escape: move it on
                cur.pop()
                segs.append("".join(cur))
                cur, size = ["\\"], 1
            else:
                segs.append("".join(cur))
                cur, size = [], 0
        cur.append(ch)
        size += n
    if cur:
        segs.append("".join(cur))
    if not segs:
        return ""
    out = [segs[0]]
    for seg in segs[1:]:
        if seg.strip() == "":  # str.strip(): the same whitespace test vobject uses
            out[-1] += seg
        else:
            out.append(seg)
    return "\r\n ".join(out)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _first(value: object) -> object:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _prop_text(ev: Any, name: str) -> str:
    v = _first(ev.get(name))
    return clean_text(str(v)) if v is not None else ""


def _event_span(ev: Any) -> tuple[datetime, datetime] | None:
    start_raw = ev.get("DTSTART")
    if start_raw is None:
        return None
    start_val = ev.decoded("DTSTART")
    start = _as_datetime(start_val)
    if start is None:
        return None
    end: datetime | None = None
    if ev.get("DTEND") is not None:
        end = _as_datetime(ev.decoded("DTEND"))
    elif ev.get("DURATION") is not None:
        dur = ev.decoded("DURATION")
        if isinstance(dur, timedelta):
            end = start + dur
    if end is None:
        # RFC 5545 §3.6.1: a DATE start without end lasts one day, a DATE-TIME none.
        is_day = isinstance(start_val, date) and not isinstance(start_val, datetime)
        end = start + timedelta(days=1) if is_day else start
    return start, end


def _master(cal: Any) -> Any:
    events = list(cal.walk("VEVENT"))
    if not events:
        return None
    for ev in events:
        if ev.get("RECURRENCE-ID") is None:
            return ev
    return events[0]


def _parse_calendar(text: str) -> Any:
    try:
        cal = icalendar.Calendar.from_ical(text)
    except Exception:  # a malformed object from another client: skipped
        return None
    if isinstance(cal, list):
        cal = cal[0] if cal else None
    return cal


def parse_event(ref: str, etag: str, text: str) -> RemoteEvent | None:
    """A RemoteEvent from stored iCalendar, or None when it holds no usable VEVENT."""
    cal = _parse_calendar(text)
    if cal is None:
        return None
    ev = _master(cal)
    if ev is None:
        return None
    try:
        span = _event_span(ev)
    except Exception:
        return None
    if span is None:
        return None
    marker_raw = _first(ev.get(MARKER))
    marker: str | None = None
    if marker_raw is not None:
        raw = marker_raw.to_ical() if hasattr(marker_raw, "to_ical") else marker_raw
        raw_s = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        marker = _unescape_text(raw_s)
    attendees: list[str] = []
    att = ev.get("ATTENDEE")
    for a in att if isinstance(att, list) else ([att] if att is not None else []):
        addr = str(a)
        if addr.lower().startswith("mailto:"):
            attendees.append(addr[len("mailto:") :])
    return RemoteEvent(
        ref=ref,
        uid=str(ev.get("UID", "")),
        etag=etag,
        start=span[0],
        end=span[1],
        summary=_prop_text(ev, "SUMMARY"),
        description=_prop_text(ev, "DESCRIPTION"),
        syncd_id=marker,
        attendees=tuple(attendees),
    )


# --------------------------------------------------------------------------
# The connector
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _CalInfo:
    url: str
    name: str
    sync: bool | None  # sync-collection listed in supported-report-set; None: not told


class _TokenRejected(Exception):
    """The server refused the sync token (RFC 6578 §3.2 valid-sync-token)."""


class _Unsupported(Exception):
    """The server does not do sync-collection at all."""


class CalDavCalendar:
    """The `syncd.ports.Calendar` port on a CalDAV server."""

    kind = "caldav"
    batch_size = 1  # CalDAV has no batch write

    def __init__(
        self,
        cfg: CalendarConfig,
        password: str | None,
        *,
        use_sync_collection: bool | None = None,
    ) -> None:
        """`use_sync_collection`: None asks the server (supported-report-set);
        False forces the ETag-listing fallback (also used by the tests)."""
        if not cfg.url:
            raise RemoteError(
                "calendar.url is not set",
                hint="set calendar.url to the CalDAV server, principal or calendar URL",
                retryable=False,
            )
        self._cfg = cfg
        syncd_log.register_secret(password)  # masked wherever it could be logged
        self._base = _strip_userinfo(cfg.url)
        if not self._base.endswith("/"):
            self._base += "/"
        verify: bool | str = str(cfg.connection.ca_bundle) if cfg.connection.ca_bundle else True
        # caldav annotates timeout as int; it is handed to niquests, which takes float.
        timeout: Any = cfg.connection.timeout
        username = cfg.username
        try:
            self._client = DAVClient(
                url=self._base,
                username=username,
                password=(password or "") if username is not None else None,
                # Basic up front: without it the first request is an anonymous
                # 401 (Radicale delays those by a second). A Digest-only server
                # answers 401 and `_request` drops the guess and lets the library
                # negotiate from the challenge (RFC 7235 §4.1).
                auth_type="basic" if username is not None else None,
                timeout=timeout,
                ssl_verify_cert=verify,
            )
        except (dav_error.DAVError, OSError, ValueError) as e:
            raise RemoteError(
                f"cannot set up the CalDAV client for {self._base}: {type(e).__name__}",
                retryable=False,
            ) from None
        self._basic_guess = username is not None
        self._force_sync = use_sync_collection
        self._cal: _CalInfo | None = None
        self._home: str | None = None
        self._listing: list[_CalInfo] | None = None

    # ---- public API ------------------------------------------------------

    @property
    def http_session(self) -> Any:
        """The HTTP session every request goes through (for instrumentation)."""
        return self._client.session

    def url(self) -> str:
        return self._calendar().url

    def close(self) -> None:
        self._client.close()

    def create(self, draft: EventDraft, *, checked: bool = False) -> RemoteEvent:
        # `checked` changes nothing here: If-None-Match: * is the look-up.
        cal = self._calendar()
        target = urljoin(cal.url, quote(href_name(draft.uid)))
        r = self._request(
            "PUT",
            target,
            render_ical(draft),
            {"Content-Type": _ICS_CT, "If-None-Match": "*"},
        )
        if r.status in (200, 201, 204):
            return self._after_write(target, r, draft)
        conflict = f"{_CAL}no-uid-conflict" in r.preconditions
        # RFC 7232 §3.2: If-None-Match: * fails with 412 when the name is taken;
        # RFC 4791 §5.3.2.1: the UID used at another name (Radicale 409,
        # Xandikos 412, Cyrus 403, each with CALDAV:no-uid-conflict).
        if r.status == 412 or conflict:
            raise AlreadyExists(f"event {draft.uid!r} already exists in {cal.url}")
        raise self._failure(r, f"creating event {draft.uid!r}")

    def create_many(self, drafts: list[EventDraft]) -> list[RemoteEvent | RemoteError]:
        return create_one_by_one(self, drafts)

    def update(self, ref: str, etag: str, draft: EventDraft) -> RemoteEvent:
        cal = self._calendar()
        target = urljoin(cal.url, ref)
        # RFC 7232 §3.1: If-Match compares strongly, so a weak ETag never matches.
        r = self._request(
            "PUT", target, render_ical(draft), {"Content-Type": _ICS_CT, "If-Match": etag}
        )
        if r.status in (200, 201, 204):
            return self._after_write(target, r, draft)
        if r.status == 404:
            raise NotFound(f"event {ref} is gone from {cal.url}", retryable=False)
        if r.status == 412:
            if f"{_CAL}no-uid-conflict" not in r.preconditions and self._gone(target):
                # Radicale and Xandikos answer If-Match on a missing resource with 412.
                raise NotFound(f"event {ref} is gone from {cal.url}", retryable=False)
            raise PreconditionFailed(f"event {ref} changed since ETag {etag}")
        raise self._failure(r, f"updating event {ref}")

    def delete(self, ref: str, etag: str) -> None:
        cal = self._calendar()
        r = self._request("DELETE", urljoin(cal.url, ref), "", {"If-Match": etag})
        if r.status in (200, 202, 204, 207, 404):
            return
        if r.status == 412:
            if self._gone(urljoin(cal.url, ref)):
                return
            raise PreconditionFailed(f"event {ref} changed since ETag {etag}")
        raise self._failure(r, f"deleting event {ref}")

    def get(self, uid: str) -> RemoteEvent | None:
        cal = self._calendar()
        target = urljoin(cal.url, quote(href_name(uid)))
        r = self._request("GET", target, "", {"Accept": "text/calendar"})
        if r.status == 200:
            etag = r.header("ETag")
            ev = parse_event(_canon_path(target), etag or "", r.text)
            if ev is not None and ev.uid == uid:
                if etag is None:
                    return self._refetch(_canon_path(target))
                return ev
        elif r.status != 404:
            raise self._failure(r, f"reading event {uid!r}")
        # Not at our deterministic name (another client created it): ask by UID,
        # RFC 4791 §9.7.5 text-match (a substring match; filtered exactly below).
        body = (
            f"{_XML_HEAD}<C:calendar-query {_NS}><D:prop><D:getetag/><C:calendar-data/>"
            '</D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
            '<C:prop-filter name="UID"><C:text-match collation="i;octet">'
            f"{xml_escape(uid)}</C:text-match></C:prop-filter></C:comp-filter>"
            "</C:comp-filter></C:filter></C:calendar-query>"
        )
        q = self._request("REPORT", cal.url, body, {"Content-Type": _XML_CT, "Depth": "1"})
        if q.status != 207:
            raise self._failure(q, f"searching event {uid!r}")
        for item in _parse_multistatus(q.tree, cal.url).items:
            data = item.text(f"{_CAL}calendar-data")
            if item.status != 200 or data is None:
                continue
            ev = parse_event(item.path, item.text(f"{_DAV}getetag") or "", data)
            if ev is not None and ev.uid == uid:
                return ev
        return None

    def changes(self, cursor: str | None) -> EventChanges:
        cal = self._calendar()
        state = self._parse_cursor(cursor, cal.url)
        if self._sync_enabled(cal):
            token = state.get("s") if state else None
            if isinstance(token, str) and token:
                try:
                    return self._sync_changes(cal, token)
                except _TokenRejected:
                    pass  # RFC 6578 §3.2: invalid or expired token -> one full re-read
            try:
                return self._sync_changes(cal, None)
            except _Unsupported:
                pass
            try:
                # Radicale answers 400 to a REPORT that would carry more than
                # 10,000 events' data ([reporting] max_*_occurrence): list the
                # hrefs and ETags only (the data comes by calendar-multiget)
                # before concluding the server has no sync-collection.
                return self._sync_changes(cal, None, data=False)
            except _Unsupported:
                self._force_sync = False
                state = None
        old = state.get("e") if state else None
        if isinstance(old, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in old.items()
        ):
            return self._etag_changes(cal, old)
        return self._etag_changes(cal, None)

    def busy_events(self, start: datetime, end: datetime) -> list[RemoteEvent]:
        start, end = _aware(start), _aware(end)
        out: list[RemoteEvent] = []
        for name in self._cfg.busy_calendars:
            info = self._find_named(name)
            for item in self._query(info, start, end):
                ev = parse_event(item.path, item.text(f"{_DAV}getetag") or "",
                                 item.text(f"{_CAL}calendar-data") or "")
                if ev is not None and ev.start < end and ev.end > start:
                    out.append(ev)
        return out

    def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        start, end = _aware(start), _aware(end)
        out: list[tuple[datetime, datetime]] = []
        for name in self._cfg.busy_calendars:
            info = self._find_named(name)
            out.extend(self._busy_in(info, start, end))
        out.sort()
        return out

    # ---- discovery ---------------------------------------------------------

    def _calendar(self) -> _CalInfo:
        if self._cal is None:
            self._cal = self._discover()
        return self._cal

    def _discover(self) -> _CalInfo:
        base = self._base
        body = (
            f"{_XML_HEAD}<D:propfind {_NS}><D:prop><D:resourcetype/><D:displayname/>"
            "<D:current-user-principal/><C:calendar-home-set/><D:supported-report-set/>"
            "</D:prop></D:propfind>"
        )
        items = self._propfind(base, body, depth=0, what="discovering the calendar")
        me = next((i for i in items if i.path == _canon_path(base)), items[0] if items else None)
        name = self._cfg.calendar
        if me is not None and f"{_CAL}calendar" in me.child_tags(f"{_DAV}resourcetype"):
            info = self._info(me, base)
            if info.name == name:
                return info  # the configured URL is the calendar itself
        if me is not None:
            self._home_from(me)
        for info in self._calendars():
            if info.name == name:
                return info
        return self._make_calendar(name)

    def _home_url(self) -> str:
        if self._home is not None:
            return self._home
        body = (
            f"{_XML_HEAD}<D:propfind {_NS}><D:prop><C:calendar-home-set/>"
            "<D:current-user-principal/></D:prop></D:propfind>"
        )
        items = self._propfind(self._base, body, depth=0, what="finding the calendar home")
        if items:
            return self._home_from(items[0])
        self._home = self._base
        return self._home

    def _home_from(self, me: _Item) -> str:
        """The calendar home from a PROPFIND of the configured URL: its own
        calendar-home-set (a principal URL), else the one of its
        current-user-principal (RFC 5397, RFC 4791 §6.2.1); without either,
        the configured URL itself."""
        home = me.href(f"{_CAL}calendar-home-set")
        if home is None:
            principal = me.href(f"{_DAV}current-user-principal")
            if principal is not None:
                purl = urljoin(self._base, principal)
                body = (
                    f"{_XML_HEAD}<D:propfind {_NS}><D:prop><C:calendar-home-set/>"
                    "</D:prop></D:propfind>"
                )
                pitems = self._propfind(purl, body, depth=0, what="reading the principal")
                home = pitems[0].href(f"{_CAL}calendar-home-set") if pitems else None
        if home:
            self._home = urljoin(self._base, home)
        elif f"{_CAL}calendar" in me.child_tags(f"{_DAV}resourcetype"):
            self._home = urljoin(self._base, "..")  # a calendar's parent is its home
        else:
            self._home = self._base
        return self._home

    def _calendars(self, refresh: bool = False) -> list[_CalInfo]:
        if self._listing is not None and not refresh:
            return self._listing
        home = self._home_url()
        body = (
            f"{_XML_HEAD}<D:propfind {_NS}><D:prop><D:resourcetype/><D:displayname/>"
            "<D:supported-report-set/><C:supported-calendar-component-set/>"
            "</D:prop></D:propfind>"
        )
        found: list[_CalInfo] = []
        for item in self._propfind(home, body, depth=1, what="listing calendars"):
            if item.path == _canon_path(home):
                continue
            if f"{_CAL}calendar" not in item.child_tags(f"{_DAV}resourcetype"):
                continue
            comps = item.props.get(f"{_CAL}supported-calendar-component-set")
            if comps is not None:
                names = {str(c.get("name", "")).upper() for c in comps}
                if names and "VEVENT" not in names:
                    continue  # a task list, not an event calendar
            found.append(self._info(item, urljoin(home, item.path)))
        found.sort(key=lambda c: c.url)
        self._listing = found
        return found

    def _info(self, item: _Item, url: str) -> _CalInfo:
        name = item.text(f"{_DAV}displayname")
        if not name:
            name = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
        reports = item.child_tags(f"{_DAV}supported-report-set")
        sync: bool | None = (f"{_DAV}sync-collection" in reports) if reports else None
        return _CalInfo(url=url, name=name, sync=sync)

    def _make_calendar(self, name: str) -> _CalInfo:
        home = self._home_url()
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "calendar"
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
        body = (
            f"{_XML_HEAD}<C:mkcalendar {_NS}><D:set><D:prop>"
            f"<D:displayname>{xml_escape(name)}</D:displayname>"
            '<C:supported-calendar-component-set><C:comp name="VEVENT"/>'
            "</C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"
        )
        # Deterministic name first (two racing creators meet at one URL), then
        # a random one if something unrelated already lives there.
        for seg in (f"{slug}-{digest}", f"{slug}-{uuid.uuid4().hex[:8]}"):
            url = urljoin(home, seg + "/")
            r = self._request("MKCALENDAR", url, body, {"Content-Type": _XML_CT})
            if r.status in (200, 201):
                return _CalInfo(url=url, name=name, sync=None)
            exists = f"{_DAV}resource-must-be-null" in r.preconditions or r.status == 405
            if not exists:
                raise self._failure(r, f"creating calendar {name!r}")
            # RFC 4791 §5.3.1.1: something is at that URL; maybe our calendar.
            for info in self._calendars(refresh=True):
                if info.name == name:
                    return info
        raise RemoteError(f"could not create calendar {name!r} under {home}", retryable=False)

    def _find_named(self, name: str) -> _CalInfo:
        return find_busy_calendar(name, lambda refresh: self._calendars(refresh=refresh),
                                  lambda c: c.name)

    # ---- sync-collection (RFC 6578) -----------------------------------------

    def _sync_enabled(self, cal: _CalInfo) -> bool:
        if self._force_sync is not None:
            return self._force_sync
        return cal.sync is not False

    def _sync_changes(self, cal: _CalInfo, token: str | None, data: bool = True) -> EventChanges:
        full = token is None
        changed: dict[str, _Item] = {}
        deleted: set[str] = set()
        current = token or ""
        for _page in range(_SYNC_MAX_PAGES):
            body = (
                f"{_XML_HEAD}<D:sync-collection {_NS}>"
                f"<D:sync-token>{xml_escape(current)}</D:sync-token>"
                "<D:sync-level>1</D:sync-level>"
                f"<D:prop><D:getetag/>{'<C:calendar-data/>' if data else ''}</D:prop>"
                "</D:sync-collection>"
            )
            # RFC 6578 §3.2: the REPORT is sent with Depth: 0 (sync-level says 1).
            r = self._request("REPORT", cal.url, body, {"Content-Type": _XML_CT, "Depth": "0"})
            if r.status != 207:
                self._sync_failure(r, cal, bool(current))
            ms = _parse_multistatus(r.tree, cal.url)
            for item in ms.items:
                if item.path == _canon_path(cal.url):
                    continue
                if item.status == 404:  # RFC 6578 §3.5.2: a removed member
                    changed.pop(item.path, None)
                    deleted.add(item.path)
                else:
                    deleted.discard(item.path)
                    changed[item.path] = item
            if ms.sync_token is None:
                raise RemoteError(f"{cal.url}: sync-collection reply without a sync-token")
            current = ms.sync_token
            if not ms.truncated:
                break
        events = self._events_from(cal, changed.values(), deleted)
        return EventChanges(
            events=tuple(events),
            deleted=() if full else tuple(sorted(deleted)),
            cursor=self._make_cursor(cal.url, s=current),
            full=full,
        )

    def _sync_failure(self, r: _Resp, cal: _CalInfo, with_token: bool) -> NoReturn:
        if r.status == 404:
            self._forget(cal)
            raise RemoteError(f"calendar {cal.url} disappeared; it is looked up again next time")
        if with_token:
            # Radicale 403, Xandikos 412 (RFC 6578 §3.2 DAV:valid-sync-token); some
            # servers give 400/409/500 for a token they cannot parse. A real
            # permission or server problem shows up again in the one full re-read.
            raise _TokenRejected()
        if not with_token and (
            r.status in (400, 405, 501) or f"{_DAV}supported-report" in r.preconditions
        ):
            raise _Unsupported()
        raise self._failure(r, "reading changes")

    def _events_from(
        self, cal: _CalInfo, items: Iterable[_Item], deleted: set[str]
    ) -> list[RemoteEvent]:
        """Events for the changed items, fetching calendar-data the REPORT did not
        carry (Xandikos) with one calendar-multiget (RFC 4791 §7.9) per chunk."""
        events: list[RemoteEvent] = []
        missing: list[str] = []
        for item in items:
            data = item.text(f"{_CAL}calendar-data")
            if data is None:
                missing.append(item.path)
                continue
            ev = parse_event(item.path, item.text(f"{_DAV}getetag") or "", data)
            if ev is not None:
                events.append(ev)
        for got in self._multiget(cal, missing):
            if got.status == 404:
                deleted.add(got.path)  # removed between the listing and the fetch
                continue
            data = got.text(f"{_CAL}calendar-data")
            if data is None:
                continue
            ev = parse_event(got.path, got.text(f"{_DAV}getetag") or "", data)
            if ev is not None:
                events.append(ev)
        events.sort(key=lambda e: e.ref)
        return events

    def _multiget(self, cal: _CalInfo, paths: list[str]) -> Iterator[_Item]:
        for i in range(0, len(paths), _MULTIGET_CHUNK):
            chunk = paths[i : i + _MULTIGET_CHUNK]
            hrefs = "".join(f"<D:href>{xml_escape(p)}</D:href>" for p in chunk)
            body = (
                f"{_XML_HEAD}<C:calendar-multiget {_NS}><D:prop><D:getetag/>"
                f"<C:calendar-data/></D:prop>{hrefs}</C:calendar-multiget>"
            )
            # RFC 4791 §7.9: Depth is ignored for calendar-multiget; not sent.
            r = self._request("REPORT", cal.url, body, {"Content-Type": _XML_CT})
            if r.status != 207:
                raise self._failure(r, "fetching changed events")
            yield from _parse_multistatus(r.tree, cal.url).items

    # ---- ETag-listing fallback (no sync-collection) --------------------------

    def _etag_changes(self, cal: _CalInfo, old: dict[str, str] | None) -> EventChanges:
        body = (
            f"{_XML_HEAD}<D:propfind {_NS}><D:prop><D:getetag/><D:resourcetype/>"
            "</D:prop></D:propfind>"
        )
        r = self._request("PROPFIND", cal.url, body, {"Content-Type": _XML_CT, "Depth": "1"})
        if r.status == 404:
            self._forget(cal)
            raise RemoteError(f"calendar {cal.url} disappeared; it is looked up again next time")
        if r.status != 207:
            raise self._failure(r, "listing events")
        now: dict[str, str] = {}
        for item in _parse_multistatus(r.tree, cal.url).items:
            if item.path == _canon_path(cal.url) or item.child_tags(f"{_DAV}resourcetype"):
                continue
            now[item.path] = item.text(f"{_DAV}getetag") or ""
        if old is None:
            wanted = sorted(now)
            deleted: set[str] = set()
        else:
            wanted = sorted(p for p, e in now.items() if old.get(p) != e or not e)
            deleted = set(old) - set(now)
        items = [_Item(path=p, status=200) for p in wanted]
        events = self._events_from(cal, items, deleted)
        for ev in events:
            now[ev.ref] = ev.etag  # the ETag that goes with the data we hold
        for p in deleted:
            now.pop(p, None)
        return EventChanges(
            events=tuple(events),
            deleted=() if old is None else tuple(sorted(deleted)),
            cursor=self._make_cursor(cal.url, e=now),
            full=old is None,
        )

    # ---- busy --------------------------------------------------------------

    def _busy_in(
        self, info: _CalInfo, start: datetime, end: datetime
    ) -> list[tuple[datetime, datetime]]:
        # RFC 4791 §9.9 time-range; recurrences are expanded client-side.
        out: list[tuple[datetime, datetime]] = []
        for item in self._query(info, start, end):
            cal = _parse_calendar(item.text(f"{_CAL}calendar-data") or "")
            if cal is not None:
                out.extend(_busy_spans(cal, start, end))
        return out

    def _query(self, info: _CalInfo, start: datetime, end: datetime) -> list[_Item]:
        """The events of a calendar overlapping the window, with their data
        (one calendar-query REPORT)."""
        body = (
            f"{_XML_HEAD}<C:calendar-query {_NS}><D:prop><D:getetag/><C:calendar-data/>"
            '</D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
            f'<C:time-range start="{_utc_stamp(start)}" end="{_utc_stamp(end)}"/>'
            "</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"
        )
        r = self._request("REPORT", info.url, body, {"Content-Type": _XML_CT, "Depth": "1"})
        if r.status != 207:
            raise self._failure(r, f"reading busy times from {info.name!r}")
        return [item for item in _parse_multistatus(r.tree, info.url).items
                if item.status == 200 and item.text(f"{_CAL}calendar-data") is not None]

    # ---- helpers -------------------------------------------------------------

    def _after_write(self, target: str, r: _Resp, draft: EventDraft) -> RemoteEvent:
        etag = r.header("ETag")
        ref = _canon_path(target)
        if etag is None or etag.startswith("W/"):
            # RFC 4791 §5.3.4: a server that altered the data sends no strong ETag.
            return self._refetch(ref)
        return RemoteEvent(
            ref=ref,
            uid=draft.uid,
            etag=etag,
            start=_aware(draft.start),
            end=_aware(draft.end),
            summary=clean_text(draft.summary),
            description=clean_text(draft.description),
            syncd_id=clean_text(draft.syncd_id),
        )

    def _refetch(self, ref: str) -> RemoteEvent:
        cal = self._calendar()
        r = self._request("GET", urljoin(cal.url, ref), "", {"Accept": "text/calendar"})
        if r.status != 200:
            raise self._failure(r, f"reading event {ref}")
        ev = parse_event(ref, r.header("ETag") or "", r.text)
        if ev is None:
            raise RemoteError(f"event {ref} holds no readable VEVENT", retryable=False)
        return ev

    def _gone(self, url: str) -> bool:
        r = self._request("HEAD", url, "", {})
        return r.status == 404

    def _forget(self, cal: _CalInfo) -> None:
        if self._cal == cal:
            self._cal = None
            self._listing = None

    def _make_cursor(self, cal_url: str, **state: object) -> str:
        return json.dumps(
            {"v": _CURSOR_VERSION, "u": _canon_path(cal_url), **state},
            separators=(",", ":"),
            sort_keys=True,
        )

    @staticmethod
    def _parse_cursor(cursor: str | None, cal_url: str) -> dict[str, object] | None:
        """The cursor's state, or None when it is missing, unreadable, or made for
        another calendar (each of which means a full read)."""
        if not cursor:
            return None
        try:
            state = json.loads(cursor)
        except ValueError:
            return None
        if (
            not isinstance(state, dict)
            or state.get("v") != _CURSOR_VERSION
            or state.get("u") != _canon_path(cal_url)
        ):
            return None
        return state

    def _propfind(self, url: str, body: str, *, depth: int, what: str) -> list[_Item]:
        r = self._request("PROPFIND", url, body, {"Content-Type": _XML_CT, "Depth": str(depth)})
        if r.status != 207:
            raise self._failure(r, what)
        return _parse_multistatus(r.tree, url).items

    def _request(self, method: str, url: str, body: str, headers: Mapping[str, str]) -> _Resp:
        """One HTTP request, tried again while that is safe and useful
        (`syncd.retry`: idempotent methods only; transport failures, 408/429/5xx;
        every write here is conditional, so a retried write that had landed
        meets 412 instead of landing twice). 401 raises AuthError; transport
        failures raise a retryable RemoteError; every other status is returned
        for the caller to interpret."""
        return retry.call(
            lambda: self._request_once(method, url, body, headers),
            method=method,
            result_delay=_retry_delay,
            what=f"CalDAV {method} {_canon_path(url)}",
        )

    def _request_once(
        self, method: str, url: str, body: str, headers: Mapping[str, str]
    ) -> _Resp:
        where = _canon_path(url)
        try:
            resp = self._client.request(url, method, body, dict(headers))
        except dav_error.RateLimitError as e:
            # caldav raises this for 429, and for 503 with Retry-After.
            wait = getattr(e, "retry_after_seconds", None)
            wait = float(wait) if isinstance(wait, int | float) else None
            raise retry.ServerBusy(
                f"CalDAV server is busy or rate limiting ({method} {where})",
                hint=f"it asked to retry after {wait:.0f}s" if wait is not None else "",
                retry_after=wait,
            ) from None
        except dav_error.AuthorizationError as e:
            status = e.status or 401
            if status == 401 and self._basic_guess:
                self._basic_guess = False
                self._client.auth = None
                self._client.auth_type = None
                return self._request_once(method, url, body, headers)
            if status == 401:
                raise self._auth_error() from None
            return _Resp(
                status=status,
                headers={},
                tree=None,
                text="",
                preconditions=tuple(e.preconditions),
            )
        except dav_error.DAVError as e:
            raise RemoteError(f"CalDAV {method} {where} failed: {type(e).__name__}") from None
        except OSError as e:  # niquests/requests ConnectionError, Timeout, TLS errors
            if retry.is_tls_failure(e):
                # A certificate that does not verify will not verify on the next
                # try either: the user must act (TLS verification is never off).
                raise RemoteError(
                    f"CalDAV server {self._base}: TLS certificate verification failed",
                    hint="if the server uses a private CA, set calendar.ca_bundle to its "
                    "certificate (PEM)",
                    retryable=False,
                ) from None
            raise RemoteError(
                f"CalDAV server unreachable ({method} {where}): {type(e).__name__}",
                hint="check calendar.url and the network",
            ) from None
        except SyntaxError:  # lxml XMLSyntaxError: a body that claims XML but is not
            raise RemoteError(f"CalDAV server sent malformed XML ({method} {where})") from None
        self._basic_guess = False  # the server took (or did not need) the credentials
        tree = resp.tree
        pre: tuple[str, ...] = ()
        if tree is not None and tree.tag == f"{_DAV}error":
            pre = tuple(str(c.tag) for c in tree if isinstance(c.tag, str))
        text = resp.raw if tree is None and resp.status < 400 else ""
        headers_out = resp.headers if resp.headers is not None else {}
        return _Resp(resp.status, headers_out, tree, text, pre)

    def _auth_error(self) -> AuthError:
        who = self._cfg.username or "(no username)"
        return AuthError(
            f"CalDAV server {self._base} rejected the credentials of {who}",
            hint="check calendar.username and the password source "
            "(calendar.password_env / password_file / password_command)",
        )

    def _failure(self, r: _Resp, what: str) -> RemoteError:
        if r.status == 401:
            return self._auth_error()
        if r.status == 403:
            return AuthError(
                f"CalDAV server {self._base} refused {what} (403 Forbidden)",
                hint=f"check that {self._cfg.username or 'this user'} may access the calendar",
            )
        retryable = r.status >= 500 or r.status in (408, 425, 429)
        if r.status == 404:
            return NotFound(f"{what}: not found on {self._base}", retryable=False)
        return RemoteError(f"{what}: HTTP {r.status} from {self._base}", retryable=retryable)


def _retry_delay(r: _Resp) -> float | None:
    """For `retry.call`: None for a final answer; for one worth another try,
    the server's Retry-After in seconds (0 when it gave none)."""
    if r.status not in retry.RETRY_STATUSES:
        return None
    return retry.parse_retry_after(r.header("Retry-After")) or 0.0


def _busy_spans(cal: Any, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    try:
        import recurring_ical_events  # type: ignore[import-untyped]

        occurrences = list(recurring_ical_events.of(cal).between(start, end))
    except Exception:  # an unexpandable series: fall back to the master instance
        master = _master(cal)
        occurrences = [master] if master is not None else []
    for ev in occurrences:
        # RFC 5545 §3.8.2.7 TRANSP and §3.8.1.11 STATUS: free or cancelled is not busy.
        if str(ev.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT":
            continue
        if str(ev.get("STATUS", "")).upper() == "CANCELLED":
            continue
        try:
            span = _event_span(ev)
        except Exception:
            continue
        if span is not None and span[0] < end and span[1] > start:
            out.append(span)
    return out


def _strip_userinfo(url: str) -> str:
    """The URL without `user:password@` (credentials never travel in URLs or messages)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
