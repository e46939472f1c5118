"""What syncd writes into an event: summary and its block of the notes. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from syncd.learning import SLOTS
from syncd.model import Channel, Contact
from syncd.planner import AttemptRec, Planned
from syncd.settings import CallerId

_VERB = {Channel.CALL: "Call", Channel.EMAIL: "E-mail", Channel.MESSAGE: "Message",
         Channel.MEETING: "Meet"}


@dataclass(frozen=True)
class RenderInput:
    contact: Contact
    followup: Planned
    attempts: tuple[AttemptRec, ...]  # the contact's whole history
    timezone: str  # the contact's zone
    news: str | None = None  # news item to share, if any


def one_line(text: str) -> str:
    """Contact fields go into single-line places: no CR/LF or control chars
    (they would break the summary or forge lines in the notes)."""
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", text).strip()


def summary(r: RenderInput) -> str:
    name = one_line(r.contact.name)
    company = one_line(r.contact.company)
    ch = r.followup.channel
    if r.followup.kind == "thank_you":
        return f"Thank-you e-mail: {name} ({one_line(r.followup.label)})"
    if ch is Channel.CALL:
        n = sum(1 for a in r.attempts if a.channel is Channel.CALL) + 1
        who = f"{name} ({company})" if company else name
        return f"Call {who} #{n}"
    if r.news:
        return f"{_VERB[ch]} {name}: share news"
    return f"{_VERB[ch]} {name}"


def dial_link(phone: str, attempts: tuple[AttemptRec, ...], now: datetime,
              caller_id: CallerId) -> str:
    """`tel:` link; from attempt hide_after_attempts + 1 within 30 days on it
    carries the caller-ID prefix (the article: don't look like a stalker)."""
    number = re.sub(r"[^0-9+*#]", "", phone)
    recent = [a for a in attempts
              if a.channel is Channel.CALL and a.at >= now - timedelta(days=30)]
    prefix = caller_id.prefix if len(recent) >= caller_id.hide_after_attempts else ""
    return f"tel:{prefix}{number}"


def block(r: RenderInput, now: datetime, caller_id: CallerId) -> str:
    c = r.contact
    lines = [summary(r)]
    if c.title or c.company:
        lines.append("Who: " + one_line(", ".join(x for x in (c.title, c.company) if x)))
    if r.followup.channel is Channel.CALL and c.phones:
        lines.append("Dial: " + dial_link(c.phones[0], r.attempts, now, caller_id))
    if c.emails:
        lines.append("E-mail: " + one_line(c.emails[0]))
    local = r.followup.start.astimezone(ZoneInfo(r.timezone))
    lines.append(f"Their time: {local:%a %H:%M} ({r.timezone})")
    calls = [a for a in r.attempts if a.channel is Channel.CALL]
    if r.attempts:
        last = max(r.attempts, key=lambda a: a.at)
        lines.append(
            f"History: {len(r.attempts)} attempt{'s' if len(r.attempts) != 1 else ''}"
            f", last {last.at:%b %d %H:%M} {last.outcome.value.replace('_', ' ')}"
        )
    else:
        lines.append("History: first attempt")
    if r.followup.slot:
        slot = next(s for s in SLOTS if s.name == r.followup.slot)
        reached = sum(1 for a in calls if a.outcome.value in ("reached", "replied"))
        lines.append(
            f"Slot: {slot.name} {slot.start:%H:%M}-{slot.end:%H:%M} their time"
            f" ({reached}/{len(calls)} calls reached so far)"
        )
    if r.news:
        lines.append("News to share: " + one_line(r.news))
    return "\n".join(lines)
