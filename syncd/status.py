"""`status`, `attempts` and `log`: read (and for `log`, write) the state.

These never take the daemon's lock: SQLite in WAL mode lets them read while
`syncd run` writes, and `log`'s single insert waits on SQLite's busy timeout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from syncd import learning, retry
from syncd.cycle import load_inputs
from syncd.errors import UserError
from syncd.model import Channel, Outcome
from syncd.planner import AttemptRec, plan, pool_stats
from syncd.settings import Config
from syncd.store import Store
from syncd.timeutil import iso, parse_iso

LIVE = ("planned", "live", "creating")


def collect(cfg: Config, now_fn: Callable[[], datetime] | None = None) -> dict[str, Any]:
    now = now_fn() if now_fn else datetime.now(ZoneInfo("UTC"))
    store = Store(cfg.state_dir)
    try:
        db = store.db
        inputs, busy, counts = load_inputs(db, cfg)
        pool = pool_stats(inputs, cfg)
        plans = {p.contact_id: p for p in plan(inputs, busy, counts, now, cfg, pool)}
        contacts = []
        for ci in inputs:
            cid = ci.contact.id
            p = plans[cid]
            fu = db.execute(
                "SELECT * FROM followups WHERE contact_id=? AND status IN ('planned','live',"
                "'creating') ORDER BY seq DESC LIMIT 1", (cid,)).fetchone()
            last = max(ci.attempts, key=lambda a: a.at, default=None)
            unparsed = [r[0] for r in db.execute(
                "SELECT e.note FROM entries e JOIN followups f ON f.id = e.followup_id "
                "WHERE e.contact_id=? AND e.kind='unparsed' ORDER BY f.seq, e.pos",
                (cid,))]
            contacts.append({
                "id": cid,
                "name": ci.contact.name,
                "source": ci.contact.source,
                "cadence": p.cadence,
                "state": p.state.value,
                "timezone": p.timezone,
                "timezone_source": p.timezone_source,
                "attempts": len(ci.attempts),
                "last_attempt": None if last is None else {
                    "at": iso(last.at.astimezone(ZoneInfo(cfg.timezone))),
                    "channel": last.channel.value, "outcome": last.outcome.value},
                "next_followup": None if fu is None or p.followup is None else {
                    "start": iso(parse_iso(fu["start"]).astimezone(ZoneInfo(cfg.timezone))),
                    "channel": fu["channel"],
                    "event_uid": fu["uid"] if fu["status"] != "planned" else None,
                },
                "overdue": bool(fu is not None and parse_iso(fu["end"]) < now),
                "best_slot": best_slot(ci.attempts, p.timezone, pool),
                "slot_note": p.followup.slot_note if p.followup else "",
                "removed": ci.removed,
                "unparsed": unparsed,
                "note": p.note,
            })
        sources = []
        by_name = {r["name"]: r for r in db.execute("SELECT * FROM sources")}
        backoffs = retry.load(db)
        zone = ZoneInfo(cfg.timezone)

        def next_try(key: str) -> str | None:
            # When the daemon tries a failed remote again (None: next cycle).
            b = backoffs.get(key)
            return None if b is None else iso(b.next_try.astimezone(zone))
        for s in cfg.contacts:
            r = by_name.get(s.name)
            sources.append({
                "name": s.name, "kind": s.type,
                "last_sync": r["last_sync"] if r else None,
                "last_error": r["last_error"] if r else None,
                # A file is read again every cycle; only remote sources back off.
                "next_try": None if s.type == "file" else next_try(retry.key_for_source(s.name)),
                "skipped": [{"where": w, "problem": m}
                            for w, m in json.loads(r["problems"])] if r else [],
            })
        return {"contacts": contacts, "sources": sources,
                "calendar": {"type": cfg.calendar.type if cfg.calendar else None,
                             "last_error": store.kv_get("calendar.error"),
                             "next_try": next_try(retry.KEY_CALENDAR)}}
    finally:
        store.close()


def best_slot(attempts: tuple[AttemptRec, ...], tz: str,
              pool: learning.Model) -> dict[str, Any] | None:
    """The slot (in the contact's zone) with the best posterior reach rate,
    with the evidence behind it."""
    ev = learning.best(learning.stats(attempts, ZoneInfo(tz)), pool)
    if ev is None:
        return None
    return {"slot": ev.slot.name, "from": f"{ev.slot.start:%H:%M}", "to": f"{ev.slot.end:%H:%M}",
            "attempts": ev.calls, "reached": ev.reached, "reach_rate": round(ev.rate, 3),
            "probability": round(ev.probability, 3)}


def render_text(data: dict[str, Any]) -> str:
    lines = []
    rows = sorted(data["contacts"], key=lambda c: (
        not c["overdue"], (c["next_followup"] or {}).get("start") or "9999", c["name"]))
    for c in rows:
        nxt = c["next_followup"]
        when = f"{nxt['start'][:16].replace('T', ' ')} {nxt['channel']}" if nxt else "-"
        flag = "OVERDUE " if c["overdue"] else ""
        lines.append(f"{flag}{c['name']:<28} {c['state']:<8} {c['cadence']:<14} "
                     f"attempts {c['attempts']:<3} next {when}")
        for u in c["unparsed"]:
            lines.append(f"    unparsed: {u}")
    lines.append("")
    for s in data["sources"]:
        err = f"  ERROR: {s['last_error']}" if s["last_error"] else ""
        nxt = f"  next try {s['next_try']}" if s.get("next_try") else ""
        lines.append(f"source {s['name']} ({s['kind']}): last sync {s['last_sync'] or 'never'}"
                     f"{err}{nxt}")
        for p in s["skipped"]:
            lines.append(f"    skipped {p['where']}: {p['problem']}")
    if data["calendar"]["last_error"]:
        nxt = data["calendar"].get("next_try")
        lines.append(f"calendar: ERROR: {data['calendar']['last_error']}"
                     + (f"  next try {nxt}" if nxt else ""))
    return "\n".join(lines)


def attempts(cfg: Config, contact: str | None) -> list[dict[str, Any]]:
    tz = ZoneInfo(cfg.timezone)
    store = Store(cfg.state_dir)
    try:
        rows = store.db.execute(
            "SELECT e.*, c.name FROM attempts e JOIN contacts c ON c.id = e.contact_id "
            "ORDER BY e.at, e.key").fetchall()
        uids = {r["id"]: r["uid"] for r in store.db.execute("SELECT id, uid FROM followups")}
    finally:
        store.close()
    out = []
    for r in rows:
        if contact and contact.lower() not in r["name"].lower() \
                and contact.lower() not in r["contact_id"].lower():
            continue
        out.append({
            "contact_id": r["contact_id"], "contact": r["name"],
            "at": iso(parse_iso(r["at"]).astimezone(tz)), "channel": r["channel"],
            "outcome": r["outcome"], "note": r["note"],
            "followup_uid": uids.get(r["followup_id"]) if r["followup_id"] else None,
            "time_inferred": bool(r["time_inferred"]),
        })
    return out


def agenda(cfg: Config) -> list[dict[str, Any]]:
    """Every follow-up from today on, written or still planned, by time."""
    tz = ZoneInfo(cfg.timezone)
    today = datetime.now(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    store = Store(cfg.state_dir)
    try:
        rows = store.db.execute(
            "SELECT f.*, c.name FROM followups f JOIN contacts c ON c.id = f.contact_id "
            "WHERE f.status IN ('planned', 'live', 'creating', 'done') ORDER BY f.start"
        ).fetchall()
    finally:
        store.close()
    return [{"start": iso(parse_iso(r["start"]).astimezone(tz)), "summary": r["summary"],
             "contact": r["name"], "channel": r["channel"],
             "status": {"creating": "live"}.get(r["status"], r["status"]),
             "event_uid": r["uid"] if r["status"] != "planned" else None}
            for r in rows if parse_iso(r["start"]) >= today]


def render_agenda(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "nothing planned"
    out, day = [], ""
    for r in rows:
        d = parse_iso(r["start"])
        if f"{d:%a %b %d}" != day:
            day = f"{d:%a %b %d}"
            out.append(day)
        mark = {"planned": " (not in the calendar yet)", "done": " (done)"}.get(r["status"], "")
        out.append(f"  {d:%H:%M}  {r['summary']}{mark}")
    return "\n".join(out)


def render_attempts(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no attempts logged yet"
    return "\n".join(
        f"{r['at'][:16].replace('T', ' ')}{'~' if r['time_inferred'] else ' '} "
        f"{r['contact']:<28} {r['channel']:<7} {r['outcome']:<12} {r['note']}" for r in rows)


_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")


def log_attempt(cfg: Config, contact: str, outcome: str, at_text: str | None, note: str,
                channel: str | None, now: datetime) -> dict[str, str]:
    valid = [o.value for o in Outcome]
    if outcome not in valid:
        raise UserError(f"unknown outcome {outcome!r}", hint=f"use one of: {', '.join(valid)}")
    tz = ZoneInfo(cfg.timezone)
    at = _parse_at(at_text, now, tz)
    store = Store(cfg.state_dir)
    try:
        db = store.db
        rows = db.execute("SELECT id, name FROM contacts WHERE removed=0").fetchall()
        exact = [r for r in rows if r["id"] == contact or r["name"].lower() == contact.lower()]
        found = exact or [r for r in rows if contact.lower() in r["name"].lower()]
        if len(found) != 1:
            names = ", ".join(sorted(r["name"] for r in found)) or "none"
            raise UserError(f"contact {contact!r} matches {len(found)} contacts ({names})",
                            hint="give more of the name, or the id from `syncd status --json`")
        cid, name = found[0]["id"], found[0]["name"]
        live = db.execute("SELECT channel FROM followups WHERE contact_id=? ORDER BY seq DESC "
                          "LIMIT 1", (cid,)).fetchone()
        ch = channel or (live["channel"] if live else Channel.CALL.value)
        key = f"cli:{cid}:{iso(at)}:{outcome}"
        with store.tx() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO entries(key, contact_id, followup_id, kind, at, channel, "
                "outcome, note, time_inferred, origin) VALUES(?,?,NULL,'attempt',?,?,?,?,0,'cli')",
                (key, cid, iso(at), ch, outcome, note))
    finally:
        store.close()
    return {"contact": name, "outcome": outcome, "at": iso(at)}


def _parse_at(text: str | None, now: datetime, tz: ZoneInfo) -> datetime:
    if not text:
        return now.replace(microsecond=0)
    m = _HHMM.match(text.strip())
    try:
        if m:
            return now.replace(hour=int(m[1]), minute=int(m[2]), second=0, microsecond=0)
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"--at {text!r}: not a time",
                        hint="use HH:MM (today) or YYYY-MM-DD HH:MM") from None
    return at if at.tzinfo else at.replace(tzinfo=tz)
