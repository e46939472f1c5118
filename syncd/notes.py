"""Event notes: the daemon's block, the user's part, and the grammar of log lines.

Pure functions only. Layout of a follow-up's notes (SPEC, "Events written"):

    <block written by syncd: who, dial link, e-mail, history, best slot, news>
    Log attempts below:
    <the user's lines, never changed>

`split()` separates what the user typed from what syncd wrote; `compose()`
puts a new block in front of the user's text unchanged, byte for byte.

The line grammar (SPEC, "Logging attempts in notes") is a lexicon of phrases
over a token stream, matched longest-first so that the more specific phrase
wins ("spoke to assistant" is a gatekeeper, not a reach). A line is cut into
clauses at `,` `;` and "then"; each clause carries at most one outcome and may
carry a time and a date; a time in a clause without an outcome applies to the
next outcome ("Called at 8:15, no answer"). Every step is one pass over the
tokens, so parsing is linear in the line's length.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from syncd.model import Channel, Outcome

MARKER = "Log attempts below:"

# --------------------------------------------------------------------------
# Block ownership


@dataclass(frozen=True)
class Split:
    """What the user owns in a description.

    `head_user`: lines the user typed above the marker that syncd did not
    write (kept, in order). `tail`: the exact text after the marker line.
    `has_marker`: False when the user deleted the marker line itself; then all
    lines not written by syncd are in `head_user`.
    """

    head_user: tuple[str, ...]
    tail: str
    has_marker: bool

    def user_lines(self) -> list[str]:
        return [*self.head_user, *self.tail.splitlines()]

    def is_empty(self) -> bool:
        return not any(line.strip() for line in self.user_lines())


_MARKER_RE = re.compile(r"^[ \t]*" + re.escape(MARKER) + r"[ \t]*(\r?\n|$)", re.M)


def split(description: str, written_block: str) -> Split:
    """Separate the user's text from syncd's block.

    `written_block` is the block syncd last wrote (without the marker line);
    lines above the marker that are not among its lines were typed by the user.
    """
    ours = Counter(written_block.splitlines())
    m = _MARKER_RE.search(description)
    head = description[: m.start()] if m else description
    tail = description[m.end() :] if m else ""
    head_user: list[str] = []
    for line in head.splitlines():
        if ours[line] > 0:
            ours[line] -= 1
        else:
            head_user.append(line)
    return Split(tuple(head_user), tail, m is not None)


def compose(block: str, user: Split | None = None) -> str:
    """The description to write: user head lines, our block, marker, user tail."""
    head = "".join(f"{line}\n" for line in user.head_user) if user else ""
    tail = user.tail if user else ""
    return f"{head}{block.rstrip(chr(10))}\n{MARKER}\n{tail}"


# --------------------------------------------------------------------------
# Entries a line yields


@dataclass(frozen=True)
class AttemptEntry:
    outcome: Outcome
    channel: Channel | None  # set when the words imply it ("emailed")
    at: datetime
    time_inferred: bool


@dataclass(frozen=True)
class CommandEntry:
    """skip | stop | pause (until) | snooze (until) | next (at)."""

    kind: str
    until: datetime | None = None


@dataclass(frozen=True)
class NewsEntry:
    text: str


@dataclass(frozen=True)
class InterviewEntry:
    at: datetime


Entry = AttemptEntry | CommandEntry | NewsEntry | InterviewEntry


@dataclass(frozen=True)
class LineContext:
    """What a line is read against: the follow-up's channel and start (in the
    user's zone), the user's working hours, and `now` for future commands."""

    channel: Channel
    event_start: datetime
    work_start: time = time(8, 0)
    work_end: time = time(18, 30)


@dataclass(frozen=True)
class ParsedLine:
    index: int  # occurrence among identical lines: identity survives reordering
    pos: int  # place among the non-blank user lines (for display only)
    text: str
    key: str
    entries: tuple[Entry, ...]

    @property
    def unparsed(self) -> bool:
        return not self.entries


def parse_notes(lines: list[str], ctx: LineContext, scope: str) -> list[ParsedLine]:
    """Parse every non-blank user line. Keys are `scope` + the line's text +
    its occurrence number, so re-reading never duplicates, reordering changes
    nothing, editing a line replaces its entries and deleting removes them."""
    seen: Counter[str] = Counter()
    out: list[ParsedLine] = []
    for raw in lines:
        text = raw.strip()
        if not text:
            continue
        n = seen[text]
        seen[text] += 1
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        key = f"{scope}:{digest}:{n}"
        out.append(ParsedLine(n, len(out), text, key, tuple(parse_line(text, ctx))))
    return out


# --------------------------------------------------------------------------
# Lexicon

_OUTCOME_PHRASES: dict[Outcome, tuple[str, ...]] = {
    Outcome.NO_ANSWER: (
        "no answer", "no ans", "noanswer", "no anwser", "no asnwer", "no awnser", "n/a",
        "rang out", "busy", "line busy", "engaged", "no pickup", "no pick up",
        "nobody picked up", "no one picked up", "noone picked up", "didnt pick up",
        "did not pick up", "didnt answer", "did not answer", "unanswered", "not reached",
        "couldnt reach", "could not reach", "no luck", "na", "n.a.", "no response",
    ),
    Outcome.VOICEMAIL: (
        "vm", "voicemail", "voice mail", "voicemal", "voicmail", "left vm", "lvm",
        "left message", "left msg", "left a message", "left a msg", "left a vm",
        "left voicemail", "left a voicemail", "lm", "msg left", "message left",
        "answering machine", "vmail",
    ),
    Outcome.GATEKEEPER: (
        "gatekeeper", "gate keeper", "spoke to assistant", "spoke with assistant",
        "spoke to her assistant", "spoke to his assistant", "spoke to their assistant",
        "talked to assistant", "talked to her assistant", "talked to his assistant",
        "talked to their assistant", "assistant", "receptionist", "reception",
        "secretary", "front desk", "spoke to reception", "spoke to receptionist",
        "spoke to secretary", "spoke to the assistant", "talked to the assistant",
    ),
    Outcome.REACHED: (
        "spoke", "spoke with", "spoke to", "reached", "talked", "talked to", "talked with",
        "connected", "got through", "picked up", "answered", "had a call", "had a chat",
        "great call", "good call", "chatted",
    ),
    Outcome.SENT: ("sent", "emailed", "e-mailed", "email sent", "mailed", "done", "✔", "✓"),
    Outcome.REPLIED: ("replied", "they replied", "got reply", "got a reply", "responded",
                      "wrote back", "reply received"),
    Outcome.WRONG_NUMBER: ("wrong number", "wrong no", "wrong #", "bounced", "bounce",
                           "disconnected", "not in service", "number not in service"),
}

# Words that imply the channel of the attempt.
_CHANNEL_WORDS = {"emailed": Channel.EMAIL, "e-mailed": Channel.EMAIL, "mailed": Channel.EMAIL,
                  "email sent": Channel.EMAIL}
# Outcomes only meaningful on a written channel: "done" on a call says nothing.
_WRITTEN_ONLY = {"done", "✔", "✓"}


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower().replace("’", "'").replace("'", ""))


_TOKEN_RE = re.compile(r"[0-9]{1,2}[:.h][0-9]{2}(?:\s?[ap]\.?m\.?)?"
                       r"|[0-9]{1,4}(?:[-/][0-9]{1,2}){1,2}"
                       r"|[0-9]{1,2}\s?[ap]\.?m\.?(?![a-z])|[a-z][a-z/.\-#]*|[0-9]+|[✔✓#]|[,;]")


def _build_trie() -> dict[tuple[str, ...], tuple[Outcome, str]]:
    table: dict[tuple[str, ...], tuple[Outcome, str]] = {}
    for outcome, phrases in _OUTCOME_PHRASES.items():
        for p in phrases:
            table[tuple(_tokens(p))] = (outcome, p)
    return table


_PHRASES = _build_trie()
_MAX_PHRASE = max(len(k) for k in _PHRASES)

_WEEKDAYS = {name: i for i, names in enumerate(
    [("mon", "monday"), ("tue", "tues", "tuesday"), ("wed", "weds", "wednesday"),
     ("thu", "thur", "thurs", "thursday"), ("fri", "friday"), ("sat", "saturday"),
     ("sun", "sunday")]) for name in names}
_MONTHS = {name: i + 1 for i, names in enumerate(
    [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
     ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
     ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
     ("dec", "december")]) for name in names}

_TIME_RE = re.compile(r"^(\d{1,2})(?:[:.h](\d{2}))?\s?(?:([ap])\.?m\.?)?$")
_ISO_DATE_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_US_DATE_RE = re.compile(r"^(\d{1,2})/(\d{1,2})(?:/(\d{2,4}))?$")


@dataclass(frozen=True)
class _Clock:
    hour: int
    minute: int
    meridiem: str | None  # "a" | "p" | None
    zero_padded: bool


def _clock(tok: str) -> _Clock | None:
    m = _TIME_RE.match(tok)
    if not m:
        return None
    hour, minute = int(m.group(1)), int(m.group(2) or 0)
    mer = m.group(3)
    if m.group(2) is None and mer is None:
        return None  # a bare number is not a time
    if minute > 59 or hour > 23 or (mer and not 1 <= hour <= 12):
        return None
    return _Clock(hour, minute, mer, tok.startswith("0"))


def resolve_clock(c: _Clock, ctx: LineContext) -> time:
    """12-hour times without am/pm take the reading inside working hours; where
    both or neither are, the one nearest the event's start (SPEC)."""
    if c.meridiem:
        h = c.hour % 12 + (12 if c.meridiem == "p" else 0)
        return time(h, c.minute)
    if c.hour == 0 or c.hour > 12 or c.zero_padded:
        return time(c.hour, c.minute)
    readings = [time(c.hour % 12, c.minute), time(c.hour % 12 + 12, c.minute)]
    inside = [t for t in readings if ctx.work_start <= t <= ctx.work_end]
    if len(inside) == 1:
        return inside[0]
    ref = ctx.event_start.hour * 60 + ctx.event_start.minute
    return min(readings, key=lambda t: abs(t.hour * 60 + t.minute - ref))


