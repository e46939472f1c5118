"""Real CalDAV/CardDAV servers for the benchmark (tests/servers.py starts
them), collections seeded in bulk on disk, and request counting at the HTTP
layer of the connectors.

Seeding writes the items straight into the server's storage while it is
stopped (Radicale: one file per item; Xandikos: one git commit for all of
them), because 10,000 PUTs would take minutes and, on Xandikos, make 10,000
commits. What syncd then reads is what the server serves, over HTTP.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import icalendar
import requests

from tests.servers import DavServer, start_radicale, start_xandikos

MKCOL_ADDRESSBOOK = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:mkcol xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:set><D:prop>'
    "<D:resourcetype><D:collection/><C:addressbook/></D:resourcetype>"
    "</D:prop></D:set></D:mkcol>"
)


def mkcalendar_body(name: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" '
            'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>'
            f"<D:displayname>{name}</D:displayname><C:supported-calendar-component-set>"
            '<C:comp name="VEVENT"/></C:supported-calendar-component-set>'
            "</D:prop></D:set></C:mkcalendar>")


USER = "alice"  # Radicale's user; Xandikos serves a single user at /user/


_starting = threading.Lock()


def start(kind: str, data: Path) -> DavServer:
    # One at a time: a free port is only taken once the server listens on it.
    with _starting:
        return start_radicale(data) if kind == "radicale" else start_xandikos(data)


def http() -> requests.Session:
    s = requests.Session()
    s.auth = (USER, "x")
    s.trust_env = False
    return s


def book_path(kind: str, slug: str) -> str:
    return f"/{USER}/{slug}/" if kind == "radicale" else f"/user/{slug}/"


def calendar_path(kind: str, slug: str) -> str:
    return f"/{USER}/{slug}/" if kind == "radicale" else f"/user/calendars/{slug}/"


def create_collections(server: DavServer, books: Iterable[str],
                       calendars: Mapping[str, str]) -> None:
    """Address books (by slug) and calendars (slug -> display name)."""
    s = http()
    try:
        for slug in books:
            r = s.request("MKCOL", server.base + book_path(server.kind, slug),
                          data=MKCOL_ADDRESSBOOK, headers={"Content-Type": "application/xml"})
            assert r.status_code == 201, r.text
        for slug, name in calendars.items():
            r = s.request("MKCALENDAR", server.base + calendar_path(server.kind, slug),
                          data=mkcalendar_body(name), headers={"Content-Type": "application/xml"})
            assert r.status_code in (200, 201), r.text
    finally:
        s.close()


def _storage(server: DavServer, url_path: str) -> Path:
    root = (server.data / "collections" / "collection-root" if server.kind == "radicale"
            else server.data / "store")
    return root / url_path.strip("/")


def seed(server: DavServer, items: Mapping[str, Iterable[tuple[str, str]]]) -> DavServer:
    """Stop the server, write `items` ({collection URL path: (name, text)…})
    into its storage, start it again (on a new port) and return it."""
    server.stop()
    for url_path, files in items.items():
        where = _storage(server, url_path)
        assert where.is_dir(), where
        if server.kind == "radicale":
            for name, text in files:
                (where / name).write_bytes(text.encode())
        else:
            _git_seed(where, files)
    server = start(server.kind, server.data)
    # A server that has been running has read its collections before: warm
    # its caches (Radicale parses every item once) outside the measurements.
    s = http()
    try:
        for url_path in items:
            r = s.request("REPORT", server.base + url_path, data=SYNC_ALL, timeout=1800,
                          headers={"Depth": "0", "Content-Type": "application/xml"})
            assert r.status_code == 207, r.text[:300]
    finally:
        s.close()
    return server


SYNC_ALL = ('<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:">'
            "<D:sync-token/><D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop>"
            "</D:sync-collection>")


def _git_seed(repo_dir: Path, files: Iterable[tuple[str, str]]) -> None:
    """Add the files to a Xandikos collection (a git tree) in one commit, the
    way Xandikos itself stages a PUT (index entry from the file's stat)."""
    from dulwich.index import index_entry_from_stat
    from dulwich.objects import Blob
    from dulwich.repo import Repo

    repo = Repo(str(repo_dir))
    try:
        index = repo.open_index()
        blobs = []
        for name, text in files:
            data = text.encode()
            p = repo_dir / name
            p.write_bytes(data)
            blob = Blob.from_string(data)
            blobs.append((blob, None))
            index[name.encode()] = index_entry_from_stat(os.lstat(p), blob.id)
        repo.object_store.add_objects(blobs)
        index.write()
        tree = index.commit(repo.object_store)
        repo.get_worktree().commit(message=b"bench: seed", tree=tree)
    finally:
        repo.close()


# ---------------------------------------------------------------------------- counting


class Counter:
    """Counts the HTTP requests a connector sends, at its session's transport
    adapters: every request on the wire (redirects and auth retries too) is
    one, and nothing is faked; the real server answers."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.seconds: list[float] = []  # each request's round trip (the server's time)

    def watch(self, session: Any) -> Counter:
        seen: set[int] = set()
        for adapter in list(session.adapters.values()):
            if id(adapter) in seen:
                continue
            seen.add(id(adapter))
            inner = adapter.send

            def send(request: Any, *args: Any, _inner: Any = inner, **kwargs: Any) -> Any:
                path = urlsplit(str(request.url)).path
                self.requests.append(f"{request.method} {path}")
                t0 = time.perf_counter()
                try:
                    return _inner(request, *args, **kwargs)
                finally:
                    self.seconds.append(time.perf_counter() - t0)

            adapter.send = send
        return self

    def __len__(self) -> int:
        return len(self.requests)

    def mark(self) -> int:
        return len(self.requests)

    def since(self, mark: int) -> list[str]:
        return self.requests[mark:]

    def seconds_since(self, mark: int) -> float:
        return sum(self.seconds[mark:])


def user_adds_note_line(server: DavServer, href: str, line: str) -> None:
    """Another client (the user's phone) adds a line under the notes of an
    event, with If-Match, as tests/cli_env.py's user_edit does."""
    s = http()
    try:
        url = server.base + href
        got = s.get(url, timeout=30)
        got.raise_for_status()
        cal = icalendar.Calendar.from_ical(got.content.decode("utf-8"))
        for comp in cal.walk("VEVENT"):
            comp["DESCRIPTION"] = icalendar.vText(str(comp["DESCRIPTION"]) + line + "\n")
        put = s.put(url, data=cal.to_ical(), timeout=30,
                    headers={"If-Match": got.headers["ETag"],
                             "Content-Type": "text/calendar; charset=utf-8"})
        assert put.status_code in (201, 204), put.text
    finally:
        s.close()
