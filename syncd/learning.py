"""Which time of day to call: a Bayesian model of "each person has a time of
day when they pick up", fitted to everyone's calls, and a greedy choice under
it. Pure.

The article's premise is the model: one person is reachable early, another
after lunch, a third late in the day. So each contact has one *best* slot,
unknown, where a call reaches them with probability `p_hi`; in the other slots
(in the contact's own zone) the chance is `p_lo`. Reached/replied is a
success; no answer, voicemail and gatekeeper are failures (wrong numbers and
written outcomes say nothing about the time of day and are left out).

- Posterior: P(best = s | this contact's calls) ∝ π_s · Π_j Bernoulli(calls
  in j | p_hi if j = s else p_lo). A failure in a slot moves belief to the
  others; a reach concentrates it.
- Empirical Bayes: p_hi, p_lo and the population's tendency π_s ("early calls
  do a bit better for everyone") are fitted to all contacts' calls by a few EM
  steps, starting from sceptical defaults, so a new contact starts from what
  works for people in general.
- Choice: the slot with the highest posterior predictive chance of reaching
  them, P(best = s)·p_hi + (1 − P(best = s))·p_lo. Untried slots keep their
  prior mass, so the policy explores them while tried ones keep failing, and
  stays with a slot once it works. Ties (a new contact) are broken by a draw
  seeded with the contact id and attempt number: the same history always gives
  the same choice (SPEC: deterministic).

`bench/reach_sim.py` compares this with fixed habits, random choice, an
oracle, and with Thompson sampling on independent Beta posteriors, which
explores too much over the 24 calls of a two-year pursuit.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

from syncd.model import Channel, Outcome


@dataclass(frozen=True)
class Slot:
    name: str
    start: time
    end: time


# SPEC, "Time-of-day learning": default slots, in the contact's zone.
SLOTS: tuple[Slot, ...] = (
    Slot("early", time(7, 30), time(9, 0)),
    Slot("morning", time(9, 0), time(11, 30)),
    Slot("midday", time(11, 30), time(13, 30)),
    Slot("afternoon", time(13, 30), time(16, 0)),
    Slot("late", time(16, 0), time(18, 30)),
)
SUCCESS = frozenset({Outcome.REACHED, Outcome.REPLIED})
FAILURE = frozenset({Outcome.NO_ANSWER, Outcome.VOICEMAIL, Outcome.GATEKEEPER})


@dataclass(frozen=True)
class SlotStats:
    """Successes and failures per slot, for one contact."""

    wins: tuple[float, ...] = (0.0,) * len(SLOTS)
    losses: tuple[float, ...] = (0.0,) * len(SLOTS)

    def calls(self, i: int) -> int:
        return int(self.wins[i] + self.losses[i])

    def total(self) -> int:
        return int(sum(self.wins) + sum(self.losses))


@dataclass(frozen=True, slots=True)
class Call:
    """One past call: when (any zone) and how it went."""

    at: datetime
    channel: Channel
    outcome: Outcome


def slot_index(at: datetime, tz: ZoneInfo) -> int | None:
    t = at.astimezone(tz).time()
    for i, s in enumerate(SLOTS):
        if s.start <= t < s.end:
            return i
    return None


def stats(calls: Iterable[Call], tz: ZoneInfo) -> SlotStats:
    wins = [0.0] * len(SLOTS)
    losses = [0.0] * len(SLOTS)
    for c in calls:
        if c.channel is not Channel.CALL:
            continue
        i = slot_index(c.at, tz)
        if i is None:
            continue
        if c.outcome in SUCCESS:
            wins[i] += 1
        elif c.outcome in FAILURE:
            losses[i] += 1
    return SlotStats(tuple(wins), tuple(losses))


@dataclass(frozen=True)
class Model:
    """Population hyperparameters: reach chance in the best slot and in the
    others, and how often each slot is people's best."""

    p_hi: float
    p_lo: float
    weights: tuple[float, ...]


# Sceptical defaults, worth PSEUDO calls against the data when fitting.
DEFAULT_MODEL = Model(0.35, 0.06, (1 / len(SLOTS),) * len(SLOTS))
PSEUDO = 10.0
EM_STEPS = 5


def posterior(own: SlotStats, model: Model) -> tuple[float, ...]:
    """P(best slot = s | the contact's calls), for every s."""
    lh, ll = math.log(model.p_hi), math.log(model.p_lo)
    mh, ml = math.log1p(-model.p_hi), math.log1p(-model.p_lo)
    # log-likelihood if s is best = base + (difference in slot s)
    base = sum(w * ll + f * ml for w, f in zip(own.wins, own.losses, strict=True))
    logs = [math.log(model.weights[s]) + base
            + own.wins[s] * (lh - ll) + own.losses[s] * (mh - ml) for s in range(len(SLOTS))]
    top = max(logs)
    ps = [math.exp(x - top) for x in logs]
    z = sum(ps)
    return tuple(p / z for p in ps)


def fit(people: Iterable[SlotStats]) -> Model:
    """Empirical Bayes by EM over all contacts (each step: posteriors, then
    reach rates and slot shares), anchored by the defaults as pseudo-calls."""
    data = [p for p in people if p.total() > 0]
    model = DEFAULT_MODEL
    if not data:
        return model
    for _ in range(EM_STEPS):
        hi_w = PSEUDO * DEFAULT_MODEL.p_hi
        hi_n = PSEUDO
        lo_w = PSEUDO * DEFAULT_MODEL.p_lo
        lo_n = PSEUDO
        share = [PSEUDO * w for w in DEFAULT_MODEL.weights]
        for st in data:
            post = posterior(st, model)
            for s in range(len(SLOTS)):
                n = st.wins[s] + st.losses[s]
                hi_w += post[s] * st.wins[s]
                hi_n += post[s] * n
                lo_w += (1 - post[s]) * st.wins[s]
                lo_n += (1 - post[s]) * n
                share[s] += post[s]
        p_lo = min(max(lo_w / lo_n, 0.005), 0.9)
        p_hi = min(max(hi_w / hi_n, p_lo + 0.05), 0.95)
        total = sum(share)
        model = Model(p_hi, p_lo, tuple(x / total for x in share))
    return model


def choose(contact_id: str, own: SlotStats, model: Model, attempt_no: int,
           allowed: tuple[int, ...] = tuple(range(len(SLOTS)))) -> int:
    """The allowed slot with the highest posterior chance of reaching them;
    ties broken by a draw seeded with the contact and attempt number."""
    post = posterior(own, model)
    seed = int.from_bytes(hashlib.sha256(f"{contact_id}#{attempt_no}".encode()).digest()[:8])
    rng = random.Random(seed)
    keyed = [(post[i], rng.random(), i) for i in allowed]
    top = max(p for p, _r, _i in keyed)
    return max((r, i) for p, r, i in keyed if p >= top - 1e-12)[1]


@dataclass(frozen=True)
class Evidence:
    slot: Slot
    probability: float  # that this is their best slot
    calls: int
    reached: int
    rate: float  # posterior predictive reach chance in this slot


def best(own: SlotStats, model: Model) -> Evidence | None:
    """The contact's most likely best slot with its evidence; None before the
    contact has any calls."""
    if own.total() == 0:
        return None
    post = posterior(own, model)
    i = max(range(len(SLOTS)), key=lambda k: (post[k], own.calls(k)))
    rate = post[i] * model.p_hi + (1 - post[i]) * model.p_lo
    return Evidence(SLOTS[i], post[i], own.calls(i), int(own.wins[i]), rate)
