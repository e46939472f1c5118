"""A local Microsoft Graph v1.0 (Outlook contacts and calendar) over real HTTPS.

Faithful to the Graph reference and to field reports collected in research
protocols.md §3, including the behaviour clients tend to get wrong:

Auth
  `Authorization: Bearer` tokens issued by the identity emulator; unknown,
  expired or revoked → 401 `InvalidAuthenticationToken` with
  `WWW-Authenticate`; a token without the needed scope → 403
  `ErrorAccessDenied`.
Contacts
  `/me/contactFolders` lists the CHILD folders of the default Contacts folder
  (the default folder itself is `/me/contactFolders/contacts`, well-known
  name), `/me/contactFolders/{id}/childFolders` those of any folder;
  `/me/contactFolders/{id}/contacts/delta` and `/me/contacts/delta`
  with `$select` (kept in the tokens), `$top` rejected with 400
  `ErrorInvalidUrlQuery`; pages of `Prefer: odata.maxpagesize` (capped by the
  server: `page_cap`); `@odata.nextLink` ($skiptoken) then `@odata.deltaLink`
  ($deltatoken) on the last page, even when empty; deleted or moved-out
  contacts as `{"id", "@removed": {"reason": "deleted"}}`.
Calendars and events
  `/me/calendars` (default page 10, `$skip` nextLinks), POST creates (409
  `ErrorFolderExists` for a taken name); events POSTed to
  `/me/calendars/{id}/events`, `/me/events`, `/me/calendar/events` → 201;
  `transactionId` de-duplication (a repeated POST returns 201 and the event
  created first, unchanged); `singleValueExtendedProperties` stored but never
  returned unless `$expand`ed (with the `$filter` of the expand honoured);
  `$filter=singleValueExtendedProperties/Any(ep: ep/id eq '…' and ep/value eq
  '…')` and `iCalUId eq '…'` (values compared case-insensitively, as Exchange
  does; the Name part of a property id case-sensitively); `@odata.etag`
  `W/"<changeKey>"` that changes on every write; PATCH and DELETE honour
  `If-Match` (412 `ErrorIrresolvableConflict`); 404 `ErrorItemNotFound` for
  gone items; `Prefer: outlook.timezone` (UTC otherwise, dateTime with seven
  fraction digits), `Prefer: outlook.body-content-type` (text bodies come back
  with CRLF line ends; otherwise HTML-wrapped); bad time zones → 400
  `TimeZoneNotSupportedException`.
calendarView and calendarView/delta
  Windowed (`startDateTime`/`endDateTime` required), recurring series
  expanded into occurrences; delta with skip and delta tokens; `@removed` for
  deleted events AND for events changed, added or moved outside the window
  (the documented surprise); eviction (`evict()`) → 410 `SyncStateNotFound`
  with a `Location` header holding the initial query and an empty
  `$deltatoken`; well-formed tokens never issued → 410; malformed → 400.
Faults and limits
  `inject(Fault(...))` answers matching requests with a canned error (429 with
  a fractional or HTTP-date `Retry-After`, 503, 410 on a nextLink ...), or
  processes the request and then fails or drops the answer (a lost response:
  what transactionId exists for); more than `concurrency_limit` requests in
  flight for the mailbox → 429 `ApplicationThrottled`; `latency` per request.
JSON batching
  `POST /v1.0/$batch` with `{"requests": [{"id", "method", "url", "headers",
  "body"}]}` (at most 20, ids unique, urls relative to the version) → 200
  `{"responses": [{"id", "status", "headers", "body"}]}`; each step is
  authorised, throttled and fault-injected as if sent alone (a 429 step
  carries its own `Retry-After`), and is logged in `requests` with
  `batched=True` after the POST that carried it. Graph dispatches up to four
  steps of a batch to Outlook at once: a batch counts as min(4, steps)
  requests in flight for the mailbox, and while that is over the limit its
  steps are answered 429 `ApplicationThrottled`.

All errors use Graph's JSON: `{"error": {"code", "message", "innerError":
{"date", "request-id", "client-request-id"}}}`.
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import trustme

from tests.emulators.ms_identity import (
    HttpsServer,
    IdentityEmulator,
    Request,
    Response,
    json_response,
)

# A few Windows zone names Outlook clients write (CLDR windowsZones).
WINDOWS_ZONES = {
    "UTC": "UTC",
    "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "Pacific Standard Time": "America/Los_Angeles",
    "India Standard Time": "Asia/Kolkata",
    "Tokyo Standard Time": "Asia/Tokyo",
}

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{20,}")
_PROP_ID_RE = re.compile(
    r"(String|Integer|Boolean|SystemTime|Binary|Double|Float|Long|Short|Guid|CLSID)"
    r" \{([0-9A-Fa-f-]{36})\} (Name|Id) (\S.*)$"
)


def _rid() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(30)).decode("ascii").rstrip("=")


def _change_key() -> str:
    return base64.b64encode(secrets.token_bytes(16)).decode("ascii")


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def zone(name: str) -> ZoneInfo | None:
    name = WINDOWS_ZONES.get(name, name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def parse_dtz(obj: Any) -> datetime | None:
    """A dateTimeTimeZone → aware datetime (None when unusable)."""
    if not isinstance(obj, dict):
        return None
    tz = zone(str(obj.get("timeZone") or ""))
    raw = str(obj.get("dateTime") or "")
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)(\.\d{1,7})?", raw)
    if tz is None or m is None:
        return None
    return datetime.fromisoformat(m.group(1)).replace(tzinfo=tz)


def format_dtz(dt: datetime, tzname: str) -> dict[str, str]:
    tz = zone(tzname) or UTC
    local = dt.astimezone(tz)
    return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S") + ".0000000", "timeZone": tzname}


def norm_prop_id(pid: str) -> tuple[str, str, str, str] | None:
    m = _PROP_ID_RE.match(pid.strip())
    if not m:
        return None
    return (m.group(1).lower(), m.group(2).lower(), m.group(3).lower(), m.group(4))


def canon_prop_id(pid: str) -> str:
    n = norm_prop_id(pid)
    if n is None:
        return pid
    m = _PROP_ID_RE.match(pid.strip())
    assert m is not None
    return f"{m.group(1)} {{{n[1]}}} {m.group(3)} {n[3]}"


# --------------------------------------------------------------------------
# OData $filter (the subset Outlook resources support that clients use)
# --------------------------------------------------------------------------

_TOK = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<punc>[(),:])"
    r"|(?P<name>[A-Za-z_$@][A-Za-z0-9_./$@]*))"
)


class FilterError(ValueError):
    pass


Pred = Callable[[dict[str, Any]], bool]


class _Parser:
    """Recursive descent over: or / and / not, eq / ne, startswith, contains,
    `path/Any(v: expr)` lambdas. Evaluates against a dict scope in which
    `v/x` names the lambda variable's field."""

    def __init__(self, text: str) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOK.match(text, pos)
            if not m or m.end() == pos:
                raise FilterError(f"Invalid filter clause at {pos}: {text[pos:pos + 20]!r}")
            kind = m.lastgroup or ""
            self.toks.append((kind, m.group(kind)))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        t = self.peek()
        if t is None or (value is not None and t[1].lower() != value.lower()):
            raise FilterError(f"Invalid filter clause: expected {value!r}, got {t!r}")
        self.i += 1
        return t

    def parse(self) -> Pred:
        p = self.expr()
        if self.peek() is not None:
            raise FilterError(f"Invalid filter clause: unexpected {self.peek()!r}")
        return p

    def expr(self) -> Pred:
        left = self.conj()
        while (t := self.peek()) and t[0] == "name" and t[1].lower() == "or":
            self.take()
            right = self.conj()
            left = (lambda a, b: lambda s: a(s) or b(s))(left, right)
        return left

    def conj(self) -> Pred:
        left = self.unary()
        while (t := self.peek()) and t[0] == "name" and t[1].lower() == "and":
            self.take()
            right = self.unary()
            left = (lambda a, b: lambda s: a(s) and b(s))(left, right)
        return left

    def unary(self) -> Pred:
        t = self.peek()
        if t and t[0] == "name" and t[1].lower() == "not":
            self.take()
            inner = self.unary()
            return lambda s: not inner(s)
        if t and t[1] == "(":
            self.take("(")
            e = self.expr()
            self.take(")")
            return e
        if t and t[0] == "name" and t[1].lower() in ("startswith", "contains"):
            fn = self.take()[1].lower()
            self.take("(")
            path = self.take()[1]
            self.take(",")
            lit = self.literal()
            self.take(")")

            def func(s: dict[str, Any]) -> bool:
                v = _resolve(s, path)
                if not isinstance(v, str) or not isinstance(lit, str):
                    return False
                a, b = v.lower(), lit.lower()
                return a.startswith(b) if fn == "startswith" else b in a

            return func
        if t and t[0] == "name" and t[1].lower().endswith("/any"):
            coll = self.take()[1][: -len("/any")]
            self.take("(")
            var = self.take()[1]
            self.take(":")
            inner = self.expr()
            self.take(")")

            def anyf(s: dict[str, Any]) -> bool:
                items = _resolve(s, coll)
                if not isinstance(items, list):
                    return False
                return any(inner({**s, var: it}) for it in items)

            return anyf
        # comparison
        path = self.take()[1]
        op = self.take()[1].lower()
        if op not in ("eq", "ne"):
            raise FilterError(f"Unsupported operator {op!r}")
        lit = self.literal()

        def cmp(s: dict[str, Any]) -> bool:
            v = _resolve(s, path)
            if path.lower().endswith("/id") or path.lower() == "id":
                same = _prop_id_equal(v, lit)
            elif isinstance(v, str) and isinstance(lit, str):
                same = v.lower() == lit.lower()  # Exchange: case-insensitive values
            else:
                same = v == lit
            return same if op == "eq" else not same

        return cmp

    def literal(self) -> Any:
        kind, val = self.take()
        if kind == "str":
            return val[1:-1].replace("''", "'")
        if kind == "num":
            return float(val) if "." in val else int(val)
        if val.lower() == "null":
            return None
        if val.lower() in ("true", "false"):
            return val.lower() == "true"
        raise FilterError(f"Invalid literal {val!r}")


