"""Planning: from each contact's history to its next follow-up. Pure.

`plan(contacts, calendar_busy, now, config)` returns one `Plan` per contact;
the cycle turns the differences from what is in the calendar into writes.
The same state always gives the same plan, and a follow-up that is already in
the calendar is kept unless its basis (the history it was planned from)
changed, or its time passed with nothing logged (then it rolls forward).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from syncd import learning
from syncd.learning import SLOTS, Call, Model, Slot
from syncd.model import Channel, Contact, ContactState, Outcome
from syncd.settings import Cadence, Config, Duration, Rule, Unit
from syncd.timeutil import UTC, add_duration, ceil_to, working_window

STEP = timedelta(minutes=15)  # granularity of proposed start times
DURATION = {Channel.CALL: 15, Channel.EMAIL: 15, Channel.MESSAGE: 10, Channel.MEETING: 30}
SEARCH_DAYS = 400  # how far ahead a free time is searched before giving up


REACH = frozenset({Outcome.REACHED, Outcome.REPLIED})


# One past attempt (the learning module reads calls out of these).
AttemptRec = Call


@dataclass(frozen=True, slots=True)
class CommandRec:
    kind: str  # skip | stop | pause | snooze | next
    seq: int  # the follow-up it was written on
    issued: datetime  # that follow-up's start
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class LiveRec:
    """The contact's current follow-up, as the store knows it."""

    id: str
    seq: int
    start: datetime
    end: datetime
    channel: Channel
    basis: str
    status: str  # planned | live | creating
    user_touched: bool
    user_moved: bool


@dataclass(frozen=True, slots=True)
class ContactInput:
    contact: Contact
    first_seen: datetime
    removed: bool
    attempts: tuple[AttemptRec, ...]
    commands: tuple[CommandRec, ...]
    live: LiveRec | None
    last_seq: int
    # Follow-ups that ended without an attempt but count as handled
    # (skip, deleted by the user): the cadence restarts from their time.
    handled: tuple[datetime, ...] = ()
    # Interviews with this person: (when it ended, what it was called).
    interviews: tuple[tuple[datetime, str], ...] = ()
    # `phone_zone_of(contact.phones)` as stored at import ('' for none), or
    # None when not known yet (then it is looked up).
    phone_zone: str | None = None


@dataclass(frozen=True, slots=True)
class Planned:
    id: str
    seq: int
    start: datetime
    end: datetime
    channel: Channel
    cadence: str
    basis: str
    slot: str | None
    slot_note: str
    # keep: leave the event as is; create: a new event; move: update the live
    # event's time; planned: beyond the horizon, nothing written yet.
    action: str
    overdue: bool
    kind: str = "followup"  # or "thank_you" (after an interview)
    label: str = ""  # for a thank-you: the interview, e.g. "interview Dec 2"


@dataclass(frozen=True, slots=True)
class Plan:
    contact_id: str
    state: ContactState
    cadence: str
    timezone: str
    timezone_source: str
    followup: Planned | None
    # The live follow-up to retire when the contact stopped (cancel it when
    # untouched) or when a new one replaces a lapsed one.
    retire: str | None = None
    note: str = ""


