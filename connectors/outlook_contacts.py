"""The `ContactSource` port on Outlook / Microsoft 365 contacts (Microsoft Graph).

Folders
    The default Contacts folder (`/me/contactFolders/contacts`) and every
    folder below it, at any depth (`/me/contactFolders/{id}/childFolders`,
    breadth first); `folders:` restricts the read to the named ones (display
    names, case-insensitive, at any depth).
Delta
    One change-tracking round per folder: `GET
    /me/contactFolders/{id}/contacts/delta?$select=…`, following
    `@odata.nextLink` until `@odata.deltaLink`. The cursor (JSON) holds each
    folder's deltaLink and is committed by the core together with the rows.
    With a cursor, the folder listings (the default folder, and the children
    of every folder the cursor saw) and every folder's first delta page go
    in JSON batches (`POST /$batch`, 20 steps each): an idle cycle with up to
    9 folders is one request.
    Requests carry `Prefer: IdType="ImmutableId"` (ids survive moves between
    folders; a move shows up as an upsert in the new folder, never as a
    removal) and `odata.maxpagesize`.
Removals
    `@removed` entries → `removed` uids (the core keeps the history). A contact
    that no longer matches `categories:` is reported removed as well.
Resync
    410 / `SyncStateNotFound` / `resyncRequired` (or 400 with those codes) on
    any page → one full re-read of every folder, `full=True`, de-duplicated
    by id. Any other failure of a nextLink mid-round restarts that folder's
    round once from its start (pages already fetched are dropped); if that
    fails too, the read fails and the stored cursor stays as it was. A
    change in the folder set or in `folders:`/`categories:` also means a
    full re-read.
Mapping
    uid = Graph id; name = displayName (else given/middle/surname, else
    fileAs); e-mails = emailAddresses[].address; phones = mobile, business,
    home; company = companyName; title = jobTitle; note = personalNotes;
    labels = categories. A contact without any name is skipped and reported
    as a problem at its Graph URL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from connectors.graph_http import DeltaExpired, DeltaRound, GraphClient, GraphSession
from connectors.msal_auth import MsalTokens
from syncd.errors import RemoteError
from syncd.model import Contact, ContactBatch, SourceProblem
from syncd.settings import SourceConfig

_CURSOR_VERSION = 1
ROOT_FOLDER = "/me/contactFolders/contacts"  # the default folder (well-known name)


def _children(folder_id: str) -> str:
    return f"/me/contactFolders/{quote(folder_id, safe='')}/childFolders?$top=100"
SELECT = (
    "id,displayName,givenName,middleName,surname,fileAs,emailAddresses,mobilePhone,"
    "businessPhones,homePhones,companyName,jobTitle,personalNotes,categories"
)


class _Resync(Exception):
    pass


class OutlookContactsSource:
    kind = "outlook"

    def __init__(self, cfg: SourceConfig, state_dir: Path, *, page_size: int = 100,
                 client: GraphClient | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.page_size = page_size
        if client is None:
            session = GraphSession(cfg.connection)
            tokens = MsalTokens(cfg, state_dir, session=session)
            client = GraphClient(cfg.connection, tokens, who=f"contact source {cfg.name!r}",
                                 session=session)
        self.client = client
        self._tree: Iterable[str] = ()
        self._prefer = {
            "Prefer": f'IdType="ImmutableId", odata.maxpagesize={page_size}',
        }

    @property
    def http_session(self) -> GraphSession:
        return self.client.session

    def close(self) -> None:
        self.client.close()

    # ---- the port ---------------------------------------------------------------

    def read(self, cursor: str | None) -> ContactBatch:
        links = self._links(cursor)
        prefetched: dict[str, dict[str, Any] | RemoteError] = {}
        if links:
            order = sorted(links)
            listings = [ROOT_FOLDER, *(_children(f) for f in self._known_tree(cursor, links))]
            got = self.client.get_many([*listings, *(links[f] for f in order)],
                                       headers=self._prefer)
            folders = self._folders(dict(zip(listings, got[:len(listings)], strict=True)))
            prefetched = dict(zip(order, got[len(listings):], strict=True))
        else:
            folders = self._folders({})
        state = self._parse_cursor(cursor, folders)
        if state is not None:
            try:
                return self._incremental(folders, state, prefetched)
            except _Resync:
                pass  # expired delta state: one full re-read below
        try:
            return self._full(folders)
        except _Resync:
            raise RemoteError(
                f"contact source {self.name!r}: Graph expired the change-tracking state "
                "during a full read; the next cycle tries again"
            ) from None

    # ---- rounds ------------------------------------------------------------------

    def _full(self, folders: dict[str, str]) -> ContactBatch:
        upserts: dict[str, dict[str, Any]] = {}
        links: dict[str, str] = {}
        for fid in sorted(folders):
            r = self._round(self._initial(fid))
            upserts.update(r.items)
            links[fid] = r.link
        contacts, problems, unmatched = self._convert(upserts)
        del unmatched  # a full read lists only the matching contacts
        return ContactBatch(
            contacts=contacts, removed=(), cursor=self._cursor(links), full=True,
            problems=problems,
        )

    def _incremental(self, folders: dict[str, str], state: dict[str, str],
                     prefetched: dict[str, dict[str, Any] | RemoteError]) -> ContactBatch:
        upserts: dict[str, dict[str, Any]] = {}
        removed: set[str] = set()
        links: dict[str, str] = {}
        for fid in sorted(folders):
            start = state.get(fid) or self._initial(fid)  # a new folder: its first round
            r = self._round(start, prefetched.get(fid))
            upserts.update(r.items)
            removed |= r.removed
            links[fid] = r.link
        contacts, problems, unmatched = self._convert(upserts)
        # A move between folders is a removal in one and an upsert in another.
        gone = (removed - set(upserts)) | unmatched
        return ContactBatch(
            contacts=contacts, removed=tuple(sorted(gone)), cursor=self._cursor(links),
            full=False, problems=problems,
        )

    def _round(self, start: str, first_page: dict[str, Any] | RemoteError | None = None
               ) -> DeltaRound:
        """One delta round of a folder; an expired state raises _Resync."""
        try:
            return self.client.delta_round(start, self._prefer,
                                           f"contact source {self.name!r}", first_page)
        except DeltaExpired:
            raise _Resync() from None

    def _initial(self, folder_id: str) -> str:
        return f"/me/contactFolders/{quote(folder_id, safe='')}/contacts/delta?$select={SELECT}"

    # ---- folders -----------------------------------------------------------------

    def _folders(self, fetched: dict[str, dict[str, Any] | RemoteError]) -> dict[str, str]:
        """id -> display name of the folders to read: the default folder and
        every folder below it, breadth first (`fetched`: answers already
        fetched in a batch, by path)."""
        root = self._get(ROOT_FOLDER, fetched)
        found = {str(root["id"]): str(root.get("displayName") or "Contacts")}
        todo = [str(root["id"])]
        self._tree = found.keys()  # every folder seen, for the cursor
        while todo:
            parent = todo.pop(0)
            url: str | None = _children(parent)
            while url:
                page = self._get(url, fetched)
                for f in page.get("value") or []:
                    if isinstance(f, dict) and f.get("id") and str(f["id"]) not in found:
                        found[str(f["id"])] = str(f.get("displayName") or "")
                        todo.append(str(f["id"]))
                nxt = page.get("@odata.nextLink")
                url = nxt if isinstance(nxt, str) and nxt else None
        if not self.cfg.folders:
            return found
        wanted = {n.casefold() for n in self.cfg.folders}
        chosen = {i: n for i, n in found.items() if n.casefold() in wanted}
        missing = wanted - {n.casefold() for n in chosen.values()}
        if missing:
            names = sorted(n for n in self.cfg.folders if n.casefold() in missing)
            raise RemoteError(
                f"contact source {self.name!r}: contact folder(s) {', '.join(map(repr, names))} "
                f"not found; available: {', '.join(repr(n) for n in sorted(found.values()))}",
                hint=f"fix contacts[{self.name}].folders in the config",
                retryable=False,
            )
        return chosen

    def _get(self, path: str, fetched: dict[str, dict[str, Any] | RemoteError]
             ) -> dict[str, Any]:
        got = fetched.pop(path, None)
        if got is None:
            return self.client.get_json(path, headers=self._prefer)
        if isinstance(got, RemoteError):
            raise got
        return got

    # ---- cursor -------------------------------------------------------------------

    def _settings(self) -> list[list[str]]:
        return [sorted(n.casefold() for n in self.cfg.folders),
                sorted(c.casefold() for c in self.cfg.categories)]

    def _cursor(self, links: dict[str, str]) -> str:
        # "tree": every folder seen (read or not), so that the next read can
        # fetch all their listings in its first batch.
        return json.dumps({"v": _CURSOR_VERSION, "base": self.client.base,
                           "cfg": self._settings(), "links": links,
                           "tree": sorted(self._tree)},
                          separators=(",", ":"), sort_keys=True)

    def _parse_cursor(self, cursor: str | None, folders: dict[str, str]
                      ) -> dict[str, str] | None:
        """The deltaLinks per folder, or None for a full read (no cursor, an
        unreadable one, other settings, or a folder gone since)."""
        links = self._links(cursor)
        if links is None or set(links) - set(folders):
            return None  # a folder went away: its contacts must go too
        return links

    def _links(self, cursor: str | None) -> dict[str, str] | None:
        """The cursor's deltaLinks per folder, or None when it is missing,
        unreadable, or made with other settings."""
        if not cursor:
            return None
        try:
            st = json.loads(cursor)
        except ValueError:
            return None
        if not isinstance(st, dict) or st.get("v") != _CURSOR_VERSION:
            return None
        if st.get("base") != self.client.base or st.get("cfg") != self._settings():
            return None
        links = st.get("links")
        if not isinstance(links, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and self.client.owns(v)
            for k, v in links.items()
        ):
            return None
        return links

    def _known_tree(self, cursor: str | None, links: dict[str, str]) -> list[str]:
        """The folders the cursor saw (older cursors: those it read)."""
        try:
            tree = json.loads(cursor or "").get("tree")
        except (ValueError, AttributeError):
            tree = None
        if isinstance(tree, list) and all(isinstance(t, str) for t in tree):
            return sorted(set(tree) | set(links))
        return sorted(links)

    # ---- mapping ------------------------------------------------------------------

    def _convert(self, items: dict[str, dict[str, Any]]
                 ) -> tuple[tuple[Contact, ...], tuple[SourceProblem, ...], set[str]]:
        contacts: list[Contact] = []
        problems: list[SourceProblem] = []
        unmatched: set[str] = set()
        wanted = {c.casefold() for c in self.cfg.categories}
        for cid in sorted(items):
            item = items[cid]
            labels = tuple(str(c) for c in item.get("categories") or [] if c)
            if wanted and not wanted & {c.casefold() for c in labels}:
                unmatched.add(cid)
                continue
            contact = self._contact(cid, item, labels)
            if contact is None:
                problems.append(SourceProblem(
                    where=f"{self.client.base}/me/contacts/{quote(cid, safe='')}",
                    message="contact has no name; skipped",
                ))
                continue
            contacts.append(contact)
        return tuple(contacts), tuple(problems), unmatched

    def _contact(self, cid: str, c: dict[str, Any], labels: tuple[str, ...]) -> Contact | None:
        parts = [str(c.get(k) or "").strip() for k in ("givenName", "middleName", "surname")]
        name = (str(c.get("displayName") or "").strip() or " ".join(p for p in parts if p)
                or str(c.get("fileAs") or "").strip())
        if not name:
            return None
        emails = _unique(str(e.get("address") or "").strip()
                         for e in c.get("emailAddresses") or [] if isinstance(e, dict))
        phones = _unique([str(c.get("mobilePhone") or "").strip(),
                          *(str(p).strip() for p in c.get("businessPhones") or []),
                          *(str(p).strip() for p in c.get("homePhones") or [])])
        return Contact(
            source=self.name,
            uid=cid,
            name=name,
            emails=emails,
            phones=phones,
            company=str(c.get("companyName") or "").strip(),
            title=str(c.get("jobTitle") or "").strip(),
            labels=labels,
            note=str(c.get("personalNotes") or "").replace("\r\n", "\n"),
        )


def _unique(values: Any) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        if v and v not in out:
            out.append(v)
    return tuple(out)
