"""Event notes: the daemon's block, the user's part, and the grammar of log lines.

Pure functions only. Layout of a follow-up's notes (SPEC, "Events written"):

    <block written by syncd: who, dial link, e-mail, history, best slot, news>
    Log attempts below:
    <the user's lines, never changed>

`split()` separates what the user typed from what syncd wrote; `compose()`
puts a new block in front of the user's text unchanged, byte for byte.

The grammar of a log line (SPEC, "Logging attempts in notes")
=============================================================

A line is normalised (Unicode NFKC, so full-width "：，；？" and non-breaking
spaces become ASCII; smart quotes, dashes, "、。·•" and check marks are folded;
lower case), cut once into tokens, and read by the rules below. Every step is a
single left-to-right pass with constant look-ahead (phrases are looked up in a
trie of bounded depth), so a line is read in time linear in its length. The
regular expressions used are single character classes, never nested
quantifiers, so nothing backtracks.

Tokens (an EBNF-ish sketch; `H` is 1-2 digits, `MM` exactly 2)::

    time    = H (":" | "." ) MM [mer] | HH "h" MM | H mer | H "o'clock"
            | ("at" | "@") H                    (* a bare hour only after "at" *)
            | "noon" | "midday" ;
    mer     = "am" | "pm" | "a.m." | "p.m." | "a" | "p" ;    (* "a"/"p" attached *)
    date    = YYYY "-" M "-" D | YYYY "/" M "/" D
            | M "/" D ["/" YY[YY]]     (* US order; D/M only when M > 12: 25/11 *)
            | D "." M "." YY[YY]       (* dotted dates are European *)
            | month ["."] D [ord] | D [ord] month
            | ["last"] weekday | "today" | "yesterday" | "yday" | "yest"
            | "tomorrow" | "tmrw" ;    (* future days only in commands *)
    count   = N "x" | "x" N | N ("times" | "tries" | "attempts" | "calls")
            | ("two" | ... | "five") "times" | "once" | "twice" | "thrice" ;
    sep     = "," | ";" | ":" | "." | "!" | "?" | "|" | "/" | "&" | "+" | "-" | "*"
            | "—" | "→" | "、" | "。" | "and" | "then" | "but" | "plus" ;
              (* "-" inside a word joins it; "?" also marks its clause a question *)
    word    = letters, with "'" and "-" between letters dropped
              ("didn't" = "didnt", "e-mailed" = "emailed", "no-answer" = "noanswer"),
              single letters joined across "." and "/" ("v.m." = "vm", "n/a" = "na"),
              "w/" = "with" ;

Lines::

    line      = news | command | attempts ;
    news      = "news" ":" text ;                       (* text kept as typed *)
    command   = skip | stop | pause | snooze | next | interview ;   (* first word *)
    skip      = "skip" {skip-word} [comment] ;     (* "skip this one - sick" *)
    stop      = "stop" {stop-word} [comment] ;     (* "stop: hired elsewhere" *)
    pause     = "pause" [":"] ( [until] date | ["for"] duration ) [comment] ;
    snooze    = "snooze" [":"] ( ["for"] duration | [until] date ) [comment] ;
    duration  = N unit | "a" unit ;   (* syncd.durations: 2w, 3 days, 1mo, 2 business days *)
    next      = "next" [":"] {lead} ( date [time] | time [date] ) [comment] ;
    interview = "interview" [":"] ["on"] ( date [time] | time date ) [comment] ;
    comment   = punctuation-sep, anything ;
    until     = "until" | "till" | "til" | "untill" | "to" | "thru" | "through" ;
    attempts  = clause { sep clause } ;
    clause    = { time | date | count | phrase | word } ;
    phrase    = the longest LEXICON entry starting at this word ;

A command is recognised only as the first word of its line; an argument that
does not read completely ("next week", "stop by the office", "pause until
whenever", "snooze forever") leaves the line unparsed. Any "?" or hedge word in
a command line leaves it unparsed ("skip?").

Reading an attempt line
-----------------------

1. *Lexicon.* Outcome phrases (`LEXICON` below, with common abbreviations and
   typos) are matched longest first, so the more specific phrase wins: "not
   reached" is no_answer, not reached; "no vm" is no_answer, not voicemail;
   "reached out" and "busy week" are stop phrases that mean nothing; "call
   back", "try again" are intentions. Words are matched whole ("vmware" is not
   "vm", "spokesperson" is not "spoke"). Each phrase has a *position rule*:
   - `free`: counts anywhere in its clause ("no answer", "left vm");
   - `edge`: counts only where it opens or closes the clause, not counting
     fillers such as "I", "her", "called", "at", "finally": "spoke to Jane re
     the role", "thank-you note sent" -- but not "she spoke at the conference";
   - `alone`: short or ambiguous words ("busy", "lm", "na", "n/a", "done",
     "✔", "picked up", "answered") count only in a clause of nothing but
     times, dates, counts, fillers and other phrases: "9:10 busy" but not
     "busy week ahead"; "picked up!" and "she picked up" but not "Jane picked
     up" (a mistyped "nobody" must never turn into `reached`).
   Some phrases depend on the follow-up's channel: "done", "✔" and
   "followed up" are `sent` on e-mail and message follow-ups and say nothing on
   calls (SPEC); "no answer", "no reply", "no response", "busy", "n/a" are
   `no_answer` on calls and say nothing on written follow-ups (there they
   describe the contact's silence, not an attempt of ours); "answered" is
   `reached` on a call, `replied` on an e-mail. Phrases may imply a channel
   ("emailed", "vm", "texted"), reported as `AttemptEntry.channel`.
2. *Clauses.* A line is cut at separators. Inside one clause, the same kind of
   anchor (time, or date) after "anchor ... outcome" starts a new clause, and so
   does an outcome after "outcome ... time" ("9:10 no answer 14:05 vm" is two
   clauses; "11/23 vm 4pm" is one). Outcomes within a clause combine when one
   refines the other (gatekeeper refines reached, voicemail and no_answer;
   voicemail and wrong_number refine no_answer; replied refines sent; ...):
   "spoke to her assistant" and "left msg with receptionist" are gatekeeper.
   Times, dates and numbers after an intention belong to the plan ("her PA
   said call back Monday" is a gatekeeper attempt at the event's time).
3. *Facts.* A clause with an outcome is a fact. A clause without one lends its
   times, date and count to the next fact ("Called at 8:15, no answer";
   "9:10 & 14:05 no answer" is two attempts; "rang twice, nobody picked up" is
   two no_answer attempts). A new fact begins where a new time or date begins
   ("9:10 no answer, 14:05 vm"); untimed outcomes after a fact refine it
   ("no answer, left vm" is one voicemail). A trailing clause of nothing but a
   time or count completes an untimed fact ("no answer - 9:10", "vm, x2"); a
   trailing clause with words is a comment ("vm, try again at 3"; "spoke -
   interview Tue": commands only start a line).
4. *Times.* 24-hour and zero-padded times are literal; a 12-hour time without
   am/pm takes the reading inside working hours, and where both or neither
   are, the one nearest the event's start (earlier on a tie). A fact without a
   time takes the event's start and is `time_inferred`. Times and dates are
   wall times in the event's zone (the user's). A fact's date defaults to the
   previous fact's date, then to the event's day; weekday names and dates
   without a year mean the most recent such day not after the event's day
   ("last wed" the one before). In commands they mean the next such day
   (`next`, `pause`, `snooze`) or, for `interview`, the coming weekday and the
   nearest year.
5. *Numbers.* "#7" is a reference, "Q4"/"2FA" identifiers, "+1 212 555 0101"
   a phone number, "20 min" a duration, "2nd" an ordinal: none is a time.

Policy for ambiguous lines (never guess an attempt)
---------------------------------------------------

The whole line stays unparsed (and shows under "unparsed" in `status`) when:
- no clause states an outcome ("called", "call back later", "no luck",
  "reached out on LinkedIn", "she is busy", "didn't reply", "hung up");
- an outcome is negated or not done yet, i.e. preceded in its clause by a
  negation or intention word that no lexicon phrase explains ("never
  replied", "haven't sent yet", "will leave vm", "tomorrow vm"); negations the
  lexicon explains are outcomes: "not reached", "no vm", "couldn't leave vm",
  "voicemail full", "didn't pick up" are no_answer;
- a clause with an outcome is a question or hedged ("vm?", "left vm I think",
  "vm or no answer", "if no answer, leave a vm");
- two outcomes of one fact contradict each other ("spoke, also emailed",
  "no answer, she called back"): write them on separate lines, or with times;
- the line times some facts and not others ("no answer, 14:05 vm"), gives a
  fact two dates, or has a time that belongs to no outcome ("9:10 no answer
  14:05");
- a number in a fact is not a time or date we can read ("vm 3", "25:00 vm",
  "2/30 no answer", "vm 2 days ago");
- a count is lent to an outcome other than no_answer ("called twice, left
  vm": which call left it?), exceeds 5 ("called 10 times"), or disagrees with
  the times listed.

Decisions: "voicemail full", "no vm", "couldn't leave vm" are no_answer (the
call was not answered and no message could be left). "didn't reply" / "no
reply yet" on an e-mail follow-up are unparsed (silence is not an attempt).
"rang twice, nobody picked up" is two no_answer attempts at the event's start.
"9:10 & 14:05 no answer" is two attempts. Slash dates are US order (3/4 is
March 4); 25/11 is 25 November because no other reading exists; dotted dates
(20.11.2026) are day.month.year. "at 3" is a time; a bare "3" is not. "✔" and
"done" on a call are unparsed. N/A on a call is no_answer, on an e-mail
unparsed. The lexicon is English: other languages' punctuation, full-width
forms and spaces are understood, their words are not.
"""