@dataclass
class Calendar:
    """Busy intervals and per-day counts while planning (mutated as we go).

    Intervals are bucketed by UTC day so a check looks at one or two days, not
    the whole calendar: planning 10,000 contacts stays linear.
    """

    per_day: dict[date, int] = field(default_factory=dict)
    by_day: dict[date, list[tuple[datetime, datetime]]] = field(default_factory=dict)
    skip: dict[date, date] = field(default_factory=dict)

    @classmethod
    def of(cls, busy: list[tuple[datetime, datetime]], per_day: dict[date, int]) -> Calendar:
        cal = cls(per_day=dict(per_day))
        for s, e in busy:
            cal._add(s, e)
        return cal

    def _add(self, start: datetime, end: datetime) -> None:
        day = start.astimezone(_UTC).date()
        last = max(end.astimezone(_UTC).date(), day)
        while day <= last:
            self.by_day.setdefault(day, []).append((start, end))
            day += timedelta(days=1)

    def free(self, start: datetime, end: datetime) -> bool:
        day = start.astimezone(_UTC).date()
        last = max(end.astimezone(_UTC).date(), day)
        while day <= last:
            if any(s < end and start < e for s, e in self.by_day.get(day, ())):
                return False
            day += timedelta(days=1)
        return True

    def blocked_until(self, start: datetime, end: datetime) -> datetime | None:
        """None when [start, end) is free, else the latest end of the busy
        intervals that overlap it: no start before that is free either."""
        found: datetime | None = None
        day = start.astimezone(_UTC).date()
        last = max(end.astimezone(_UTC).date(), day)
        while day <= last:
            for s, e in self.by_day.get(day, ()):
                if s < end and start < e and (found is None or e > found):
                    found = e
            day += timedelta(days=1)
        return found

    def take(self, start: datetime, end: datetime, day: date) -> None:
        self._add(start, end)
        self.per_day[day] = self.per_day.get(day, 0) + 1

    def next_open(self, day: date, is_open: Callable[[date], bool]) -> date:
        """The first day from `day` on that `is_open`. Closed days (days off,
        days at the daily limit) only ever stay closed while one plan is made,
        so they are skipped with path compression: with 10,000 contacts the
        search does not walk the same full days again and again."""
        path = []
        while not is_open(day):
            path.append(day)
            day = self.skip.get(day, day + timedelta(days=1))
        for d in path:
            self.skip[d] = day
        return day


_UTC = ZoneInfo("UTC")


def followup_id(contact_id: str, seq: int) -> str:
    """Stable, URL-safe id of a contact's seq-th follow-up: becomes the UID."""
    h = hashlib.sha256(contact_id.encode()).hexdigest()[:16]
    return f"{h}-{seq}"


def resolve_cadence(contact: Contact, rules: tuple[Rule, ...]) -> tuple[str, str | None]:
    """(cadence, timezone from the rule) for a contact: override, then the first
    matching rule."""
    overrides = dict(contact.overrides)
    tz_rule: str | None = None
    cadence: str | None = overrides.get("syncd-cadence") or None
    for rule in rules:
        m = rule.match
        if m.label is not None and m.label not in contact.labels:
            continue
        if m.source is not None and m.source != contact.source:
            continue
        if m.company is not None and m.company.lower() != contact.company.lower():
            continue
        cadence = cadence or rule.cadence
        tz_rule = rule.timezone
        break
    return cadence or "", tz_rule


def contact_zone(contact: Contact, rule_tz: str | None, user_tz: str,
                 phone_zone: str | None = None) -> tuple[str, str]:
    """The contact's zone and where it came from: a custom-field override, the
    contact, a rule, the phone number, else the user's zone. `phone_zone`:
    the stored `phone_zone_of(contact.phones)`, when known."""
    override = dict(contact.overrides).get("syncd-timezone")
    for value, origin in ((override, "override"), (contact.timezone, "contact"),
                          (rule_tz, "rule")):
        if value and _valid_zone(value):
            return value, origin
    zone = phone_zone if phone_zone is not None else phone_zone_of(contact.phones)
    return (zone, "phone") if zone else (user_tz, "user")


def phone_zone_of(phones: tuple[str, ...]) -> str:
    """The zone the first placeable phone number pins, '' for none. A
    libphonenumber look-up costs ~0.2 ms: the cycle stores the answer with
    the contact when it imports it, so plans read it instead."""
    for phone in phones:
        zone = zone_from_phone(phone)
        if zone:
            return zone
    return ""


# Small: the stored zone spares the planner; this serves one-off look-ups.
@lru_cache(maxsize=256)
def zone_from_phone(phone: str) -> str | None:
    """The zone of an international number when the numbering plan pins it to
    one zone (libphonenumber's prefix → zone table: +1 212 → New York; a
    nationwide mobile range of a multi-zone country gives several and is not
    used). Numbers without a country code can't be placed."""
    import phonenumbers
    from phonenumbers import timezone as pn_tz

    try:
        num = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    zones = {z for z in pn_tz.time_zones_for_number(num) if _valid_zone(z)}
    return zones.pop() if len(zones) == 1 else None


