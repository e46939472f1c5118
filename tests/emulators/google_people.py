"""An emulator of the Google People API v1: `people.connections.list` and
`contactGroups.list`, served over HTTP at `/v1/...` (point a client's
`api_endpoint` at the server root).

Faithful to the published reference (discovery document people.v1.json and
research protocols.md §1) rather than convenient:

* bearer tokens from the OAuth emulator; 401 UNAUTHENTICATED without one,
  403 PERMISSION_DENIED / ACCESS_TOKEN_SCOPE_INSUFFICIENT without a contacts
  scope;
* unknown query parameters are rejected ("Cannot bind query parameter"),
  `personFields` is required and checked path by path, `pageSize` 1..1000
  (0 or unset: 100), enums checked;
* only the fields named in `personFields` come back (plus `resourceName`
  and `etag`); empty repeated fields and zero counts are omitted (proto3 JSON);
* page tokens are bound to every other parameter (a drift is 400
  INVALID_ARGUMENT); `nextSyncToken` only on the last page and only when
  `requestSyncToken=true` or a `syncToken` was sent;
* with `syncToken`: the changed people in their current state, deleted ones
  as tombstones `{resourceName, etag, metadata: {deleted: true, sources}}`,
  `metadata.previousResourceNames` for people whose resource name changed;
* sync tokens expire 7 days after the full sync their chain began with
  (the reference's wording; the clock is injectable), and on
  demand: 400 FAILED_PRECONDITION with ErrorInfo reason EXPIRED_SYNC_TOKEN
  and Google's message (`expired_status = 410` switches to the 410 some
  clients defend against); a token that is not even well formed is 400
  INVALID_ARGUMENT;
* errors are google.rpc.Status envelopes with ErrorInfo details;
* contact groups: system groups without etag/metadata, user groups with
  both; `formattedName` with `name`; `nextSyncToken` always on the last page;
* faults (429 RESOURCE_EXHAUSTED, 403 rate limits, 5xx) can be queued, with
  or without `Retry-After`.

The test side edits contacts through plain Python methods: that is what a
user does in the Contacts web UI, which is not part of this API.
"""

from __future__ import annotations

import copy
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.emulators._http import Clock, Fault, Faults, Request, Response
from tests.emulators._tokens import Page, Sync, Tokens, binding
from tests.emulators.google_oauth import OAuth

SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/contacts",
        "https://www.googleapis.com/auth/contacts.readonly",
    }
)
GLOBAL_PARAMS = frozenset(
    {
        "$.xgafv", "access_token", "alt", "callback", "fields", "key", "oauth_token",
        "prettyPrint", "quotaUser", "uploadType", "upload_protocol",
    }
)
PERSON_FIELDS = frozenset(
    {
        "addresses", "ageRanges", "biographies", "birthdays", "calendarUrls", "clientData",
        "coverPhotos", "emailAddresses", "events", "externalIds", "genders", "imClients",
        "interests", "locales", "locations", "memberships", "metadata", "miscKeywords",
        "names", "nicknames", "occupations", "organizations", "phoneNumbers", "photos",
        "relations", "sipAddresses", "skills", "urls", "userDefined",
    }
)
GROUP_FIELDS = frozenset({"clientData", "groupType", "memberCount", "metadata", "name"})
SORT_ORDERS = frozenset(
    {"LAST_MODIFIED_ASCENDING", "LAST_MODIFIED_DESCENDING", "FIRST_NAME_ASCENDING",
     "LAST_NAME_ASCENDING"}
)
READ_SOURCES = frozenset(
    {"READ_SOURCE_TYPE_UNSPECIFIED", "READ_SOURCE_TYPE_PROFILE", "READ_SOURCE_TYPE_CONTACT",
     "READ_SOURCE_TYPE_DOMAIN_CONTACT", "READ_SOURCE_TYPE_OTHER_CONTACT"}
)
CONNECTIONS_PARAMS = frozenset(
    {"personFields", "requestMask.includeField", "pageSize", "pageToken", "requestSyncToken",
     "sortOrder", "sources", "syncToken"}
)
GROUPS_PARAMS = frozenset({"groupFields", "pageSize", "pageToken", "syncToken"})
SYSTEM_GROUPS = (
    ("chatBuddies", "Chat contacts"),
    ("all", "All Contacts"),
    ("myContacts", "My Contacts"),
    ("friends", "Friends"),
    ("family", "Family"),
    ("coworkers", "Coworkers"),
    ("blocked", "Blocked"),
    ("starred", "Starred"),
)
EXPIRED_MESSAGE = (
    "Sync token is expired. Clear local cache and retry call without the sync token."
)
FIELDS_DOC = "https://developers.google.com/people/api/rest/v1/people.connections/list"
SYNC_TTL = timedelta(days=7)  # "Sync tokens expire 7 days after the full sync."


