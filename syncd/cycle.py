"""One sync cycle: import contacts → read calendar changes → reconcile →
plan → write, through the ports.

Crash safety: a create is recorded as intent (status `creating`, with the
exact event) before the remote write, and finished afterwards; a restart
replays unfinished intents first. Creates are idempotent on the remote side
(deterministic UID + `If-None-Match: *`), so a replay meets `AlreadyExists`
and adopts the event instead of duplicating it. Updates carry `If-Match`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog

from syncd import __version__, notes, render, retry
from syncd.errors import AlreadyExists, NotFound, PreconditionFailed, RemoteError
from syncd.interviews import detect_interviews, lookback
from syncd.model import (
    Channel,
    Contact,
    ContactBatch,
    EventChanges,
    EventDraft,
    Outcome,
    RemoteEvent,
)
from syncd.planner import (
    AttemptRec,
    CommandRec,
    ContactInput,
    Expiry,
    LiveRec,
    Plan,
    Planned,
    phone_zone_of,
    plan,
)
from syncd.ports import Calendar, ContactSource
from syncd.progress import ProgressFn, silent
from syncd.reconcile import apply_changes, upsert_event
from syncd.settings import Config
from syncd.store import INPUTS_GENERATION, Store
from syncd.timeutil import add_duration, iso, parse_iso

log = structlog.get_logger("syncd")
CAL_CURSOR = "calendar.cursor"
MAX_CONFLICT_RETRIES = 3
GHOST_TRIES = 3  # cycles a create may meet "exists" for an event not there
# Test hook (issue 7 grows it): called after every remote write and commit.
StepHook = Callable[[str], None]


@dataclass
class CycleResult:
    contacts_seen: int = 0
    contacts_changed: int = 0
    attempts_read: int = 0
    events_created: int = 0
    events_updated: int = 0
    events_deleted: int = 0
    failed_sources: list[str] = field(default_factory=list)
    calendar_error: str | None = None
    duration: float = 0.0
    requests: int = 0  # HTTP requests made (every retry counts)
    planned: bool = False  # False: nothing changed and the last plan still held

    @property
    def writes(self) -> int:
        return self.events_created + self.events_updated + self.events_deleted

    @property
    def ok(self) -> bool:
        return not self.failed_sources and self.calendar_error is None


class Cycle:
    def __init__(self, cfg: Config, store: Store, sources: list[ContactSource],
                 calendar: Calendar, now: Callable[[], datetime] | None = None,
                 step_hook: StepHook | None = None,
                 progress: ProgressFn | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.sources = sources
        self.calendar = calendar
        self.now = now or (lambda: datetime.now(ZoneInfo("UTC")))
        self.user_tz = ZoneInfo(cfg.timezone)
        self._hook = step_hook or (lambda _step: None)
        self._progress = progress or silent  # stage boundaries, for `syncd sync`

    def run(self) -> CycleResult:
        t0 = _time.monotonic()
        r0 = retry.requests_made()
        res = CycleResult()
        for i, src in enumerate(self.sources, 1):
            self.import_source(src, res)
            self._progress("contacts", i, len(self.sources))
        try:
            self._progress("calendar", 0, 1)
            self.read_calendar(res)
            self.finish_intents(res)
            self.write_plan(res)
            self.write_history(res)
        except RemoteError as e:
            res.calendar_error = e.render_line()
            log.error("calendar failed", error=e.message, hint=e.hint)
            with self.store.tx() as db:
                self.store.kv_set("calendar.error", res.calendar_error)
                retry.record_outcome(db, retry.KEY_CALENDAR, e, self.cfg.poll_interval.seconds())
        else:
            with self.store.tx() as db:
                db.execute("DELETE FROM kv WHERE key='calendar.error'")
                retry.record_outcome(db, retry.KEY_CALENDAR, None, 0)
        res.duration = _time.monotonic() - t0
        res.requests = retry.requests_made() - r0
        log.info("cycle", contacts=res.contacts_seen, changed=res.contacts_changed,
                 attempts_read=res.attempts_read, created=res.events_created,
                 updated=res.events_updated, deleted=res.events_deleted,
                 written=res.writes, requests=res.requests, planned=res.planned,
                 failed_sources=res.failed_sources, duration=round(res.duration, 3))
        return res

    # -- contacts -------------------------------------------------------------

    def import_source(self, src: ContactSource, res: CycleResult) -> None:
        db = self.store.db
        row = db.execute("SELECT cursor FROM sources WHERE name=?", (src.name,)).fetchone()
        cursor = row["cursor"] if row else None
        now = iso(self.now())
        try:
            batch = src.read(cursor)
        except RemoteError as e:
            res.failed_sources.append(src.name)
            log.error("source failed", source=src.name, error=e.message, hint=e.hint)
            with self.store.tx() as tx:
                _upsert_source(tx, src, cursor, None, e.render_line(), None)
                retry.record_outcome(tx, retry.key_for_source(src.name), e,
                                     self.cfg.poll_interval.seconds())
            return
        for p in batch.problems:
            log.warning("skipped contact entry", source=src.name, where=p.where,
                        problem=p.message)
        with self.store.tx() as tx:
            known = {r["id"]: r["fingerprint"] for r in tx.execute(
                "SELECT id, fingerprint FROM contacts WHERE source=? AND removed=0",
                (src.name,))}
            for c in batch.contacts:
                fp = c.fingerprint()
                res.contacts_seen += 1
                if known.get(c.id) == fp:
                    continue
                res.contacts_changed += 1
                tx.execute(
                    "INSERT INTO contacts(id, source, name, data, fingerprint, removed, "
                    "first_seen, phone_zone) VALUES(?,?,?,?,?,0,?,?) ON CONFLICT(id) DO UPDATE "
                    "SET name=excluded.name, data=excluded.data, "
                    "fingerprint=excluded.fingerprint, removed=0, "
                    "phone_zone=excluded.phone_zone",
                    (c.id, c.source, c.name, c.to_json(), fp, now, phone_zone_of(c.phones)),
                )
            gone = {f"{src.name}:{u}" for u in batch.removed}
            if batch.full:
                gone |= set(known) - {c.id for c in batch.contacts}
            for cid in gone:
                res.contacts_changed += 1
                tx.execute("UPDATE contacts SET removed=1 WHERE id=?", (cid,))
            _upsert_source(tx, src, batch.cursor, now, None,
                           _merge_problems(tx, src.name, batch))
            retry.record_outcome(tx, retry.key_for_source(src.name), None, 0)

    # -- calendar -------------------------------------------------------------

    def read_calendar(self, res: CycleResult) -> None:
        cursor = self.store.kv_get(CAL_CURSOR)
        changes = self.calendar.changes(cursor)
        now = self.now()
        elsewhere: list[RemoteEvent] = []
        if self.cfg.calendar and self.cfg.calendar.busy_calendars \
                and self.cfg.interviews.title_contains:
            elsewhere = self.calendar.busy_events(now - lookback(self.cfg), now)
        with self.store.tx() as db:
            stats = apply_changes(db, changes, self.cfg)
            self.store.kv_set(CAL_CURSOR, changes.cursor)
            detect_interviews(db, self.cfg, now, elsewhere)
        res.attempts_read += stats.attempts_read
        self._hook("read-calendar")

    def finish_intents(self, res: CycleResult) -> None:
        """Replay creates whose outcome a crash left unknown."""
        rows = self.store.db.execute(
            "SELECT * FROM followups WHERE status='creating' ORDER BY id").fetchall()
        for fu in rows:
            draft = _draft_from_row(fu, self.user_tz)
            self._create(fu["id"], draft, res)

    def _create(self, fid: str, draft: EventDraft, res: CycleResult, *,
                checked: bool = False) -> None:
        try:
            ev = self.calendar.create(draft, checked=checked)
            res.events_created += 1
        except AlreadyExists as e:
            self._adopt(fid, draft, e)
            return
        self._hook("create")
        self._commit_creates([(fid, ev)])

    def _adopt(self, fid: str, draft: EventDraft, err: AlreadyExists) -> None:
        """The create met an event with this identity (an earlier try made
        it): take that event, or handle a ghost."""
        found = self.calendar.get(draft.uid)
        if found is None:
            self._ghost(fid)
            raise err
        self._hook("create")
        self._commit_creates([(fid, found)])

    def _commit_creates(self, made: list[tuple[str, RemoteEvent]]) -> None:
        with self.store.tx() as db:
            for fid, ev in made:
                db.execute("UPDATE followups SET status='live', ref=?, etag=?, description=? "
                           "WHERE id=? AND status='creating'",
                           (ev.ref, ev.etag, ev.description, fid))
                upsert_event(db, ev)
        self._hook("commit-create")

    def _ghost(self, fid: str) -> None:
        """A create met 'already exists' but the event can't be found. Once
        it may be a fault on the way (the intent stays for the next cycle);
        when it persists, the id is taken by an event the user deleted after
        an earlier try created it (Google keeps deleted ids): a deletion is
        a skip, so the follow-up ends there."""
        row = self.store.db.execute("SELECT pending FROM followups WHERE id=?",
                                    (fid,)).fetchone()
        tries = json.loads(row["pending"]).get("ghost", 0) + 1 if row and row["pending"] else 1
        with self.store.tx() as db:
            if tries >= GHOST_TRIES:
                db.execute("UPDATE followups SET status='deleted', ref=NULL, pending=NULL "
                           "WHERE id=? AND status='creating'", (fid,))
            else:
                db.execute("UPDATE followups SET pending=? WHERE id=?",
                           (json.dumps({"op": "create", "ghost": tries}), fid))

    # -- planning and writing -------------------------------------------------

    def plans(self, expiry: Expiry | None = None) -> list[Plan]:
        inputs, busy, counts = load_inputs(self.store.db, self.cfg)
        now = self.now()
        if self._busy_elsewhere():
            end = add_duration(now.astimezone(self.user_tz), self.cfg.horizon) + timedelta(days=1)
            busy = busy + self.calendar.busy(now, end)
        return plan(inputs, busy, counts, now, self.cfg, expiry=expiry)

    def _busy_elsewhere(self) -> bool:
        return bool(self.cfg.calendar and self.cfg.calendar.busy_calendars)

    def write_plan(self, res: CycleResult) -> None:
        now = self.now()
        self._progress("plan", 0, 1)
        self._backfill_phone_zones()
        held = PlanHeld.of(self.store, self.cfg, now)
        if held.holds(self.store.kv_get(PLAN_HELD)):
            self._progress("write", 0, 0)
            return
        res.planned = True
        expiry = Expiry(now)
        todo = [p for p in self.plans(expiry)
                if p.retire or (p.followup is not None and p.followup.action != "keep")]
        # Follow-ups beyond the horizon are rows in the store only (nothing goes
        # to the calendar); with 10,000 contacts most follow-ups are these, and
        # in a cycle in which nothing changed they are as the store has them.
        planned = [(p, p.followup) for p in todo
                   if p.followup is not None and p.followup.action == "planned"]
        if planned:
            stored = {r[0]: (r[1], r[2]) for r in
                      self.store.db.execute("SELECT id, start, basis FROM followups")}
            planned = [(p, fu) for p, fu in planned
                       if stored.get(fu.id) != (iso(fu.start), fu.basis)]
        writes = [p for p in todo if p.retire or (
            p.followup is not None and p.followup.action in ("create", "move"))]
        # Only the contacts something is written for are decoded (none when idle).
        wanted = {p.contact_id for p, _fu in planned} | {
            p.contact_id for p in writes if p.followup is not None}
        contacts = {r["id"]: Contact.from_json(r["data"]) for r in
                    self.store.db.execute("SELECT id, data FROM contacts")
                    if r["id"] in wanted} if wanted else {}
        self._record_planned(planned, contacts)
        size = self.calendar.batch_size
        batch: list[tuple[Plan, Planned]] = []  # creates waiting to go in one request
        for i, p in enumerate(writes):
            self._progress("write", i, len(writes))
            if p.retire:
                self._retire(p.retire, now, res)
            fu = p.followup
            if fu is None:
                continue
            if fu.action == "create" and size > 1:
                batch.append((p, fu))
                if len(batch) == size:
                    self._create_batch(batch, contacts, now, res)
                    batch = []
            elif fu.action == "create":
                self._create_new(p, fu, contacts[p.contact_id], now, res)
            elif fu.action == "move":
                self._move(p, fu, contacts[p.contact_id], now, res)
        if batch:
            self._create_batch(batch, contacts, now, res)
        self._progress("write", len(writes), len(writes))
        # Nothing to write and nothing written: until the expiry, with the
        # same inputs, planning again would decide the same (the planner's
        # Expiry; busy times from other calendars are read fresh each plan).
        if not writes and not planned and not self._busy_elsewhere() and expiry.until:
            with self.store.tx():
                self.store.kv_set(PLAN_HELD, held.record(expiry.until))

    def _backfill_phone_zones(self) -> None:
        """Contacts imported before the store kept their phone's zone
        (migration 6) get it once."""
        rows = self.store.db.execute(
            "SELECT id, data FROM contacts WHERE phone_zone IS NULL").fetchall()
        if rows:
            with self.store.tx() as tx:
                tx.executemany("UPDATE contacts SET phone_zone=? WHERE id=?", [
                    (phone_zone_of(Contact.from_json(r["data"]).phones), r["id"])
                    for r in rows])

    def _render(self, p: Plan, fu: Planned, contact: Contact,
                now: datetime) -> tuple[str, str, str | None]:
        """Summary, syncd's block, and the news item the block suggests."""
        attempts = _attempt_recs(self.store.db, p.contact_id)
        news = (None if fu.kind == "thank_you"
                else _news_for(self.store.db, self.cfg, p.contact_id, fu.channel))
        r = render.RenderInput(contact, fu, attempts, p.timezone, news)
        return render.summary(r), render.block(r, now, self.cfg.caller_id), news

    def _record_planned(self, items: list[tuple[Plan, Planned]],
                        contacts: dict[str, Contact]) -> None:
        """Planned follow-ups whose time or basis changed: all in one
        transaction, not a commit (an fsync) each."""
        if not items:
            return
        rows = [(p, fu, render.summary(render.RenderInput(contacts[p.contact_id], fu, (),
                                                          p.timezone))) for p, fu in items]
        with self.store.tx() as tx:
            for p, fu, summary in rows:
                _upsert_followup(tx, p, fu, summary, "", "", "planned", None)

    def _create_new(self, p: Plan, fu: Planned, contact: Contact, now: datetime,
                    res: CycleResult) -> None:
        checked = self._record_intents([(p, fu)], {p.contact_id: contact}, now)
        self._hook("commit-intent")
        self._create(fu.id, self._draft(fu.id), res, checked=fu.id in checked)

    def _record_intents(self, items: list[tuple[Plan, Planned]], contacts: dict[str, Contact],
                        now: datetime) -> set[str]:
        """Record the creates as intents in one transaction; returns the ids
        of first tries (no earlier intent, no such event in the calendar's
        change feed), for which the backend may skip its look-up."""
        rendered = [(p, fu, *self._render(p, fu, contacts[p.contact_id], now))
                    for p, fu in items]
        checked: set[str] = set()
        with self.store.tx() as tx:
            for p, fu, summary, block, news in rendered:
                prior = tx.execute("SELECT status FROM followups WHERE id=?",
                                   (fu.id,)).fetchone()
                seen = tx.execute("SELECT 1 FROM events WHERE syncd_id=? LIMIT 1",
                                  (fu.id,)).fetchone()
                if (prior is None or prior["status"] != "creating") and seen is None:
                    checked.add(fu.id)
                _upsert_followup(tx, p, fu, summary, block, notes.compose(block), "creating",
                                 news)
        return checked

    def _draft(self, fid: str) -> EventDraft:
        row = self.store.db.execute("SELECT * FROM followups WHERE id=?", (fid,)).fetchone()
        return _draft_from_row(row, self.user_tz)

    def _create_batch(self, items: list[tuple[Plan, Planned]], contacts: dict[str, Contact],
                      now: datetime, res: CycleResult) -> None:
        """Creates in one request (the API's batch): intents in one commit,
        the batch, then the results in one commit. A crash anywhere leaves
        intents that the next cycle replays one by one, with look-ups."""
        checked = self._record_intents(items, contacts, now)
        self._hook("commit-intent")
        first = [self._draft(fu.id) for _p, fu in items if fu.id in checked]
        for _p, fu in items:
            if fu.id not in checked:
                self._create(fu.id, self._draft(fu.id), res)
        if not first:
            return
        results = self.calendar.create_many(first)
        self._hook("create")
        made = [(d.syncd_id, r) for d, r in zip(first, results, strict=True)
                if isinstance(r, RemoteEvent)]
        self._commit_creates(made)
        res.events_created += len(made)
        failed: RemoteError | None = None
        for d, r in zip(first, results, strict=True):
            if isinstance(r, AlreadyExists):
                self._adopt(d.syncd_id, d, r)
            elif isinstance(r, RemoteError) and failed is None:
                failed = r  # its intent stays: the next cycle replays it
        if failed is not None:
            raise failed

    def _move(self, p: Plan, fu: Planned, contact: Contact, now: datetime,
              res: CycleResult) -> None:
        summary, block, _news = self._render(p, fu, contact, now)

        def build(row: sqlite3.Row, remote_summary: str) -> EventDraft | None:
            if row["status"] not in ("live", "creating") or row["user_touched"]:
                return None  # the user acted on it meanwhile: plan again first
            user = notes.split(row["description"], row["block"])
            # A title the user edited is theirs (never changed back).
            title = remote_summary if remote_summary != row["summary"] else summary
            return EventDraft(fu.id, row["uid"], title, fu.start.astimezone(self.user_tz),
                              fu.end.astimezone(self.user_tz), notes.compose(block, user))

        def intent(draft: EventDraft) -> dict[str, str]:
            return {"op": "update", "start": iso(fu.start), "end": iso(fu.end),
                    "summary": draft.summary, "title": summary, "block": block,
                    "basis": fu.basis}

        ev = self._update(fu.id, build, intent)
        if ev is None:
            return
        res.events_updated += 1
        self._hook("update")
        with self.store.tx() as tx:
            tx.execute(
                "UPDATE followups SET start=?, end=?, summary=?, title=?, block=?, "
                "description=?, etag=?, basis=?, pending=NULL WHERE id=?",
                (iso(fu.start), iso(fu.end), ev.summary, summary, block, ev.description,
                 ev.etag, fu.basis, fu.id),
            )
            upsert_event(tx, ev)
        self._hook("commit-update")

    def _update(self, fid: str, build: Callable[[sqlite3.Row, str], EventDraft | None],
                intent: Callable[[EventDraft], dict[str, str]]) -> RemoteEvent | None:
        """Update a follow-up's event with If-Match. On a conflict (someone
        wrote in between) re-read the event, reconcile it (so every line the
        user typed is recorded and kept: user lines win), rebuild the draft
        from what is there now, and retry; `build` returns None when the
        update no longer applies."""
        for _try in range(MAX_CONFLICT_RETRIES):
            row = self.store.db.execute("SELECT * FROM followups WHERE id=?", (fid,)).fetchone()
            if row is None or row["ref"] is None:
                return None
            cached = self.store.db.execute("SELECT summary FROM events WHERE ref=?",
                                           (row["ref"],)).fetchone()
            draft = build(row, cached["summary"] if cached else row["summary"])
            if draft is None:
                return None
            # Write-ahead: what we are about to write, so a crash between the
            # remote write and our commit is recognised as ours on restart.
            with self.store.tx() as tx:
                tx.execute("UPDATE followups SET pending=? WHERE id=?",
                           (json.dumps(intent(draft)), fid))
            self._hook("commit-update-intent")
            try:
                return self.calendar.update(row["ref"], row["etag"], draft)
            except PreconditionFailed:
                log.info("event changed under us; re-reading and merging", followup=fid)
                fresh = self.calendar.get(row["uid"])
            except NotFound:
                fresh = None
            with self.store.tx() as tx:
                if fresh is None:
                    tx.execute("UPDATE followups SET status=CASE WHEN status IN "
                               "('live','creating') THEN 'deleted' ELSE status END, ref=NULL "
                               "WHERE id=?", (fid,))
                    tx.execute("DELETE FROM events WHERE ref=?", (row["ref"],))
                    return None
                apply_changes(tx, EventChanges((fresh,)), self.cfg)
        log.warning("event keeps changing under us; will try next cycle", followup=fid)
        return None

    def write_history(self, res: CycleResult) -> None:
        """Once attempts are logged on a follow-up, its summary gains the
        outcome ("✓ Call Jane Roe #7 — voicemail") so the calendar reads as a
        history. Only the summary changes: the notes are written back exactly
        as the calendar holds them. A title the user edited is left alone."""
        # It reads nothing but the store: when nothing changed since a pass
        # that wrote nothing, it would write nothing again (one look-up per
        # done follow-up, years of them, in every idle cycle otherwise).
        seen = self.store.kv_get(INPUTS_GENERATION)
        if seen is not None and self.store.kv_get(HISTORY_HELD) == seen:
            return
        rows = self.store.db.execute(
            "SELECT f.id, f.title, f.summary, e.summary AS remote FROM followups f "
            "JOIN events e ON e.ref = f.ref WHERE f.status = 'done'").fetchall()
        written = res.events_updated
        for r in rows:
            want = self._history_title(r["id"], r["title"] or r["summary"])
            if want is None or r["remote"] == want or r["remote"] != r["summary"]:
                continue

            def build(row: sqlite3.Row, remote_summary: str) -> EventDraft | None:
                # Computed again on every try: a merge may have added attempts.
                title = self._history_title(row["id"], row["title"] or row["summary"])
                if row["status"] != "done" or remote_summary != row["summary"] or not title:
                    return None
                return EventDraft(row["id"], row["uid"], title,
                                  parse_iso(row["start"]).astimezone(self.user_tz),
                                  parse_iso(row["end"]).astimezone(self.user_tz),
                                  row["description"])

            ev = self._update(r["id"], build,
                              lambda d: {"op": "history", "summary": d.summary})
            if ev is None:
                continue
            res.events_updated += 1
            self._hook("update-history")
            with self.store.tx() as tx:
                tx.execute("UPDATE followups SET summary=?, etag=?, description=?, pending=NULL "
                           "WHERE id=?",
                           (ev.summary, ev.etag, ev.description, r["id"]))
                upsert_event(tx, ev)
            self._hook("commit-history")
        if res.events_updated == written and seen is not None:
            with self.store.tx():
                self.store.kv_set(HISTORY_HELD, seen)

    def _history_title(self, fid: str, title: str) -> str | None:
        outcomes = [str(o[0]).replace("_", " ") for o in self.store.db.execute(
            "SELECT outcome FROM entries WHERE followup_id=? AND kind='attempt' "
            "ORDER BY at, key", (fid,))]
        if not outcomes:
            return None
        return f"✓ {title} — {', '.join(dict.fromkeys(outcomes))}"

    def _retire(self, fid: str, now: datetime, res: CycleResult) -> None:
        row = self.store.db.execute("SELECT * FROM followups WHERE id=?", (fid,)).fetchone()
        if row is None:
            return
        untouched = not row["user_touched"] and parse_iso(row["start"]) > now
        if row["status"] in ("live", "creating") and untouched and row["ref"]:
            with self.store.tx() as tx:  # write-ahead, as for updates
                tx.execute("UPDATE followups SET pending=? WHERE id=?",
                           (json.dumps({"op": "delete"}), fid))
            self._hook("commit-delete-intent")
            try:
                self.calendar.delete(row["ref"], row["etag"])
            except PreconditionFailed:
                with self.store.tx() as tx:
                    tx.execute("UPDATE followups SET pending=NULL WHERE id=?", (fid,))
                return  # edited meanwhile: read it next cycle first
            res.events_deleted += 1
            self._hook("delete")
            with self.store.tx() as tx:
                tx.execute("UPDATE followups SET status='cancelled', ref=NULL, pending=NULL "
                           "WHERE id=?", (fid,))
                tx.execute("DELETE FROM events WHERE ref=?", (row["ref"],))
        else:
            with self.store.tx() as tx:
                tx.execute("UPDATE followups SET status='lapsed' WHERE id=?", (fid,))
        self._hook("commit-retire")


