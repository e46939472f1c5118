"""Reconcile calendar changes into state: note lines become attempts and
commands; moves, deletions and removed markers become follow-up states.

Runs inside the caller's transaction, together with the calendar cursor.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from syncd import notes
from syncd.model import Channel, EventChanges, RemoteEvent
from syncd.settings import Config
from syncd.timeutil import iso, parse_iso

LIVE = ("live", "creating")


@dataclass
class ReconcileStats:
    events_seen: int = 0
    attempts_read: int = 0
    unparsed: int = 0


def apply_changes(db: sqlite3.Connection, changes: EventChanges, cfg: Config) -> ReconcileStats:
    stats = ReconcileStats()
    listed: set[str] = set()
    for ev in changes.events:
        listed.add(ev.ref)
        stats.events_seen += 1
        upsert_event(db, ev)
        _reconcile_event(db, ev, cfg, stats)
    gone = set(changes.deleted)
    if changes.full:
        # A full listing: whatever we knew and is not listed is gone.
        known = {r[0] for r in db.execute("SELECT ref FROM events")}
        gone |= known - listed
    for ref in sorted(gone):
        _event_deleted(db, ref)
    return stats


def upsert_event(db: sqlite3.Connection, ev: RemoteEvent) -> None:
    db.execute(
        "INSERT INTO events(ref, uid, syncd_id, etag, start, end, summary, attendees) "
        "VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(ref) DO UPDATE SET uid=excluded.uid, "
        "syncd_id=excluded.syncd_id, etag=excluded.etag, start=excluded.start, "
        "end=excluded.end, summary=excluded.summary, attendees=excluded.attendees",
        (ev.ref, ev.uid, ev.syncd_id, ev.etag, iso(ev.start), iso(ev.end), ev.summary,
         json.dumps(list(ev.attendees))),
    )


def _find_followup(db: sqlite3.Connection, ev: RemoteEvent) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM followups WHERE ref = ?", (ev.ref,)
    ).fetchone()
    if row is None and ev.syncd_id:
        row = db.execute("SELECT * FROM followups WHERE id = ?", (ev.syncd_id,)).fetchone()
    return row


def _reconcile_event(db: sqlite3.Connection, ev: RemoteEvent, cfg: Config,
                     stats: ReconcileStats) -> None:
    fu = _find_followup(db, ev)
    if fu is None or fu["status"] in ("released", "cancelled"):
        return  # not ours (or no longer ours): never touched
    if ev.syncd_id != fu["id"]:
        # The user removed our marker: the event is theirs now. Keep its
        # attempts, never touch it again; the planner makes a new follow-up.
        db.execute("UPDATE followups SET status='released', ref=NULL WHERE id=?", (fu["id"],))
        return
    if fu["etag"] == ev.etag and fu["ref"] == ev.ref:
        return  # our own write coming back
    fu = _resolve_intent(db, fu, ev)
    moved = parse_iso(fu["start"]) != ev.start
    split = notes.split(ev.description, fu["block"])
    user_tz = ZoneInfo(cfg.timezone)
    ctx = notes.LineContext(
        channel=Channel(fu["channel"]),
        event_start=ev.start.astimezone(user_tz),
        work_start=cfg.working_hours.start,
        work_end=cfg.working_hours.end,
    )
    parsed = notes.parse_notes(split.user_lines(), ctx, scope=fu["id"])
    handled = _store_entries(db, fu, parsed, stats)
    status = fu["status"]
    if handled and status in LIVE:
        status = "done"
    elif not handled and status == "done":
        # The user deleted the lines that closed it: live again if it is still
        # the contact's latest follow-up, else a lapsed record.
        latest = db.execute("SELECT MAX(seq) FROM followups WHERE contact_id=?",
                            (fu["contact_id"],)).fetchone()[0]
        status = "live" if latest == fu["seq"] else "lapsed"
    touched = int(bool(fu["user_touched"]) or moved or not split.is_empty())
    db.execute(
        "UPDATE followups SET ref=?, etag=?, start=?, end=?, description=?, status=?, "
        "user_touched=?, user_moved=? WHERE id=?",
        (ev.ref, ev.etag, iso(ev.start), iso(ev.end), ev.description, status, touched,
         int(bool(fu["user_moved"]) or moved), fu["id"]),
    )


def _resolve_intent(db: sqlite3.Connection, fu: sqlite3.Row, ev: RemoteEvent) -> sqlite3.Row:
    """A write syncd recorded as intent but whose commit a crash prevented:
    if the event shows it landed, it is syncd's own (promote the intended
    block, times and summary); either way the intent is settled now."""
    if not fu["pending"]:
        return fu
    intent = json.loads(fu["pending"])
    landed = ev.summary == intent.get("summary") and (
        "start" not in intent or parse_iso(intent["start"]) == ev.start)
    if landed and intent["op"] == "update":
        db.execute("UPDATE followups SET start=?, end=?, summary=?, title=?, block=?, basis=? "
                   "WHERE id=?", (intent["start"], intent["end"], intent["summary"],
                                  intent["title"], intent["block"], intent["basis"], fu["id"]))
    elif landed and intent["op"] == "history":
        db.execute("UPDATE followups SET summary=? WHERE id=?", (intent["summary"], fu["id"]))
    db.execute("UPDATE followups SET pending=NULL WHERE id=?", (fu["id"],))
    row: sqlite3.Row = db.execute("SELECT * FROM followups WHERE id=?", (fu["id"],)).fetchone()
    return row


def _store_entries(db: sqlite3.Connection, fu: sqlite3.Row, parsed: list[notes.ParsedLine],
                   stats: ReconcileStats) -> bool:
    """Replace the follow-up's note entries with what the notes say now.

    Keys are stable per line, so this is an upsert-and-prune: re-reading the
    same notes changes nothing, an edited line replaces its entries, a deleted
    line's entries go. Returns whether the follow-up was handled (an attempt
    or a command closed it).
    """
    keep: set[str] = set()
    handled = False
    for line in parsed:
        if line.unparsed:
            keep.add(line.key)
            stats.unparsed += 1
            _put(db, line.key, fu, "unparsed", None, None, None, None, line, False)
            continue
        for n, e in enumerate(line.entries):
            key = f"{line.key}:{n}"
            keep.add(key)
            if isinstance(e, notes.AttemptEntry):
                handled = True
                stats.attempts_read += 1
                ch = (e.channel or Channel(fu["channel"])).value
                _put(db, key, fu, "attempt", iso(e.at), ch, e.outcome.value, None, line,
                     e.time_inferred)
            elif isinstance(e, notes.CommandEntry):
                handled = True
                until = iso(e.until) if e.until else None
                _put(db, key, fu, "command", until, None, None, e.kind, line, False)
            elif isinstance(e, notes.NewsEntry):
                _put(db, key, fu, "news", None, None, None, e.text, line, False)
            else:
                _put(db, key, fu, "interview", iso(e.at), None, None, None, line, False)
    old = [r[0] for r in db.execute(
        "SELECT key FROM entries WHERE followup_id=? AND origin='notes'", (fu["id"],))]
    for key in old:
        if key not in keep:
            db.execute("DELETE FROM entries WHERE key=?", (key,))
    return handled


def _put(db: sqlite3.Connection, key: str, fu: sqlite3.Row, kind: str, at: str | None,
         channel: str | None, outcome: str | None, value: str | None,
         line: notes.ParsedLine, inferred: bool) -> None:
    db.execute(
        "INSERT INTO entries(key, contact_id, followup_id, kind, at, channel, outcome, value, "
        "note, time_inferred, origin, pos) VALUES(?,?,?,?,?,?,?,?,?,?, 'notes', ?) "
        "ON CONFLICT(key) DO UPDATE SET at=excluded.at, channel=excluded.channel, "
        "outcome=excluded.outcome, value=excluded.value, note=excluded.note, "
        "time_inferred=excluded.time_inferred, pos=excluded.pos",
        (key, fu["contact_id"], fu["id"], kind, at, channel, outcome, value, line.text,
         int(inferred), line.pos),
    )


def _event_deleted(db: sqlite3.Connection, ref: str) -> None:
    db.execute("DELETE FROM events WHERE ref=?", (ref,))
    fu = db.execute("SELECT id, status, pending FROM followups WHERE ref=?", (ref,)).fetchone()
    if fu is None:
        return
    if fu["pending"] and json.loads(fu["pending"])["op"] == "delete":
        # syncd's own delete, whose commit a crash prevented.
        db.execute("UPDATE followups SET status='cancelled', ref=NULL, pending=NULL WHERE id=?",
                   (fu["id"],))
        return
    # Deleted by the user: treated as skip, never resurrected. A done one keeps
    # its attempts (the user's log is not thrown away with the event).
    status = "deleted" if fu["status"] in LIVE else fu["status"]
    db.execute("UPDATE followups SET status=?, ref=NULL WHERE id=?", (status, fu["id"]))
