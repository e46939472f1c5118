"""Opaque page and sync tokens, bound to the request that produced them.

Both Google APIs say the same two things about their tokens (People
connections.list and Calendar events.list reference pages; research
protocols.md §1.2):

* a page token is only valid with the very parameters of the request that
  returned it ("all other parameters must match the first call"); and
* a sync token is issued only on the last page, marks a point in the change
  history, and expires.

A page token here points at a server-side snapshot of the whole result, so a
listing that spans several pages is consistent even while the data changes;
the sync token on its last page marks the moment the snapshot was taken, so
changes made while the client paged are delivered again next time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


def binding(params: dict[str, list[str]], ignore: set[str]) -> str:
    """A digest of the request parameters that a token is bound to."""
    kept = sorted((k, sorted(v)) for k, v in params.items() if k not in ignore)
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()


def _opaque(prefix: bytes) -> str:
    return base64.urlsafe_b64encode(prefix + secrets.token_bytes(15)).decode("ascii")


def well_formed(token: str, prefix: bytes) -> bool:
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    return len(raw) == len(prefix) + 15 and raw.startswith(prefix)


@dataclass
class Page:
    binding: str
    items: list[dict[str, Any]]
    offset: int
    snapshot_seq: int  # the change sequence the listing reflects
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sync:
    binding: str
    seq: int
    issued: datetime
    extra: dict[str, Any] = field(default_factory=dict)
    expired: bool = False


class Tokens:
    """Issues and resolves page and sync tokens. `prefix` makes each API's
    tokens look like its own (and lets a test forge a well-formed token)."""

    PAGE = b"\x0a"
    SYNC = b"\x08"

    def __init__(self) -> None:
        self.pages: dict[str, Page] = {}
        self.syncs: dict[str, Sync] = {}
        self._lock = threading.Lock()

    def new_page(self, page: Page) -> str:
        token = _opaque(self.PAGE)
        with self._lock:
            self.pages[token] = page
        return token

    def page(self, token: str) -> Page | None:
        with self._lock:
            return self.pages.get(token)

    def new_sync(self, sync: Sync) -> str:
        token = _opaque(self.SYNC)
        with self._lock:
            self.syncs[token] = sync
        return token

    def sync(self, token: str) -> Sync | None:
        with self._lock:
            return self.syncs.get(token)

    def forge_sync(self) -> str:
        """A token with the right shape that this server never issued (what a
        token pruned long ago looks like)."""
        return _opaque(self.SYNC)

    def sync_well_formed(self, token: str) -> bool:
        return well_formed(token, self.SYNC)

    def expire_all(self) -> None:
        with self._lock:
            for s in self.syncs.values():
                s.expired = True

    def expired(self, sync: Sync, now: datetime, ttl: timedelta) -> bool:
        return sync.expired or now - sync.issued > ttl
