"""Value types shared by the core and the connectors (frozen dataclasses).

Nothing here does I/O; the ports in `syncd.ports` speak in these types.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field, fields
from datetime import datetime


class Outcome(enum.StrEnum):
    NO_ANSWER = "no_answer"
    VOICEMAIL = "voicemail"
    GATEKEEPER = "gatekeeper"
    REACHED = "reached"
    SENT = "sent"
    REPLIED = "replied"
    WRONG_NUMBER = "wrong_number"


class Channel(enum.StrEnum):
    CALL = "call"
    EMAIL = "email"
    MESSAGE = "message"
    MEETING = "meeting"


class ContactState(enum.StrEnum):
    ACTIVE = "active"
    REACHED = "reached"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Contact:
    """One person as a source reports them.

    `uid` is the source's own stable key (vCard UID, CSV row key, resource name);
    the core's contact id is `f"{source}:{uid}"`.
    """

    source: str
    uid: str
    name: str
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    company: str = ""
    title: str = ""
    timezone: str = ""
    labels: tuple[str, ...] = ()
    note: str = ""
    # Per-contact overrides a source may carry (e.g. custom fields `syncd-cadence`).
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        return f"{self.source}:{self.uid}"

    def fingerprint(self) -> str:
        """Digest of every field: equal digests mean nothing changed."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:32]

    def to_json(self) -> str:
        # The same text as json.dumps(asdict(self)) (tuples become lists either
        # way) without asdict's recursive copy: import costs 5x less.
        return json.dumps({f: getattr(self, f) for f in _CONTACT_FIELDS},
                          sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str) -> Contact:
        d = json.loads(raw)
        for k in ("emails", "phones", "labels"):
            d[k] = tuple(d.get(k, ()))
        d["overrides"] = tuple(tuple(p) for p in d.get("overrides", ()))
        return cls(**d)


_CONTACT_FIELDS = tuple(f.name for f in fields(Contact))


@dataclass(frozen=True)
class SourceProblem:
    """A malformed entry a source skipped: reported with file and line."""

    where: str  # "path:line" or a URL
    message: str


@dataclass(frozen=True)
class ContactBatch:
    """What a contact source returns for one read.

    full=True: `contacts` is the complete set; anything not in it was removed.
    full=False: `contacts` are upserts and `removed` lists source uids gone since
    the cursor. `cursor` is stored in the same transaction as these rows.
    """

    contacts: tuple[Contact, ...]
    removed: tuple[str, ...] = ()
    cursor: str | None = None
    full: bool = True
    problems: tuple[SourceProblem, ...] = ()


@dataclass(frozen=True)
class RemoteEvent:
    """An event as a calendar holds it.

    `ref` is the calendar's handle for the event (CalDAV href, Google/Graph id);
    `syncd_id` is our marker (X-SYNCD-ID / extended property), None for events
    syncd does not own. `description` is plain text (HTML bodies converted).
    """

    ref: str
    uid: str
    etag: str
    start: datetime
    end: datetime
    summary: str = ""
    description: str = ""
    syncd_id: str | None = None
    attendees: tuple[str, ...] = ()


@dataclass(frozen=True)
class EventChanges:
    """Changes since a cursor. full=True: `events` is the whole calendar (the
    cursor was missing or expired) and anything absent from it is gone."""

    events: tuple[RemoteEvent, ...]
    deleted: tuple[str, ...] = ()  # refs
    cursor: str | None = None
    full: bool = False


@dataclass(frozen=True)
class EventDraft:
    """An event syncd wants in the calendar. `start`/`end` are zone-aware and are
    written with the TZID of their tzinfo (a `zoneinfo.ZoneInfo`)."""

    syncd_id: str
    uid: str
    summary: str
    start: datetime
    end: datetime
    description: str
    categories: tuple[str, ...] = field(default=("syncd",))


@dataclass(frozen=True)
class Attempt:
    """One logged attempt. `key` identifies it across re-reads of the notes."""

    key: str
    contact_id: str
    at: datetime
    channel: Channel
    outcome: Outcome
    note: str = ""
    followup_id: str | None = None
    time_inferred: bool = False
    origin: str = "notes"  # "notes" or "cli"