# ---------------------------------------------------------------------------
# Skipping the plan when it holds

PLAN_HELD = "plan.held"
HISTORY_HELD = "history.held"  # the inputs generation of a history pass that wrote nothing


@dataclass(frozen=True)
class PlanHeld:
    """What a plan that wrote nothing was made from: the count of changes to
    the planner's inputs (kept by triggers, store migration 7), the config
    and syncd's version, and when. The next cycle skips planning while all
    are the same, time has not gone back, and the plan's expiry has not come."""

    inputs: int
    config: str
    now: datetime

    @classmethod
    def of(cls, store: Store, cfg: Config, now: datetime) -> PlanHeld:
        made_of = f"{__version__}|{cfg!r}"
        return cls(int(store.kv_get(INPUTS_GENERATION) or 0),
                   hashlib.sha256(made_of.encode()).hexdigest(), now)

    def record(self, until: datetime) -> str:
        return json.dumps({"inputs": self.inputs, "config": self.config, "from": iso(self.now),
                           "until": iso(until)})

    def holds(self, stored: str | None) -> bool:
        if not stored:
            return False
        was = json.loads(stored)
        return bool(was["inputs"] == self.inputs and was["config"] == self.config
                    and parse_iso(was["from"]) <= self.now < parse_iso(was["until"]))


