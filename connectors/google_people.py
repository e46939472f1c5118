"""The `ContactSource` port on Google Contacts, via the People API v1.

Reading
-------
`people.connections.list` on `people/me` with an explicit `personFields`,
`pageSize=1000` and `requestSyncToken=true` on every page (research
protocols.md §1.2: every parameter must match across pages). The
`nextSyncToken` of the last page goes into the returned cursor, which the
core stores in the same transaction as the contacts it covers. Incremental
reads send the same parameters plus `syncToken`, following `nextPageToken`
with the same sync token; they return the changed people and tombstones
(`metadata.deleted`), reported as `removed` (the core keeps their history).

An expired sync token (400 FAILED_PRECONDITION with ErrorInfo reason
EXPIRED_SYNC_TOKEN; some clients report 410, and a token the server cannot
read at all is a 400 INVALID_ARGUMENT) discards whatever incremental pages
were read and makes one full read, returned with `full=True`: the core then
upserts everyone and removes whoever is missing, so nothing is duplicated
and nothing is lost.

Identity across resource-name changes
-------------------------------------
`Contact.uid` is the person's resource name as syncd first saw it. Google
changes a resource name when a contact gets linked to a profile (a verified
e-mail, phone or profile URL), and says so in the next incremental read in
`metadata.previousResourceNames`. The cursor keeps a small alias map
{current resource name: uid} for exactly those people, so the core's contact
id (`source:uid`) never changes and the history stays attached. A tombstone
for the old name that arrives in the same read is not a removal. The map is
pruned to people still present on every full read. Limitation: when a rename
and an expired token fall into the same sync gap, the full read cannot see
the rename (Google only reports previous names to sync requests) and the
contact continues under a new id; its old history stays with the old id.

Labels
------
`labels:` in the config restricts the source to people in those contact
groups, resolved by name with `contactGroups.list` (user groups by `name`,
system groups such as "Starred" by `formattedName`; case-insensitive when
there is no exact match). An unknown label fails the source (not retryable)
with a message listing the labels that exist. In an incremental read, a
changed person outside the labels is reported as removed (they may just have
left the label). Groups are read only when a batch has people to convert,
so an idle incremental read is one request. `Contact.labels` are the
person's group names, except "My Contacts" and "All Contacts", which every
contact has. The cursor records the label filter: changing it in the config
makes the next read a full one.

Fields
------
name (display name, else e-mail, else phone), e-mails and phones (primary
first, as typed), organization name and title, biography as the note, and
the per-contact overrides from custom fields (`userDefined`, shown as
"Custom fields" in Google Contacts): `syncd-cadence`, `syncd-timezone` (keys
case-insensitive). A person with neither name, e-mail nor phone is skipped
and listed in `problems` under their resource name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from connectors.google_common import ApiStatus, GoogleApi
from syncd.errors import RemoteError
from syncd.model import Contact, ContactBatch, SourceProblem
from syncd.settings import SourceConfig

log = structlog.get_logger("syncd")

PERSON_FIELDS = ",".join((
    "names", "emailAddresses", "phoneNumbers", "organizations", "memberships",
    "userDefined", "biographies", "metadata",
))
PAGE_SIZE = 1000
OVERRIDE_KEYS = frozenset({"syncd-cadence", "syncd-timezone"})
_UNLABELLED = frozenset({"contactGroups/myContacts", "contactGroups/all"})
_CURSOR_VERSION = 1


@dataclass
class _Cursor:
    token: str | None
    labels: tuple[str, ...]
    alias: dict[str, str] = field(default_factory=dict)

    def dump(self) -> str:
        return json.dumps(
            {"v": _CURSOR_VERSION, "t": self.token, "l": list(self.labels), "a": self.alias},
            separators=(",", ":"), sort_keys=True,
        )

    @classmethod
    def load(cls, raw: str | None) -> _Cursor | None:
        if not raw:
            return None
        try:
            d = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(d, dict) or d.get("v") != _CURSOR_VERSION:
            return None
        token, labels, alias = d.get("t"), d.get("l"), d.get("a")
        if not isinstance(labels, list) or not isinstance(alias, dict):
            return None
        return cls(
            token if isinstance(token, str) and token else None,
            tuple(str(x) for x in labels),
            {str(k): str(v) for k, v in alias.items()},
        )


class _TokenRejected(Exception):
    pass


@dataclass(frozen=True)
class _Group:
    rn: str
    name: str  # what the user sees: user groups' name, system groups' formattedName


class GooglePeopleSource:
    """Google Contacts as a contact source. Not thread-safe."""

    kind = "google"

    def __init__(self, cfg: SourceConfig, state_dir: Path) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.api = GoogleApi("people", "v1", cfg, state_dir)

    def close(self) -> None:
        self.api.close()

    # ---- the port ------------------------------------------------------------

    def read(self, cursor: str | None) -> ContactBatch:
        labels = tuple(self.cfg.labels)
        state = _Cursor.load(cursor)
        if state is not None and state.labels != labels:
            state = _Cursor(None, labels, state.alias)  # a new filter: read in full
        alias = dict(state.alias) if state is not None else {}
        if state is not None and state.token is not None:
            try:
                people, token = self._list(state.token)
            except _TokenRejected as e:
                log.info("google contacts: sync token rejected, reading in full",
                         source=self.name, reason=str(e))
            else:
                return self._batch(people, token, alias, labels, full=False)
        people, token = self._list(None)
        return self._batch(people, token, alias, labels, full=True)

    # ---- reading -------------------------------------------------------------

    def _list(self, sync_token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Every page of one listing (full, or changes since `sync_token`)."""

        def build(service: Any, page_token: str | None) -> Any:
            kwargs: dict[str, Any] = {
                "resourceName": "people/me",
                "personFields": PERSON_FIELDS,
                "pageSize": PAGE_SIZE,
                "requestSyncToken": True,
            }
            if sync_token is not None:
                kwargs["syncToken"] = sync_token
            if page_token is not None:
                kwargs["pageToken"] = page_token
            return service.people().connections().list(**kwargs)

        people: list[dict[str, Any]] = []
        next_sync: str | None = None
        what = "reading Google contacts"
        passthrough = frozenset({400, 410}) if sync_token is not None else frozenset()
        try:
            for page in self.api.pages(build, what, passthrough):
                people.extend(p for p in page.get("connections", []) if isinstance(p, dict))
                next_sync = page.get("nextSyncToken") or next_sync
        except ApiStatus as e:
            # EXPIRED_SYNC_TOKEN (400 FAILED_PRECONDITION, or 410), or a token
            # the server cannot parse (400 INVALID_ARGUMENT): one full read. A
            # genuinely bad request shows up again in that full read.
            raise _TokenRejected(
                f"HTTP {e.error.status} {e.error.rpc_status} "
                f"{','.join(sorted(e.error.reasons))}: {e.error.message}"
            ) from None
        if next_sync is None:
            raise RemoteError(f"{what}: the last page carried no nextSyncToken")
        return people, next_sync

    def _groups(self) -> dict[str, _Group]:
        def build(service: Any, page_token: str | None) -> Any:
            kwargs: dict[str, Any] = {"groupFields": "name,groupType", "pageSize": 1000}
            if page_token is not None:
                kwargs["pageToken"] = page_token
            return service.contactGroups().list(**kwargs)

        out: dict[str, _Group] = {}
        for page in self.api.pages(build, "reading Google contact labels"):
            for g in page.get("contactGroups", []):
                rn = g.get("resourceName")
                if not isinstance(rn, str) or g.get("metadata", {}).get("deleted"):
                    continue
                system = g.get("groupType") == "SYSTEM_CONTACT_GROUP"
                label = g.get("formattedName") if system else g.get("name")
                out[rn] = _Group(rn, str(label or g.get("name") or rn))
        return out

    def _wanted(self, groups: dict[str, _Group], labels: tuple[str, ...]) -> set[str]:
        wanted: set[str] = set()
        unknown: list[str] = []
        for label in labels:
            exact = {g.rn for g in groups.values() if g.name == label}
            loose = {g.rn for g in groups.values() if g.name.casefold() == label.casefold()}
            found = exact or loose
            if not found:
                unknown.append(label)
            wanted |= found
        if unknown:
            existing = sorted({g.name for g in groups.values() if g.rn not in _UNLABELLED},
                              key=str.casefold)
            raise RemoteError(
                f"contacts[{self.name}].labels: no Google Contacts label named "
                + ", ".join(repr(u) for u in unknown)
                + f"; existing labels: {', '.join(existing) or '(none)'}",
                hint=f"fix contacts[{self.name}].labels in the config "
                "(use the names shown in Google Contacts)",
                retryable=False,
            )
        return wanted

    def _batch(self, people: list[dict[str, Any]], token: str | None, alias: dict[str, str],
               labels: tuple[str, ...], *, full: bool) -> ContactBatch:
        live = [p for p in people if not _meta(p).get("deleted")]
        gone = [p for p in people if _meta(p).get("deleted")]
        renamed_from = {prev for p in live for prev in _previous(p)}

        uids: dict[str, str] = {}
        for p in live:
            rn = str(p.get("resourceName", ""))
            prev = _previous(p)
            uid = next((alias[x] for x in prev if x in alias), prev[0] if prev else None)
            uid = uid or alias.get(rn, rn)
            for x in prev:
                alias.pop(x, None)
            if uid != rn:
                alias[rn] = uid
            uids[rn] = uid

        removed: list[str] = []
        for p in gone:
            rn = str(p.get("resourceName", ""))
            if rn in renamed_from:
                continue  # the old name of someone who is still here
            removed.append(alias.pop(rn, rn))
        if full:
            alias = {k: v for k, v in alias.items() if k in uids}

        # Groups are only needed to filter or name the people in this batch.
        groups = self._groups() if live and (labels or _has_memberships(live)) else {}
        wanted = self._wanted(groups, labels) if live and labels else None

        contacts: list[Contact] = []
        problems: list[SourceProblem] = []
        for p in live:
            rn = str(p.get("resourceName", ""))
            member_of = _memberships(p)
            if wanted is not None and not member_of & wanted:
                if not full:
                    removed.append(uids[rn])
                continue
            contact = _contact(self.name, uids[rn], p, member_of, groups)
            if contact is None:
                problems.append(SourceProblem(rn, "no name, e-mail or phone; skipped"))
                continue
            contacts.append(contact)
        # One person per uid (a duplicate rn in two pages keeps the later one).
        by_uid = {c.uid: c for c in contacts}
        drop = [u for u in dict.fromkeys(removed) if u not in by_uid]
        return ContactBatch(
            contacts=tuple(by_uid.values()),
            removed=() if full else tuple(drop),
            cursor=_Cursor(token, labels, alias).dump(),
            full=full,
            problems=tuple(problems),
        )