@lru_cache(maxsize=256)
def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return False
    return True


def slot_of(at: datetime) -> Slot | None:
    """The slot a wall-clock time (already in the contact's zone) falls in."""
    t = at.timetz().replace(tzinfo=None)
    return next((s for s in SLOTS if s.start <= t < s.end), None)


def pool_stats(inputs: list[ContactInput], cfg: Config) -> Model:
    """The model fitted to everyone's call outcomes (each in their own zone)."""
    people = []
    for ci in inputs:
        tz, _ = contact_zone(ci.contact, resolve_cadence(ci.contact, cfg.rules)[1], cfg.timezone,
                             ci.phone_zone)
        people.append(learning.stats(ci.attempts, ZoneInfo(tz)))
    return learning.fit(people)


# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    cfg: Config
    user_tz: ZoneInfo
    pool: Model
    holidays: frozenset[date]
    expiry: Expiry
    # _allowed_slots by (day, contact zone): thousands of contacts share a few.
    slots: dict[tuple[date, str], tuple[int, ...]] = field(default_factory=dict, compare=False)

    def is_workday(self, day: date) -> bool:
        return day.weekday() in self.cfg.working_hours.days and day not in self.holidays


@lru_cache(maxsize=32)
def holiday_dates(country: str | None, first_year: int, last_year: int) -> frozenset[date]:
    """Public holidays of `country` (ISO code, optionally `US-NY` for a
    subdivision) from the `holidays` package."""
    if not country:
        return frozenset()
    import holidays

    code, _, subdiv = country.partition("-")
    try:
        table = holidays.country_holidays(code, subdiv=subdiv or None,
                                          years=range(first_year, last_year + 1))
    except NotImplementedError:
        return frozenset()  # config validation names unknown countries
    return frozenset(table)


class Expiry:
    """Until when a plan holds: `plan` decides the same for every `now'` with
    `now <= now' < until`, given the same inputs. Each comparison the planner
    makes with `now` reports the instant it can flip at (`at`); a margin is
    only ever taken on the early side, so a cycle may re-plan needlessly but
    never keeps a stale plan. `until` is None only before `plan` ran."""

    __slots__ = ("now", "until")

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.until: datetime | None = None

    def at(self, t: datetime) -> None:
        if self.until is None or t < self.until:
            self.until = t