from __future__ import annotations

import enum
import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import NamedTuple

from syncd.durations import parse_duration
from syncd.model import Channel, Outcome
from syncd.timeutil import add_duration

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


class AttemptEntry(NamedTuple):
    """(A NamedTuple rather than a frozen dataclass: made for every attempt
    line read, and a frozen dataclass's __init__ costs four setattr calls.)"""

    outcome: Outcome
    channel: Channel | None  # set when the words imply it ("emailed", "vm")
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
    user's zone) and the user's working hours."""

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
    reason: str = ""  # why the line reads as it does (for unparsed lines: why not)

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
        entries, reason = explain_line(text, ctx)
        out.append(ParsedLine(n, len(out), text, key, tuple(entries), reason))
    return out


def parse_line(text: str, ctx: LineContext) -> list[Entry]:
    """The entries one line yields; [] when it is unparsed (see the policy)."""
    return explain_line(text, ctx)[0]


def explain_line(text: str, ctx: LineContext) -> tuple[list[Entry], str]:
    """`parse_line` plus a short reason: what was read, or why nothing was."""
    news = _news(text)
    if news is not None:
        return ([NewsEntry(news)], "news") if news else ([], "news: without text")
    toks = _scan(_normalise(text))
    if not toks:
        return [], "no words"
    first = toks[0]
    if first.kind is _K.SEP or first.text in _COMMANDS:  # a command, maybe after a bullet
        command = _command(toks, ctx)
        if command is not None:
            return command
    return _attempts(toks, ctx)


# --------------------------------------------------------------------------
# Normalisation and tokens

# Folded after NFKC (which already turns full-width forms and odd spaces into
# ASCII): quotes, dashes, CJK / Arabic punctuation, arrows and check marks.
_FOLD = str.maketrans({
    "\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'", "`": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2014": " - ", "\u2013": " - ", "\u2012": " - ", "\u2015": " - ", "\u2212": "-",
    "\u3001": ",", "\u3002": ".", "\u00b7": ",", "\u2022": ",", "\u060c": ",",
    "\u061b": ";", "\u00bf": "?", "\u061f": "?", "\u2192": ";", "\u21d2": ";",
    "\u27a1": ";", "\u2713": "\u2714", "\u2705": "\u2714", "\u2611": "\u2714",
    "\U0001f5f8": "\u2714",
})
CHECK = "\u2714"


def _normalise(text: str) -> str:
    if text.isascii():
        # NFKC leaves ASCII as it is, and "`" is the only ASCII character folded:
        # most lines skip both passes (str.translate costs ~100 ns a character)
        return (text.replace("`", "'") if "`" in text else text).lower()
    return unicodedata.normalize("NFKC", text).translate(_FOLD).lower()


# One alternation of single character classes: each match is maximal and no
# class overlaps another, so the scan is linear. A piece's class is its first
# character's, looked up in _PIECE_KIND (filled on first sight of a character):
# findall without groups returns plain strings, several times faster than
# asking each match object for its group.
_RAW = re.compile(r"[0-9]+|[^\W\d_]+|\s+|.", re.S)
# The same pieces for a lower-case ASCII line, where [^\W\d_] is [a-z]; a
# character set is quicker to test than a Unicode category.
_RAW_ASCII = re.compile(r"[a-z]+|[0-9]+|\s+|.", re.S)
_CLASSES = ((re.compile(r"[0-9]"), "D"), (re.compile(r"[^\W\d_]"), "W"),
            (re.compile(r"\s"), "S"))
_PIECE_KIND: dict[str, str] = {}


def _piece_kind(c: str) -> str:
    kind = next((k for rx, k in _CLASSES if rx.match(c)), "P")
    if len(_PIECE_KIND) < 4096:  # bounded: a line of rare scripts must not grow it forever
        _PIECE_KIND[c] = kind
    return kind


for _c in map(chr, range(128)):
    _piece_kind(_c)


class _K(enum.IntEnum):
    # IntEnum, not Enum: these are set and dict keys on the hot path, and
    # enum.Enum hashes in Python code while IntEnum hashes as an int.
    WORD = 1
    TIME = 2
    DATE = 3
    COUNT = 4
    NUM = 5
    BAD = 6  # shaped like a time or a date, but no such time or date
    SEP = 7


class _I(enum.IntEnum):
    """How the reader of attempt lines sees a token (see `_Tok.item`)."""

    PHRASE = 1  # an outcome phrase
    TIME = 2
    DATE = 3
    COUNT = 4
    NUM = 5
    BAD = 6
    FILLER = 7
    CONTENT = 8  # an unknown word, or a stop phrase
    NEGATION = 9
    INTENTION = 10
    HEDGE = 11
    SEP = 12


# NamedTuples rather than frozen dataclasses: one is made for every time and
# date read, and a frozen dataclass's __init__ costs a setattr call per field.
class _Clock(NamedTuple):
    hour: int
    minute: int
    meridiem: str | None  # "a" | "p" | None
    zero_padded: bool  # a literal 24-hour reading: "09:10", "14h05"


class _Day(NamedTuple):
    kind: str  # "ymd" | "md" | "wd" | "rel"
    year: int = 0
    month: int = 0
    day: int = 0
    weekday: int = 0
    last: bool = False  # "last mon": strictly before the reference day
    offset: int = 0  # "rel": days from the reference day


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a setattr call per field
class _Tok:
    """A token, and also an item of an attempt line as its reader sees it
    (`item`): tokens are made once and read by both, with no second object per
    token. A lexicon phrase is one item of its own, made with the lexicon (see
    `_Node.items`): its first word, outcome, implied channel and position rule.
    Tokens are never changed once made, so equal ones are shared."""

    kind: _K
    item: _I
    text: str = ""
    clock: _Clock | None = None
    day: _Day | None = None
    count: int = 0
    ref: bool = False  # a NUM right after "#": a reference, not a quantity
    hedge: bool = False  # the SEP "?"
    outcome: Outcome | None = None  # of a PHRASE item, on the line's channel
    implies: Channel | None = None
    where: str = "free"  # a PHRASE item's position rule


_WEEKDAYS = {name: i for i, names in enumerate([
    ("mon", "monday"), ("tue", "tues", "tuesday"), ("wed", "weds", "wednesday"),
    ("thu", "thur", "thurs", "thursday"), ("fri", "friday"), ("saturday",), ("sunday",),
]) for name in names}  # "sat"/"sun" are ordinary words too often to be dates
_MONTHS = {name: i + 1 for i, names in enumerate([
    ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
    ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
    ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
    ("dec", "december"),
]) for name in names}
_RELATIVE_DAYS = {"today": 0, "yesterday": -1, "yday": -1, "yest": -1, "yesterdy": -1,
                  "tomorrow": 1, "tmrw": 1, "tmr": 1, "tomorow": 1, "tommorow": 1,
                  "tommorrow": 1}
_ORDINAL = frozenset({"st", "nd", "rd", "th"})
_COUNT_WORDS = {"once": 1, "twice": 2, "thrice": 3}
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_COUNT_NOUNS = frozenset({"x", "times", "tries", "attempts", "calls"})
_SEP_WORDS = frozenset({"and", "then", "but", "plus"})
_SHORT_UNITS = frozenset({"min", "mins", "minute", "minutes", "hr", "hrs", "hour", "hours",
                          "sec", "secs", "seconds"})
_SEP_CHARS = frozenset(",;:.!|/&+=<>-*")
_WORD_CHARS = frozenset(("#", "@", "~", CHECK))  # punctuation pieces read as words
# Words `_Scanner.word` does more with than emit a WORD token ("w" for "w/").
_SPECIAL_WORDS = frozenset({*_MONTHS, *_NUMBER_WORDS, *_WEEKDAYS, *_RELATIVE_DAYS,
                            *_COUNT_WORDS, *_SEP_WORDS, "x", "w", "noon", "midday"})


_PLAIN: dict[str, _Tok] = {}  # shared WORD tokens (bounded)
# Those of plain words: letters only, no special reading (bounded).
_ALPHA: dict[str, _Tok] = {}


def _word(w: str) -> _Tok:
    """The WORD token of `w` (shared), its item kind that of a word outside
    lexicon phrases."""
    tok = _PLAIN.get(w)
    if tok is None:
        kind = _WORD_KIND.get(w)
        if kind is None:
            kind = _I.FILLER if w[:1].isdigit() else _I.CONTENT  # "2nd", "3rd"
        tok = _Tok(_K.WORD, kind, w)
        if len(_PLAIN) < 8192:
            _PLAIN[w] = tok
    return tok


def _scan(norm: str) -> list[_Tok]:
    """The tokens of a normalised line. Words between spaces are looked up
    whole while they are plain words (most lines start with some, many are
    nothing else); from the first other one on, `_Scanner` reads the rest.
    A plain word is one token wherever it stands, and nothing before it looks
    ahead past it, so the two readings agree (rejoining the rest with single
    spaces changes nothing: the scanner reads any run of spaces alike)."""
    toks: list[_Tok] = []
    words = norm.split()
    alpha = _ALPHA.get
    for at, w in enumerate(words):
        tok = alpha(w)
        if tok is None:
            if not w.isalpha() or w in _SPECIAL_WORDS:
                rest = norm if at == 0 else " ".join(words[at:])
                return _Scanner(rest, toks).run()
            tok = _word(w)
            if len(_ALPHA) < 8192:
                _ALPHA[w] = tok
        toks.append(tok)
    return toks


def _count(text: str, n: int) -> _Tok:
    return _Tok(_K.COUNT, _I.COUNT, text, None, None, n)


def _date(text: str, day: _Day) -> _Tok:
    # "tomorrow" on an attempt line is a plan, not a report
    item = _I.INTENTION if day.kind == "rel" and day.offset > 0 else _I.DATE
    return _Tok(_K.DATE, item, text, None, day)


def _safe_date(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


_PAD = [""] * 8


class _Scanner:
    """Raw pieces (digits, letters, spaces, one other character) grouped into
    tokens with constant look-ahead: one pass, linear in the line's length.

    `k[j]` is piece j's kind ("D", "W", "S", "P"), `t[j]` its text; both are
    padded with empty pieces so that look-ahead (and j - 1 at 0) needs no
    bounds checks."""

    __slots__ = ("k", "n", "t", "toks")

    def __init__(self, norm: str, toks: list[_Tok]) -> None:
        pieces = (_RAW_ASCII if norm.isascii() else _RAW).findall(norm)
        self.n = len(pieces)
        known = _PIECE_KIND.get
        self.k = [known(p[0]) or _piece_kind(p[0]) for p in pieces] + _PAD
        self.t = pieces + _PAD
        self.toks = toks  # the tokens before `norm` (for look-behind), then its own

    def is_p(self, j: int, chars: str) -> bool:
        return self.k[j] == "P" and self.t[j] in chars

    def is_d(self, j: int, lo: int, hi: int) -> bool:
        return self.k[j] == "D" and lo <= len(self.t[j]) <= hi

    def is_letter(self, j: int) -> bool:
        return self.k[j] == "W" and len(self.t[j]) == 1

    def skip_space(self, j: int) -> int:
        return j + 1 if self.k[j] == "S" else j

    def run(self) -> list[_Tok]:
        i, n, k, t, toks = 0, self.n, self.k, self.t, self.toks
        plain, special, chars = _PLAIN.get, _SPECIAL_WORDS, _CHAR_TOKS.get
        while i < n:
            kind = k[i]
            if kind == "W":
                w = t[i]
                # the common case, inline: a word that no punctuation after it
                # joins to anything ("didn't", "v.m.", "n/a") and no special reading
                if w not in special and (k[i + 1] != "P" or t[i + 1] not in "'-./"):
                    toks.append(plain(w) or _word(w))
                    i += 1
                else:
                    i = self.word(i)
            elif kind == "S":
                i += 1
            elif kind == "D":
                i = self.digits(i)
            else:
                # separators, "?", and the punctuation read as words ("#", "@");
                # anything else (quotes, brackets, emoji, variation selectors) is noise
                tok = chars(t[i])
                if tok is not None:
                    toks.append(tok)
                i += 1
        return toks

    # -- emitters

    def add_clock(self, text: str, hour: int, minute: int, mer: str | None,
                  literal: bool) -> None:
        if hour <= 23 and minute <= 59 and (mer is None or 1 <= hour <= 12):
            self.toks.append(_Tok(_K.TIME, _I.TIME, text, _Clock(hour, minute, mer, literal)))
        else:
            self.toks.append(_Tok(_K.BAD, _I.BAD, text))

    def add_day(self, text: str, month: int, day: int, year: int = 0) -> None:
        if year and _safe_date(year, month, day):
            self.toks.append(_date(text, _Day("ymd", year, month, day)))
        elif not year and _safe_date(2024, month, day):  # a leap year: Feb 29 exists
            self.toks.append(_date(text, _Day("md", 0, month, day)))
        else:
            self.toks.append(_Tok(_K.BAD, _I.BAD, text))

    def add_num(self, i: int) -> int:
        # after "#" a reference ("#7"); glued to letters an identifier ("Q4", "2FA")
        ref = self.is_p(i - 1, "#") or self.k[i - 1] == "W" or self.k[i + 1] == "W"
        self.toks.append(_Tok(_K.NUM, _I.NUM, self.t[i], None, None, 0, ref))
        return i + 1

    def prev_word(self) -> str:
        last = self.toks[-1] if self.toks else None
        return last.text if last is not None and last.kind is _K.WORD else ""

    # -- readers: each returns the index of the first raw piece not used

    def meridiem(self, j: int) -> tuple[str | None, int]:
        k = j + 1 if self.k[j] == "S" else j
        if self.k[k] != "W":
            return None, j
        w = self.t[k]
        if w in ("am", "pm"):
            return w[0], k + 1
        if w in ("a", "p"):
            if self.is_p(k + 1, ".") and self.k[k + 2] == "W" and self.t[k + 2] == "m":
                end = k + 3
                return w, end + 1 if self.is_p(end, ".") else end
            if k == j:  # "9:10a", "2p" (attached only: "at 2 a message" is no time)
                return w, k + 1
        return None, j

    def digits(self, i: int) -> int:
        kinds, tt = self.k, self.t
        t = tt[i]
        if len(t) <= 2 and tt[i + 1] == ":" and kinds[i + 2] == "D" and len(tt[i + 2]) == 2:
            # "9:10", "14:05": the commonest shape first (no date has a colon)
            mer, j = self.meridiem(i + 3)
            self.add_clock(t, int(t), int(tt[i + 2]), mer, len(t) == 2 and t[0] == "0")
            return j
        if len(t) > 4:  # a phone number or a reference: never a time or a date
            return self.add_num(i)
        n = int(t)
        sep = self.t[i + 1]
        if (len(t) == 4 and self.is_p(i + 1, "-/") and self.is_d(i + 2, 1, 2)
                and self.is_p(i + 3, sep) and self.is_d(i + 4, 1, 2)):
            self.add_day(t, int(self.t[i + 2]), int(self.t[i + 4]), n)
            return i + 5
        if len(t) > 2:
            return self.add_num(i)
        if self.is_p(i + 1, "/") and self.is_d(i + 2, 1, 2):
            a, b, j, year = n, int(self.t[i + 2]), i + 3, 0
            if self.is_p(j, "/") and (self.is_d(j + 1, 2, 2) or self.is_d(j + 1, 4, 4)):
                year = int(self.t[j + 1])
                year += 2000 if year < 100 else 0
                j += 2
            month, day = (a, b) if a <= 12 else (b, a)
            self.add_day(t, month, day, year)
            return j
        if (self.is_p(i + 1, ".") and self.is_d(i + 2, 1, 2) and self.is_p(i + 3, ".")
                and (self.is_d(i + 4, 2, 2) or self.is_d(i + 4, 4, 4))):
            year = int(self.t[i + 4])
            self.add_day(t, int(self.t[i + 2]), n, year + (2000 if year < 100 else 0))
            return i + 5
        h_form = self.k[i + 1] == "W" and sep == "h"
        if (self.is_p(i + 1, ":.") or h_form) and self.is_d(i + 2, 2, 2):
            mer, j = (None, i + 3) if h_form else self.meridiem(i + 3)
            literal = h_form or (len(t) == 2 and t.startswith("0"))
            self.add_clock(t, n, int(self.t[i + 2]), mer, literal)
            return j
        mer, j = self.meridiem(i + 1)
        if mer:
            self.add_clock(t, n, 0, mer, False)
            return j
        if self.k[i + 1] == "W":
            if sep == "x":
                self.toks.append(_count(t, n))
                return i + 2
            if sep in _ORDINAL:
                k = self.skip_space(i + 2)
                if self.k[k] == "W" and self.t[k] in _MONTHS:
                    self.add_day(t, _MONTHS[self.t[k]], n)
                    return k + 1
                self.toks.append(_word(t + sep))  # "2nd", "3rd": a filler
                return i + 2
        k = self.skip_space(i + 1)
        if self.k[k] == "W":
            w = self.t[k]
            if w in _MONTHS:
                self.add_day(t, _MONTHS[w], n)
                return k + 1
            if w in _COUNT_NOUNS:
                self.toks.append(_count(t, n))
                return k + 1
            if w == "o" and self.is_p(k + 1, "'") and self.t[k + 2] == "clock":
                self.add_clock(t, n, 0, None, False)  # "5 o'clock"
                return k + 3
            if w in _SHORT_UNITS:  # "for 20 min": how long, not when
                self.toks.append(_word(t + w))
                return k + 1
        if self.is_p(i + 1, "-") and self.k[i + 2] == "W" and self.t[i + 2] in _SHORT_UNITS:
            self.toks.append(_word(t + self.t[i + 2]))  # "a 20-min call"
            return i + 3
        if self.prev_word() in ("at", "@") and 1 <= n <= 23:
            self.add_clock(t, n, 0, None, t.startswith("0"))
            return i + 1
        return self.add_num(i)

    def word(self, i: int) -> int:
        k, t = self.k, self.t
        w = t[i]
        j = i + 1
        parts = [w]
        if self.is_letter(i) and self.is_p(j, ".") and self.is_letter(j + 1):
            while self.is_p(j, ".") and self.is_letter(j + 1):  # v.m. n.a. a.m.
                parts.append(t[j + 1])
                j += 2
            if self.is_p(j, "."):
                j += 1
        elif self.is_letter(i) and self.is_p(j, "/") and self.is_letter(j + 1):
            parts.append(t[j + 1])  # n/a v/m l/m w/o
            j += 2
        else:
            while k[j] == "P" and t[j] in "'-" and k[j + 1] == "W":  # didn't e-mail
                parts.append(t[j + 1])
                j += 2
        w = "".join(parts)
        if w == "w" and self.is_p(j, "/"):
            self.toks.append(_word("with"))
            return j + 1
        if w in _MONTHS:
            m = self.skip_space(j + 1 if self.is_p(j, ".") else j)
            if self.is_d(m, 1, 2):
                day = int(t[m])
                m += 1
                if k[m] == "W" and t[m] in _ORDINAL:
                    m += 1
                self.add_day(w, _MONTHS[w], day)
                return m
        if w == "x":
            m = self.skip_space(j)
            if self.is_d(m, 1, 2):
                self.toks.append(_count(w, int(t[m])))
                return m + 1
        if w in _NUMBER_WORDS:
            m = self.skip_space(j)
            if k[m] == "W" and t[m] in _COUNT_NOUNS:
                self.toks.append(_count(w, _NUMBER_WORDS[w]))
                return m + 1
        if w in _WEEKDAYS:
            last = self.prev_word() == "last"
            self.toks.append(_date(w, _Day("wd", weekday=_WEEKDAYS[w], last=last)))
        elif w in _RELATIVE_DAYS:
            self.toks.append(_date(w, _Day("rel", offset=_RELATIVE_DAYS[w])))
        elif w in ("noon", "midday"):
            self.toks.append(_Tok(_K.TIME, _I.TIME, w, _Clock(12, 0, "p", False)))
        elif w in _COUNT_WORDS:
            self.toks.append(_count(w, _COUNT_WORDS[w]))
        elif w in _SEP_WORDS:
            self.toks.append(_Tok(_K.SEP, _I.SEP, w))
        else:
            self.toks.append(_word(w))
        return j


# --------------------------------------------------------------------------
# Lexicon
#
# Each row: outcome on spoken follow-ups (call, meeting), outcome on written
# ones (e-mail, message), position rule, the channel the words imply, and the
# phrases as people type them (run through the same normaliser as the lines,
# so "didn't" also matches "didnt" and "didn’t", "e-mailed" matches
# "emailed"). `None` as an outcome: the phrase means nothing on that channel.
# "stop" rows are phrases that look like outcomes and are not ("reached out").

_NA, _VM, _GK = Outcome.NO_ANSWER, Outcome.VOICEMAIL, Outcome.GATEKEEPER
_RE, _SE, _RP, _WN = Outcome.REACHED, Outcome.SENT, Outcome.REPLIED, Outcome.WRONG_NUMBER
_CALL, _EMAIL, _MSG = Channel.CALL, Channel.EMAIL, Channel.MESSAGE

LEXICON: tuple[tuple[Outcome | None, Outcome | None, str, Channel | None, str], ...] = (
    # no_answer said in phone words: counts on any follow-up
    (_NA, _NA, "free", _CALL,
     "rang out|rung out|rang through|kept ringing|ringing out|no pickup|no pick up|"
     "didn't pick up|did not pick up|didnt pickup|not picking up|nobody picked up|"
     "no one picked up|noone picked up|nobody pickd up|nobdy picked up|never picked up|"
     "wasn't picked up|"
     "line busy|busy line|busy signal|busy tone|line is busy|line was busy|line engaged|"
     "no vm|no voicemail|no vmail|vm full|vm is full|vm box full|voicemail full|"
     "voicemail is full|voicemail box full|mailbox full|mailbox is full|vm not set up|"
     "vm not setup|voicemail not set up|no vm set up|couldn't leave vm|couldn't leave a vm|"
     "couldn't leave voicemail|couldn't leave a voicemail|couldn't leave a message|"
     "couldn't leave message|couldn't leave msg|could not leave a message|"
     "could not leave vm|could not leave a voicemail|can't leave vm|can't leave a message|"
     "unable to leave vm|unable to leave a message|unable to leave voicemail|"
     "didn't leave vm|didn't leave a vm|didn't leave a message|didn't leave msg|"
     "didn't leave voicemail|did not leave a message|did not leave vm|no message left|"
     "no msg left"),
    # no_answer on calls; on written follow-ups these words describe silence
    (_NA, None, "free", _CALL,
     "no answer|no ans|no answ|no answr|no anwser|no asnwer|no awnser|no answere|no anser|"
     "no aswer|no answe|no anwer|no anwsr|noanswer|noans|unanswered|not answered|"
     "went unanswered|wasn't answered|didn't answer|did not answer|didnt anser|"
     "never answered|nobody answered|no one answered|noone answered|not answering|"
     "not reached|couldn't reach|could not reach|can't reach|unable to reach|unreachable|"
     "didn't reach|did not reach|couldn't get through|could not get through|"
     "didn't get through|did not get through|can't get through|no response|no reply|"
     "no msg|no message|nobody home|no one home"),
    (_NA, None, "alone", _CALL, "busy|engaged|na|dna|rna"),
    # voicemail
    (_VM, _VM, "free", _CALL,
     "vm|vms|vmd|vmed|vmail|vmails|voicemail|voicemails|voice mail|voicmail|voicemal|"
     "voicemial|voiemail|vociemail|voicemai|voicemale|voice msg|voice message|lvm|lmtcb|"
     "left vm|lft vm|left a vm|left her a vm|left him a vm|left them a vm|left voicemail|"
     "left a voicemail|left her a voicemail|left him a voicemail|left vmail|"
     "left voice mail|left a voice message|left message|left a message|left her a message|"
     "left him a message|left msg|left a msg|left her a msg|left him a msg|left mesage|"
     "left messge|left messgae|left mssg|left mesg|left mssage|lft msg|lft message|"
     "left a detailed message|left detailed message|left a detailed vm|left detailed vm|"
     "msg left|message left|vm left|voicemail left|left word|answering machine|"
     "went to vm|went to voicemail|went straight to vm|went straight to voicemail|"
     "straight to vm|straight to voicemail|sent to vm|sent to voicemail|got vm|got her vm|"
     "got his vm|got voicemail|got her voicemail|got his voicemail"),
    (_VM, _VM, "alone", _CALL, "lm|lmd"),
    # gatekeeper
    (_GK, _GK, "free", _CALL,
     "gatekeeper|gate keeper|gatekeper|gatekeepr|her assistant|his assistant|"
     "their assistant|her asst|his asst|her secretary|his secretary|her ea|his ea|her pa|"
     "his pa|exec assistant|executive assistant|front desk|switchboard|screened|"
     "got screened|took a message|took a msg|took message|took msg"),
    (_GK, _GK, "edge", _CALL,
     "assistant|asst|assistent|assitant|receptionist|recepionist|receptionst|reception|"
     "secretary|secretery|ea|pa"),
    (_GK, _GK, "alone", _CALL, "admin"),
    # reached
    (_RE, _RE, "edge", None,
     "spoke|spoken|spk|spoek|spok|spoke to|spoke with|spoken to|spoken with|spk to|"
     "spk with|talked|talkd|tlkd|talked to|talked with|chatted|chatted with|reached|"
     "reachd|reched|reached her|reached him|connected|connected with"),
    # alone: a mistyped subject ("nobdy picked up") must not flip the meaning
    (_RE, _RE, "alone", None, "got her|got him|picked up|pickd up"),
    (_RE, _RE, "free", None,
     "got through|got thru|got hold of|got ahold of|she picked up|he picked up|"
     "they picked up|she called back|he called back|they called back|called me back|"
     "returned my call|had a call|had a chat|had a good call|had a great call|"
     "had a good chat|had a great chat|good call|great call|good chat|great chat|"
     "good convo|great convo|had a convo|quick chat|brief chat|live conversation"),
    (_RE, _RP, "alone", None, "answered"),
    (_RE, _RP, "free", None, "she answered|he answered|they answered"),
    # sent
    (_SE, _SE, "edge", None, "sent|snt"),
    (_SE, _SE, "edge", _EMAIL, "emailed|emaild|emialed|emaled|emailled|mailed"),
    (_SE, _SE, "edge", _MSG, "messaged|msgd|texted|txted|dmd|inmailed"),
    (_SE, _SE, "free", _EMAIL, "email sent|sent email|sent an email|sent the email"),
    (_SE, _SE, "free", None, "sent a note|sent note|note sent|msg sent|message sent"),
    (_SE, _SE, "free", _MSG,
     "sent a text|text sent|sms sent|sent a dm|dm sent|inmail sent|sent inmail|"
     "sent an inmail"),
    (None, _SE, "alone", None, f"done|{CHECK}"),
    (None, _SE, "edge", None, "followed up"),
    # replied
    (_RP, _RP, "edge", None, "replied|replyed|repiled|replid|responded|responed|respnded"),
    (_RP, _RP, "free", None,
     "they replied|she replied|he replied|she responded|he responded|they responded|"
     "wrote back|got reply|got a reply|got her reply|got his reply|got response|"
     "got a response|reply received|response received|heard back|got back to me|"
     "replied back"),
    # wrong_number
    (_WN, _WN, "free", _CALL,
     "wrong number|wrong #|wrong no|wrong num|wrong nr|wrong nbr|wrong numbr|wrong numer|"
     "wrong nummber|worng number|wrng number|wrong person|not her number|not his number|"
     "number disconnected|disconnected number|# disconnected|number not in service|"
     "not in service|no longer in service|out of service|invalid number|number invalid|"
     "fax tone|fax machine"),
    (_WN, _WN, "alone", _CALL, "disconnected"),
    (_WN, _WN, "free", _EMAIL,
     "email bounced|bounced back|bounceback|bounce back|undeliverable|delivery failed|"
     "delivery failure|address not found|mailer daemon|mailerdaemon|no such user|"
     "invalid email|invalid address"),
    (_WN, _WN, "edge", _EMAIL, "bounced|bounce"),
    # plans, not reports: a time after them is the plan's ("call back Monday")
    (None, None, "intent", None,
     "call back|callback|call her back|call him back|call again|try again|follow up|"
     "reach out|ping her|ping him"),
    # look like outcomes, are not
    (None, None, "stop", None,
     "reached out|reaching out|connected on linkedin|connected on li|"
     "connect on linkedin|called back|hung up|hang up|busy week|"
     "busy day|busy weekend|busy month|busy season|busy schedule|busy time|busy with|"
     "busy at work|busy lately|busy period|not available|unavailable|out of office|ooo|"
     "in a meeting|assistant director|assistant manager|assistant professor|assistant vp|"
     "assistant coach|she sent|he sent|they sent|sent me|replied to|responded to|"
     "got disconnected|call disconnected|call dropped|dropped call|got cut off|no luck|"
     "spoke too soon"),
)

def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that are neither outcomes nor content: they may stand next to an
# `edge` or `alone` phrase ("I finally spoke w/ her", "called at 9 - busy").
_FILLER = _words("""
i we me my her him his them their it us our a an the to with at @ ~ # on in via by for from
of around approx abt about re ca call called calls calling rang rung ring rings ringing
phoned phone tried dialed dialled dial attempt attempted cell mobile office desk direct line
landline number again also just finally already still yet ok okay k so first second third last
time times tries all both each x am pm this morning afternoon evening tonight earlier later
quick quickly briefly fyi update note log logged lol ugh argh meh yay woohoo whew phew sigh
""") | {CHECK}
_TIME_PREPS = frozenset({"at", "@", "~", "around", "approx", "abt", "ca"})
# A negation or an intention before an outcome in its clause: not a report.
_NEGATIONS = _words("""
not no never didnt dont doesnt havent hasnt hadnt wasnt werent isnt arent couldnt cant cannot
wont wouldnt shouldnt neither nor nobody noone none nothing unable failed without wo forgot
nope
""")
_INTENTIONS = _words("""
will shall should shouldve would could need needs must gonna plan planning planned todo want
wanna hope hoping expect expecting waiting awaiting wait pending remind reminder please pls plz
ask next try retry be lets ill shell hell theyll itll until till til untill
""")
# Doubt: a clause holding one of these (or ending in "?") reports nothing.
_HEDGES = _words("""
maybe might probably prob perhaps possibly think thinks guess unsure sure idk dunno unclear
apparently seems or if unless whether either
""")


# A word's kind outside lexicon phrases; where the lists overlap, negation wins
# over intention, intention over hedge, hedge over filler.
_WORD_KIND: dict[str, _I] = {
    **dict.fromkeys(_FILLER, _I.FILLER), **dict.fromkeys(_HEDGES, _I.HEDGE),
    **dict.fromkeys(_INTENTIONS, _I.INTENTION), **dict.fromkeys(_NEGATIONS, _I.NEGATION)}
# The tokens of one-character pieces that are not noise (shared).
_CHAR_TOKS: dict[str, _Tok] = {
    **{c: _Tok(_K.SEP, _I.SEP, c) for c in _SEP_CHARS},
    "?": _Tok(_K.SEP, _I.SEP, "?", hedge=True),
    **{c: _word(c) for c in _WORD_CHARS}}


@dataclass(frozen=True)
class _Phrase:
    text: str
    spoken: Outcome | None
    written: Outcome | None
    where: str  # "free" | "edge" | "alone" | "stop" | "intent"
    implies: Channel | None


class _Node:
    """A node of the lexicon's trie. `items`: where a phrase ends here, its
    item on spoken and on written follow-ups (made once, shared by all lines)."""

    __slots__ = ("items", "kids", "phrase")

    def __init__(self) -> None:
        self.kids: dict[str, _Node] = {}
        self.phrase: _Phrase | None = None
        self.items: tuple[_Tok, _Tok] | None = None


def _phrase_item(p: _Phrase, first: str, written: bool) -> _Tok:
    outcome = p.written if written else p.spoken
    if p.where == "stop":
        return _Tok(_K.WORD, _I.CONTENT, first)
    if p.where == "intent":
        return _Tok(_K.WORD, _I.INTENTION, first)
    if outcome is None:
        return _Tok(_K.WORD, _I.FILLER, first)  # "done" on a call says nothing
    return _Tok(_K.WORD, _I.PHRASE, first, outcome=outcome, implies=p.implies, where=p.where)


def _build_trie() -> tuple[_Node, int]:
    root, depth = _Node(), 0
    for spoken, written, where, implies, phrases in LEXICON:
        for text in phrases.split("|"):
            toks = _scan(_normalise(text))
            if not toks or any(t.kind is not _K.WORD for t in toks):
                raise ValueError(f"lexicon phrase {text!r} is not plain words")
            node = root
            for t in toks:
                node = node.kids.setdefault(t.text, _Node())
            if node.phrase is not None:
                raise ValueError(f"lexicon phrase {text!r} duplicates {node.phrase.text!r}")
            node.phrase = _Phrase(text, spoken, written, where, implies)
            node.items = (_phrase_item(node.phrase, toks[0].text, False),
                          _phrase_item(node.phrase, toks[0].text, True))
            depth = max(depth, len(toks))
    return root, depth


_TRIE, _TRIE_DEPTH = _build_trie()
_TRIE_FIRST = frozenset(_TRIE.kids)  # the words a phrase can start with


def _longest(toks: list[_Tok], i: int) -> tuple[tuple[_Tok, _Tok], int] | None:
    """The longest lexicon phrase starting at token i (at most _TRIE_DEPTH
    steps): its items (spoken, written) and the index of the token after it."""
    node, best, j, n = _TRIE, None, i, len(toks)
    while j < n and toks[j].kind is _K.WORD:
        nxt = node.kids.get(toks[j].text)
        if nxt is None:
            break
        node, j = nxt, j + 1
        if node.items is not None:
            best = (node.items, j)
    return best


# --------------------------------------------------------------------------
# Times and dates


def resolve_clock(c: _Clock, ctx: LineContext) -> time:
    """12-hour times without am/pm take the reading inside working hours; where
    both or neither are, the one nearest the event's start (SPEC); on a tie the
    earlier. 24-hour and zero-padded times are literal."""
    hour, minute = divmod(_minute_of_day(c, ctx), 60)
    return time(hour, minute)


def _minute_of_day(c: _Clock, ctx: LineContext) -> int:
    """`resolve_clock` in minutes of the day."""
    if c.meridiem:
        return (c.hour % 12 + (12 if c.meridiem == "p" else 0)) * 60 + c.minute
    if c.hour == 0 or c.hour > 12 or c.zero_padded:
        return c.hour * 60 + c.minute
    am = (c.hour % 12) * 60 + c.minute
    pm = am + 12 * 60
    ws, we = ctx.work_start, ctx.work_end
    # (a start with seconds, never from the config, begins the next minute)
    lo = ws.hour * 60 + ws.minute + (1 if ws.second or ws.microsecond else 0)
    hi = we.hour * 60 + we.minute
    in_am, in_pm = lo <= am <= hi, lo <= pm <= hi
    if in_am != in_pm:
        return am if in_am else pm
    ref = ctx.event_start.hour * 60 + ctx.event_start.minute
    return am if abs(am - ref) <= abs(pm - ref) else pm  # a tie: the earlier


class _When(enum.Enum):
    PAST = "past"  # attempts: the most recent such day, not after the event's day
    FUTURE = "future"  # next / pause / snooze: strictly after the event's day
    NEAREST = "nearest"  # interview: weekdays upcoming, dates in the nearest year


def _resolve_day(d: _Day, ref: date, when: _When) -> date | None:
    if d.kind == "ymd":
        return _safe_date(d.year, d.month, d.day)
    if d.kind == "rel":
        return ref + timedelta(days=d.offset)
    if d.kind == "wd":
        ahead = (d.weekday - ref.weekday()) % 7
        if when is _When.FUTURE:
            return ref + timedelta(days=ahead or 7)
        if when is _When.NEAREST and not d.last:
            return ref + timedelta(days=ahead)
        back = (ref.weekday() - d.weekday) % 7
        return ref - timedelta(days=back or (7 if d.last else 0))
    # month and day without a year
    years = (ref.year - 1, ref.year, ref.year + 1)
    options = [x for x in (_safe_date(y, d.month, d.day) for y in years) if x]
    if when is _When.PAST:
        options = [x for x in options if x <= ref + timedelta(days=1)]
        return options[-1] if options else None
    if when is _When.FUTURE:
        options = [x for x in options if x >= ref]
        return options[0] if options else None
    return min(options, key=lambda x: (abs((x - ref).days), -x.toordinal()), default=None)


# --------------------------------------------------------------------------
# Attempt lines: items, clauses, facts

# (general, specific): a fact's outcomes combine into the specific one.
_REFINES = frozenset({
    (_NA, _VM), (_NA, _WN), (_NA, _GK), (_VM, _GK), (_VM, _WN), (_RE, _WN), (_SE, _RP),
    (_SE, _WN),
})
# Within one clause a person's name for the one who answered also refines:
# "spoke to her assistant", "assistant picked up".
_REFINES_IN_CLAUSE = _REFINES | {(_RE, _GK)}


@dataclass(slots=True)
class _Clause:
    times: list[_Clock]
    days: list[_Day]
    counts: list[int]
    outcome: Outcome | None = None
    implies: Channel | None = None
    problem: str = ""  # set when the clause's outcome cannot be trusted
    hedged: bool = False
    intent: bool = False  # negation, intention or hedge words
    bare: bool = True  # nothing but times, dates, counts and "at"
    bad: bool = False  # shaped like a time or date that does not exist ("25:00")
    doubtful: bool = False  # a bare number that could be an hour ("vm 3")


def _combine(a: Outcome | None, b: Outcome, table: frozenset[tuple[Outcome, Outcome]]
             ) -> Outcome | None:
    """a and b as one fact, or None when they contradict."""
    if a is None or a is b:
        return b
    if (a, b) in table:
        return b
    if (b, a) in table:
        return a
    return None


# Item kinds as plain names for the reader's loop (a global, not an attribute
# of the enum class, on every test).
_PHRASE, _TIME, _DATE, _NUM, _FILL = _I.PHRASE, _I.TIME, _I.DATE, _I.NUM, _I.FILLER
_SEP, _HEDGE, _INTENTION, _NEGATION = _I.SEP, _I.HEDGE, _I.INTENTION, _I.NEGATION
_ANCHORS = frozenset({_I.TIME, _I.DATE, _I.COUNT, _I.NUM, _I.BAD})
_WORD = _K.WORD
_END = _Tok(_K.SEP, _I.SEP)  # the end of the line: closes its last clause


def _clauses(toks: list[_Tok], written: bool) -> list[_Clause]:
    """The line's clauses, read. One pass over the tokens: a lexicon phrase
    (the longest starting at a word) becomes one item, other tokens are items
    as they are; the items are cut into clauses at separators and where a new
    time or outcome starts a new fact ("9:10 no answer 14:05 vm"), and each
    item is read into its clause as it comes. Only an outcome phrase's position
    rule needs the whole clause (is there content after it?): phrases are
    judged when their clause closes (`_judge`)."""
    out: list[_Clause] = []
    n, i = len(toks), 0
    # the clause being read
    size = n_content = 0
    times: list[_Clock] = []
    days: list[_Day] = []
    counts: list[int] = []
    phrases: list[tuple[_Tok, int, bool]] = []  # (item, content words before, blocked)
    before_time = before_date = outcome_seen = anchor_after = False
    blocked = planned = hedge = intent = bad = doubtful = suspect = prev_num = False
    bare = True
    while i <= n:
        if i == n:
            it = _END
        else:
            it = toks[i]
            if it.text in _TRIE_FIRST and it.kind is _WORD:
                hit = _longest(toks, i)
                if hit is not None:
                    it = hit[0][written]
                    i = hit[1] - 1
        i += 1
        kind = it.item
        if suspect:  # a bare number: doubtful unless the next item is a number too
            suspect = False
            doubtful = doubtful or kind is not _NUM
        anchor = kind is _TIME or kind is _DATE
        # "9:10 no answer 14:05 …" (the same kind of anchor again after an
        # outcome) and "no answer 9:10 vm …" (an outcome after outcome-time)
        if kind is _SEP or (anchor and outcome_seen and (
                before_time if kind is _TIME else before_date)) or \
                (kind is _PHRASE and anchor_after):
            if size:
                outcome, implies, problem = _judge(phrases, n_content) if phrases \
                    else (None, None, "")
                out.append(_Clause(times, days, counts, outcome, implies, problem,
                                   hedge or it.hedge, intent, bare, bad, doubtful))
                size = n_content = 0
                times, days, counts, phrases = [], [], [], []
                blocked = planned = hedge = intent = bad = doubtful = prev_num = False
                bare = True
            before_time = before_date = outcome_seen = anchor_after = False
            if kind is _SEP:
                continue
        size += 1
        if anchor:
            if outcome_seen:
                anchor_after = anchor_after or not (before_time or before_date)
            elif kind is _TIME:
                before_time = True
            else:
                before_date = True
        if kind is _PHRASE:
            outcome_seen = True
            phrases.append((it, n_content, blocked))
            bare = False
        elif kind in _ANCHORS:
            if planned:
                intent = True  # "said call back Monday": the plan's day, not the fact's
            elif anchor:  # a TIME has its clock, a DATE its day
                if it.clock is not None:
                    times.append(it.clock)
                elif it.day is not None:
                    days.append(it.day)
            elif kind is _NUM:
                # "vm 3" could be an hour; "call #7" is a reference, and
                # "+1 212 555 0101" a phone number (numbers side by side)
                suspect = not (it.ref or len(it.text) > 2 or prev_num)
            elif kind is _I.COUNT:
                counts.append(it.count)
            else:
                bad = True
        elif kind is _FILL:
            bare = bare and it.text in _TIME_PREPS
        else:  # a content word
            n_content += 1
            bare = False
            if kind is _HEDGE:
                hedge = intent = True
            elif kind is _NEGATION or kind is _INTENTION:
                intent = True
                if not blocked:
                    # after an intention word, times and counts are the plan's
                    blocked, planned = True, kind is _INTENTION
        prev_num = kind is _NUM
    return out


def _judge(phrases: list[tuple[_Tok, int, bool]], n_content: int
           ) -> tuple[Outcome | None, Channel | None, str]:
    """A clause's outcome phrases, in order, by their position rules: `free`
    anywhere, `edge` with no content word before or none after it, `alone`
    with no content word in the clause. Returns its outcome, channel, problem."""
    outcome: Outcome | None = None
    implies: Channel | None = None
    problem = ""
    for it, seen, blocked in phrases:
        where, said = it.where, it.outcome
        if said is None or (where == "edge" and 0 < seen < n_content) or \
                (where == "alone" and n_content):
            continue  # "busy" in "she is busy": not an outcome here
        if blocked:
            problem = f"negated or not done yet: {it.text!r}"
        merged = _combine(outcome, said, _REFINES_IN_CLAUSE)
        if merged is None:
            problem = f"{outcome} and {said} in one clause"
        else:
            outcome = merged
        if it.implies is not None:
            if implies not in (None, it.implies):
                problem = "two channels in one clause"
            implies = it.implies
    return outcome, implies, problem


@dataclass(slots=True)
class _Fact:
    times: list[_Clock]
    day: _Day | None
    outcome: Outcome
    implies: Channel | None
    count: int
    anchored: bool  # has its own time or date


MAX_COUNT = 5  # "called 10 times" is a figure of speech, not ten attempts
_NOTHING_LENT = _Clause([], [], [])  # shared and never changed: most lines lend nothing


def _attempts(toks: list[_Tok], ctx: LineContext) -> tuple[list[Entry], str]:
    written = ctx.channel is Channel.EMAIL or ctx.channel is Channel.MESSAGE
    facts: list[_Fact] = []
    cur: _Fact | None = None
    lent = _NOTHING_LENT  # times, dates and counts lent to the next fact
    lent_any = False
    for c in _clauses(toks, written):
        if c.outcome is None:
            if c.times or c.days or c.counts or c.bad or (c.doubtful and c.bare):
                if c.intent or c.hedged:
                    continue  # "try again at 3": an intention, not a report
                if lent is _NOTHING_LENT:
                    lent = _Clause([], [], [])
                lent.times += c.times
                lent.days += c.days
                lent.counts += c.counts
                lent.bad |= c.bad
                lent.doubtful |= c.doubtful and c.bare
                lent.bare &= c.bare
                lent_any = True
            continue
        if c.hedged:
            return [], "a question or a hedge about an outcome"
        if c.problem:
            return [], c.problem
        if c.bad or lent.bad:
            return [], "a time or date that does not exist"
        if c.doubtful or lent.doubtful:
            return [], "a number that is not a time or a date"
        if lent is _NOTHING_LENT:
            times, days, counts = c.times, c.days, c.counts
        else:
            times, days, counts = (lent.times + c.times, lent.days + c.days,
                                   lent.counts + c.counts)
        if len(days) > 1:
            return [], "two dates for one fact"
        if len(counts) > 1:
            return [], "two counts for one fact"
        if lent.counts and c.outcome is not _NA:
            return [], f"a count lent to {c.outcome}: which attempt was it?"
        anchored = bool(times or days)
        if cur is None or (anchored and cur.anchored):
            if cur is not None:
                facts.append(cur)
            cur = _Fact(times, days[0] if days else None, c.outcome, c.implies,
                        counts[0] if counts else 0, anchored)
        elif anchored:
            return [], "some facts have a time and others not"
        else:
            merged = _combine(cur.outcome, c.outcome, _REFINES)
            if merged is None:
                return [], f"{cur.outcome} and {c.outcome} in one line without times"
            if counts and cur.count:
                return [], "two counts for one fact"
            if c.implies is not None and cur.implies not in (None, c.implies):
                return [], "two channels for one fact"
            cur.outcome, cur.count = merged, cur.count or (counts[0] if counts else 0)
            cur.implies = cur.implies or c.implies
        lent, lent_any = _NOTHING_LENT, False
    if cur is None:
        return [], "no outcome"
    if lent_any and lent.bare:
        # "no answer - 9:10", "vm, x2": a trailing time or count for the last fact
        if lent.bad or lent.doubtful or len(lent.days) > 1 or len(lent.counts) > 1:
            return [], "a time or number that belongs to no outcome"
        if lent.times or lent.days:
            if cur.anchored:
                return [], "a time that belongs to no outcome"
            cur.times, cur.anchored = lent.times, True
            cur.day = lent.days[0] if lent.days else None
        if lent.counts:
            if cur.count:
                return [], "two counts for one fact"
            cur.count = lent.counts[0]
    facts.append(cur)
    return _facts_to_entries(facts, ctx)


def _facts_to_entries(facts: list[_Fact], ctx: LineContext) -> tuple[list[Entry], str]:
    out: list[Entry] = []
    start = ctx.event_start
    tz = start.tzinfo
    today = start.date()
    last_day: _Day | None = None
    for f in facts:
        day_spec = f.day or last_day
        last_day = day_spec
        on = _resolve_day(day_spec, today, _When.PAST) if day_spec else today
        if on is None:
            return [], "no such date"
        if f.count > MAX_COUNT:
            return [], f"{f.count} attempts in one line"
        if f.times:
            if f.count > 1 and f.count != len(f.times):
                return [], "the count and the times disagree"
            y, m, d = on.year, on.month, on.day
            for clock in f.times:
                hour, minute = divmod(_minute_of_day(clock, ctx), 60)
                at = datetime(y, m, d, hour, minute, 0, 0, tz)
                out.append(AttemptEntry(f.outcome, f.implies, at, False))
        else:
            # the event's own wall time (the event's start itself on its own day)
            at = start if on == today and type(start) is datetime else \
                datetime.combine(on, start.time(), tzinfo=tz)
            out += [AttemptEntry(f.outcome, f.implies, at, True)] * max(f.count, 1)
    return out, _COUNTED[len(out)] if len(out) < len(_COUNTED) else f"{len(out)} attempts"


_COUNTED = ("0 attempts", "1 attempt", *(f"{n} attempts" for n in range(2, 12)))




# --------------------------------------------------------------------------
# Commands and news


def _news(text: str) -> str | None:
    """The text of a `news:` line (as typed), or None when it is not one."""
    i = 0
    while i < len(text) and not text[i].isalnum():
        i += 1
    if text[i:i + 4].lower() != "news":
        return None
    j = i + 4
    while j < len(text) and text[j] in " \t\u00a0\u202f":
        j += 1
    if j < len(text) and text[j] in ":\uff1a":
        return text[j + 1:].strip()
    return None


_COMMANDS = {"skip": "skip", "skipped": "skip", "skipping": "skip", "stop": "stop",
             "pause": "pause", "paused": "pause", "snooze": "snooze", "snoozed": "snooze",
             "next": "next", "interview": "interview"}
_SKIP_WORDS = frozenset({"this", "one", "time", "today", "it", "call", "email", "followup",
                         "for", "now", "please", "pls"})
_STOP_WORDS = frozenset({"now", "here", "this", "contact", "followups", "followup",
                         "following", "up", "cadence", "please", "pls", "all"})
_UNTIL = frozenset({"until", "till", "til", "untill", "to", "thru", "through"})
_LEAD = frozenset({"call", "email", "followup", "attempt", "try", "one", "on", "at", "@"})


def _command(toks: list[_Tok], ctx: LineContext) -> tuple[list[Entry], str] | None:
    """A command line, or None when the line does not start with a command."""
    i = 0
    while i < len(toks) and toks[i].kind is _K.SEP and not toks[i].hedge:
        i += 1  # bullets: "- skip", "• stop"
    if i == len(toks) or toks[i].kind is not _K.WORD or toks[i].text not in _COMMANDS:
        return None
    kind = _COMMANDS[toks[i].text]
    rest = toks[i + 1:]
    if any(t.hedge or (t.kind is _K.WORD and t.text in _HEDGES) for t in rest):
        return [], f"{kind}: a question or a hedge"
    if kind in ("skip", "stop"):
        allowed = _SKIP_WORDS if kind == "skip" else _STOP_WORDS
        for t in rest:
            if t.kind is _K.SEP and t.text not in _SEP_WORDS:
                break  # a comment follows
            if not (t.kind is _K.WORD and t.text in allowed):
                return [], f"{kind}: {t.text!r} is not part of the command"
        return [CommandEntry(kind)], kind
    if rest and rest[0].kind is _K.SEP and rest[0].text in (":", "-"):
        rest = rest[1:]
    arg: list[_Tok] = []
    for t in rest:
        if t.kind is _K.SEP:
            if t.text in _SEP_WORDS:
                return [], f"{kind}: {t.text!r} is not part of the command"
            break
        arg.append(t)
    entry = _command_argument(kind, arg, ctx)
    return ([entry], kind) if entry else ([], f"{kind}: the argument does not read")


def _command_argument(kind: str, arg: list[_Tok], ctx: LineContext) -> Entry | None:
    tz = ctx.event_start.tzinfo
    ref = ctx.event_start.date()
    words = [t.text for t in arg]
    if kind in ("pause", "snooze"):
        if words[:1] and words[0] in _UNTIL and len(arg) == 2 and arg[1].day is not None:
            on = _resolve_day(arg[1].day, ref, _When.FUTURE)
            return CommandEntry(kind, datetime.combine(on, ctx.work_start, tzinfo=tz)) \
                if on else None
        if len(arg) == 1 and arg[0].day is not None:
            on = _resolve_day(arg[0].day, ref, _When.FUTURE)
            return CommandEntry(kind, datetime.combine(on, ctx.work_start, tzinfo=tz)) \
                if on else None
        if words[:1] == ["for"]:
            arg, words = arg[1:], words[1:]
        if not arg or any(t.kind not in (_K.NUM, _K.WORD) for t in arg):
            return None
        spelled = [str(_NUMBER_WORDS[w]) if w in _NUMBER_WORDS
                   else "1" if w in ("a", "an") else w for w in words]
        try:
            length = parse_duration(" ".join(spelled))
        except ValueError:
            return None
        return CommandEntry(kind, add_duration(ctx.event_start, length))
    day: _Day | None = None
    clock: _Clock | None = None
    for t in arg:
        if t.kind is _K.DATE and t.day is not None and day is None:
            day = t.day
        elif t.kind is _K.TIME and t.clock is not None and clock is None:
            clock = t.clock
        elif not (t.kind is _K.WORD and t.text in _LEAD):
            return None
    wall = resolve_clock(clock, ctx) if clock else None
    if kind == "next" and (day or wall):
        on = _resolve_day(day, ref, _When.FUTURE) if day else ref + timedelta(days=1)
        if on is None:
            return None
        at = datetime.combine(on, wall or ctx.work_start, tzinfo=tz)
        return CommandEntry("next", at) if at > ctx.event_start else None
    if kind == "interview" and day:
        on = _resolve_day(day, ref, _When.NEAREST)
        return InterviewEntry(datetime.combine(on, wall or time(9, 0), tzinfo=tz)) \
            if on else None
    return None


# --------------------------------------------------------------------------
# HTML notes

_HTML_MARK = re.compile(r"(?i)<br\s*/?>|</(?:p|div|li|span|b|i|u|a|ul|ol)>|&nbsp;")


def looks_like_html(text: str) -> bool:
    """Notes edited in Google Calendar's web UI or Outlook come back as HTML
    (<br> for line breaks); notes written through the APIs are plain text."""
    return bool(_HTML_MARK.search(text))


def html_to_text(content: str) -> str:
    """The text a person sees in HTML notes: line breaks for <br>, paragraph
    and list ends; no tags; entities decoded. The notes are then read, and
    written back, as that text."""
    import html

    text = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", "", content)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</li>", "\n", text)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).replace("\xa0", " ").strip("\n")

