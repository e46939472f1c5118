"""Parse the human durations used in the config and in notes (`snooze 2w`).

Import it as `from syncd.config import parse_duration`; it lives in its own
module only so the notes parser need not import the YAML machinery.
"""

from __future__ import annotations

import re

from syncd.settings import Duration, Unit

# Every spelling people actually type. A bare `m` is minutes (`poll_interval:
# 2m`); months need at least `mo` so the two never collide.
_UNIT_WORDS: dict[Unit, tuple[str, ...]] = {
    Unit.MINUTES: ("m", "min", "mins", "minute", "minutes"),
    Unit.HOURS: ("h", "hr", "hrs", "hour", "hours"),
    Unit.DAYS: ("d", "day", "days"),
    Unit.BUSINESS_DAYS: (
        "bd",
        "business day",
        "business days",
        "working day",
        "working days",
        "workday",
        "workdays",
    ),
    Unit.WEEKS: ("w", "wk", "wks", "week", "weeks"),
    Unit.MONTHS: ("mo", "mos", "month", "months"),
    Unit.YEARS: ("y", "yr", "yrs", "year", "years"),
}
_UNITS: dict[str, Unit] = {word: unit for unit, words in _UNIT_WORDS.items() for word in words}

ACCEPTED_FORMS = "2m, 2h, 14d, 2w, 2 business days, 4 weeks, 1 month, 2 years"

_SHAPE = re.compile(r"(\d+)\s*([a-z][a-z ]*)?")


def parse_duration(text: str) -> Duration:
    """`2m`, `2h`, `14d`, `2w`, `2 business days`, `1 month`, `2 years`, `1y`.

    Raises ValueError whose message quotes the text and lists the accepted
    forms; callers prefix it with where the text came from.
    """
    # Case, `-`/`_` and repeated spaces are noise: "2 Business-Days" is fine.
    normal = " ".join(re.sub(r"(?<=[a-z])[-_](?=[a-z])", " ", text.lower()).split())
    shape = _SHAPE.fullmatch(normal)
    if shape is None:
        raise ValueError(
            f"{text!r} is not a duration; use a whole number and a unit: {ACCEPTED_FORMS}"
        )
    amount, word = int(shape.group(1)), (shape.group(2) or "").strip()
    if not word:
        # A bare number is ambiguous (minutes? days?), so it is never guessed.
        raise ValueError(f"{text!r} needs a unit, e.g. {ACCEPTED_FORMS}")
    unit = _UNITS.get(word)
    if unit is None:
        raise ValueError(f"{text!r} has an unknown unit {word!r}; use one of: {ACCEPTED_FORMS}")
    if amount == 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return Duration(amount, unit)
