"""The two ports the core talks through. Connectors implement them.

Every method documents the `syncd.errors` type it raises; connectors translate
their library's exceptions so the core never imports caldav, google or msal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol, TypeVar

from syncd.errors import RemoteError
from syncd.model import ContactBatch, EventChanges, EventDraft, RemoteEvent

T = TypeVar("T")


class ContactSource(Protocol):
    """A place contacts come from (file, CardDAV, Google, Outlook)."""

    name: str
    kind: str

    def read(self, cursor: str | None) -> ContactBatch:
        """Contacts changed since `cursor` (None: all of them, `full=True`).

        An expired cursor is handled inside: the source re-reads in full and
        returns `full=True`. Malformed entries are skipped and listed in
        `problems`. Raises `RemoteError` (or `AuthError`) when the source as a
        whole cannot be read; the core then keeps the previous state.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class Calendar(Protocol):
    """The calendar follow-ups are written into."""

    kind: str
    # How many checked creates `create_many` sends in one request (1: the
    # API has no batch, and the core creates one event at a time).
    batch_size: int

    def url(self) -> str:
        """A URL or identifier the user can add to a client (shown by the demo)."""
        ...

    def changes(self, cursor: str | None) -> EventChanges:
        """Events changed or deleted since `cursor`, with the new cursor.

        None, or a cursor the server rejects, gives every event with
        `full=True` (the connector catches the rejection itself). Raises
        `RemoteError` when the calendar cannot be read.
        """
        ...

    def get(self, uid: str) -> RemoteEvent | None:
        """The event with this UID, or None."""
        ...

    def create(self, draft: EventDraft, *, checked: bool = False) -> RemoteEvent:
        """Create the event; never overwrites (`If-None-Match: *` or the API's
        equivalent). Raises `AlreadyExists` when an event with this identity is
        already there (a retried create after a crash).

        `checked`: the caller knows no earlier try exists and the calendar's
        change feed holds no event with this identity, so a backend may skip
        the look-up it would otherwise make before creating (a request per
        event on Google and Graph). The remote's own guard (If-None-Match, a
        client-chosen id, a transactionId) still applies."""
        ...

    def create_many(self, drafts: list[EventDraft]) -> list[RemoteEvent | RemoteError]:
        """`create(d, checked=True)` for each draft, in batches of
        `batch_size` per request where the API offers batching. Each result
        is the event or the error that create would have raised (e.g.
        `AlreadyExists`)."""
        ...

    def update(self, ref: str, etag: str, draft: EventDraft) -> RemoteEvent:
        """Replace the event at `ref` only if its ETag is still `etag`.

        Raises `PreconditionFailed` on a changed ETag, `NotFound` when gone.
        """
        ...

    def delete(self, ref: str, etag: str) -> None:
        """Delete the event at `ref` only if its ETag is still `etag`.

        Raises `PreconditionFailed` on a changed ETag; a missing event is fine.
        """
        ...

    def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """Busy intervals from the configured `busy_calendars` (not the target
        calendar, whose events the core already knows from `changes`)."""
        ...

    def busy_events(self, start: datetime, end: datetime) -> list[RemoteEvent]:
        """The events themselves (summary, attendees) of the `busy_calendars`
        overlapping the window: interviews there get thank-you follow-ups.
        Raises like `busy`."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def create_one_by_one(cal: Calendar, drafts: list[EventDraft]) -> list[RemoteEvent | RemoteError]:
    """`create_many` for an API without batching."""
    out: list[RemoteEvent | RemoteError] = []
    for d in drafts:
        try:
            out.append(cal.create(d, checked=True))
        except RemoteError as e:
            out.append(e)
    return out


def find_busy_calendar(name: str, calendars: Callable[[bool], Iterable[T]],
                       name_of: Callable[[T], str]) -> T:
    """The calendar called `name` among `calendars(refresh)`: the cached list,
    then a fresh one; else a RemoteError naming the calendars there are."""
    for refresh in (False, True):
        for c in calendars(refresh):
            if name_of(c) == name:
                return c
    available = sorted({name_of(c) for c in calendars(False)})
    raise RemoteError(
        f"busy calendar {name!r} not found; available calendars: "
        + (", ".join(repr(n) for n in available) or "none"),
        hint="fix calendar.busy_calendars in the config",
        retryable=False,
    )