def _date_at(
    tokens: list[str], i: int, ctx: LineContext, future: bool
) -> tuple[date | None, int] | None:
    """A date starting at token i, and how many tokens it used."""
    tok = tokens[i]
    ref = ctx.event_start.date()
    if m := _ISO_DATE_RE.match(tok):
        return _safe_date(int(m[1]), int(m[2]), int(m[3])), 1
    if m := _US_DATE_RE.match(tok):
        year = int(m[3]) if m[3] else ref.year
        year = year + 2000 if year < 100 else year
        d = _safe_date(year, int(m[1]), int(m[2]))
        return (_near_year(d, ref, future) if d and not m[3] else d), 1
    if tok in _MONTHS and i + 1 < len(tokens) and tokens[i + 1].isdigit():
        d = _safe_date(ref.year, _MONTHS[tok], int(tokens[i + 1]))
        return (_near_year(d, ref, future) if d else None), 2
    if tok.isdigit() and i + 1 < len(tokens) and tokens[i + 1] in _MONTHS:
        d = _safe_date(ref.year, _MONTHS[tokens[i + 1]], int(tok))
        return (_near_year(d, ref, future) if d else None), 2
    if tok in _WEEKDAYS:
        delta = (_WEEKDAYS[tok] - ref.weekday()) % 7
        if future:
            return ref + timedelta(days=delta or 7), 1
        return ref - timedelta(days=(7 - delta) % 7), 1
    if tok in ("today",):
        return ref, 1
    if tok in ("yesterday",):
        return ref - timedelta(days=1), 1
    if tok in ("tomorrow",):
        return ref + timedelta(days=1), 1
    return None


