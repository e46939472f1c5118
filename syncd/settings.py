"""Typed, frozen configuration objects. `syncd.config` validates YAML into these.

Nothing downstream of `syncd.config.load()` sees a raw dict.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path


class Unit(enum.StrEnum):
    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"
    BUSINESS_DAYS = "business_days"
    WEEKS = "weeks"
    MONTHS = "months"
    YEARS = "years"


@dataclass(frozen=True)
class Duration:
    """`2m`, `14d`, `2 business days`, `4 weeks`, `1 month`, `2 years`.

    Kept symbolic because business days and months are calendar arithmetic,
    not a fixed number of seconds; `syncd.timeutil` does the arithmetic.
    """

    amount: int
    unit: Unit

    def seconds(self) -> float:
        """Approximate length (exact for minutes..weeks); for poll intervals."""
        per = {
            Unit.MINUTES: 60,
            Unit.HOURS: 3600,
            Unit.DAYS: 86400,
            Unit.BUSINESS_DAYS: 86400 * 7 / 5,
            Unit.WEEKS: 7 * 86400,
            Unit.MONTHS: 30.44 * 86400,
            Unit.YEARS: 365.25 * 86400,
        }[self.unit]
        return self.amount * per

    def __str__(self) -> str:
        return f"{self.amount} {self.unit.value.replace('_', ' ')}"


@dataclass(frozen=True)
class WorkingHours:
    days: frozenset[int] = frozenset({0, 1, 2, 3, 4})  # Monday = 0
    start: time = time(8, 0)
    end: time = time(18, 30)


@dataclass(frozen=True)
class Secret:
    """Where a secret comes from; never the secret itself (that is read on use)."""

    env: str | None = None
    file: Path | None = None
    command: str | None = None

    def is_set(self) -> bool:
        return bool(self.env or self.file or self.command)


@dataclass(frozen=True)
class Connection:
    """Connection overrides every remote source and calendar accepts (SPEC)."""

    api_endpoint: str | None = None
    graph_endpoint: str | None = None
    authority: str | None = None
    ca_bundle: Path | None = None
    token_file: Path | None = None
    token_cache: Path | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class SourceConfig:
    name: str
    type: str  # file | carddav | google | outlook
    path: Path | None = None  # file
    url: str | None = None  # carddav
    username: str | None = None
    password: Secret = field(default_factory=Secret)
    labels: tuple[str, ...] = ()  # google
    categories: tuple[str, ...] = ()  # outlook
    folders: tuple[str, ...] = ()  # outlook
    client_id: str | None = None  # outlook / google
    client_secret: Secret = field(default_factory=Secret)
    tenant: str = "common"
    connection: Connection = field(default_factory=Connection)
    line: int = 0  # where it was defined, for messages


@dataclass(frozen=True)
class CalendarConfig:
    type: str  # caldav | google | graph
    url: str | None = None
    calendar: str = "Follow-ups"
    username: str | None = None
    password: Secret = field(default_factory=Secret)
    busy_calendars: tuple[str, ...] = ()
    client_id: str | None = None
    client_secret: Secret = field(default_factory=Secret)
    tenant: str = "common"
    connection: Connection = field(default_factory=Connection)


@dataclass(frozen=True)
class Cadence:
    name: str
    channel: str = "call"  # call | email | message | meeting
    every: Duration = Duration(2, Unit.BUSINESS_DAYS)
    until: str = "never"  # reached | replied | never
    then: str | None = None  # cadence name to switch to when `until` is met
    stop_after: Duration | None = None
    max_attempts: int | None = None


@dataclass(frozen=True)
class RuleMatch:
    label: str | None = None
    source: str | None = None
    company: str | None = None


@dataclass(frozen=True)
class Rule:
    match: RuleMatch
    cadence: str
    timezone: str | None = None


@dataclass(frozen=True)
class Interviews:
    title_contains: str = "Interview"
    thank_you_within: Duration = Duration(1, Unit.DAYS)
    # The cadence people you interviewed with move to after the thank-you.
    then: str = "keep_in_touch"
    # Your own addresses: never thanked (lower case).
    me: tuple[str, ...] = ()


@dataclass(frozen=True)
class CallerId:
    hide_after_attempts: int = 3
    prefix: str = "*67"


@dataclass(frozen=True)
class NewsItem:
    date: str  # ISO date
    text: str


@dataclass(frozen=True)
class Config:
    path: Path
    timezone: str
    state_dir: Path
    poll_interval: Duration = Duration(2, Unit.MINUTES)
    horizon: Duration = Duration(14, Unit.DAYS)
    daily_limit: int = 12
    working_hours: WorkingHours = field(default_factory=WorkingHours)
    holidays: str | None = None
    contacts: tuple[SourceConfig, ...] = ()
    calendar: CalendarConfig | None = None
    cadences: tuple[Cadence, ...] = ()
    rules: tuple[Rule, ...] = ()
    interviews: Interviews = field(default_factory=Interviews)
    caller_id: CallerId = field(default_factory=CallerId)
    news: tuple[NewsItem, ...] = ()

    def cadence(self, name: str) -> Cadence:
        for c in self.cadences:
            if c.name == name:
                return c
        raise KeyError(name)
