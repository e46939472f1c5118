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
from datetime import datetime

from syncd.model import Contact
from syncd.settings import Config
from syncd.timeutil import iso, parse_iso

SOURCE = "interview"


def detect_interviews(db: sqlite3.Connection, cfg: Config, now: datetime) -> int:
    """Record ended interviews' attendees; returns how many were new."""
    needle = cfg.interviews.title_contains.lower()
    if not needle:
        return 0
    me = set(cfg.interviews.me)
    if cfg.calendar and cfg.calendar.username and "@" in cfg.calendar.username:
        me.add(cfg.calendar.username.lower())
    new = 0
    rows = db.execute(
        "SELECT ref, uid, summary, start, end, attendees FROM events "
        "WHERE syncd_id IS NULL AND instr(lower(summary), ?) > 0", (needle,)).fetchall()
    for ev in rows:
        end = parse_iso(ev["end"])
        if end > now:
            continue
        for address in json.loads(ev["attendees"]):
            email = address.strip().lower()
            if not email or email in me:
                continue
            contact_id = _contact_for(db, email, now)
            key = f"interview:{ev['uid']}:{email}"
            cur = db.execute(
                "INSERT OR IGNORE INTO entries(key, contact_id, followup_id, kind, at, value, "
                "note, origin) VALUES(?,?,NULL,'interview',?,?,?,'calendar')",
                (key, contact_id, iso(end), ev["start"], ev["summary"]))
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