def _prop_id_equal(a: Any, b: Any) -> bool:
    if not isinstance(a, str) or not isinstance(b, str):
        return a == b
    na, nb = norm_prop_id(a), norm_prop_id(b)
    if na is None or nb is None:
        return a == b
    return na == nb  # type, GUID case-insensitive; the name exactly


def _resolve(scope: dict[str, Any], path: str) -> Any:
    cur: Any = scope
    for i, part in enumerate(path.split("/")):
        if not isinstance(cur, dict):
            return None
        if i == 0 and part in scope:
            cur = scope[part]
            continue
        key = next((k for k in cur if k.lower() == part.lower()), None)
        cur = cur.get(key) if key is not None else None
    return cur


def parse_filter(text: str) -> Pred:
    return _Parser(text).parse()


def _split_top(text: str, sep: str) -> list[str]:
    out, depth, cur, quoted = [], 0, "", False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        if not quoted:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == sep and depth == 0:
                out.append(cur)
                cur = ""
                continue
        cur += ch
    if cur.strip():
        out.append(cur)
    return [o.strip() for o in out]


# --------------------------------------------------------------------------
# Mailbox state
# --------------------------------------------------------------------------


@dataclass
class Folder:
    id: str
    name: str
    parent: str | None


@dataclass
class ContactRec:
    id: str
    folder: str
    data: dict[str, Any]
    change_key: str
    seq: int
    created: str
    modified: str


@dataclass
class Calendar:
    id: str
    name: str
    change_key: str
    default: bool = False


@dataclass
class EventRec:
    id: str
    cal: str
    data: dict[str, Any]
    props: dict[str, tuple[str, str]]  # normalised id -> (id as written, value)
    change_key: str
    seq: int
    created: str
    modified: str
    occ_ids: set[str] = field(default_factory=set)  # occurrence ids last expanded


@dataclass
class Tomb:
    id: str
    scope: str  # folder or calendar
    seq: int


@dataclass
class SyncState:
    kind: str  # "contacts" | "cv"
    scope: str
    since: int | None
    initial_url: str
    select: tuple[str, ...] = ()
    window: tuple[datetime, datetime] | None = None
    # skip tokens: the round's snapshot
    entries: list[tuple[str, str]] | None = None
    offset: int = 0
    hi: int = 0


@dataclass
class Fault:
    """Answer requests for which `match` holds with `status` (+ Graph error
    JSON with `code`), `times` times. `after=True` processes the request
    first and then fails instead of answering (a lost response); `drop=True`
    closes the connection without an answer."""

    match: Callable[[Request], bool]
    status: int = 503
    code: str = "ServiceNotAvailable"
    message: str = "The service is temporarily unavailable."
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    after: bool = False
    drop: bool = False
    # Run first (e.g. another client's edit racing this request); with
    # status 0 the request is then served normally.
    action: Callable[[], None] | None = None
    hits: int = 0


def on(method: str, path_re: str, query: str | None = None) -> Callable[[Request], bool]:
    """A Fault matcher: method, a regex searched in the path (after /v1.0),
    optionally a query parameter that must be present."""
    rx = re.compile(path_re)

    def match(r: Request) -> bool:
        if r.method != method:
            return False
        if not rx.search(r.path.split("/v1.0", 1)[-1]):
            return False
        return query is None or r.q(query) is not None

    return match


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