# ---------------------------------------------------------------------------
# Person -> Contact


def _meta(p: dict[str, Any]) -> dict[str, Any]:
    m = p.get("metadata")
    return m if isinstance(m, dict) else {}


def _previous(p: dict[str, Any]) -> list[str]:
    prev = _meta(p).get("previousResourceNames")
    return [str(x) for x in prev] if isinstance(prev, list) else []


def _has_memberships(people: list[dict[str, Any]]) -> bool:
    return any(_memberships(p) - _UNLABELLED for p in people)


def _memberships(p: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for m in p.get("memberships", []) or []:
        cgm = m.get("contactGroupMembership") if isinstance(m, dict) else None
        if isinstance(cgm, dict) and cgm.get("contactGroupResourceName"):
            out.add(str(cgm["contactGroupResourceName"]))
    return out


def _values(p: dict[str, Any], key: str, attr: str = "value") -> list[str]:
    items = [i for i in p.get(key, []) or [] if isinstance(i, dict)]
    # Google lists the primary entry first; keep that order, drop blanks/dupes.
    primary = [i for i in items if i.get("metadata", {}).get("primary")]
    rest = [i for i in items if not i.get("metadata", {}).get("primary")]
    out: list[str] = []
    for i in primary + rest:
        v = str(i.get(attr) or "").strip()
        if v and v not in out:
            out.append(v)
    return out


def _first(p: dict[str, Any], key: str) -> dict[str, Any]:
    items = [i for i in p.get(key, []) or [] if isinstance(i, dict)]
    for i in items:
        if i.get("metadata", {}).get("primary"):
            return i
    return items[0] if items else {}


def _contact(source: str, uid: str, p: dict[str, Any], member_of: set[str],
             groups: dict[str, Any]) -> Contact | None:
    emails = tuple(_values(p, "emailAddresses"))
    phones = tuple(_values(p, "phoneNumbers"))
    n = _first(p, "names")
    name = str(n.get("displayName") or n.get("unstructuredName") or "").strip()
    if not name:
        name = " ".join(str(n.get(k) or "") for k in ("givenName", "familyName")).strip()
    name = name or (emails[0] if emails else "") or (phones[0] if phones else "")
    if not name:
        return None
    org = _first(p, "organizations")
    overrides: dict[str, str] = {}
    for u in p.get("userDefined", []) or []:
        if not isinstance(u, dict):
            continue
        key = str(u.get("key") or "").strip().lower()
        value = str(u.get("value") or "").strip()
        if key in OVERRIDE_KEYS and value:
            overrides[key] = value
    labels = sorted(
        {groups[g].name for g in member_of - _UNLABELLED if g in groups}, key=str.casefold
    )
    bio = _first(p, "biographies")
    return Contact(
        source=source,
        uid=uid,
        name=name,
        emails=emails,
        phones=phones,
        company=str(org.get("name") or "").strip(),
        title=str(org.get("title") or "").strip(),
        labels=tuple(labels),
        note=str(bio.get("value") or ""),
        overrides=tuple(sorted(overrides.items())),
    )
