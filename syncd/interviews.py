"""Interviews: after an interview ends, thank each person you met (the
article: do it even if you are no longer interested).

An event in the target calendar whose title contains `interviews.match
.title_contains` and that syncd does not own is an interview. Once it has
ended, each attendee other than you gets an `interview` entry; attendees who
are not contacts yet become contacts of source `interview`. The planner turns
an interview entry into a thank-you e-mail follow-up within
`thank_you_within`, then moves the person to `interviews.then`.

Runs inside the calendar transaction; entry keys make it idempotent.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from syncd.model import Contact, RemoteEvent
from syncd.settings import Config
from syncd.timeutil import iso, parse_iso

SOURCE = "interview"


def detect_interviews(db: sqlite3.Connection, cfg: Config, now: datetime,
                      elsewhere: Sequence[RemoteEvent] = ()) -> int:
    """Record ended interviews' attendees, from the target calendar's events
    (known in the store) and `elsewhere` (events of the busy calendars);
    returns how many were new."""
    needle = cfg.interviews.title_contains.lower()
    if not needle:
        return 0
    me = set(cfg.interviews.me)
    if cfg.calendar and cfg.calendar.username and "@" in cfg.calendar.username:
        me.add(cfg.calendar.username.lower())
    new = 0
    rows = [(r["uid"], r["summary"], r["start"], parse_iso(r["end"]), json.loads(r["attendees"]))
            for r in db.execute(
                "SELECT uid, summary, start, end, attendees FROM events "
                "WHERE syncd_id IS NULL AND instr(lower(summary), ?) > 0", (needle,))]
    rows += [(e.uid, e.summary, iso(e.start), e.end, list(e.attendees)) for e in elsewhere
             if e.syncd_id is None and needle in e.summary.lower()]
    # Attendees recorded in an earlier cycle are not looked up again: finding
    # the contact for an address reads every contact, and this runs each cycle.
    known = {str(r[0]) for r in db.execute(
        "SELECT key FROM entries WHERE kind='interview' AND origin='calendar'")}
    for uid, summary, start, end, attendees in rows:
        if end > now:
            continue
        for address in attendees:
            email = address.strip().lower()
            if not email or email in me:
                continue
            key = f"interview:{uid}:{email}"
            if key in known:
                continue
            contact_id = _contact_for(db, email, now)
            cur = db.execute(
                "INSERT OR IGNORE INTO entries(key, contact_id, followup_id, kind, at, value, "
                "note, origin) VALUES(?,?,NULL,'interview',?,?,?,'calendar')",
                (key, contact_id, iso(end), start, summary))
            new += cur.rowcount
    return new


def _contact_for(db: sqlite3.Connection, email: str, now: datetime) -> str:
    """The contact with this address, else a new one of source `interview`."""
    for row in db.execute("SELECT id, data FROM contacts WHERE removed=0 AND instr(lower(data), ?)",
                          (email,)):
        if email in (e.lower() for e in Contact.from_json(row["data"]).emails):
            return str(row["id"])
    local = email.split("@", 1)[0]
    name = " ".join(p.capitalize() for p in local.replace("_", ".").replace("-", ".").split("."))
    c = Contact(source=SOURCE, uid=email, name=name or email, emails=(email,))
    db.execute(
        "INSERT OR IGNORE INTO contacts(id, source, name, data, fingerprint, removed, first_seen) "
        "VALUES(?,?,?,?,?,0,?)", (c.id, c.source, c.name, c.to_json(), c.fingerprint(), iso(now)))
    return c.id


def lookback(cfg: Config) -> timedelta:
    """How far back busy calendars are searched for ended interviews: the
    thank-you window plus a day (later ones are too late to thank)."""
    return timedelta(seconds=cfg.interviews.thank_you_within.seconds()) + timedelta(days=1)