# ---------------------------------------------------------------------------
# Store → planner inputs


def load_inputs(db: sqlite3.Connection, cfg: Config) -> tuple[
        list[ContactInput], list[tuple[datetime, datetime]], dict[date, int]]:
    user_tz = ZoneInfo(cfg.timezone)
    # Per contact: its latest planned/live follow-up, its highest seq, and the
    # starts of follow-ups the user deleted; read in one pass without keeping
    # the rows (with 10,000 contacts they were most of a cycle's memory).
    lives: dict[str, tuple[LiveRec, str | None]] = {}
    last_seq: dict[str, int] = {}
    deleted: dict[str, list[datetime]] = {}
    for r in db.execute("SELECT id, contact_id, seq, status, ref, start, end, channel, basis, "
                        "user_touched, user_moved FROM followups ORDER BY seq"):
        cid = r["contact_id"]
        last_seq[cid] = max(last_seq.get(cid, 0), r["seq"])
        if r["status"] in ("planned", "live", "creating"):
            lives[cid] = (_live_rec(r), r["ref"])
        elif r["status"] == "deleted":
            deleted.setdefault(cid, []).append(parse_iso(r["start"]))
    attempts: dict[str, list[AttemptRec]] = {}
    for r in db.execute("SELECT contact_id, at, channel, outcome FROM attempts"):
        attempts.setdefault(r["contact_id"], []).append(
            AttemptRec(parse_iso(r["at"]), Channel(r["channel"]), Outcome(r["outcome"])))
    commands: dict[str, list[CommandRec]] = {}
    for r in db.execute(
            "SELECT e.contact_id, e.value, e.at, f.seq, f.start FROM entries e "
            "JOIN followups f ON f.id = e.followup_id WHERE e.kind='command'"):
        commands.setdefault(r["contact_id"], []).append(CommandRec(
            r["value"], r["seq"], parse_iso(r["start"]),
            parse_iso(r["at"]) if r["at"] else None))
    interviews: dict[str, list[tuple[datetime, str]]] = {}
    for r in db.execute("SELECT contact_id, at, origin FROM entries WHERE kind='interview'"):
        at = parse_iso(r["at"]).astimezone(user_tz)
        # A calendar interview's entry is its end; a note line gives its start
        # (`interview 2026-12-02 10:00`): thank them from an hour later.
        end = at if r["origin"] == "calendar" else at + timedelta(hours=1)
        interviews.setdefault(r["contact_id"], []).append((end, f"interview {at:%b} {at.day}"))
    inputs = []
    live_refs: set[str] = set()
    for r in db.execute("SELECT id, data, first_seen, removed, phone_zone FROM contacts "
                        "ORDER BY id"):
        cid = r["id"]
        live, ref = lives.get(cid, (None, None))
        if ref:
            live_refs.add(ref)
        handled = tuple(deleted.get(cid, ()))
        handled += tuple(k.issued for k in commands.get(cid, []) if k.kind == "skip")
        inputs.append(ContactInput(
            contact=Contact.from_json(r["data"]),
            first_seen=parse_iso(r["first_seen"]),
            removed=bool(r["removed"]),
            attempts=tuple(attempts.get(cid, [])),
            commands=tuple(commands.get(cid, [])),
            live=live,
            last_seq=last_seq.get(cid, 0),
            handled=handled,
            interviews=tuple(interviews.get(cid, [])),
            phone_zone=r["phone_zone"],
        ))
    busy: list[tuple[datetime, datetime]] = []
    counts: dict[date, int] = {}
    for e in db.execute("SELECT ref, syncd_id, start, end FROM events"):
        if e["ref"] in live_refs:
            continue
        s, t = parse_iso(e["start"]), parse_iso(e["end"])
        busy.append((s, t))
        if e["syncd_id"]:
            d = s.astimezone(user_tz).date()
            counts[d] = counts.get(d, 0) + 1
    return inputs, busy, counts


