"""The time-of-day model and policy (pure), and a small reach simulation."""

from __future__ import annotations

import random
from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from bench import reach_sim
from syncd import learning
from syncd.learning import SLOTS, Call, SlotStats
from syncd.model import Channel, Outcome

NY = ZoneInfo("America/New_York")


def one(slot: int, wins: int = 0, losses: int = 0) -> SlotStats:
    w = [0.0] * len(SLOTS)
    f = [0.0] * len(SLOTS)
    w[slot], f[slot] = wins, losses
    return SlotStats(tuple(w), tuple(f))


def test_calls_are_counted_in_the_contacts_own_zone() -> None:
    # 13:00 UTC is 08:00 in New York: the early slot there.
    at = datetime(2026, 11, 25, 13, 0, tzinfo=ZoneInfo("UTC"))
    st_ = learning.stats([Call(at, Channel.CALL, Outcome.REACHED)], NY)
    assert st_.wins[0] == 1
    # E-mails and wrong numbers say nothing about the time of day.
    st_ = learning.stats([Call(at, Channel.EMAIL, Outcome.SENT),
                          Call(at, Channel.CALL, Outcome.WRONG_NUMBER)], NY)
    assert st_.total() == 0


def test_a_reach_concentrates_belief_and_failures_move_it() -> None:
    m = learning.DEFAULT_MODEL
    after_reach = learning.posterior(one(2, wins=1), m)
    assert max(range(5), key=lambda i: after_reach[i]) == 2
    after_fail = learning.posterior(one(2, losses=1), m)
    assert after_fail[2] < 1 / len(SLOTS) < after_fail[0]


def test_choice_is_deterministic_and_stays_with_what_works() -> None:
    m = learning.DEFAULT_MODEL
    fresh = SlotStats()
    assert learning.choose("a", fresh, m, 1) == learning.choose("a", fresh, m, 1)
    # Different contacts start in different slots (ties broken by the seed).
    starts = {learning.choose(f"c{i}", fresh, m, 1) for i in range(40)}
    assert len(starts) == len(SLOTS)
    assert learning.choose("a", one(3, wins=2, losses=1), m, 4) == 3
    # A slot that only failed is not tried again while others are untried.
    assert learning.choose("a", one(3, losses=1), m, 2) != 3


def test_choice_respects_allowed_slots() -> None:
    m = learning.DEFAULT_MODEL
    assert learning.choose("a", one(3, wins=5), m, 6, allowed=(0, 1)) in (0, 1)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_em_recovers_the_population(seed: int) -> None:
    rng = random.Random(seed)
    people = []
    for _ in range(300):
        best = rng.randrange(len(SLOTS))
        wins, losses = [0.0] * 5, [0.0] * 5
        for _call in range(10):
            s = rng.randrange(len(SLOTS))
            p = 0.5 if s == best else 0.05
            if rng.random() < p:
                wins[s] += 1
            else:
                losses[s] += 1
        people.append(SlotStats(tuple(wins), tuple(losses)))
    model = learning.fit(people)
    assert 0.35 < model.p_hi < 0.65
    assert 0.02 < model.p_lo < 0.09


def test_best_slot_reports_its_evidence() -> None:
    m = learning.DEFAULT_MODEL
    assert learning.best(SlotStats(), m) is None
    ev = learning.best(one(1, wins=2, losses=1), m)
    assert ev is not None
    assert (ev.slot.name, ev.calls, ev.reached) == ("morning", 3, 2)
    assert 0.5 < ev.probability <= 1


def test_small_simulation_learns_through_the_real_planner() -> None:
    """A small run of bench/reach_sim.py: syncd's policy (through the planner)
    must beat fixed habits and independent Thompson sampling in the long run."""
    people = reach_sim.population(60, random.Random(7))
    long = {name: sum(map(sum, reach_sim.run(name, people, 7, 24,
                                             reach_sim.Duration(1, reach_sim.Unit.MONTHS),
                                             False)))
            for name in ("syncd", "same-slot", "round-robin", "thompson", "oracle")}
    assert long["syncd"] > 1.7 * long["same-slot"]
    assert long["syncd"] > long["round-robin"]
    assert long["syncd"] > long["thompson"]
    assert long["syncd"] < long["oracle"]
