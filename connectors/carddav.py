"""Contacts from a CardDAV address book (RFC 6352), read incrementally.

`CardDavSource` implements `syncd.ports.ContactSource` for `type: carddav`.
It speaks WebDAV with `requests` directly: python-caldav's CardDAV support is
thin, and three requests (PROPFIND, sync-collection, addressbook-multiget)
are all a read needs.

Identity and cursor
-------------------
`Contact.uid` is the card's vCard `UID` (RFC 6352 §5.1 requires one per
address object; for a card without one, the digest `connectors.files` uses).
The UID, unlike the href, survives moving the address book to another
server or path, so history follows the person. But a deletion arrives as an
href only (RFC 6578 §3.5.2: a `DAV:response` with status 404 and no data),
so the cursor remembers which UID lives at which href:

    {"v": 1, "collection": "/alice/contacts/", "mode": "sync",
     "token": "<sync-token>", "uids": {"jane.vcf": "urn:uuid:…"}, "etags": {}}

Member names are relative to the collection path to keep the cursor small.

* mode "sync" (RFC 6578 sync-collection): the REPORT asks for `getetag` and
  `CARDDAV:address-data`, so Radicale sends changed cards inline; Xandikos
  answers address-data with a 404 propstat inside sync-collection, so hrefs
  that arrive without data are fetched with one addressbook-multiget (RFC
  6352 §8.7). A rejected token (`DAV:valid-sync-token`: Radicale 403,
  Xandikos 412) means one full re-read, returned with `full=True`.
* mode "etag", for servers without sync-collection: PROPFIND Depth 1 lists
  `getetag` per member; the cursor keeps the previous listing in `etags`, and
  only new or changed members are fetched (multiget). Because the listing is
  complete, this mode reports upserts and removals with `full=False` instead
  of re-sending every contact. A cursor in this mode stays in it (the server
  is not re-probed for sync-collection until the cursor is dropped).

Either way the first read (cursor None, unreadable, or made for another
collection) returns every contact with `full=True`. A changed card that no
longer parses is skipped with a `SourceProblem` at its URL and, if it had a
UID before, that UID is reported removed, so an incremental read ends in the
same state as a full one.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import requests
import structlog

from connectors.files import CardError, vcard_to_contact
from syncd import log as syncd_log
from syncd import retry
from syncd.errors import AuthError, RemoteError, SyncdError, UserError
from syncd.model import Contact, ContactBatch, SourceProblem
from syncd.settings import SourceConfig

__all__ = ["CardDavSource"]

log = structlog.get_logger(__name__)

DAV = "DAV:"
CARDDAV = "urn:ietf:params:xml:ns:carddav"
_XML_HEAD = '<?xml version="1.0" encoding="utf-8"?>\n'
_NS = f'xmlns:D="{DAV}" xmlns:C="{CARDDAV}"'
MULTIGET_BATCH = 200  # hrefs per addressbook-multiget
MAX_SYNC_PAGES = 100  # RFC 6578 §3.6 truncation: follow at most this many pages
CURSOR_VERSION = 1


def _tag(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


class _TokenRejected(Exception):
    """The server refused our sync token (RFC 6578 §3.2 DAV:valid-sync-token)."""


class _NoSyncCollection(Exception):
    """The server does not do RFC 6578 sync-collection on this collection."""


@dataclass
class _Member:
    """One `DAV:response` of a multistatus, reduced to what we read."""

    path: str  # unquoted absolute path
    status: int  # the response's own status, or 200 when it only has propstats
    etag: str | None = None
    data: str | None = None
    is_collection: bool = False
    is_addressbook: bool = False
    hrefs: dict[str, list[str]] = field(default_factory=dict)  # property -> hrefs inside


@dataclass
class _State:
    """The decoded cursor."""

    collection: str
    mode: str  # "sync" | "etag"
    token: str | None
    uids: dict[str, str]  # member name -> contact uid
    etags: dict[str, str]  # member name -> etag ("etag" mode only)

    def dump(self) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "collection": self.collection,
                "mode": self.mode,
                "token": self.token,
                "uids": self.uids,
                "etags": self.etags,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def load(cls, cursor: str | None, collection: str) -> _State | None:
        """The state in `cursor`, or None when absent, unreadable or for
        another collection (the caller then reads in full)."""
        if not cursor:
            return None
        try:
            d = json.loads(cursor)
            state = cls(
                collection=str(d["collection"]),
                mode=str(d["mode"]),
                token=None if d["token"] is None else str(d["token"]),
                uids={str(k): str(v) for k, v in dict(d["uids"]).items()},
                etags={str(k): str(v) for k, v in dict(d.get("etags", {})).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if (
            d.get("v") != CURSOR_VERSION
            or state.collection != collection
            or state.mode not in ("sync", "etag")
            or (state.mode == "sync" and not state.token)
        ):
            return None
        return state


class CardDavSource:
    """`type: carddav`: one address book, given by its URL or by a principal /
    address-book-home URL under which the first address book is used.

    `sync_collection=False` skips RFC 6578 and always uses ETag listings (for
    servers that claim sync-collection but implement it badly; the tests use
    it to run the fallback against real servers).
    """

    kind = "carddav"

    def __init__(self, cfg: SourceConfig, *, sync_collection: bool = True) -> None:
        if not cfg.url:
            raise UserError(
                f"contact source {cfg.name!r} (type: carddav) has no `url`",
                hint="set `url:` to the address book (or your CardDAV account) URL",
            )
        self.name = cfg.name
        self._cfg = cfg
        self._url = cfg.url
        self._use_sync = sync_collection
        self._session: requests.Session | None = None
        self._password = ""
        self._collection_url: str | None = None

    # ------------------------------------------------------------------ port

    def read(self, cursor: str | None) -> ContactBatch:
        coll_url = self._collection()
        coll_path = _path_of(coll_url)
        state = _State.load(cursor, coll_path)
        if state is None:
            return self._full(coll_url)
        if state.mode == "sync" and not self._use_sync:
            return self._full(coll_url)
        if state.mode == "sync":
            try:
                return self._sync_changes(coll_url, state)
            except _TokenRejected:
                log.info("carddav.sync_token_rejected", source=self.name)
                return self._full(coll_url)
            except _NoSyncCollection:
                return self._full(coll_url)
        return self._etag_changes(coll_url, state)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # ------------------------------------------------------------------ reads

    def _full(self, coll_url: str) -> ContactBatch:
        """Every contact, `full=True`: by sync-collection with an empty token
        (RFC 6578 §3.4 initial sync) where supported, else by ETag listing."""
        coll_path = _path_of(coll_url)
        if self._use_sync:
            try:
                token, changed, _gone = self._sync_report(coll_url, None)
            except _NoSyncCollection:
                log.info("carddav.no_sync_collection", source=self.name)
            else:
                # Radicale lists 404 tombstones even in an initial sync: ignored.
                state = _State(coll_path, "sync", token, {}, {})
                contacts, _removed, problems = self._apply(coll_url, state, changed, [])
                return ContactBatch(
                    tuple(contacts), cursor=state.dump(), full=True, problems=tuple(problems)
                )
        listing = self._list_etags(coll_url)
        state = _State(coll_path, "etag", None, {}, {})
        changed = {p: _Member(p, 200, etag=e) for p, e in listing.items()}
        contacts, _removed, problems = self._apply(coll_url, state, changed, [])
        return ContactBatch(
            tuple(contacts), cursor=state.dump(), full=True, problems=tuple(problems)
        )

    def _sync_changes(self, coll_url: str, state: _State) -> ContactBatch:
        token, changed, gone = self._sync_report(coll_url, state.token)
        state.token = token
        contacts, removed, problems = self._apply(coll_url, state, changed, gone)
        return ContactBatch(
            tuple(contacts),
            removed=tuple(removed),
            cursor=state.dump(),
            full=False,
            problems=tuple(problems),
        )

    def _etag_changes(self, coll_url: str, state: _State) -> ContactBatch:
        listing = self._list_etags(coll_url)
        base = _path_of(coll_url)
        old = {_path_in(base, name): etag for name, etag in state.etags.items()}
        changed = {p: _Member(p, 200, etag=e) for p, e in listing.items() if old.get(p) != e}
        gone = [p for p in old if p not in listing]
        contacts, removed, problems = self._apply(coll_url, state, changed, gone)
        return ContactBatch(
            tuple(contacts),
            removed=tuple(removed),
            cursor=state.dump(),
            full=False,
            problems=tuple(problems),
        )

    def _apply(
        self,
        coll_url: str,
        state: _State,
        changed: dict[str, _Member],
        gone: Iterable[str],
    ) -> tuple[list[Contact], list[str], list[SourceProblem]]:
        """Fold changed and gone members into `state` (updated in place).

        Returns the upserted contacts, the removed uids and the problems.
        Members without data are fetched with addressbook-multiget first.
        """
        base = _path_of(coll_url)
        missing = [p for p, m in changed.items() if m.data is None]
        for p, m in self._multiget(coll_url, missing).items():
            changed[p] = m
        removed: list[str] = []
        for p in gone:
            name = _name_in(base, p)
            state.etags.pop(name, None)
            if (uid := state.uids.pop(name, None)) is not None:
                removed.append(uid)
        contacts: list[Contact] = []
        problems: list[SourceProblem] = []
        seen: dict[str, str] = {}
        for p in sorted(changed):
            m = changed[p]
            if m.data is None:
                # Deleted between the listing and the multiget; the next
                # listing (or sync token, which predates it) reports it.
                continue
            name = _name_in(base, p)
            old_uid = state.uids.pop(name, None)
            if state.mode == "etag" and m.etag:
                state.etags[name] = m.etag  # a bad card is not re-fetched until it changes
            where = urljoin(coll_url, quote(p))
            try:
                contact = vcard_to_contact(m.data, self.name)
            except CardError as e:
                problems.append(SourceProblem(where, str(e)))
                contact = None
            if contact is not None and contact.uid in seen:
                # RFC 6352 §6.3.2.1 forbids two cards with one UID in a collection,
                # but a server that does not enforce it must not make us flap.
                problems.append(
                    SourceProblem(
                        where, f"duplicate UID {contact.uid!r} (also at {seen[contact.uid]})"
                    )
                )
                contact = None
            if old_uid is not None and (contact is None or contact.uid != old_uid):
                removed.append(old_uid)
            if contact is None:
                continue
            seen[contact.uid] = where
            state.uids[name] = contact.uid
            contacts.append(contact)
        # A UID that left one href and arrived at another is not a removal.
        alive = set(state.uids.values())
        removed = sorted({u for u in removed if u not in alive})
        return contacts, removed, problems

    # ------------------------------------------------------------------ DAV

    def _sync_report(
        self, coll_url: str, token: str | None
    ) -> tuple[str, dict[str, _Member], list[str]]:
        """RFC 6578 sync-collection: (new token, changed members, gone paths).

        Follows truncated results (§3.6: the request-URI reported with 507 and
        a token to continue from) for up to MAX_SYNC_PAGES pages.
        """
        coll_path = _path_of(coll_url)
        changed: dict[str, _Member] = {}
        gone: list[str] = []
        for _page in range(MAX_SYNC_PAGES):
            body = (
                f"{_XML_HEAD}<D:sync-collection {_NS}>"
                f"<D:sync-token>{_xml_text(token or '')}</D:sync-token>"
                "<D:sync-level>1</D:sync-level>"
                "<D:prop><D:getetag/><C:address-data/></D:prop>"
                "</D:sync-collection>"
            )
            resp = self._send("REPORT", coll_url, body, depth="1", expect=None)
            if resp.status_code != 207:
                self._sync_failure(resp, coll_url, token)
            root = self._xml(resp, coll_url)
            new_token = (root.findtext(_tag(DAV, "sync-token")) or "").strip()
            if not new_token:
                # A 207 without a token is not a sync-collection answer at all.
                raise _NoSyncCollection
            truncated = False
            for m in _members(root, coll_url):
                if m.path == coll_path:
                    truncated = m.status == 507
                elif m.status == 404:
                    gone.append(m.path)
                    changed.pop(m.path, None)
                elif m.status == 200 and not m.is_collection:
                    changed[m.path] = m
                    if m.path in gone:
                        gone.remove(m.path)
            token = new_token
            if not truncated:
                return token, changed, gone
        raise RemoteError(
            f"CardDAV source {self.name!r}: sync-collection at {_safe(coll_url)} was still"
            f" truncated after {MAX_SYNC_PAGES} pages"
        )

    def _sync_failure(self, resp: requests.Response, coll_url: str, token: str | None) -> None:
        """Classify a non-207 answer to sync-collection; always raises."""
        text = resp.text
        if token and "valid-sync-token" in text:
            # RFC 6578 §3.2 says 403 (Radicale); Xandikos answers 412, and
            # python-caldav's compatibility notes report 500 for some tokens,
            # so the precondition element decides, not the status.
            raise _TokenRejected
        if resp.status_code in (400, 405, 501) or (
            resp.status_code == 403 and "supported-report" in text
        ):
            # RFC 3253 §3.6: an unsupported REPORT fails DAV:supported-report.
            raise _NoSyncCollection
        self._raise_for(resp, "REPORT", coll_url)

    def _multiget(self, coll_url: str, paths: Sequence[str]) -> dict[str, _Member]:
        """RFC 6352 §8.7 addressbook-multiget: data and etag per path (404s left out)."""
        found: dict[str, _Member] = {}
        for i in range(0, len(paths), MULTIGET_BATCH):
            hrefs = "".join(
                f"<D:href>{_xml_text(quote(p))}</D:href>" for p in paths[i : i + MULTIGET_BATCH]
            )
            body = (
                f"{_XML_HEAD}<C:addressbook-multiget {_NS}>"
                "<D:prop><D:getetag/><C:address-data/></D:prop>"
                f"{hrefs}</C:addressbook-multiget>"
            )
            resp = self._send("REPORT", coll_url, body, depth="1")
            for m in _members(self._xml(resp, coll_url), coll_url):
                if m.status == 200 and m.data is not None:
                    found[m.path] = m
        return found

    def _list_etags(self, coll_url: str) -> dict[str, str]:
        """PROPFIND Depth 1: path -> getetag for every non-collection member."""
        body = (
            f"{_XML_HEAD}<D:propfind {_NS}>"
            "<D:prop><D:resourcetype/><D:getetag/></D:prop></D:propfind>"
        )
        resp = self._send("PROPFIND", coll_url, body, depth="1")
        coll_path = _path_of(coll_url)
        listing: dict[str, str] = {}
        for m in _members(self._xml(resp, coll_url), coll_url):
            if m.path == coll_path and m.status == 404:
                raise self._not_found(coll_url)
            if m.path != coll_path and m.status == 200 and not m.is_collection and m.etag:
                listing[m.path] = m.etag
        return listing

    def _collection(self) -> str:
        """The address book URL (trailing slash), discovered once per instance.

        `url` may be the address book itself, or a principal or home: then
        CARDDAV:addressbook-home-set (RFC 6352 §7.1.1) is followed, via
        DAV:current-user-principal (RFC 5397) when needed, and the first
        address book (by path) of the home is used.
        """
        if self._collection_url is not None:
            return self._collection_url
        url = self._url if self._url.endswith("/") else self._url + "/"
        me = self._propfind0(url)
        if me.is_addressbook:
            self._collection_url = url
            return url
        homes = [urljoin(url, h) for h in me.hrefs.get("addressbook-home-set", [])]
        if not homes:
            for principal in me.hrefs.get("current-user-principal", []):
                p = self._propfind0(urljoin(url, principal))
                homes += [urljoin(url, h) for h in p.hrefs.get("addressbook-home-set", [])]
        for home in dict.fromkeys([*homes, url]):
            body = f"{_XML_HEAD}<D:propfind {_NS}><D:prop><D:resourcetype/></D:prop></D:propfind>"
            resp = self._send("PROPFIND", home, body, depth="1")
            books = sorted(
                m.path for m in _members(self._xml(resp, home), home) if m.is_addressbook
            )
            if books:
                found = urljoin(home, quote(books[0]))
                log.info("carddav.discovered", source=self.name, url=_safe(found))
                self._collection_url = found
                return found
        raise RemoteError(
            f"CardDAV source {self.name!r}: no address book at or under {_safe(url)}",
            hint="set `url:` to the address book's URL",
            retryable=False,
        )

    def _propfind0(self, url: str) -> _Member:
        body = (
            f"{_XML_HEAD}<D:propfind {_NS}><D:prop><D:resourcetype/>"
            "<D:current-user-principal/><C:addressbook-home-set/></D:prop></D:propfind>"
        )
        resp = self._send("PROPFIND", url, body, depth="0")
        want = _path_of(url)
        for m in _members(self._xml(resp, url), url):
            if m.path.rstrip("/") == want.rstrip("/"):
                if m.status == 404:
                    # Xandikos answers a PROPFIND on a missing path with 207 + a 404 response.
                    raise self._not_found(url)
                return m
        raise RemoteError(
            f"CardDAV source {self.name!r}: PROPFIND {_safe(url)} did not describe that URL",
            retryable=True,
        )

    # ------------------------------------------------------------------ HTTP

    def _http(self) -> requests.Session:
        if self._session is None:
            s = requests.Session()
            s.trust_env = False  # no ~/.netrc credentials or env proxies sneaking in
            ca = self._cfg.connection.ca_bundle
            s.verify = str(ca.expanduser()) if ca else True  # TLS is always verified
            if self._cfg.username:
                self._password = self._secret()
                syncd_log.register_secret(self._password)  # masked wherever logged
                s.auth = (self._cfg.username, self._password)
            s.headers["User-Agent"] = "syncd (CardDAV)"
            self._session = s
        return self._session

    def _secret(self) -> str:
        if not self._cfg.password.is_set():
            return ""
        # Imported here: syncd.config is the edge (YAML, env, commands); the
        # connector only needs this one function.
        from syncd.config import resolve_secret

        try:
            return resolve_secret(self._cfg.password, f"contacts[{self.name}].password")
        except RemoteError:
            raise
        except SyncdError as e:
            raise AuthError(e.message, e.hint) from None

    def _send(
        self,
        method: str,
        url: str,
        body: str,
        *,
        depth: str,
        expect: int | None = 207,
    ) -> requests.Response:
        """One request, tried again while that is safe and useful (`syncd.retry`:
        these are all reads; transport failures, 408/429/5xx, Retry-After
        honoured). Transport failures and (with `expect`) unexpected statuses
        become RemoteError/AuthError without the password."""
        resp = retry.call(
            lambda: self._send_once(method, url, body, depth),
            method=method,
            result_delay=_retry_delay,
            what=f"CardDAV {method} {_safe(url)}",
        )
        if resp.status_code == 401:
            raise AuthError(
                f"CardDAV source {self.name!r}: {_safe(url)} rejected the credentials"
                f" (HTTP 401) for user {self._cfg.username or '(none)'!r}",
                hint="check `username:` and the password source (password_env/_file/_command)",
            )
        if expect is not None and resp.status_code != expect:
            self._raise_for(resp, method, url)
        return resp

    def _send_once(self, method: str, url: str, body: str, depth: str) -> requests.Response:
        session = self._http()
        try:
            resp = session.request(
                method,
                url,
                data=body.encode(),
                headers={"Depth": depth, "Content-Type": "application/xml; charset=utf-8"},
                timeout=self._cfg.connection.timeout,
            )
        except requests.exceptions.SSLError as e:
            raise RemoteError(
                f"CardDAV source {self.name!r}: TLS verification failed for {_safe(url)}:"
                f" {self._scrub(e)}",
                hint="set `ca_bundle:` to the CA that signed the server's certificate",
                retryable=False,
            ) from None
        except requests.exceptions.RequestException as e:
            raise RemoteError(
                f"CardDAV source {self.name!r}: {method} {_safe(url)} failed:"
                f" {type(e).__name__}: {self._scrub(e)}",
                retryable=True,
            ) from None
        return resp

    def _raise_for(self, resp: requests.Response, method: str, url: str) -> None:
        status = resp.status_code
        if status == 404:
            raise self._not_found(url)
        if status == 403:
            raise RemoteError(
                f"CardDAV source {self.name!r}: {method} {_safe(url)} is forbidden (HTTP 403)",
                hint=f"check that user {self._cfg.username!r} may read this address book",
                retryable=False,
            )
        message = f"CardDAV source {self.name!r}: {method} {_safe(url)} answered HTTP {status}"
        if status in (429, 503):
            wait = retry.parse_retry_after(resp.headers.get("Retry-After"))
            raise retry.ServerBusy(
                message, hint=f"it asked to retry after {wait:.0f}s" if wait else "",
                retry_after=wait)
        # rclone's split: a later try may fix a server or gateway failure, not
        # a request the server understood and refused (400, 405, 409, 412, …).
        raise RemoteError(message, retryable=status in retry.RETRY_STATUSES)

    def _not_found(self, url: str) -> RemoteError:
        return RemoteError(
            f"CardDAV source {self.name!r}: {_safe(url)} does not exist (HTTP 404)",
            hint="check `url:` in the config",
            retryable=False,
        )

    def _xml(self, resp: requests.Response, url: str) -> ET.Element:
        # The stdlib parser: expat ≥ 2.4 (Python 3.11) refuses entity expansion
        # bombs, and it never fetches external entities.
        try:
            return ET.fromstring(resp.content)
        except ET.ParseError as e:
            raise RemoteError(
                f"CardDAV source {self.name!r}: {_safe(url)} sent invalid XML ({e})",
                retryable=True,
            ) from None

    def _scrub(self, e: BaseException) -> str:
        text = str(e)
        return text.replace(self._password, "***") if self._password else text


# ---------------------------------------------------------------------- helpers


def _members(root: ET.Element, base: str) -> list[_Member]:
    """The `DAV:response`s of a multistatus (RFC 4918 §14.16)."""
    out: list[_Member] = []
    for r in root.iter(_tag(DAV, "response")):
        href = (r.findtext(_tag(DAV, "href")) or "").strip()
        if not href:
            continue
        status = _status(r.findtext(_tag(DAV, "status")))
        m = _Member(path=_path_of(urljoin(base, href)), status=status or 200)
        for ps in r.findall(_tag(DAV, "propstat")):
            if _status(ps.findtext(_tag(DAV, "status"))) != 200:
                continue  # e.g. Xandikos' 404 propstat for address-data in sync-collection
            prop = ps.find(_tag(DAV, "prop"))
            if prop is None:
                continue
            _read_props(prop, m)
        out.append(m)
    return out


def _read_props(prop: ET.Element, m: _Member) -> None:
    for el in prop:
        if el.tag == _tag(DAV, "getetag"):
            m.etag = (el.text or "").strip() or None
        elif el.tag == _tag(CARDDAV, "address-data"):
            m.data = el.text or ""
        elif el.tag == _tag(DAV, "resourcetype"):
            m.is_collection = el.find(_tag(DAV, "collection")) is not None
            m.is_addressbook = el.find(_tag(CARDDAV, "addressbook")) is not None
        elif el.tag in (
            _tag(DAV, "current-user-principal"),
            _tag(CARDDAV, "addressbook-home-set"),
        ):
            local = el.tag.rsplit("}", 1)[-1]
            m.hrefs[local] = [
                (h.text or "").strip() for h in el.findall(_tag(DAV, "href")) if h.text
            ]


def _retry_delay(resp: requests.Response) -> float | None:
    """For `retry.call`: None for a final answer; for one worth another try,
    the server's Retry-After in seconds (0 when it gave none)."""
    if resp.status_code not in retry.RETRY_STATUSES:
        return None
    return retry.parse_retry_after(resp.headers.get("Retry-After")) or 0.0


def _status(line: str | None) -> int | None:
    """200 from "HTTP/1.1 200 OK"."""
    if not line:
        return None
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def _path_of(url: str) -> str:
    """The unquoted path of a URL or href: one spelling per member, whatever
    quoting the server chose in each answer."""
    return unquote(urlsplit(url).path)


def _name_in(base: str, path: str) -> str:
    """A member's name relative to its collection (the cursor's key); a path
    outside the collection stays absolute."""
    return path[len(base) :] if path.startswith(base) else path


def _path_in(base: str, name: str) -> str:
    """Inverse of `_name_in`."""
    return name if name.startswith("/") else base + name


def _safe(url: str) -> str:
    """The URL without any user:password@ part, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _xml_text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
