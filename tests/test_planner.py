"""Planner properties (pure; no servers)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.model import Channel, Contact, ContactState, Outcome
from syncd.planner import (
    SLOTS,
    AttemptRec,
    CommandRec,
    ContactInput,
    LiveRec,
    plan,
)
from syncd.settings import Cadence, Config, Duration, Rule, RuleMatch, Unit

NY = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # Wed 10:00 in New York

CFG = Config(
    path=Path("/dev/null"), timezone="America/New_York", state_dir=Path("/tmp"),
    daily_limit=3,
    cadences=(
        Cadence("pursue", "call", Duration(2, Unit.BUSINESS_DAYS), "reached", "keep_in_touch"),
        Cadence("keep_in_touch", "email", Duration(4, Unit.WEEKS)),
    ),
    rules=(Rule(RuleMatch(), "pursue"),),
)

ZONES = ["America/New_York", "Europe/London", "America/Los_Angeles", "Asia/Tokyo", ""]


def contact(i: int, tz: str = "") -> Contact:
    return Contact(source="t", uid=f"c{i}", name=f"Person {i}", phones=("+12125550100",),
                   timezone=tz)


def fresh(i: int, tz: str = "") -> ContactInput:
    return ContactInput(contact(i, tz), NOW - timedelta(days=1), False, (), (), None, 0)


def test_new_contact_gets_a_call_soon_inside_working_hours() -> None:
    (p,) = plan([fresh(1)], [], {}, NOW, CFG)
    assert p.state is ContactState.ACTIVE
    assert p.followup is not None
    assert p.followup.action == "create"
    assert p.followup.channel is Channel.CALL
    local = p.followup.start.astimezone(NY)
    assert local >= NOW
    assert CFG.working_hours.start <= local.time()
    assert (p.followup.end.astimezone(NY)).time() <= CFG.working_hours.end


def test_due_counts_from_the_last_attempt_in_business_days() -> None:
    at = datetime(2026, 11, 20, 9, 10, tzinfo=NY)  # Friday
    ci = ContactInput(contact(1), at - timedelta(days=3), False,
                      (AttemptRec(at, Channel.CALL, Outcome.NO_ANSWER),), (), None, 1)
    (p,) = plan([ci], [], {}, datetime(2026, 11, 19, 12, tzinfo=UTC), CFG)
    assert p.followup is not None
    # Two business days after Friday is Tuesday.
    assert p.followup.start.astimezone(NY).date() == date(2026, 11, 24)


def test_reached_switches_to_then_cadence() -> None:
    at = datetime(2026, 11, 20, 9, 10, tzinfo=NY)
    ci = ContactInput(contact(1), at - timedelta(days=3), False,
                      (AttemptRec(at, Channel.CALL, Outcome.REACHED),), (), None, 1)
    (p,) = plan([ci], [], {}, NOW, CFG)
    assert p.state is ContactState.REACHED
    assert p.cadence == "keep_in_touch"
    assert p.followup is not None
    assert p.followup.channel is Channel.EMAIL
    assert p.followup.start.astimezone(NY).date() == date(2026, 12, 18)
    assert p.followup.action == "planned"  # beyond the 14-day horizon


def test_silence_never_stops_a_pursuit() -> None:
    tries = tuple(AttemptRec(NOW - timedelta(days=200 - 2 * i), Channel.CALL, Outcome.NO_ANSWER)
                  for i in range(63))
    ci = ContactInput(contact(1), NOW - timedelta(days=300), False, tries, (), None, 63)
    (p,) = plan([ci], [], {}, NOW, CFG)
    assert p.state is ContactState.ACTIVE
    assert p.followup is not None


def test_stop_and_removed_contacts_get_no_followup() -> None:
    stop = CommandRec("stop", 1, NOW)
    ci = ContactInput(contact(1), NOW, False, (), (stop,), None, 1)
    (p,) = plan([ci], [], {}, NOW, CFG)
    assert p.state is ContactState.STOPPED and p.followup is None
    gone = ContactInput(contact(2), NOW, True, (), (), None, 0)
    (p,) = plan([gone], [], {}, NOW, CFG)
    assert p.state is ContactState.STOPPED and p.followup is None


def test_live_followup_is_kept_when_nothing_changed() -> None:
    (first,) = plan([fresh(1)], [], {}, NOW, CFG)
    fu = first.followup
    assert fu is not None
    live = LiveRec(fu.id, fu.seq, fu.start, fu.end, fu.channel, fu.basis, "live", False, False)
    ci = ContactInput(contact(1), NOW - timedelta(days=1), False, (), (), live, fu.seq)
    (again,) = plan([ci], [], {}, NOW + timedelta(minutes=5), CFG)
    assert again.followup is not None and again.followup.action == "keep"
    # Its time passed with nothing logged and it was untouched: it rolls forward.
    (later,) = plan([ci], [], {}, fu.end + timedelta(minutes=1), CFG)
    assert later.followup is not None and later.followup.action == "move"
    assert later.followup.id == fu.id and later.followup.start > fu.end


def test_passed_followup_touched_by_the_user_lapses_and_a_new_one_is_made() -> None:
    (first,) = plan([fresh(1)], [], {}, NOW, CFG)
    fu = first.followup
    assert fu is not None
    live = LiveRec(fu.id, fu.seq, fu.start, fu.end, fu.channel, fu.basis, "live", True, False)
    ci = ContactInput(contact(1), NOW - timedelta(days=1), False, (), (), live, fu.seq)
    (p,) = plan([ci], [], {}, fu.end + timedelta(hours=1), CFG)
    assert p.retire == fu.id
    assert p.followup is not None and p.followup.action == "create"
    assert p.followup.seq == fu.seq + 1


def test_user_moved_followup_is_never_moved_back() -> None:
    (first,) = plan([fresh(1)], [], {}, NOW, CFG)
    fu = first.followup
    assert fu is not None
    moved = fu.start + timedelta(days=3)
    live = LiveRec(fu.id, fu.seq, moved, moved + timedelta(minutes=15), fu.channel, "other",
                   "live", True, True)
    ci = ContactInput(contact(1), NOW - timedelta(days=1), False, (), (), live, fu.seq)
    (p,) = plan([ci], [], {}, NOW, CFG)
    assert p.followup is not None and p.followup.action == "keep"
    assert p.followup.start == moved


busy_st = st.lists(
    st.tuples(st.integers(0, 14 * 24 * 4), st.integers(1, 16)), max_size=25)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 14), zones=st.lists(st.sampled_from(ZONES), min_size=14, max_size=14),
       busy_spec=busy_st)
def test_plans_respect_hours_slots_busy_and_daily_limit(
        n: int, zones: list[str], busy_spec: list[tuple[int, int]]) -> None:
    busy = [(NOW + timedelta(minutes=15 * a), NOW + timedelta(minutes=15 * (a + b)))
            for a, b in busy_spec]
    inputs = [fresh(i, zones[i]) for i in range(n)]
    plans = plan(inputs, busy, {}, NOW, CFG)
    assert plans == plan(inputs, busy, {}, NOW, CFG)  # deterministic
    per_day: dict[date, int] = {}
    placed: list[tuple[datetime, datetime]] = []
    for p in plans:
        fu = p.followup
        assert fu is not None
        local = fu.start.astimezone(NY)
        assert local.weekday() < 5
        assert CFG.working_hours.start <= local.time()
        assert fu.end.astimezone(NY).time() <= CFG.working_hours.end
        assert all(not (s < fu.end and fu.start < e) for s, e in busy + placed)
        placed.append((fu.start, fu.end))
        per_day[local.date()] = per_day.get(local.date(), 0) + 1
        if fu.slot and not fu.slot_note:
            slot = next(s for s in SLOTS if s.name == fu.slot)
            their = fu.start.astimezone(ZoneInfo(p.timezone))
            assert slot.start <= their.time() and (
                fu.end.astimezone(ZoneInfo(p.timezone)).time() <= slot.end)
    assert max(per_day.values()) <= CFG.daily_limit


def test_holidays_are_not_working_days() -> None:
    from dataclasses import replace

    cfg = replace(CFG, holidays="US")
    # Wed Nov 25, 2026 at 17:00 New York: the day is nearly over; Thursday is
    # Thanksgiving, so the next call is on Friday.
    late = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
    (p,) = plan([fresh(1)], [], {}, late, cfg)
    assert p.followup is not None
    assert p.followup.start.astimezone(NY).date() == date(2026, 11, 27)
    # Two business days after Wednesday skip Thanksgiving: Monday, not Friday.
    at = datetime(2026, 11, 25, 9, 10, tzinfo=NY)
    ci = ContactInput(contact(1), at, False,
                      (AttemptRec(at, Channel.CALL, Outcome.NO_ANSWER),), (), None, 1)
    (p,) = plan([ci], [], {}, at, cfg)
    assert p.followup is not None
    assert p.followup.start.astimezone(NY).date() == date(2026, 11, 30)


def test_zone_from_the_phone_number_and_where_it_came_from() -> None:
    c = Contact(source="t", uid="x", name="X", phones=("+44 20 7946 0103",))
    ci = ContactInput(c, NOW, False, (), (), None, 0)
    (p,) = plan([ci], [], {}, NOW, CFG)
    assert (p.timezone, p.timezone_source) == ("Europe/London", "phone")
    c = Contact(source="t", uid="y", name="Y", phones=("+44 20 7946 0103",),
                timezone="Asia/Tokyo")
    (p,) = plan([ContactInput(c, NOW, False, (), (), None, 0)], [], {}, NOW, CFG)
    assert (p.timezone, p.timezone_source) == ("Asia/Tokyo", "contact")


def test_slot_outside_working_hours_is_noted() -> None:
    # India's calling day is New York's night: no slot meets 08:00-18:30.
    (p,) = plan([fresh(1, "Asia/Kolkata")], [], {}, NOW, CFG)
    assert p.followup is not None
    assert "no calling slot in Asia/Kolkata meets your working hours" in p.note
    local = p.followup.start.astimezone(NY)
    assert CFG.working_hours.start <= local.time() <= CFG.working_hours.end


def test_overflow_moves_to_later_days_by_priority() -> None:
    # 5 new pursuits and 2 keep-in-touch contacts, daily_limit 3: the
    # pursuits (until: reached) take the first slots.
    kit = Cadence("keep_in_touch", "email", Duration(4, Unit.WEEKS))
    cfg = replace_cfg(rules=(Rule(RuleMatch(label="kit"), "keep_in_touch"),
                             Rule(RuleMatch(), "pursue")), cadences=(CFG.cadences[0], kit))
    inputs = [fresh(i) for i in range(5)] + [
        ContactInput(Contact(source="t", uid=f"k{i}", name=f"K{i}", labels=("kit",)),
                     NOW - timedelta(days=1), False, (), (), None, 0) for i in range(2)]
    plans = plan(inputs, [], {}, NOW, cfg)
    first_day = min(p.followup.start.astimezone(NY).date() for p in plans if p.followup)
    on_first = [p for p in plans if p.followup and
                p.followup.start.astimezone(NY).date() == first_day]
    assert len(on_first) == 3
    assert all(p.cadence == "pursue" for p in on_first)


def replace_cfg(**kw: object) -> Config:
    from dataclasses import replace

    return replace(CFG, **kw)  # type: ignore[arg-type]


def test_a_long_queue_at_the_daily_limit_is_planned_not_crammed_in() -> None:
    # 1,300 new contacts at 3 a day need more than SEARCH_DAYS: those beyond
    # are planned after the window, never written now.
    plans = plan([fresh(i) for i in range(1300)], [], {}, NOW, CFG)
    created = [p for p in plans if p.followup and p.followup.action == "create"]
    assert len(created) == 30  # 10 working days in the 14-day horizon x 3
    per_day: dict[date, int] = {}
    for p in plans:
        assert p.followup is not None
        d = p.followup.start.astimezone(NY).date()
        per_day[d] = per_day.get(d, 0) + 1
    assert max(n for d, n in per_day.items() if d <= NOW.date() + timedelta(days=400)) <= 3


# ---------------------------------------------------------------------------
# Expiry: until when a plan holds. The cycle skips planning while nothing
# changed and now is before `until`; this proves that skipping is safe:
# planning again at any instant before `until` decides exactly the same.

HORIZONS = [Duration(14, Unit.DAYS), Duration(2, Unit.WEEKS), Duration(36, Unit.HOURS),
            Duration(90, Unit.MINUTES), Duration(1, Unit.MONTHS), Duration(5, Unit.BUSINESS_DAYS)]
# Around both of New York's clock changes in 2026, and an ordinary week.
EPOCHS = [datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 10, 30, tzinfo=UTC),
          datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 12, 28, tzinfo=UTC)]


def settle(inputs: list[ContactInput], now: datetime, cfg: Config,
           moved: set[int]) -> list[ContactInput]:
    """The inputs after the cycle wrote `plan(inputs, now)`: created and moved
    follow-ups are live, the rest stored as planned; a few the user moved."""
    from dataclasses import replace

    out = []
    for i, (ci, p) in enumerate(zip(inputs, plan(inputs, [], {}, now, cfg), strict=True)):
        fu = p.followup
        if fu is None:
            out.append(replace(ci, live=None))
            continue
        shift = timedelta(hours=20) if i in moved else timedelta(0)
        status = "planned" if fu.action == "planned" else "live"
        out.append(replace(ci, last_seq=fu.seq, live=LiveRec(
            fu.id, fu.seq, fu.start + shift, fu.end + shift, fu.channel, fu.basis, status,
            False, bool(shift) and status == "live")))
    return out


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[ContactInput], datetime, datetime, Config]:
    epoch = draw(st.sampled_from(EPOCHS))
    t0 = epoch + timedelta(minutes=draw(st.integers(0, 9 * 24 * 60)))
    later = t0 + timedelta(minutes=draw(st.integers(0, 6 * 24 * 60)))
    stop_after = draw(st.sampled_from([None, Duration(3, Unit.DAYS), Duration(2, Unit.WEEKS)]))
    cfg = replace_cfg(
        horizon=draw(st.sampled_from(HORIZONS)),
        daily_limit=draw(st.integers(1, 4)),
        holidays=draw(st.sampled_from([None, "US"])),
        cadences=(Cadence("pursue", "call", Duration(draw(st.integers(1, 3)), Unit.BUSINESS_DAYS),
                          "reached", "keep_in_touch", stop_after=stop_after),
                  Cadence("keep_in_touch", "email", Duration(4, Unit.WEEKS))))
    inputs = []
    for i in range(draw(st.integers(1, 9))):
        seen = t0 - timedelta(minutes=draw(st.integers(0, 20 * 24 * 60)))
        attempts = tuple(sorted(
            (AttemptRec(seen + timedelta(minutes=m), draw(st.sampled_from(list(Channel)[:2])),
                        draw(st.sampled_from([Outcome.NO_ANSWER, Outcome.VOICEMAIL,
                                              Outcome.REACHED, Outcome.SENT])))
             for m in draw(st.lists(st.integers(0, max(0, int((t0 - seen).total_seconds()
                                                              // 60))), max_size=4))),
            key=lambda a: a.at))
        commands = tuple(
            CommandRec(kind, 0, seen, t0 + timedelta(minutes=m))
            for kind, m in draw(st.lists(st.tuples(
                st.sampled_from(["pause", "snooze", "next"]),
                st.integers(-3 * 24 * 60, 8 * 24 * 60)), max_size=2)))
        interviews = tuple(
            (t0 + timedelta(minutes=m), "interview") for m in
            draw(st.lists(st.integers(-2 * 24 * 60, 3 * 24 * 60), max_size=1)))
        inputs.append(ContactInput(contact(i, draw(st.sampled_from(ZONES))), seen, False,
                                   attempts, commands, None, 0, interviews=interviews))
    moved = set(draw(st.lists(st.integers(0, 9), max_size=2)))
    return settle(inputs, t0, cfg, moved), later, t0, cfg


@settings(max_examples=400, deadline=None)
@given(case=scenario(), frac=st.floats(0, 1, exclude_max=True))
def test_a_plan_holds_until_its_expiry(
        case: tuple[list[ContactInput], datetime, datetime, Config], frac: float) -> None:
    from syncd.planner import Expiry

    inputs, now, _t0, cfg = case
    exp = Expiry(now)
    first = plan(inputs, [], {}, now, cfg, expiry=exp)
    assert exp.until is not None  # at least the year's end
    # Some instant before the expiry, and the last one.
    span = exp.until - now
    last = exp.until - timedelta(microseconds=1)
    for later in {min(now + span * frac, last), last}:  # span * frac rounds to µs
        if later >= now:
            assert plan(inputs, [], {}, later, cfg) == first, (now, exp.until, later)