def _live_rec(f: sqlite3.Row) -> LiveRec:
    return LiveRec(f["id"], f["seq"], parse_iso(f["start"]), parse_iso(f["end"]),
                   Channel(f["channel"]), f["basis"], f["status"], bool(f["user_touched"]),
                   bool(f["user_moved"]))


def _attempt_recs(db: sqlite3.Connection, contact_id: str) -> tuple[AttemptRec, ...]:
    return tuple(
        AttemptRec(parse_iso(r["at"]), Channel(r["channel"]), Outcome(r["outcome"]))
        for r in db.execute("SELECT at, channel, outcome FROM attempts WHERE contact_id=? "
                            "ORDER BY at", (contact_id,)))


def _news_for(db: sqlite3.Connection, cfg: Config, contact_id: str,
              channel: Channel) -> str | None:
    """The newest configured news item this contact has not been told: told
    means a `news: …` line in their notes, or a follow-up that suggested it
    and was then done (an attempt logged on it)."""
    if channel is Channel.CALL or not cfg.news:
        return None
    told = {str(r[0]).strip().lower() for r in db.execute(
        "SELECT value FROM entries WHERE contact_id=? AND kind='news' UNION "
        "SELECT news FROM followups WHERE contact_id=? AND status='done' AND news IS NOT NULL",
        (contact_id, contact_id))}
    for item in sorted(cfg.news, key=lambda n: n.date, reverse=True):
        if item.text.strip().lower() not in told:
            return item.text
    return None