def _enters_horizon(start: datetime, horizon: Duration, user_tz: ZoneInfo) -> datetime:
    """The earliest instant at which `start`, now beyond the horizon
    (`start > add_duration(now_local, horizon)`), may come within it.

    For minutes to weeks `add_duration` is wall-clock arithmetic, and two
    datetimes of the same zone compare by wall clock, so the answer is the
    wall time `start - horizon`; an hour earlier when that wall time is
    repeated or skipped by a clock change, or `start` is in another zone.
    Months, years and business days are not monotonic in `now` (Jan 30 and
    Jan 31 + 1 month are both Feb 28): a bound with a day of margin."""
    n, unit = horizon.amount, horizon.unit
    span = {Unit.MINUTES: timedelta(minutes=n), Unit.HOURS: timedelta(hours=n),
            Unit.DAYS: timedelta(days=n), Unit.WEEKS: timedelta(weeks=n)}.get(unit)
    if span is None:
        days = {Unit.MONTHS: 31 * n, Unit.YEARS: 366 * n}.get(unit, n + 2 * ((n + 4) // 5))
        return start - timedelta(days=days + 1)
    t = (start.astimezone(user_tz).replace(tzinfo=None) - span).replace(tzinfo=user_tz)
    plain = (start.tzinfo is user_tz and t.utcoffset() == t.replace(fold=1).utcoffset()
             and t.astimezone(UTC).astimezone(user_tz).replace(tzinfo=None)
             == t.replace(tzinfo=None))
    return t if plain else t - timedelta(hours=1)


def plan(
    inputs: list[ContactInput],
    busy: list[tuple[datetime, datetime]],
    day_counts: dict[date, int],
    now: datetime,
    cfg: Config,
    pool: Model | None = None,
    expiry: Expiry | None = None,
) -> list[Plan]:
    """Plan every contact. `busy` are the calendar's events other than our live
    follow-ups; `day_counts` counts our events that stay where they are (done
    ones) per day in the user's zone; `pool` is everyone's call record per
    slot (computed from `inputs` when not given). `expiry`, when given,
    learns until when this plan holds (the cycle skips planning until then
    if nothing else changed)."""
    user_tz = ZoneInfo(cfg.timezone)
    exp = expiry if expiry is not None else Expiry(now)
    ctx = _Ctx(cfg, user_tz, pool if pool is not None else pool_stats(inputs, cfg),
               holiday_dates(cfg.holidays, now.year - 3, now.year + 3), exp)
    # The holiday table is chosen by the year.
    exp.at(now.replace(year=now.year + 1, month=1, day=1, hour=0, minute=0, second=0,
                       microsecond=0) - timedelta(days=1))
    cal = Calendar.of(busy, day_counts)
    drafts: list[tuple[tuple[int, int, datetime, str], ContactInput, _Need, datetime]] = []
    plans: dict[str, Plan] = {}

    # First pass: decide state, cadence and due time; keep what stays.
    for ci in sorted(inputs, key=lambda c: c.contact.id):
        need = _assess(ci, now, ctx)
        if need.followup_due is None:
            retire = ci.live.id if ci.live and ci.live.status != "planned" else None
            plans[ci.contact.id] = Plan(ci.contact.id, need.state, need.cadence, need.tz,
                                        need.tz_source, None, retire=retire, note=need.note)
            continue
        live = ci.live
        # Kept: a written follow-up still ahead whose basis is unchanged, or
        # that the user moved (never moved back). One whose time passed with
        # nothing logged is not kept: it rolls forward (or lapses if touched).
        keep = live is not None and live.status in ("live", "creating") and live.end > now and (
            live.user_moved or live.basis == need.basis
        )
        if live is not None and keep:
            exp.at(live.end)  # then it has passed: rolls forward or lapses
            if live.start >= now:
                exp.at(live.start)  # then it is overdue
            local_day = live.start.astimezone(user_tz).date()
            cal.take(live.start, live.end, local_day)
            plans[ci.contact.id] = Plan(
                ci.contact.id, need.state, need.cadence, need.tz, need.tz_source,
                Planned(live.id, live.seq, live.start, live.end, live.channel, need.cadence,
                        live.basis, need.slot.name if need.slot else None, "", "keep",
                        live.start < now),
                note=need.note,
            )
            continue
        due = need.followup_due
        if due >= now:
            exp.at(due)  # then it is overdue: priority, `next` times, placement
        prio = (0 if due < now else 1, 0 if need.until_reached else 1, due, ci.contact.id)
        drafts.append((prio, ci, need, due))

    # Second pass, by priority: overdue first, then `until: reached` cadences,
    # then keep-in-touch; each takes the earliest free time for it.
    horizon_end = add_duration(now.astimezone(user_tz), cfg.horizon)
    beyond: datetime | None = None  # the first start beyond the horizon
    for _prio, ci, need, due in sorted(drafts, key=lambda d: d[0]):
        placed = plans[ci.contact.id] = _place(ci, need, due, now, ctx, cal, horizon_end)
        fu = placed.followup
        if fu is not None and fu.action == "planned" and (beyond is None or fu.start < beyond):
            beyond = fu.start
    if beyond is not None:  # then it comes within the horizon and is written
        exp.at(_enters_horizon(beyond, cfg.horizon, user_tz))
    return [plans[c.contact.id] for c in sorted(inputs, key=lambda c: c.contact.id)]


@dataclass(frozen=True, slots=True)
class _Need:
    state: ContactState
    cadence: str
    channel: Channel
    tz: str
    tz_source: str
    followup_due: datetime | None
    exact: bool  # a `next …` command: use this time as given
    slot: Slot | None
    basis: str
    until_reached: bool
    note: str = ""
    kind: str = "followup"
    label: str = ""


def _assess(ci: ContactInput, now: datetime, ctx: _Ctx) -> _Need:
    cfg, user_tz = ctx.cfg, ctx.user_tz
    c = ci.contact
    base, rule_tz = resolve_cadence(c, cfg.rules)
    tz, tz_source = contact_zone(c, rule_tz, cfg.timezone, ci.phone_zone)
    names = {k.name for k in cfg.cadences}
    if base not in names:
        base = cfg.cadences[0].name if cfg.cadences else ""
    if not base:
        return _Need(ContactState.STOPPED, "", Channel.CALL, tz, tz_source, None, False, None,
                     "", False, "no cadence")
    attempts = sorted(ci.attempts, key=lambda a: a.at)
    cadence, switched_at, reached = _phase(cfg, base, attempts)
    # Attempts count from the start of the current cadence phase; the first
    # phase takes the whole history (attempts may predate syncd knowing them).
    phase_start = switched_at or datetime.min.replace(tzinfo=user_tz)
    state = ContactState.REACHED if reached else ContactState.ACTIVE
    channel = Channel(cadence.channel) if cadence else Channel.CALL
    name = cadence.name if cadence else base

    stopped_note = ""
    if ci.removed:
        stopped_note = "removed from its source"
    elif any(k.kind == "stop" for k in ci.commands):
        stopped_note = "stop logged in notes"
    elif cadence is None:
        stopped_note = "cadence complete"
    if cadence is not None and not stopped_note:
        first = attempts[0].at if attempts else ci.first_seen
        if cadence.stop_after:
            ends = add_duration(first.astimezone(user_tz), cadence.stop_after)
            if now >= ends:
                stopped_note = f"stop_after {cadence.stop_after} passed"
            else:
                ctx.expiry.at(ends)
        in_phase = [a for a in attempts if a.at >= phase_start]
        if cadence.max_attempts is not None and len(in_phase) >= cadence.max_attempts:
            stopped_note = f"max_attempts {cadence.max_attempts} reached"
    if stopped_note or cadence is None:
        st = ContactState.REACHED if (reached and cadence is None) else ContactState.STOPPED
        return _Need(st, name, channel, tz, tz_source, None, False, None, "", False, stopped_note)

    thanks = _thank_you(ci, attempts, cfg, tz, tz_source, state)
    if thanks is not None:
        return thanks
    if ci.interviews and cfg.interviews.then in {k.name for k in cfg.cadences}:
        # Thanked after the interview: from then on the interview cadence.
        ended = max(ci.interviews)[0]
        sent = min(a.at for a in attempts
                   if a.at >= ended and a.channel is Channel.EMAIL and a.outcome in THANKED)
        if switched_at is None or sent > switched_at:
            cadence, switched_at = cfg.cadence(cfg.interviews.then), sent
            phase_start, name = sent, cadence.name
            channel = Channel(cadence.channel)

    # Due: from the last logged attempt (or handled follow-up) in this phase.
    marks = [a.at for a in attempts if a.at >= phase_start]
    marks += [h for h in ci.handled if h >= phase_start]
    if marks:
        due = _due_day(add_duration(max(marks).astimezone(user_tz), cadence.every,
                                    ctx.is_workday), cadence)
    elif switched_at is not None:
        due = _due_day(add_duration(switched_at.astimezone(user_tz), cadence.every,
                                    ctx.is_workday), cadence)
    else:
        due = ci.first_seen
    exact = False
    latest_seq = max((k.seq for k in ci.commands), default=-1)
    for k in sorted(ci.commands, key=lambda k: (k.seq, k.kind)):
        if k.kind == "next" and k.until is not None and k.seq == latest_seq:
            due, exact = k.until, True
    for k in ci.commands:
        if k.kind in ("pause", "snooze") and k.until is not None and k.until > due:
            due, exact = k.until, False
            if k.until > now:
                state = ContactState.PAUSED
                ctx.expiry.at(k.until)
    slot: Slot | None = None
    note = ""
    if channel is Channel.CALL:
        zone = ZoneInfo(tz)
        allowed = _allowed_slots(due.astimezone(user_tz).date(), ctx, zone)
        if allowed:
            own = learning.stats(attempts, zone)
            calls = sum(1 for a in attempts if a.channel is Channel.CALL)
            slot = SLOTS[learning.choose(c.id, own, ctx.pool, calls + 1, allowed)]
        else:
            note = (f"no calling slot in {tz} meets your working hours; "
                    "using the nearest working time")
    basis = _basis(name, phase_start, marks, ci.commands, slot, due)
    return _Need(state, name, channel, tz, tz_source, due, exact, slot, basis,
                 cadence.until == "reached", note)


THANKED = frozenset({Outcome.SENT, Outcome.REPLIED, Outcome.REACHED})


def _thank_you(ci: ContactInput, attempts: list[AttemptRec], cfg: Config, tz: str,
               tz_source: str, state: ContactState) -> _Need | None:
    """A thank-you e-mail is due after the latest interview until an e-mail is
    logged as sent after it (the article: thank everyone you met)."""
    if not ci.interviews:
        return None
    ended, label = max(ci.interviews)
    if any(a.at >= ended and a.channel is Channel.EMAIL and a.outcome in THANKED
           for a in attempts):
        return None
    basis = hashlib.sha256(f"thank_you|{ended.isoformat()}|{label}".encode()).hexdigest()[:16]
    return _Need(state, "thank_you", Channel.EMAIL, tz, tz_source, ended, False, None, basis,
                 True, "", "thank_you", label)


def _allowed_slots(near: date, ctx: _Ctx, zone: ZoneInfo) -> tuple[int, ...]:
    """Slots (in the contact's zone) that overlap the user's working hours on
    the first working day from `near` on."""
    key = (near, zone.key)
    found = ctx.slots.get(key)
    if found is None:
        found = ctx.slots[key] = _allowed_slots_uncached(near, ctx, zone)
    return found


def _allowed_slots_uncached(near: date, ctx: _Ctx, zone: ZoneInfo) -> tuple[int, ...]:
    day = near
    for _ in range(14):
        if ctx.is_workday(day):
            break
        day += timedelta(days=1)
    win = working_window(day, ctx.cfg.working_hours, ctx.user_tz)
    if win is None:
        return ()
    return tuple(i for i, s in enumerate(SLOTS) if _slot_windows(day, win, s, zone))


def _due_day(at: datetime, cadence: Cadence) -> datetime:
    """A follow-up due in N days is due that day, at any time of it: the slot
    picks the hour. (Minutes and hours cadences keep their exact time.)"""
    if cadence.every.unit in (Unit.MINUTES, Unit.HOURS):
        return at
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def _phase(
    cfg: Config, base: str, attempts: list[AttemptRec]
) -> tuple[Cadence | None, datetime | None, bool]:
    """Walk the cadence chain: `until` met → switch to `then` (or finish)."""
    cadence: Cadence | None = cfg.cadence(base)
    start: datetime | None = None
    reached = False
    seen = {base}
    while cadence is not None:
        goal = {"reached": REACH, "replied": frozenset({Outcome.REPLIED, Outcome.REACHED})}.get(
            cadence.until
        )
        hit = next((a for a in attempts
                    if (start is None or a.at > start) and goal and a.outcome in goal), None)
        if hit is None:
            break
        reached = True
        start = hit.at
        nxt = cadence.then
        if nxt is None or nxt in seen:
            return None, start, reached
        seen.add(nxt)
        cadence = cfg.cadence(nxt)
    return cadence, start, reached


def _basis(name: str, phase: datetime, marks: list[datetime], commands: tuple[CommandRec, ...],
           slot: Slot | None, due: datetime) -> str:
    raw = "|".join([
        name, phase.isoformat(), max(marks).isoformat() if marks else "-", str(len(marks)),
        ",".join(sorted(f"{k.kind}:{k.seq}:{k.until}" for k in commands)),
        slot.name if slot else "-", due.isoformat(),
    ])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _place(ci: ContactInput, need: _Need, due: datetime, now: datetime, ctx: _Ctx,
           cal: Calendar, horizon_end: datetime) -> Plan:
    user_tz = ctx.user_tz
    minutes = DURATION[need.channel]
    live = ci.live
    reuse = live is not None and live.status in ("live", "creating", "planned") and not (
        live.status != "planned" and live.user_touched)
    retire = live.id if (live is not None and not reuse and live.status != "planned") else None
    seq = live.seq if (live is not None and reuse) else ci.last_seq + 1
    fid = followup_id(ci.contact.id, seq)
    earliest = max(due, now)
    if due < now:  # placed from now on: holds while now rounds to the same quarter
        ctx.expiry.at(ceil_to(now.astimezone(user_tz), 15))
    start, slot_note = (
        (earliest, "") if need.exact and due >= now
        else find_time(earliest, minutes, need.slot, ZoneInfo(need.tz), ctx, cal)
    )
    end = start + timedelta(minutes=minutes)
    cal.take(start, end, start.astimezone(user_tz).date())
    if start > horizon_end:
        action = "planned"
    elif live is not None and reuse and live.status != "planned":
        action = "move"
    else:
        action = "create"
    return Plan(
        ci.contact.id, need.state, need.cadence, need.tz, need.tz_source,
        Planned(fid, seq, start, end, need.channel, need.cadence, need.basis,
                need.slot.name if need.slot else None, slot_note, action, due < now,
                need.kind, need.label),
        retire=retire, note=need.note,
    )


def find_time(earliest: datetime, minutes: int, slot: Slot | None, contact_tz: ZoneInfo,
              ctx: _Ctx, cal: Calendar) -> tuple[datetime, str]:
    """The earliest start ≥ `earliest` inside working hours (user zone), inside
    the slot (contact zone) when one is given, free of busy intervals, on a day
    below `daily_limit`. Returns the start and a note when the slot had to be
    dropped because it never meets working hours."""
    cfg, user_tz = ctx.cfg, ctx.user_tz
    length = timedelta(minutes=minutes)
    start_local = ceil_to(earliest.astimezone(user_tz), 15)
    first = start_local.date()
    last = first + timedelta(days=SEARCH_DAYS)

    def is_open(d: date) -> bool:
        return d > last or (ctx.is_workday(d) and cal.per_day.get(d, 0) < cfg.daily_limit)

    day = cal.next_open(first, is_open)
    while day <= last:
        win = working_window(day, cfg.working_hours, user_tz)
        if win is not None:
            windows = [win]
            note = ""
            if slot is not None:
                windows = _slot_windows(day, win, slot, contact_tz)
                if not windows:
                    windows, note = [win], f"slot {slot.name} is outside working hours"
            for lo, hi in windows:
                t = ceil_to(max(lo, start_local), 15)
                while t + length <= hi:
                    blocked = cal.blocked_until(t, t + length)
                    if blocked is None:
                        return t, note
                    t = _next_step(t, blocked)
        day = cal.next_open(day + timedelta(days=1), is_open)
    # Nothing free for SEARCH_DAYS (a very long queue at the daily limit):
    # after that window; beyond the horizon it is only planned, and placed
    # exactly once it comes near.
    return (datetime.combine(last + timedelta(days=1), cfg.working_hours.start, tzinfo=user_tz),
            f"no free time within {SEARCH_DAYS} days")


def _next_step(t: datetime, blocked: datetime) -> datetime:
    """The next start to try after `t`, which is blocked until `blocked`:
    every step before `blocked` overlaps that same busy time, so they are
    skipped (a day at the daily limit costs one check, not one per quarter
    hour). Stepping one at a time across a clock change, as before."""
    step = t + STEP
    if blocked > step and t.utcoffset() == blocked.astimezone(t.tzinfo).utcoffset():
        step = t + STEP * -(-(blocked - t) // STEP)
    return step


def _slot_windows(day: date, win: tuple[datetime, datetime], slot: Slot,
                  tz: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """The slot (in the contact's zone) intersected with the user's window."""
    out = []
    for d in (day - timedelta(days=1), day, day + timedelta(days=1)):
        lo = datetime.combine(d, slot.start, tzinfo=tz)
        hi = datetime.combine(d, slot.end, tzinfo=tz)
        a, b = max(lo, win[0]), min(hi, win[1])
        if a < b:
            out.append((a.astimezone(win[0].tzinfo), b.astimezone(win[0].tzinfo)))
    return sorted(out)
