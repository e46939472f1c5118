"""Reach simulation: does syncd's time-of-day policy find people sooner and
reach them more often than fixed habits?

A synthetic population of contacts in several time zones, each with a chance
of picking up that depends on the slot (in their local time) of the call:
one good slot, for some a second fair one, the rest poor; on top, the whole
population shares a weaker tendency (early and late calls do a bit better).

Policies:
  syncd        the real planner (syncd.planner.plan) picks each call's time
  same-slot    always the morning slot (a common habit)
  round-robin  rotate through the five slots, from a random start
  random       a uniformly random slot
  thompson     Thompson sampling on independent Beta(1, 1) posteriors per slot
  oracle       always the contact's best slot (knows the hidden truth)

Measures:
  (a) attempts until the first reach (capped at --cap; mean, median, share
      within 5 and within 10), calls every 2 business days;
  (b) the long run: 24 monthly calls (two years), reaches per contact.

Usage: python bench/reach_sim.py [--contacts 500] [--seeds 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syncd import learning
from syncd.learning import SLOTS
from syncd.model import Channel, Contact, Outcome
from syncd.planner import AttemptRec, ContactInput, plan
from syncd.settings import (
    Cadence,
    Config,
    Duration,
    Rule,
    RuleMatch,
    Unit,
    WorkingHours,
)

ZONES = ["America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London",
         "Europe/Berlin", "Asia/Tokyo", "Asia/Singapore", "Australia/Sydney"]
POLICIES = ["syncd", "thompson", "same-slot", "round-robin", "random", "oracle"]
START = datetime(2027, 1, 4, 0, 0, tzinfo=ZoneInfo("UTC"))  # a Monday
POOR, FAIR, GOOD = 0.04, 0.16, 0.45
SHARED = (0.04, 0.0, 0.0, 0.0, 0.04)  # the population's weak tendency, per slot
SAME_SLOT = 1  # morning


@dataclass(frozen=True)
class Person:
    id: str
    zone: str
    p: tuple[float, ...]  # chance of picking up per slot

    @property
    def best(self) -> int:
        return max(range(len(SLOTS)), key=lambda i: self.p[i])


def population(n: int, rng: random.Random) -> list[Person]:
    people = []
    for k in range(n):
        good = rng.randrange(len(SLOTS))
        p = [POOR + SHARED[i] for i in range(len(SLOTS))]
        p[good] = GOOD
        if rng.random() < 0.4:
            fair = rng.choice([i for i in range(len(SLOTS)) if i != good])
            p[fair] = FAIR + SHARED[fair]
        people.append(Person(f"sim:{k}", rng.choice(ZONES), tuple(p)))
    return people


def sim_config(every: Duration) -> Config:
    # Working hours cover the whole day so every slot in every zone is
    # allowed: the simulation measures the slot policy, not the calendar.
    return Config(
        path=Path("sim.yaml"), timezone="America/New_York", state_dir=Path("/nonexistent"),
        daily_limit=10**6, horizon=Duration(3650, Unit.DAYS),
        working_hours=WorkingHours(frozenset(range(7)), dtime(0, 0), dtime(23, 59)),
        cadences=(Cadence("sim", "call", every, "never"),),
        rules=(Rule(RuleMatch(), "sim"),),
    )


class SyncdPolicy:
    """Each call's time comes from the real planner, one contact at a time
    (so calls don't compete for the calendar), with the pooled prior of
    everyone's outcomes so far."""

    def __init__(self, people: list[Person], cfg: Config) -> None:
        self.cfg = cfg
        self.contacts = {p.id: Contact(source="sim", uid=p.id[4:], name=p.id, timezone=p.zone)
                         for p in people}
        self.history: dict[str, list[AttemptRec]] = {p.id: [] for p in people}
        self.pool = learning.DEFAULT_MODEL

    def next_call(self, person: Person, now: datetime) -> datetime:
        ci = ContactInput(self.contacts[person.id], START, False,
                          tuple(self.history[person.id]), (), None, 0)
        (p,) = plan([ci], [], {}, now, self.cfg, self.pool)
        if p.followup is None:
            raise RuntimeError(f"no follow-up planned for {person.id}")
        return p.followup.start

    def record(self, person: Person, at: datetime, reached: bool) -> None:
        self.history[person.id].append(
            AttemptRec(at, Channel.CALL, Outcome.REACHED if reached else Outcome.NO_ANSWER))

    def end_round(self, people: list[Person]) -> None:
        self.pool = learning.fit(
            learning.stats(self.history[p.id], ZoneInfo(p.zone)) for p in people)


def fixed_slot_policy(
    name: str, rng: random.Random, seen: dict[str, list[list[int]]]
) -> Callable[[Person, int], int]:
    offsets: dict[str, int] = {}

    def pick(person: Person, k: int) -> int:
        if name == "thompson":
            wins, losses = seen[person.id]
            draws = [rng.betavariate(1 + wins[i], 1 + losses[i]) for i in range(len(SLOTS))]
            return max(range(len(SLOTS)), key=lambda i: draws[i])
        if name == "same-slot":
            return SAME_SLOT
        if name == "round-robin":
            off = offsets.setdefault(person.id, rng.randrange(len(SLOTS)))
            return (off + k) % len(SLOTS)
        if name == "random":
            return rng.randrange(len(SLOTS))
        return person.best  # oracle

    return pick


def run(policy: str, people: list[Person], seed: int, calls: int, every: Duration,
        stop_at_reach: bool) -> list[list[bool]]:
    """Each person's outcomes, call by call (all people call in rounds)."""
    rng = random.Random(f"{policy}:{seed}")
    luck = random.Random(f"outcomes:{seed}")  # the same draws across policies
    draws = {p.id: [luck.random() for _ in range(calls)] for p in people}
    out: dict[str, list[bool]] = {p.id: [] for p in people}
    active = list(people)
    syncd = SyncdPolicy(people, sim_config(every)) if policy == "syncd" else None
    seen = {p.id: [[0] * len(SLOTS), [0] * len(SLOTS)] for p in people}
    pick = fixed_slot_policy(policy, rng, seen)
    now = {p.id: START for p in people}
    for k in range(calls):
        for person in active:
            if syncd is not None:
                at = syncd.next_call(person, now[person.id])
                slot = learning.slot_index(at, ZoneInfo(person.zone))
                if slot is None:
                    raise RuntimeError(f"planner put a call outside every slot: {at}")
            else:
                slot = pick(person, k)
                at = now[person.id]
            reached = draws[person.id][k] < person.p[slot]
            out[person.id].append(reached)
            seen[person.id][0 if reached else 1][slot] += 1
            if syncd is not None:
                syncd.record(person, at, reached)
            now[person.id] = at + timedelta(minutes=30)
        if syncd is not None:
            syncd.end_round(people)
        if stop_at_reach:
            active = [p for p in active if not any(out[p.id])]
            if not active:
                break
    return list(out.values())


def summarise_first_reach(runs: list[list[bool]], cap: int) -> dict[str, float]:
    firsts = [r.index(True) + 1 if True in r else cap + 1 for r in runs]
    return {
        "mean": statistics.fmean(firsts),
        "median": statistics.median(firsts),
        "within_5": sum(f <= 5 for f in firsts) / len(firsts),
        "within_10": sum(f <= 10 for f in firsts) / len(firsts),
        "never": sum(f > cap for f in firsts) / len(firsts),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--cap", type=int, default=60, help="most attempts tried for (a)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for policy in POLICIES:
        first: list[list[bool]] = []
        longrun: list[float] = []
        for seed in range(args.seeds):
            people = population(args.contacts, random.Random(seed))
            first += run(policy, people, seed, args.cap, Duration(2, Unit.BUSINESS_DAYS), True)
            long = run(policy, people, seed, 24, Duration(1, Unit.MONTHS), False)
            longrun += [sum(r) for r in long]
        results[policy] = {
            "first_reach": summarise_first_reach(first, args.cap),
            "long_run": {"reaches_per_contact": statistics.fmean(longrun)},
        }
        print(f"  {policy:<12} done ({time.monotonic() - t0:.0f}s)", file=sys.stderr)

    base, s, rr = results["same-slot"], results["syncd"], results["round-robin"]
    checks = {
        "a_vs_same_slot": s["first_reach"]["mean"] / base["first_reach"]["mean"],
        "a_vs_round_robin": s["first_reach"]["mean"] / rr["first_reach"]["mean"],
        "b_vs_same_slot": s["long_run"]["reaches_per_contact"]
        / base["long_run"]["reaches_per_contact"],
        "b_vs_oracle": s["long_run"]["reaches_per_contact"]
        / results["oracle"]["long_run"]["reaches_per_contact"],
    }
    targets = {"a_vs_same_slot": ("<=", 0.6), "a_vs_round_robin": ("<=", 1.0),
               "b_vs_same_slot": (">=", 1.7), "b_vs_oracle": (">=", 0.65)}
    met = {k: (checks[k] <= v if op == "<=" else checks[k] >= v)
           for k, (op, v) in targets.items()}

    print(f"\n{args.contacts} contacts x {args.seeds} seeds\n")
    print("| policy | (a) mean | median | within 5 | within 10 | (b) reaches / 24 calls |")
    print("|---|---|---|---|---|---|")
    for policy in POLICIES:
        a, b = results[policy]["first_reach"], results[policy]["long_run"]
        print(f"| {policy} | {a['mean']:.2f} | {a['median']:.0f} | {a['within_5']:.0%} | "
              f"{a['within_10']:.0%} | {b['reaches_per_contact']:.2f} |")
    print()
    for k, v in checks.items():
        op, target = targets[k]
        print(f"{k}: {v:.2f} (target {op} {target}) {'ok' if met[k] else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"contacts": args.contacts, "seeds": args.seeds,
                                         "results": results, "ratios": checks,
                                         "targets_met": met}, indent=2))
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
