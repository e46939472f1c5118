"""Calendar arithmetic the planner needs: durations with business days and
months, working hours, day boundaries in a zone. Pure functions."""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from syncd.settings import Duration, Unit, WorkingHours

UTC = ZoneInfo("UTC")


def add_duration(
    at: datetime,
    d: Duration,
    is_workday: Callable[[date], bool] = lambda day: day.weekday() < 5,
) -> datetime:
    """`at` + `d`, in `at`'s own zone (so "1 month" keeps the wall-clock time).

    Business days skip days for which `is_workday` is false; months clamp the
    day of month (Jan 31 + 1 month = Feb 28/29).
    """
    if d.unit is Unit.MINUTES:
        return at + timedelta(minutes=d.amount)
    if d.unit is Unit.HOURS:
        return at + timedelta(hours=d.amount)
    if d.unit is Unit.DAYS:
        return _same_wall(at, at.date() + timedelta(days=d.amount))
    if d.unit is Unit.WEEKS:
        return _same_wall(at, at.date() + timedelta(weeks=d.amount))
    if d.unit is Unit.BUSINESS_DAYS:
        day = at.date()
        left = d.amount
        while left > 0:
            day += timedelta(days=1)
            if is_workday(day):
                left -= 1
        return _same_wall(at, day)
    months = d.amount * (12 if d.unit is Unit.YEARS else 1)
    y, m = divmod(at.month - 1 + months, 12)
    year, month = at.year + y, m + 1
    dom = min(at.day, calendar.monthrange(year, month)[1])
    return _same_wall(at, date(year, month, dom))


def _same_wall(at: datetime, day: date) -> datetime:
    return datetime.combine(day, at.timetz().replace(tzinfo=None), tzinfo=at.tzinfo)


def local_dt(day: date, t: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, t, tzinfo=tz)


def working_window(
    day: date, hours: WorkingHours, tz: ZoneInfo
) -> tuple[datetime, datetime] | None:
    """The user's working interval on `day` (in their zone), None on days off."""
    if day.weekday() not in hours.days:
        return None
    return local_dt(day, hours.start, tz), local_dt(day, hours.end, tz)


def in_working_hours(at: datetime, hours: WorkingHours, tz: ZoneInfo) -> bool:
    local = at.astimezone(tz)
    win = working_window(local.date(), hours, tz)
    return win is not None and win[0] <= local <= win[1]


def iso(dt: datetime) -> str:
    """ISO 8601 with the UTC offset, seconds precision (the JSON contract)."""
    return dt.isoformat(timespec="seconds")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def ceil_to(dt: datetime, minutes: int) -> datetime:
    """Round up to the next multiple of `minutes` past the hour."""
    dt = dt.replace(second=0, microsecond=0) + (
        timedelta(minutes=1) if dt.second or dt.microsecond else timedelta(0)
    )
    rem = dt.minute % minutes
    return dt if rem == 0 else dt + timedelta(minutes=minutes - rem)