DEFAULT_PAGE = 10


class GraphEmulator:
    """Graph v1.0 for the one mailbox of the identity emulator's user."""

    def __init__(self, ca: trustme.CA, identity: IdentityEmulator) -> None:
        self.identity = identity
        self._lock = threading.RLock()
        self.seq = 0
        self.root = Folder(_rid(), "Contacts", None)
        self.folders: dict[str, Folder] = {self.root.id: self.root}
        self.contacts: dict[str, ContactRec] = {}
        self.contact_tombs: list[Tomb] = []
        default = Calendar(_rid(), "Calendar", _change_key(), default=True)
        self.calendars: dict[str, Calendar] = {default.id: default}
        self.events: dict[str, EventRec] = {}
        self.event_tombs: list[Tomb] = []
        self.transactions: dict[str, str] = {}
        self.states: dict[str, SyncState] = {}
        self.evicted: dict[str, SyncState] = {}
        self.faults: list[Fault] = []
        self.page_cap = 1000
        self.latency = 0.0
        self.concurrency_limit = 4
        self.in_flight = 0
        self.max_in_flight = 0
        self.throttled = 0  # 429 ApplicationThrottled answers given
        self._flight_lock = threading.Lock()
        self.server = HttpsServer(self._app, ca)
        self.base = self.server.base  # what `graph_endpoint` points at
        self.root_url = f"{self.base}/v1.0"

    def stop(self) -> None:
        self.server.stop()

    @property
    def requests(self) -> list[Request]:
        return self.server.requests

    # ---- test controls ---------------------------------------------------------

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def evict(self) -> None:
        """Drop every sync state (delta and skip tokens), as Exchange's
        delta-token cache does under pressure."""
        with self._lock:
            self.evicted.update(self.states)
            self.states.clear()

    def add_folder(self, name: str, parent: str | None = None) -> str:
        """A contact folder under `parent` (default: the Contacts folder)."""
        with self._lock:
            f = Folder(_rid(), name, parent or self.root.id)
            self.folders[f.id] = f
            return f.id

    def delete_folder(self, folder_id: str) -> None:
        """The folder, its subfolders, and their contacts."""
        with self._lock:
            for sub in [f.id for f in self.folders.values() if f.parent == folder_id]:
                self.delete_folder(sub)
            for c in [c for c in self.contacts.values() if c.folder == folder_id]:
                self.delete_contact(c.id)
            del self.folders[folder_id]

    def put_contact(self, data: dict[str, Any], folder: str | None = None,
                    contact_id: str | None = None) -> str:
        """Create (or replace, when `contact_id` is given) a contact, as
        Outlook or another client would."""
        with self._lock:
            self.seq += 1
            now = _now_iso()
            if contact_id and contact_id in self.contacts:
                rec = self.contacts[contact_id]
                if folder and folder != rec.folder:
                    self.contact_tombs.append(Tomb(rec.id, rec.folder, self.seq))
                    rec.folder = folder
                rec.data = dict(data)
                rec.change_key, rec.seq, rec.modified = _change_key(), self.seq, now
                return rec.id
            rec = ContactRec(contact_id or _rid(), folder or self.root.id, dict(data),
                             _change_key(), self.seq, now, now)
            self.contacts[rec.id] = rec
            return rec.id

    def delete_contact(self, contact_id: str) -> None:
        with self._lock:
            rec = self.contacts.pop(contact_id)
            self.seq += 1
            self.contact_tombs.append(Tomb(rec.id, rec.folder, self.seq))

    def calendar_named(self, name: str) -> Calendar | None:
        with self._lock:
            return next((c for c in self.calendars.values() if c.name == name), None)

    def events_in(self, calendar_id: str) -> list[EventRec]:
        with self._lock:
            return [e for e in self.events.values() if e.cal == calendar_id]

    def import_event(self, calendar_id: str, data: dict[str, Any], ical_uid: str) -> str:
        """An event arriving from outside Graph (an .ics invitation accepted
        in Outlook): its iCalUId is the invitation's UID."""
        with self._lock:
            rec = self._create_event(calendar_id, dict(data), {})
            rec.data["iCalUId"] = ical_uid
            return rec.id

    def move_event(self, event_id: str, start: datetime, end: datetime) -> None:
        """The user drags an event (Outlook on the web)."""
        with self._lock:
            rec = self.events[event_id]
            tz = str(rec.data["start"].get("timeZone", "UTC"))
            rec.data["start"] = format_dtz(start, tz)
            rec.data["end"] = format_dtz(end, tz)
            self._touch(rec)

    # ---- plumbing -----------------------------------------------------------------

    def _app(self, req: Request) -> Response:
        if req.method == "POST" and req.path.rstrip("/") == "/v1.0/$batch":
            return self._batch(req)
        return self._serve(req, 0 if req.batched else 1)

    def _serve(self, req: Request, units: int) -> Response:
        """`req` with `units` more requests in flight for the mailbox (a
        batch step: 0, its batch already holds them)."""
        with self._flight_lock:
            self.in_flight += units
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            over = self.in_flight > self.concurrency_limit
        try:
            if self.latency:
                time.sleep(self.latency)  # a model of network latency, not synchronisation
            if over:
                self.throttled += 1
                return self._error(GraphError(
                    429, "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    {"Retry-After": "1"},
                ))
            with self._lock:
                fault = next((f for f in self.faults if f.hits < f.times and f.match(req)), None)
                if fault is not None:
                    fault.hits += 1
                    if fault.action is not None:
                        fault.action()
                    if fault.status == 0 and not fault.drop:
                        fault = None
                if fault is not None and not fault.after:
                    return self._fault_response(fault)
                try:
                    resp = self._route(req)
                except GraphError as e:
                    resp = self._error(e)
                except FilterError as e:
                    resp = self._error(GraphError(400, "ErrorInvalidUrlQuery", str(e)))
                if fault is not None:
                    return self._fault_response(fault)
                return resp
        finally:
            with self._flight_lock:
                self.in_flight -= units

    def _batch(self, req: Request) -> Response:
        """JSON batching (learn.microsoft.com/graph/json-batching): the steps
        run one by one here, each through `_app` as if sent alone."""
        try:
            self._auth(req, ("Contacts.Read", "Contacts.ReadWrite", "Calendars.Read",
                             "Calendars.ReadWrite"))
            try:
                steps = json.loads(req.body or b"{}").get("requests")
            except (ValueError, AttributeError):
                steps = None
            if not isinstance(steps, list) or not all(
                    isinstance(s, dict) and isinstance(s.get("id"), str)
                    and isinstance(s.get("method"), str) and isinstance(s.get("url"), str)
                    for s in steps):
                raise GraphError(400, "BadRequest", "Invalid batch payload format.")
            if len(steps) > 20:
                raise GraphError(400, "BadRequest",
                                 "Number of batch steps exceeds the maximum of 20.")
            if len({s["id"] for s in steps}) != len(steps):
                raise GraphError(400, "BadRequest", "Batch request ids must be unique.")
        except GraphError as e:
            return self._error(e)
        # Faults apply to the batch request too: before it (nothing ran) or
        # after it (the steps ran, the answer is lost).
        with self._lock:
            fault = next((f for f in self.faults if f.hits < f.times and f.match(req)), None)
            if fault is not None:
                fault.hits += 1
        if fault is not None and not fault.after:
            return self._fault_response(fault)
        units = min(4, len(steps))  # steps Graph dispatches to Outlook at once
        with self._flight_lock:
            self.in_flight += units
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            over = self.in_flight > self.concurrency_limit
        try:
            resp = self._run_steps(req, steps, over)
        finally:
            with self._flight_lock:
                self.in_flight -= units
        return self._fault_response(fault) if fault is not None else resp

    def _run_steps(self, req: Request, steps: list[dict[str, Any]], over: bool) -> Response:
        out = []
        for s in steps:
            parts = urlsplit(s["url"] if s["url"].startswith("/") else "/" + s["url"])
            sub_headers = {"authorization": req.headers.get("authorization", "")}
            sub_headers.update({str(k).lower(): str(v)
                                for k, v in (s.get("headers") or {}).items()})
            body = s.get("body")
            sub = Request(method=s["method"].upper(), path="/v1.0" + parts.path,
                          query=parse_qs(parts.query, keep_blank_values=True),
                          headers=sub_headers,
                          body=b"" if body is None else json.dumps(body).encode("utf-8"),
                          batched=True)
            self.server.note(sub)
            if over:
                self.throttled += 1
                resp = self._error(GraphError(
                    429, "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.", {"Retry-After": "1"}))
            else:
                resp = self._app(sub)
            if resp.drop:
                return resp  # the connection is lost: the whole batch answer with it
            headers = {k: v for k, v in resp.headers.items() if k.lower() != "content-length"}
            payload: Any = json.loads(resp.body) if resp.body else None
            out.append({"id": s["id"], "status": resp.status, "headers": headers,
                        **({"body": payload} if payload is not None else {})})
        return json_response(200, {"responses": out})

    def _fault_response(self, f: Fault) -> Response:
        if f.drop:
            return Response(0, drop=True)
        return self._error(GraphError(f.status, f.code, f.message, dict(f.headers)))

    def _error(self, e: GraphError) -> Response:
        rid = str(uuid.uuid4())
        body = {
            "error": {
                "code": e.code,
                "message": e.message,
                "innerError": {
                    "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": rid,
                    "client-request-id": rid,
                },
            }
        }
        return json_response(e.status, body, {"request-id": rid, **e.headers})

    def _auth(self, req: Request, need: tuple[str, ...]) -> None:
        h = req.headers.get("authorization", "")
        at = None
        if h.lower().startswith("bearer "):
            at = self.identity.check_access_token(h[7:].strip())
        if at is None:
            raise GraphError(
                401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.",
                {"WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.'
                 'microsoftonline.com/common/oauth2/authorize", '
                 'client_id="00000003-0000-0000-c000-000000000000"'},
            )
        if not any(s in at.scopes for s in need):
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and "
                             "try again.")

    def _route(self, req: Request) -> Response:
        if not req.path.startswith("/v1.0/"):
            raise GraphError(400, "BadRequest", "Invalid version.")
        segs = [unquote(s) for s in req.path[len("/v1.0/"):].split("/") if s]
        if not segs or segs[0] != "me":
            raise GraphError(400, "BadRequest", f"Resource not found for the segment "
                             f"'{segs[0] if segs else ''}'.")
        s = segs[1:]
        m = req.method
        read_c = ("Contacts.Read", "Contacts.ReadWrite")
        read_e = ("Calendars.Read", "Calendars.ReadWrite")
        write_e = ("Calendars.ReadWrite",)
        # contacts
        if s == ["contactFolders"] and m == "GET":
            self._auth(req, read_c)
            return self._list(req, [self._folder_json(f) for f in self.folders.values()
                                    if f.parent == self.root.id])
        if len(s) == 2 and s[0] == "contactFolders" and m == "GET":
            self._auth(req, read_c)
            return json_response(200, self._folder_json(self._folder(s[1])))
        if len(s) == 3 and s[0] == "contactFolders" and s[2] == "childFolders" and m == "GET":
            self._auth(req, read_c)
            parent = self._folder(s[1]).id
            return self._list(req, [self._folder_json(f) for f in self.folders.values()
                                    if f.parent == parent])
        if s == ["contacts", "delta"] and m == "GET":
            self._auth(req, read_c)
            return self._contacts_delta(req, self.root.id)
        if len(s) == 4 and s[0] == "contactFolders" and s[2:] == ["contacts", "delta"]:
            self._auth(req, read_c)
            return self._contacts_delta(req, self._folder(s[1]).id)
        # calendars
        if s == ["calendars"]:
            if m == "GET":
                self._auth(req, read_e)
                return self._list(req, [self._cal_json(c) for c in self.calendars.values()])
            if m == "POST":
                self._auth(req, write_e)
                return self._create_calendar(req)
        if len(s) == 2 and s[0] == "calendars" and m == "GET":
            self._auth(req, read_e)
            return json_response(200, self._cal_json(self._calendar(s[1])))
        cal_id: str | None = None
        rest = s
        if len(s) >= 2 and s[0] == "calendars":
            cal_id, rest = self._calendar(s[1]).id, s[2:]
        elif s and s[0] == "calendar":
            cal_id, rest = self._default_cal().id, s[1:]
        if rest == ["calendarView", "delta"] and m == "GET":
            self._auth(req, read_e)
            return self._cv_delta(req, cal_id or self._default_cal().id)
        if rest == ["calendarView"] and m == "GET":
            self._auth(req, read_e)
            return self._calendar_view(req, cal_id or self._default_cal().id)
        if rest == ["events"]:
            if m == "POST":
                self._auth(req, write_e)
                return self._post_event(req, cal_id or self._default_cal().id)
            if m == "GET":
                self._auth(req, read_e)
                return self._list_events(req, cal_id)
        if len(rest) == 2 and rest[0] == "events":
            rec = self.events.get(rest[1])
            if rec is None or (cal_id is not None and rec.cal != cal_id):
                raise GraphError(404, "ErrorItemNotFound",
                                 "The specified object was not found in the store.")
            if m == "GET":
                self._auth(req, read_e)
                return json_response(200, self._event_json(req, rec))
            if m == "PATCH":
                self._auth(req, write_e)
                return self._patch_event(req, rec)
            if m == "DELETE":
                self._auth(req, write_e)
                self._check_if_match(req, rec)
                self._delete_event(rec)
                return Response(204)
        raise GraphError(400, "BadRequest", f"Unsupported request {m} {req.path}")

    # ---- helpers -----------------------------------------------------------------------

    def _prefer(self, req: Request) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in _split_top(req.headers.get("prefer", ""), ","):
            k, _, v = item.partition("=")
            out[k.strip().lower()] = v.strip().strip('"')
        return out

    def _page_size(self, req: Request, default: int = DEFAULT_PAGE) -> int:
        raw = self._prefer(req).get("odata.maxpagesize")
        size = int(raw) if raw and raw.isdigit() and int(raw) > 0 else default
        return min(size, self.page_cap)

    def _list(self, req: Request, items: list[dict[str, Any]]) -> Response:
        top = int(req.q("$top") or DEFAULT_PAGE)
        skip = int(req.q("$skip") or 0)
        top = min(top, self.page_cap)
        page = items[skip: skip + top]
        body: dict[str, Any] = {"@odata.context": f"{self.root_url}/$metadata#collection",
                                "value": page}
        if skip + top < len(items):
            q = {k: v[0] for k, v in req.query.items() if k.lower() not in ("$skip", "$top")}
            q.update({"$top": str(top), "$skip": str(skip + top)})
            body["@odata.nextLink"] = f"{self.base}{req.path}?{urlencode(q, quote_via=quote)}"
        return json_response(200, body)

    def _folder(self, fid: str) -> Folder:
        if fid.lower() == "contacts":
            return self.root
        f = self.folders.get(fid)
        if f is None:
            raise GraphError(404, "ErrorItemNotFound",
                             "The specified object was not found in the store.")
        return f

    def _folder_json(self, f: Folder) -> dict[str, Any]:
        return {"id": f.id, "displayName": f.name, "parentFolderId": f.parent or _rid()}

    def _calendar(self, cid: str) -> Calendar:
        c = self.calendars.get(cid)
        if c is None:
            raise GraphError(404, "ErrorItemNotFound",
                             "The specified object was not found in the store.")
        return c

    def _default_cal(self) -> Calendar:
        return next(c for c in self.calendars.values() if c.default)

    def _cal_json(self, c: Calendar) -> dict[str, Any]:
        return {
            "id": c.id, "name": c.name, "color": "auto", "hexColor": "",
            "isDefaultCalendar": c.default, "changeKey": c.change_key, "canShare": True,
            "canViewPrivateItems": True, "canEdit": True, "isRemovable": not c.default,
            "isTallyingResponses": True,
            "allowedOnlineMeetingProviders": ["teamsForBusiness"],
            "defaultOnlineMeetingProvider": "teamsForBusiness",
            "owner": {"name": self.identity.user.name, "address": self.identity.user.upn},
        }

    def _create_calendar(self, req: Request) -> Response:
        body = req.json() or {}
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise GraphError(400, "ErrorInvalidRequest", "The calendar name is required.")
        if any(c.name.lower() == name.lower() for c in self.calendars.values()):
            raise GraphError(409, "ErrorFolderExists",
                             "A folder with the specified name already exists.")
        c = Calendar(_rid(), name, _change_key())
        self.calendars[c.id] = c
        return json_response(201, self._cal_json(c))

    # ---- contacts delta -------------------------------------------------------------

    def _contact_json(self, rec: ContactRec, select: tuple[str, ...]) -> dict[str, Any]:
        d = rec.data
        full: dict[str, Any] = {
            "@odata.etag": f'W/"{rec.change_key}"',
            "id": rec.id,
            "createdDateTime": rec.created,
            "lastModifiedDateTime": rec.modified,
            "changeKey": rec.change_key,
            "categories": list(d.get("categories", [])),
            "parentFolderId": rec.folder,
            "birthday": None,
            "fileAs": d.get("fileAs", ""),
            "displayName": d.get("displayName", ""),
            "givenName": d.get("givenName"),
            "initials": None,
            "middleName": d.get("middleName"),
            "nickName": None,
            "surname": d.get("surname"),
            "title": None,
            "generation": None,
            "imAddresses": [],
            "jobTitle": d.get("jobTitle"),
            "companyName": d.get("companyName"),
            "department": None,
            "officeLocation": None,
            "profession": None,
            "businessHomePage": None,
            "assistantName": None,
            "manager": None,
            "homePhones": list(d.get("homePhones", [])),
            "mobilePhone": d.get("mobilePhone"),
            "businessPhones": list(d.get("businessPhones", [])),
            "spouseName": None,
            "personalNotes": d.get("personalNotes", ""),
            "children": [],
            "emailAddresses": [dict(e) for e in d.get("emailAddresses", [])],
            "homeAddress": {}, "businessAddress": {}, "otherAddress": {},
        }
        if not select:
            return full
        keep = {s.lower() for s in select} | {"id", "@odata.etag"}
        return {k: v for k, v in full.items() if k.lower() in keep}

    def _contacts_delta(self, req: Request, folder: str) -> Response:
        if req.q("$top") is not None or req.q("$filter") is not None or \
                req.q("$orderby") is not None or req.q("$expand") is not None:
            raise GraphError(400, "ErrorInvalidUrlQuery",
                             "The following parameters are not supported with change tracking "
                             "over the 'Contacts' resource: '$orderby, $filter, $select, "
                             "$expand, $search, $top'.")
        state = self._token_state(req)
        if state is None:
            sel_raw = req.q("$select")
            select = tuple(s.strip() for s in sel_raw.split(",")) if sel_raw else ()
            q = {"$select": sel_raw} if sel_raw else {}
            initial = f"{self.base}{req.path}?{urlencode({**q, '$deltatoken': ''}, safe=',$')}"
            entries = self._contact_entries(folder, None)
            state = SyncState("contacts", folder, None, initial, select)
            return self._delta_page(req, state, entries, 0, self.seq)
        if state.entries is not None:  # a skip token
            return self._delta_page(req, state, state.entries, state.offset, state.hi)
        entries = self._contact_entries(folder, state.since)
        return self._delta_page(req, state, entries, 0, self.seq)

    def _contact_entries(self, folder: str, since: int | None) -> list[tuple[str, str]]:
        out: list[tuple[int, tuple[str, str]]] = []
        for c in self.contacts.values():
            if c.folder == folder and (since is None or c.seq > since):
                out.append((c.seq, ("contact", c.id)))
        if since is not None:
            for t in self.contact_tombs:
                if t.scope == folder and t.seq > since:
                    out.append((t.seq, ("removed", t.id)))
        out.sort(key=lambda p: p[0])
        return [e for _, e in out]

    # ---- sync state tokens (shared by both deltas) ------------------------------

    def _token_state(self, req: Request) -> SyncState | None:
        for name in ("$deltatoken", "$skiptoken"):
            tok = req.q(name)
            if tok is None:
                continue
            if tok == "":
                return None  # an empty $deltatoken is the initial query (410 Location)
            if not _TOKEN_RE.fullmatch(tok):
                raise GraphError(400, "BadRequest", f"The {name} is not valid.")
            st = self.states.get(tok)
            if st is None:
                gone = self.evicted.get(tok)
                hdr = {"Location": gone.initial_url} if gone else {}
                raise GraphError(410, "SyncStateNotFound",
                                 f"The sync state generation is not found; generation="
                                 f"{self.seq};[highest={self.seq}].", hdr)
            return st
        return None

    def _new_token(self, st: SyncState) -> str:
        tok = _rid()
        self.states[tok] = st
        return tok

    def _delta_page(self, req: Request, base: SyncState, entries: list[tuple[str, str]],
                    offset: int, hi: int) -> Response:
        size = self._page_size(req)
        page = entries[offset: offset + size]
        values: list[dict[str, Any]] = []
        for kind, ident in page:
            values.append(self._render_entry(req, base, kind, ident))
        link_base = base.initial_url.split("?", 1)[0]
        body: dict[str, Any] = {"@odata.context": f"{self.root_url}/$metadata#Collection"}
        if offset + size < len(entries):
            st = SyncState(base.kind, base.scope, base.since, base.initial_url, base.select,
                           base.window, entries, offset + size, hi)
            body["@odata.nextLink"] = f"{link_base}?$skiptoken={self._new_token(st)}"
        else:
            st = SyncState(base.kind, base.scope, hi, base.initial_url, base.select,
                           base.window)
            body["@odata.deltaLink"] = f"{link_base}?$deltatoken={self._new_token(st)}"
        body["value"] = values
        applied = [f"odata.maxpagesize={size}"] if "odata.maxpagesize" in self._prefer(req) \
            else []
        if offset == 0 and base.since is None:
            applied.insert(0, "odata.track-changes")
        headers = {"Preference-Applied": ", ".join(applied)} if applied else {}
        return json_response(200, body, headers)

    def _render_entry(self, req: Request, st: SyncState, kind: str, ident: str
                      ) -> dict[str, Any]:
        removed = {"@removed": {"reason": "deleted"}, "id": ident}
        if st.kind == "contacts":
            c = self.contacts.get(ident)
            if kind == "removed" or c is None or c.folder != st.scope:
                return {"@odata.type": "#microsoft.graph.contact", **removed}
            return {"@odata.type": "#microsoft.graph.contact",
                    **self._contact_json(c, st.select)}
        # calendarView: ident is an event id or "masterid|occurrence start iso"
        if kind == "removed":
            return {"@odata.type": "#microsoft.graph.event", **removed}
        ev = self._resolve_view_item(ident)
        assert st.window is not None
        if ev is None or ev[0].cal != st.scope or not self._overlaps(ev[1], st.window):
            return {"@odata.type": "#microsoft.graph.event", **removed}
        occ = ev[1] if isinstance(ev[1], datetime) else None
        return {"@odata.type": "#microsoft.graph.event",
                **self._event_json(req, ev[0], occurrence=occ, with_props=False, delta=True)}

    # ---- events ------------------------------------------------------------------------

    def _touch(self, rec: EventRec) -> None:
        self.seq += 1
        rec.seq = self.seq
        rec.change_key = _change_key()
        rec.modified = _now_iso()

    def _validate_times(self, data: dict[str, Any]) -> None:
        for k in ("start", "end"):
            v = data.get(k)
            if not isinstance(v, dict):
                raise GraphError(400, "ErrorInvalidRequest", f"'{k}' is required.")
            if zone(str(v.get("timeZone") or "")) is None:
                raise GraphError(400, "TimeZoneNotSupportedException",
                                 f"A valid TimeZone value must be specified. The following "
                                 f"TimeZone value is not supported: '{v.get('timeZone')}'.")
            if parse_dtz(v) is None:
                raise GraphError(400, "UnableToDeserializePostBody",
                                 "were unable to deserialize ")

    def _create_event(self, cal_id: str, data: dict[str, Any],
                      props: dict[str, tuple[str, str]]) -> EventRec:
        self.seq += 1
        now = _now_iso()
        data.setdefault("iCalUId", "040000008200E00074C5B7101A82E008" + secrets.token_hex(28))
        data.setdefault("body", {"contentType": "html", "content": ""})
        data.setdefault("showAs", "busy")
        data.setdefault("isCancelled", False)
        data.setdefault("attendees", [])
        rec = EventRec(_rid(), cal_id, data, props, _change_key(), self.seq, now, now)
        self.events[rec.id] = rec
        return rec

    def _props_from(self, body: dict[str, Any]) -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        for p in body.pop("singleValueExtendedProperties", None) or []:
            pid = str(p.get("id", ""))
            n = norm_prop_id(pid)
            if n is None:
                raise GraphError(400, "ErrorInvalidProperty",
                                 f"The property '{pid}' is not a valid extended property id.")
            out["|".join(n)] = (canon_prop_id(pid), str(p.get("value", "")))
        return out

    def _post_event(self, req: Request, cal_id: str) -> Response:
        body = req.json()
        if not isinstance(body, dict):
            raise GraphError(400, "UnableToDeserializePostBody", "were unable to deserialize ")
        tx = body.get("transactionId")
        if isinstance(tx, str) and tx in self.transactions:
            existing = self.events.get(self.transactions[tx])
            if existing is not None:
                # Documented: a client retrying the same create gets the event back.
                return json_response(201, self._event_json(req, existing, with_props=False))
        props = self._props_from(body)
        self._validate_times(body)
        if "body" in body:
            b = body["body"] or {}
            body["body"] = {"contentType": str(b.get("contentType", "text")).lower(),
                            "content": str(b.get("content", ""))}
        rec = self._create_event(cal_id, body, props)
        if isinstance(tx, str):
            self.transactions[tx] = rec.id
        return json_response(201, self._event_json(req, rec, with_props=False))

    def _check_if_match(self, req: Request, rec: EventRec) -> None:
        want = req.headers.get("if-match")
        if want is None or want.strip() == "*":
            return
        if want.strip() != f'W/"{rec.change_key}"':
            raise GraphError(412, "ErrorIrresolvableConflict",
                             "The send or update operation could not be performed because the "
                             "change key passed in the request does not match the current "
                             "change key for the item.")

    def _patch_event(self, req: Request, rec: EventRec) -> Response:
        self._check_if_match(req, rec)
        body = req.json()
        if not isinstance(body, dict):
            raise GraphError(400, "UnableToDeserializePostBody", "were unable to deserialize ")
        if "transactionId" in body and body["transactionId"] != rec.data.get("transactionId"):
            raise GraphError(400, "ErrorInvalidRequest",
                             "The transactionId of an existing event cannot be changed.")
        props = self._props_from(body)
        merged = {**rec.data, **body}
        self._validate_times(merged)
        if "body" in body:
            b = body["body"] or {}
            merged["body"] = {"contentType": str(b.get("contentType", "text")).lower(),
                              "content": str(b.get("content", ""))}
        rec.data = merged
        rec.props.update(props)
        self._touch(rec)
        return json_response(200, self._event_json(req, rec, with_props=False))

    def _delete_event(self, rec: EventRec) -> None:
        del self.events[rec.id]
        self.seq += 1
        self.event_tombs.append(Tomb(rec.id, rec.cal, self.seq))
        for occ in rec.occ_ids:
            self.event_tombs.append(Tomb(occ, rec.cal, self.seq))

    def _body_out(self, req: Request, rec: EventRec) -> dict[str, str]:
        b = rec.data.get("body") or {"contentType": "html", "content": ""}
        kind, content = b["contentType"], b["content"]
        want = self._prefer(req).get("outlook.body-content-type", "html").lower()
        if want == "text":
            if kind == "html":
                text = re.sub(r"(?i)<br\s*/?>", "\n", content)
                text = html.unescape(re.sub(r"<[^>]+>", "", text)).strip()
            else:
                text = content
            # Exchange hands text bodies back with CRLF line ends.
            text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
            return {"contentType": "text", "content": text}
        if kind == "html":
            return {"contentType": "html", "content": content}
        esc = html.escape(content).replace("\r\n", "\n").replace("\n", "<br>\r\n")
        return {
            "contentType": "html",
            "content": '<html>\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; '
            f'charset=utf-8">\r\n</head>\r\n<body>\r\n<div>{esc}</div>\r\n</body>\r\n</html>\r\n',
        }

    def _event_json(self, req: Request, rec: EventRec, *, occurrence: datetime | None = None,
                    with_props: bool = True, delta: bool = False) -> dict[str, Any]:
        d = rec.data
        tzname = self._prefer(req).get("outlook.timezone", "UTC")
        if zone(tzname) is None:
            tzname = "UTC"
        start = parse_dtz(d["start"])
        end = parse_dtz(d["end"])
        assert start is not None and end is not None
        kind = "seriesMaster" if d.get("recurrence") else "singleInstance"
        ev_id, master = rec.id, None
        if occurrence is not None and d.get("recurrence"):
            end = occurrence + (end - start)
            start = occurrence
            ev_id, kind, master = self._occ_id(rec, occurrence), "occurrence", rec.id
        body = self._body_out(req, rec)
        out: dict[str, Any] = {
            "@odata.etag": f'W/"{rec.change_key}"',
            "id": ev_id,
            "createdDateTime": rec.created,
            "lastModifiedDateTime": rec.modified,
            "changeKey": rec.change_key,
            "categories": list(d.get("categories") or []),
            "transactionId": d.get("transactionId"),
            "originalStartTimeZone": d["start"].get("timeZone"),
            "originalEndTimeZone": d["end"].get("timeZone"),
            "iCalUId": d.get("iCalUId"),
            "reminderMinutesBeforeStart": d.get("reminderMinutesBeforeStart", 15),
            "isReminderOn": d.get("isReminderOn", True),
            "hasAttachments": False,
            "subject": d.get("subject", ""),
            "bodyPreview": body["content"][:255] if body["contentType"] == "text" else "",
            "importance": d.get("importance", "normal"),
            "sensitivity": d.get("sensitivity", "normal"),
            "isAllDay": d.get("isAllDay", False),
            "isCancelled": d.get("isCancelled", False),
            "isOrganizer": True,
            "responseRequested": True,
            "seriesMasterId": master,
            "showAs": d.get("showAs", "busy"),
            "type": kind,
            "webLink": f"https://outlook.office365.com/owa/?itemid={quote(ev_id)}&exvsurl=1",
            "onlineMeetingUrl": None,
            "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
            "body": body,
            "start": format_dtz(start, tzname),
            "end": format_dtz(end, tzname),
            "location": d.get("location") or {"displayName": ""},
            "recurrence": d.get("recurrence") if occurrence is None else None,
            "attendees": list(d.get("attendees") or []),
            "organizer": {"emailAddress": {"name": self.identity.user.name,
                                           "address": self.identity.user.upn}},
        }
        if out["transactionId"] is None and not delta:
            del out["transactionId"]  # only returned when an app set it (delta: null)
        expand = req.q("$expand")
        if with_props and expand:
            for part in _split_top(expand, ","):
                m = re.fullmatch(r"(?is)singleValueExtendedProperties(?:\(\$filter=(.*)\))?",
                                 part.strip())
                if not m:
                    raise GraphError(400, "BadRequest", f"Could not find a property named "
                                     f"'{part}' on type 'microsoft.graph.event'.")
                pred = parse_filter(m.group(1)) if m.group(1) else (lambda s: True)
                out["singleValueExtendedProperties"] = [
                    {"id": pid, "value": val} for pid, val in rec.props.values()
                    if pred({"id": pid, "value": val})
                ]
        select = req.q("$select")
        if select:
            keep = {s.strip().lower() for s in select.split(",")} | {
                "id", "@odata.etag", "singlevalueextendedproperties"}
            out = {k: v for k, v in out.items() if k.lower() in keep}
        return out

    def _filter_scope(self, rec: EventRec) -> dict[str, Any]:
        return {
            "iCalUId": rec.data.get("iCalUId"),
            "subject": rec.data.get("subject"),
            "transactionId": rec.data.get("transactionId"),
            "singleValueExtendedProperties": [
                {"id": pid, "value": val} for pid, val in rec.props.values()
            ],
        }

    def _list_events(self, req: Request, cal_id: str | None) -> Response:
        recs = [e for e in self.events.values() if cal_id is None or e.cal == cal_id]
        flt = req.q("$filter")
        if flt:
            pred = parse_filter(flt)
            recs = [e for e in recs if pred(self._filter_scope(e))]
        return self._list(req, [self._event_json(req, e) for e in recs])

    # ---- calendarView ---------------------------------------------------------------------

    def _window(self, req: Request) -> tuple[datetime, datetime]:
        s, e = req.q("startDateTime"), req.q("endDateTime")
        if not s or not e:
            raise GraphError(400, "ErrorInvalidParameter",
                             "This request requires a time window specified by the query "
                             "string parameters StartDateTime and EndDateTime.")
        try:
            ws = datetime.fromisoformat(s.replace("Z", "+00:00"))
            we = datetime.fromisoformat(e.replace("Z", "+00:00"))
        except ValueError:
            raise GraphError(400, "ErrorInvalidParameter", "Invalid StartDateTime or "
                             "EndDateTime.") from None
        if ws.tzinfo is None:
            ws = ws.replace(tzinfo=UTC)
        if we.tzinfo is None:
            we = we.replace(tzinfo=UTC)
        return ws, we

    def _span(self, rec: EventRec) -> tuple[datetime, datetime]:
        s, e = parse_dtz(rec.data["start"]), parse_dtz(rec.data["end"])
        assert s is not None and e is not None
        return s, e

    @staticmethod
    def _overlaps(span: tuple[datetime, datetime] | datetime,
                  window: tuple[datetime, datetime]) -> bool:
        if isinstance(span, datetime):
            return window[0] <= span < window[1]
        s, e = span
        if s == e:
            return window[0] <= s < window[1]
        return s < window[1] and e > window[0]

    def _occ_id(self, rec: EventRec, start: datetime) -> str:
        return f"{rec.id}_{start.astimezone(UTC):%Y%m%dT%H%M%S}"

    def _occurrences(self, rec: EventRec, window: tuple[datetime, datetime]
                     ) -> Iterator[datetime]:
        """Occurrence starts of a series that overlap the window (daily and
        weekly patterns; numbered, endDate and noEnd ranges)."""
        rec_ = rec.data.get("recurrence") or {}
        pat, rng = rec_.get("pattern") or {}, rec_.get("range") or {}
        start, end = self._span(rec)
        dur = end - start
        tz = start.tzinfo
        step = int(pat.get("interval", 1))
        kind = pat.get("type", "daily")
        days = [d.lower() for d in pat.get("daysOfWeek") or []]
        names = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
        count = int(rng.get("numberOfOccurrences") or 0) if rng.get("type") == "numbered" else 0
        last = date.fromisoformat(rng["endDate"]) if rng.get("type") == "endDate" else None
        n = 0
        day = start.date()
        limit = window[1].date() + timedelta(days=1)
        while day <= limit:
            hit = False
            if kind == "daily":
                hit = (day - start.date()).days % step == 0
            elif kind == "weekly":
                weeks = (day - start.date()).days // 7
                hit = weeks % step == 0 and names[day.weekday()] in (days or [
                    names[start.weekday()]])
            if hit:
                if last is not None and day > last:
                    return
                n += 1
                if count and n > count:
                    return
                occ = datetime.combine(day, start.timetz().replace(tzinfo=None), tz)
                if self._overlaps((occ, occ + dur), window):
                    yield occ
            day += timedelta(days=1)

    def _view_items(self, cal_id: str, window: tuple[datetime, datetime]
                    ) -> list[tuple[EventRec, datetime | None]]:
        out: list[tuple[EventRec, datetime | None]] = []
        for rec in self.events.values():
            if rec.cal != cal_id:
                continue
            if rec.data.get("recurrence"):
                occs = list(self._occurrences(rec, window))
                rec.occ_ids |= {self._occ_id(rec, o) for o in occs}
                out.extend((rec, o) for o in occs)
            elif self._overlaps(self._span(rec), window):
                out.append((rec, None))
        out.sort(key=lambda p: p[1] or self._span(p[0])[0])
        return out

    def _resolve_view_item(self, ident: str) -> tuple[EventRec, tuple[datetime, datetime] |
                                                    datetime] | None:
        if "|" in ident:
            mid, iso = ident.split("|", 1)
            rec = self.events.get(mid)
            if rec is None or not rec.data.get("recurrence"):
                return None
            occ = datetime.fromisoformat(iso)
            return rec, occ
        rec = self.events.get(ident)
        if rec is None:
            return None
        return rec, self._span(rec)

    def _calendar_view(self, req: Request, cal_id: str) -> Response:
        window = self._window(req)
        items = [self._event_json(req, rec, occurrence=occ)
                 for rec, occ in self._view_items(cal_id, window)]
        return self._list(req, items)

    def _cv_delta(self, req: Request, cal_id: str) -> Response:
        for bad in ("$select", "$expand", "$filter", "$orderby", "$search", "$top"):
            if req.q(bad) is not None:
                raise GraphError(400, "ErrorInvalidUrlQuery",
                                 f"The query parameter '{bad}' is not supported with change "
                                 "tracking over the 'CalendarView' resource.")
        state = self._token_state(req)
        if state is None:
            window = self._window(req)
            q = urlencode({"startDateTime": req.q("startDateTime"),
                           "endDateTime": req.q("endDateTime"), "$deltatoken": ""},
                          quote_via=quote, safe=":")
            initial = f"{self.base}{req.path}?{q}"
            state = SyncState("cv", cal_id, None, initial, (), window)
            return self._delta_page(req, state, self._cv_entries(cal_id, window, None), 0,
                                    self.seq)
        if state.entries is not None:
            return self._delta_page(req, state, state.entries, state.offset, state.hi)
        assert state.window is not None
        return self._delta_page(req, state, self._cv_entries(cal_id, state.window, state.since),
                                0, self.seq)

    def _cv_entries(self, cal_id: str, window: tuple[datetime, datetime], since: int | None
                    ) -> list[tuple[str, str]]:
        out: list[tuple[int, tuple[str, str]]] = []
        for rec in self.events.values():
            if rec.cal != cal_id or (since is not None and rec.seq <= since):
                continue
            if rec.data.get("recurrence"):
                before = set(rec.occ_ids)
                occs = list(self._occurrences(rec, window))
                now_ids = {self._occ_id(rec, o) for o in occs}
                rec.occ_ids |= now_ids
                for o in occs:
                    out.append((rec.seq, ("event", f"{rec.id}|{o.isoformat()}")))
                if since is not None:
                    out.extend((rec.seq, ("removed", i)) for i in sorted(before - now_ids))
            elif self._overlaps(self._span(rec), window):
                out.append((rec.seq, ("event", rec.id)))
            elif since is not None:
                # Documented: changes outside the window come back as @removed.
                out.append((rec.seq, ("removed", rec.id)))
        if since is not None:
            for t in self.event_tombs:
                if t.scope == cal_id and t.seq > since:
                    out.append((t.seq, ("removed", t.id)))
        out.sort(key=lambda p: p[0])
        return [e for _, e in out]