def rpc_error(
    code: int,
    status: str,
    message: str,
    reason: str | None = None,
    domain: str = "people.googleapis.com",
    metadata: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A google.rpc.Status error body (https://cloud.google.com/apis/design/errors)."""
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason is not None:
        info: dict[str, Any] = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": domain,
        }
        if metadata:
            info["metadata"] = metadata
        err["details"] = [info]
    vary = {"Vary": "Origin, X-Origin, Referer"}
    return Response.json(code, {"error": err}, {**vary, **(headers or {})})


def _invalid(message: str = "Request contains an invalid argument.") -> Response:
    return rpc_error(400, "INVALID_ARGUMENT", message)


_FAULT_STATUS = {
    429: "RESOURCE_EXHAUSTED", 403: "PERMISSION_DENIED", 500: "INTERNAL",
    502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED", 401: "UNAUTHENTICATED",
}
_FAULT_MESSAGE = {
    429: "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute "
    "per user' of service 'people.googleapis.com' for consumer 'project_number:123456789012'.",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
    403: "The caller does not have permission",
}


def _now_text(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass
class _Person:
    rn: str
    sid: str  # the CONTACT source id (hex)
    fields: dict[str, list[dict[str, Any]]]
    groups: list[str]
    etag: str
    seq: int
    update_time: str
    previous: list[str] = field(default_factory=list)


@dataclass
class _Tomb:
    rn: str
    sid: str
    etag: str
    seq: int


@dataclass
class _Group:
    rn: str
    name: str
    formatted: str
    system: bool
    seq: int
    etag: str
    update_time: str
    deleted: bool = False


class PeopleEmulator:
    def __init__(self, oauth: OAuth, clock: Clock) -> None:
        self.oauth = oauth
        self.clock = clock
        self.persons: dict[str, _Person] = {}
        self.tombs: dict[str, _Tomb] = {}
        self.groups: dict[str, _Group] = {}
        self.seq = 0
        self.expired_status = 400
        self.tombstone_on_rename = False
        self.faults = Faults()
        self.tokens = Tokens()
        self.group_tokens = Tokens()
        self._lock = threading.RLock()
        for gid, formatted in SYSTEM_GROUPS:
            self.groups[f"contactGroups/{gid}"] = _Group(
                f"contactGroups/{gid}", gid, formatted, True, 0, "", ""
            )

    # ------------------------------------------------------------------ test side

    def fail(self, status: int, *, reason: str | None = None, message: str = "",
             retry_after: str | None = None, times: int = 1, path: str = "") -> None:
        """Answer the next `times` API requests (whose path contains `path`)
        with this error."""
        self.faults.add(Fault(status, reason or "", message, None, path, retry_after, times))

    def expire_sync_tokens(self) -> None:
        self.tokens.expire_all()

    def forge_sync_token(self) -> str:
        return self.tokens.forge_sync()

    def add_group(self, name: str) -> str:
        with self._lock:
            rn = f"contactGroups/{secrets.token_hex(8)}"
            self.groups[rn] = _Group(rn, name, name, False, self._bump(), self._etag(),
                                     _now_text(self.clock.now()))
            return rn

    def group_named(self, name: str) -> str:
        for g in self.groups.values():
            if not g.deleted and (g.name == name or g.formatted == name):
                return g.rn
        return self.add_group(name)

    def add_contact(
        self,
        name: str = "",
        emails: tuple[str, ...] | list[str] = (),
        phones: tuple[str, ...] | list[str] = (),
        company: str = "",
        title: str = "",
        labels: tuple[str, ...] | list[str] = (),
        user_defined: dict[str, str] | None = None,
        note: str = "",
    ) -> str:
        with self._lock:
            sid = secrets.token_hex(8)[1:]
            rn = f"people/c{int(sid, 16)}"
            p = _Person(rn, sid, {}, [], "", 0, "")
            self.persons[rn] = p
            self._set(p, name=name, emails=emails, phones=phones, company=company, title=title,
                      labels=labels, user_defined=user_defined or {}, note=note)
            return rn

    def update_contact(self, rn: str, **changes: Any) -> None:
        """Change some fields (same keywords as `add_contact`); the rest stay."""
        with self._lock:
            p = self.persons[rn]
            current = self._as_kwargs(p)
            current.update(changes)
            self._set(p, **current)

    def delete_contact(self, rn: str) -> None:
        with self._lock:
            p = self.persons.pop(rn)
            self.tombs[rn] = _Tomb(rn, p.sid, self._etag(), self._bump())

    def relink(self, rn: str) -> str:
        """The contact's resource name changes, as when a verified e-mail links
        it to a Google profile (PersonMetadata.previousResourceNames)."""
        with self._lock:
            p = self.persons.pop(rn)
            new = f"people/{secrets.randbelow(10**20) + 10**20}"
            p.previous = [rn, *p.previous]
            p.rn = new
            p.seq = self._bump()
            p.etag = self._etag()
            self.persons[new] = p
            if self.tombstone_on_rename:
                self.tombs[rn] = _Tomb(rn, p.sid, self._etag(), self._bump())
            return new

    # ------------------------------------------------------------------ internals

    def _bump(self) -> int:
        self.seq += 1
        return self.seq

    @staticmethod
    def _etag() -> str:
        return "%Eg" + secrets.token_urlsafe(18)

    def _meta(self, p: _Person, primary: bool) -> dict[str, Any]:
        m: dict[str, Any] = {"source": {"type": "CONTACT", "id": p.sid}}
        if primary:
            m = {"primary": True, **m}
        return m

    def _as_kwargs(self, p: _Person) -> dict[str, Any]:
        f = p.fields
        names = f.get("names", [])
        orgs = f.get("organizations", [])
        return {
            "name": names[0]["displayName"] if names else "",
            "emails": [e["value"] for e in f.get("emailAddresses", [])],
            "phones": [e["value"] for e in f.get("phoneNumbers", [])],
            "company": orgs[0].get("name", "") if orgs else "",
            "title": orgs[0].get("title", "") if orgs else "",
            "labels": [self.groups[g].name for g in p.groups
                       if not self.groups[g].system],
            "user_defined": {u["key"]: u["value"] for u in f.get("userDefined", [])},
            "note": f["biographies"][0]["value"] if f.get("biographies") else "",
        }

    def _set(self, p: _Person, *, name: str, emails: Any, phones: Any, company: str,
             title: str, labels: Any, user_defined: dict[str, str], note: str) -> None:
        f: dict[str, list[dict[str, Any]]] = {}
        if name:
            given, _, family = name.partition(" ")
            entry: dict[str, Any] = {"metadata": self._meta(p, True), "displayName": name}
            if family:
                entry["familyName"] = family
            entry["givenName"] = given
            entry["displayNameLastFirst"] = f"{family}, {given}" if family else given
            entry["unstructuredName"] = name
            f["names"] = [entry]
        if emails:
            f["emailAddresses"] = [
                {"metadata": self._meta(p, i == 0), "value": e, "type": "work",
                 "formattedType": "Work"} for i, e in enumerate(emails)
            ]
        if phones:
            f["phoneNumbers"] = [
                {"metadata": self._meta(p, i == 0), "value": t,
                 "canonicalForm": "+" + "".join(c for c in t if c.isdigit()),
                 "type": "mobile", "formattedType": "Mobile"} for i, t in enumerate(phones)
            ]
        if company or title:
            org: dict[str, Any] = {"metadata": self._meta(p, True)}
            if company:
                org["name"] = company
            if title:
                org["title"] = title
            f["organizations"] = [org]
        if user_defined:
            f["userDefined"] = [
                {"metadata": self._meta(p, False), "key": k, "value": v}
                for k, v in user_defined.items()
            ]
        if note:
            f["biographies"] = [
                {"metadata": self._meta(p, True), "value": note, "contentType": "TEXT_PLAIN"}
            ]
        p.fields = f
        # "A contact must always have at least one contact group membership."
        p.groups = ["contactGroups/myContacts"] + [self.group_named(lbl) for lbl in labels]
        p.seq = self._bump()
        p.etag = self._etag()
        p.update_time = _now_text(self.clock.now())

    def _render(self, p: _Person, fields: frozenset[str], sync: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"resourceName": p.rn, "etag": p.etag}
        if "metadata" in fields:
            meta: dict[str, Any] = {
                "sources": [{"type": "CONTACT", "id": p.sid, "etag": "#" + p.etag[3:15],
                             "updateTime": p.update_time}],
                "objectType": "PERSON",
            }
            # "Populated only for people.connections.list requests that include a sync token."
            if sync and p.previous:
                meta["previousResourceNames"] = list(p.previous)
            out["metadata"] = meta
        for name in sorted(fields):
            if name == "memberships":
                out["memberships"] = [
                    {"metadata": {"source": {"type": "CONTACT", "id": p.sid}},
                     "contactGroupMembership": {"contactGroupId": g.split("/", 1)[1],
                                                "contactGroupResourceName": g}}
                    for g in p.groups
                ]
            elif name != "metadata" and p.fields.get(name):
                out[name] = copy.deepcopy(p.fields[name])
        return out

    @staticmethod
    def _tomb(t: _Tomb) -> dict[str, Any]:
        return {
            "resourceName": t.rn,
            "etag": t.etag,
            "metadata": {"sources": [{"type": "CONTACT", "id": t.sid}], "deleted": True,
                         "objectType": "PERSON"},
        }

    # ------------------------------------------------------------------ HTTP

    def handle(self, req: Request) -> Response | None:
        if not req.path.startswith("/v1/"):
            return None
        fault = self.faults.take(req)
        if fault is not None:
            return self._fault(fault)
        scopes = self.oauth.lookup(req.header("Authorization"))
        if scopes is None:
            return rpc_error(
                401, "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential. See "
                "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                reason="ACCESS_TOKEN_EXPIRED" if req.header("Authorization")
                else "CREDENTIALS_MISSING",
                domain="googleapis.com",
                headers={"WWW-Authenticate":
                         'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
            )
        if not scopes & SCOPES:
            return rpc_error(403, "PERMISSION_DENIED",
                             "Request had insufficient authentication scopes.",
                             reason="ACCESS_TOKEN_SCOPE_INSUFFICIENT", domain="googleapis.com",
                             metadata={"service": "people.googleapis.com"})
        seg = req.segments
        if req.method != "GET":
            return rpc_error(404, "NOT_FOUND", "Method not found.")
        if req.param("alt") not in (None, "json"):
            return _invalid(f"Invalid value at 'alt' ({req.param('alt')}).")
        with self._lock:
            if len(seg) == 4 and seg[:2] == ["v1", "people"] and seg[3] == "connections":
                return self._connections(req, seg[2])
            if seg == ["v1", "contactGroups"]:
                return self._groups(req)
        return rpc_error(404, "NOT_FOUND", "Method not found.")

    def _fault(self, f: Fault) -> Response:
        headers = {"Retry-After": f.retry_after} if f.retry_after is not None else {}
        status = _FAULT_STATUS.get(f.status, "UNKNOWN")
        message = f.message or _FAULT_MESSAGE.get(f.status, "Error")
        reason = f.reason or ("RATE_LIMIT_EXCEEDED" if f.status == 429 else None)
        domain = "googleapis.com" if reason in ("RATE_LIMIT_EXCEEDED", None) else "global"
        meta = {"service": "people.googleapis.com"} if f.status == 429 else None
        return rpc_error(f.status, status, message, reason, domain, meta, headers)

    @staticmethod
    def _unknown_params(req: Request, allowed: frozenset[str]) -> Response | None:
        for name in req.query:
            if name not in allowed and name not in GLOBAL_PARAMS:
                return _invalid(
                    f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query '
                    f"parameter. Field '{name}' could not be found in request message."
                )
        return None

    @staticmethod
    def _page_size(req: Request, default: int) -> int | Response:
        raw = req.param("pageSize")
        if raw is None:
            return default
        try:
            n = int(raw)
        except ValueError:
            return _invalid(f'Invalid value at \'page_size\' (TYPE_INT32), "{raw}"')
        if n < 0:
            return _invalid("Page size must be greater than or equal to 0.")
        if n > 1000:
            return _invalid("Page size must be less than or equal to 1000.")
        return n or default

    def _connections(self, req: Request, who: str) -> Response:
        if who != "me":
            return _invalid(f"Resource name \"people/{who}\" is not valid. Only people/me "
                            "is supported for connections.")
        bad = self._unknown_params(req, CONNECTIONS_PARAMS)
        if bad is not None:
            return bad
        mask = req.param("personFields")
        if mask is None and req.param("requestMask.includeField") is not None:
            mask = ",".join(p.strip().removeprefix("person.")
                            for p in (req.param("requestMask.includeField") or "").split(","))
        if not mask:
            return _invalid(
                "personFields mask is required. Please specify one or more valid paths. "
                f"Valid paths are documented at {FIELDS_DOC}."
            )
        fields = frozenset(p.strip() for p in mask.split(",") if p.strip())
        for path in sorted(fields):
            if path not in PERSON_FIELDS:
                return _invalid(f'Invalid personFields mask path: "{path}". Valid paths are '
                                f"documented at {FIELDS_DOC}.")
        size = self._page_size(req, 100)
        if isinstance(size, Response):
            return size
        sort = req.param("sortOrder")
        if sort is not None and sort not in SORT_ORDERS:
            return _invalid(f"Invalid value at 'sort_order' "
                            f"(type.googleapis.com/google.people.v1.ListConnectionsRequest."
                            f'SortOrder), "{sort}"')
        for src in req.query.get("sources", []):
            if src not in READ_SOURCES:
                return _invalid(f"Invalid value at 'sources[0]', \"{src}\"")
        want_sync = req.param("requestSyncToken")
        if want_sync not in (None, "true", "false"):
            return _invalid(f"Invalid value at 'request_sync_token' (TYPE_BOOL), \"{want_sync}\"")
        sync_token = req.param("syncToken")
        page_token = req.param("pageToken")
        bound = binding(req.query, {"pageToken"} | GLOBAL_PARAMS)
        # "When syncing, all other parameters must match the first call that
        # provided the sync token" (sortOrder only applies when not syncing).
        sync_bound = binding(
            req.query,
            {"pageToken", "syncToken", "requestSyncToken", "sortOrder"} | GLOBAL_PARAMS,
        )
        if page_token is not None:
            page = self.tokens.page(page_token)
            if page is None or page.binding != bound:
                return _invalid()
        else:
            # "Sync tokens expire 7 days after the full sync": every token of
            # an incremental chain keeps the time of the full sync it began with.
            origin = self.clock.now()
            if sync_token is not None:
                got = self._changes(sync_token, sync_bound, fields)
                if isinstance(got, Response):
                    return got
                items, origin = got
            else:
                items = [self._render(p, fields, False) for p in self._sorted(sort)]
            page = Page(bound, items, 0, self.seq,
                        {"full": sync_token is None, "sync_bound": sync_bound,
                         "origin": origin})
        chunk = page.items[page.offset:page.offset + size]
        body: dict[str, Any] = {}
        if chunk:
            body["connections"] = chunk
        if page.offset + size < len(page.items):
            body["nextPageToken"] = self.tokens.new_page(
                Page(page.binding, page.items, page.offset + size, page.snapshot_seq, page.extra))
        elif want_sync == "true" or sync_token is not None:
            body["nextSyncToken"] = self.tokens.new_sync(
                Sync(page.extra["sync_bound"], page.snapshot_seq, page.extra["origin"]))
        if page.extra["full"]:
            body["totalPeople"] = len(page.items)
            body["totalItems"] = len(page.items)
        return Response.json(200, body)

    def _sorted(self, sort: str | None) -> list[_Person]:
        people = list(self.persons.values())
        if sort == "LAST_MODIFIED_DESCENDING":
            return sorted(people, key=lambda p: -p.seq)
        if sort == "FIRST_NAME_ASCENDING":
            return sorted(people, key=lambda p: (_name_part(p, "givenName"), p.seq))
        if sort == "LAST_NAME_ASCENDING":
            return sorted(people, key=lambda p: (_name_part(p, "familyName"), p.seq))
        return sorted(people, key=lambda p: p.seq)

    def _changes(self, token: str, bound: str, fields: frozenset[str]
                 ) -> tuple[list[dict[str, Any]], datetime] | Response:
        sync = self.tokens.sync(token)
        if sync is None and not self.tokens.sync_well_formed(token):
            return _invalid()
        if sync is None or self.tokens.expired(sync, self.clock.now(), SYNC_TTL):
            # A well-formed token we do not know is one pruned long ago.
            if self.expired_status == 410:
                return rpc_error(410, "ABORTED", EXPIRED_MESSAGE, "EXPIRED_SYNC_TOKEN")
            return rpc_error(400, "FAILED_PRECONDITION", EXPIRED_MESSAGE, "EXPIRED_SYNC_TOKEN")
        if sync.binding != bound:
            return _invalid()
        changed: list[tuple[int, dict[str, Any]]] = []
        for p in self.persons.values():
            if p.seq > sync.seq:
                changed.append((p.seq, self._render(p, fields, True)))
        for t in self.tombs.values():
            if t.seq > sync.seq and t.rn not in self.persons:
                changed.append((t.seq, self._tomb(t)))
        return [item for _, item in sorted(changed, key=lambda x: x[0])], sync.issued

    def _groups(self, req: Request) -> Response:
        bad = self._unknown_params(req, GROUPS_PARAMS)
        if bad is not None:
            return bad
        mask = req.param("groupFields") or "metadata,groupType,memberCount,name"
        fields = frozenset(p.strip() for p in mask.split(",") if p.strip())
        for path in sorted(fields):
            if path not in GROUP_FIELDS:
                return _invalid(f'Invalid groupFields mask path: "{path}".')
        size = self._page_size(req, 30)
        if isinstance(size, Response):
            return size
        bound = binding(req.query, {"pageToken"} | GLOBAL_PARAMS)
        token = req.param("pageToken")
        if token is not None:
            page = self.group_tokens.page(token)
            if page is None or page.binding != bound:
                return _invalid()
        else:
            since = 0
            sync_token = req.param("syncToken")
            if sync_token is not None:
                sync = self.group_tokens.sync(sync_token)
                if sync is None:
                    return rpc_error(400, "FAILED_PRECONDITION", EXPIRED_MESSAGE,
                                     "EXPIRED_SYNC_TOKEN")
                since = sync.seq
            if sync_token is None:
                groups = [g for g in self.groups.values() if not g.deleted]
            else:  # changes only, deletions included
                groups = [g for g in self.groups.values() if g.seq > since]
            items = [self._render_group(g, fields, since > 0) for g in groups]
            page = Page(bound, items, 0, self.seq)
        chunk = page.items[page.offset:page.offset + size]
        body: dict[str, Any] = {}
        if chunk:
            body["contactGroups"] = chunk
        if page.offset + size < len(page.items):
            body["nextPageToken"] = self.group_tokens.new_page(
                Page(page.binding, page.items, page.offset + size, page.snapshot_seq))
        else:
            body["nextSyncToken"] = self.group_tokens.new_sync(
                Sync(bound, page.snapshot_seq, self.clock.now()))
        body["totalItems"] = len(page.items)
        return Response.json(200, body)

    def _render_group(self, g: _Group, fields: frozenset[str], sync: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"resourceName": g.rn}
        if not g.system:
            out["etag"] = g.etag
            if "metadata" in fields:
                meta: dict[str, Any] = {"updateTime": g.update_time}
                if sync and g.deleted:
                    meta["deleted"] = True
                out["metadata"] = meta
        if "groupType" in fields:
            out["groupType"] = "SYSTEM_CONTACT_GROUP" if g.system else "USER_CONTACT_GROUP"
        if "name" in fields:
            out["name"] = g.name
            out["formattedName"] = g.formatted
        if "memberCount" in fields:
            if g.rn == "contactGroups/all":
                count = len(self.persons)
            else:
                count = sum(1 for p in self.persons.values() if g.rn in p.groups)
            if count:  # proto3 JSON omits zero
                out["memberCount"] = count
        return out


def _name_part(p: _Person, key: str) -> str:
    names = p.fields.get("names", [])
    return str(names[0].get(key, "")) if names else ""