def _upsert_followup(db: sqlite3.Connection, p: Plan, fu: Planned, summary: str, block: str,
                     description: str, status: str, news: str | None) -> None:
    uid = f"{fu.id}@syncd"
    db.execute(
        "INSERT INTO followups(id, contact_id, seq, uid, channel, cadence, start, end, summary, "
        "basis, status, block, description, created_at, kind, news, title) "
        "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT(id) DO UPDATE SET channel=excluded.channel, cadence=excluded.cadence, "
        "start=excluded.start, end=excluded.end, summary=excluded.summary, "
        "title=excluded.title, "
        "basis=excluded.basis, status=excluded.status, block=excluded.block, "
        "description=excluded.description, kind=excluded.kind, news=excluded.news",
        (fu.id, p.contact_id, fu.seq, uid, fu.channel.value, fu.cadence, iso(fu.start),
         iso(fu.end), summary, fu.basis, status, block, description,
         iso(datetime.now(ZoneInfo("UTC"))), fu.kind, news, summary),
    )


def _draft_from_row(fu: sqlite3.Row, tz: ZoneInfo) -> EventDraft:
    """Events are written in the user's zone (TZID), whatever offset the row
    was stored with."""
    return EventDraft(fu["id"], fu["uid"], fu["summary"], parse_iso(fu["start"]).astimezone(tz),
                      parse_iso(fu["end"]).astimezone(tz), fu["description"])


def _merge_problems(db: sqlite3.Connection, source: str, batch: ContactBatch) -> str:
    """A full read replaces the skipped-entry list; an incremental one only
    adds what it saw (the entries it did not re-read are as bad as before)."""
    new = [[p.where, p.message] for p in batch.problems]
    if batch.full:
        return json.dumps(new)
    row = db.execute("SELECT problems FROM sources WHERE name=?", (source,)).fetchone()
    old = [p for p in json.loads(row[0]) if p[0] not in {w for w, _m in new}] if row else []
    return json.dumps(old + new)


def _upsert_source(db: sqlite3.Connection, src: ContactSource, cursor: str | None,
                   last_sync: str | None, error: str | None, problems: str | None) -> None:
    db.execute(
        "INSERT INTO sources(name, kind, cursor, last_sync, last_error, problems) "
        "VALUES(?,?,?,?,?,COALESCE(?, '[]')) ON CONFLICT(name) DO UPDATE SET "
        "kind=excluded.kind, cursor=excluded.cursor, "
        "last_sync=COALESCE(excluded.last_sync, sources.last_sync), "
        "last_error=excluded.last_error, problems=COALESCE(?, sources.problems)",
        (src.name, src.kind, cursor, last_sync, error, problems, problems),
    )