def _safe_date(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


def _near_year(d: date | None, ref: date, future: bool) -> date | None:
    """A date typed without a year: the occurrence nearest the reference, on the
    expected side (past for attempts, future for commands)."""
    if d is None:
        return None
    if future and d < ref:
        return _safe_date(d.year + 1, d.month, d.day)
    if not future and d > ref + timedelta(days=1):
        return _safe_date(d.year - 1, d.month, d.day)
    return d


# --------------------------------------------------------------------------
# Line parser


def parse_line(text: str, ctx: LineContext) -> list[Entry]:
    tokens = _tokens(text)
    if not tokens:
        return []
    head = tokens[0]
    if head in ("skip", "skipped"):
        return [CommandEntry("skip")] if len(tokens) == 1 else []
    if head == "stop":
        return [CommandEntry("stop")] if len(tokens) == 1 else []
    if head in ("pause", "snooze", "next", "interview"):
        cmd = _parse_command(head, tokens[1:], ctx)
        return [cmd] if cmd else []
    if head == "news" and ":" in text:
        news = text.split(":", 1)[1].strip()
        return [NewsEntry(news)] if news else []
    return list(_parse_attempts(tokens, ctx))


def _parse_command(head: str, rest: list[str], ctx: LineContext) -> Entry | None:
    tz = ctx.event_start.tzinfo
    if head == "snooze":
        from syncd.durations import parse_duration
        from syncd.timeutil import add_duration

        try:
            d = parse_duration(" ".join(rest))
        except ValueError:
            return None
        return CommandEntry("snooze", add_duration(ctx.event_start, d))
    if head == "pause":
        if rest[:1] == ["until"]:
            rest = rest[1:]
        got = _date_at(rest, 0, ctx, future=True) if rest else None
        if not got or got[0] is None or got[1] != len(rest):
            return None
        return CommandEntry("pause", datetime.combine(got[0], ctx.work_start, tzinfo=tz))
    # next <date|weekday> [time] / interview <date> [time]
    future = head == "next"
    day: date | None = None
    clock: time | None = None
    i = 0
    while i < len(rest):
        got = _date_at(rest, i, ctx, future=future)
        if got and got[0] and day is None:
            day, used = got
            i += used
            continue
        c = _clock(rest[i])
        if c and clock is None:
            clock = resolve_clock(c, ctx)
            i += 1
            continue
        return None
    if head == "next" and (day or clock):
        on = day or ctx.event_start.date() + timedelta(days=1)
        return CommandEntry("next", datetime.combine(on, clock or ctx.work_start, tzinfo=tz))
    if head == "interview" and day:
        return InterviewEntry(datetime.combine(day, clock or time(9, 0), tzinfo=tz))
    return None


def _parse_attempts(tokens: list[str], ctx: LineContext) -> list[AttemptEntry]:
    """One pass over the tokens; a clause ends at `,` `;` `and` `then` `/`."""
    out: list[AttemptEntry] = []
    pending_time: time | None = None  # a time in a clause without an outcome
    day: date | None = None  # a date before the first outcome dates the line
    outcome: tuple[Outcome, str] | None = None
    clause_time: time | None = None

    def flush() -> None:
        nonlocal outcome, clause_time, pending_time
        if outcome is None:
            if clause_time is not None:
                pending_time = clause_time
        else:
            t = clause_time or pending_time
            oc, phrase = outcome
            d = day or ctx.event_start.date()
            wall = t or ctx.event_start.timetz().replace(tzinfo=None)
            at = datetime.combine(d, wall, tzinfo=ctx.event_start.tzinfo)
            out.append(AttemptEntry(oc, _CHANNEL_WORDS.get(phrase), at, t is None))
            pending_time = None
        outcome, clause_time = None, None

    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in _CLAUSE_BREAKS:
            flush()
            i += 1
            continue
        c = _clock(tok)
        if c:
            if clause_time is not None and outcome is not None:
                flush()  # "9:10 no answer 14:05 vm" without a comma
            clause_time = resolve_clock(c, ctx)
            i += 1
            continue
        if not out and outcome is None:
            got = _date_at(tokens, i, ctx, future=False)
            if got and got[0]:
                day = got[0]
                i += got[1]
                continue
        match = _longest_phrase(tokens, i)
        # "done" on a call says nothing about the call (SPEC table).
        if match and not (match[0][1] in _WRITTEN_ONLY and ctx.channel is Channel.CALL):
            hit, used = match
            if outcome is None or _RANK[hit[0]] < _RANK[outcome[0]]:
                outcome = hit
            i += used
            continue
        i += 1
    flush()
    return out


_CLAUSE_BREAKS = frozenset({",", ";", "then", "and", "/"})
# Inside one clause the more specific outcome wins ("no answer, left vm" is
# two clauses; "rang, assistant picked up" is a gatekeeper).
_RANK = {o: i for i, o in enumerate([
    Outcome.GATEKEEPER, Outcome.WRONG_NUMBER, Outcome.VOICEMAIL, Outcome.REPLIED,
    Outcome.REACHED, Outcome.NO_ANSWER, Outcome.SENT])}


def _longest_phrase(tokens: list[str], i: int) -> tuple[tuple[Outcome, str], int] | None:
    for n in range(min(_MAX_PHRASE, len(tokens) - i), 0, -1):
        hit = _PHRASES.get(tuple(tokens[i : i + n]))
        if hit:
            return hit, n
    return None
