"""Synthetic but realistic inputs for bench/run.py: contacts (vCard text and
provider records), a busy user's calendar, note lines, and the config.

Everything is generated from a seed, so two runs see the same data.
"""

from __future__ import annotations

import csv
import random
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
NY = ZoneInfo("America/New_York")
# Every scenario runs at pinned times: Monday 2026-11-23, 07:00 in New York,
# an hour before working hours, so an idle cycle a few minutes later crosses
# no boundary (nothing starts or ends) and must write nothing.
NOW = datetime(2026, 11, 23, 7, 0, tzinfo=NY).astimezone(UTC)

FIRST = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
    "Sarah", "Wei", "Priya", "Amara", "Carlos", "Yuki", "Olga", "Ahmed", "Fatima", "Lars",
    "Ingrid", "Chloé", "Søren", "José", "Zoë"
)
LAST = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Chen", "Patel", "Okafor", "Mendes", "Tanaka", "Ivanova",
    "Hassan", "Nielsen", "Berg", "Kowalski", "Rossi", "Dubois", "O'Brien", "Müller"
)
ORGS = ("Acme Capital", "Northwind Partners", "Blue Harbor Fund", "Lumen Analytics", "Globex",
        "Initech", "Umbrella Research", "Stark Industries", "Wayne & Sons, LLC")
LABELS = ("Hiring managers", "Recruiters", "Long haul", "Friends", "Alumni")
PHONES = ("+1 212 555 {:04d}", "+1 415 555 {:04d}", "+44 20 7946 {:04d}", "+1 312 555 {:04d}",
          "+81 3 1234 {:04d}", "+1 617 555 {:04d}", "+49 30 9018 {:04d}", "+33 1 4020 {:04d}")
ZONES = ("Europe/Berlin", "America/Los_Angeles", "Asia/Singapore")


@dataclass(frozen=True)
class Person:
    key: str
    first: str
    last: str
    org: str
    title: str
    phone: str
    email: str
    label: str
    zone: str
    cadence: str
    note: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


def people(n: int, seed: int = 1) -> list[Person]:
    r = random.Random(seed)
    out = []
    for i in range(n):
        first, last = r.choice(FIRST), r.choice(LAST)
        ascii_name = unicodedata.normalize("NFKD", f"{first}.{last}").lower()
        local = re.sub(r"[^a-z.]", "", ascii_name)
        out.append(Person(
            key=f"bench-{i:06d}",
            first=first,
            last=last,
            org=r.choice(ORGS),
            title=r.choice(("Analyst", "Portfolio Manager", "Head of Research", "Recruiter",
                            "VP Engineering", "")),
            phone=r.choice(PHONES).format(r.randrange(10000)) if i % 9 else "",
            email=f"{local}{i}@{r.choice(('example.com', 'acme.example', 'mail.example'))}",
            label=r.choice(LABELS),
            zone=ZONES[i % 3] if i % 10 == 0 else "",
            cadence="long_haul" if i % 50 == 0 else "",
            note=f"Met at conference {i % 13}, talked about rates; follow up" if i % 3 else "",
        ))
    return out


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")


def vcard(p: Person) -> str:
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"UID:{p.key}", f"FN:{_esc(p.name)}",
             f"N:{_esc(p.last)};{_esc(p.first)};;;", f"ORG:{_esc(p.org)}"]
    if p.title:
        lines.append(f"TITLE:{_esc(p.title)}")
    if p.phone:
        lines.append(f"TEL;TYPE=work,voice:{p.phone}")
    lines.append(f"EMAIL;TYPE=INTERNET:{p.email}")
    lines.append(f"CATEGORIES:{_esc(p.label)}")
    if p.zone:
        lines.append(f"TZ;VALUE=text:{p.zone}")
    if p.cadence:
        lines.append(f"X-SYNCD-CADENCE:{p.cadence}")
    if p.note:
        lines.append(f"NOTE:{_esc(p.note)}")
    lines.append("END:VCARD")
    return "\r\n".join(lines) + "\r\n"


def vcards(n: int, seed: int = 1) -> str:
    return "".join(vcard(p) for p in people(n, seed))


# ---------------------------------------------------------------------------- calendar

_VTIMEZONE_NY = """BEGIN:VTIMEZONE\r
TZID:America/New_York\r
BEGIN:DAYLIGHT\r
TZOFFSETFROM:-0500\r
TZOFFSETTO:-0400\r
TZNAME:EDT\r
DTSTART:19700308T020000\r
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU\r
END:DAYLIGHT\r
BEGIN:STANDARD\r
TZOFFSETFROM:-0400\r
TZOFFSETTO:-0500\r
TZNAME:EST\r
DTSTART:19701101T020000\r
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU\r
END:STANDARD\r
END:VTIMEZONE\r
"""

MEETINGS = ("Team sync", "1:1 with manager", "Lunch", "Dentist", "Coffee with a friend",
            "Quarterly planning", "Gym", "School pick-up", "Board prep", "Flight to Chicago")


def foreign_events(n: int, seed: int = 2) -> Iterator[tuple[str, str]]:
    """(file name, iCalendar text) of `n` events another client wrote: a busy
    user's four years (2024-2027), most in working hours; a third with a
    TZID (and its VTIMEZONE), one in fifty weekly recurring, one in a hundred
    an interview with attendees (these feed interview detection)."""
    r = random.Random(seed)
    start_day = datetime(2024, 1, 1, tzinfo=NY)
    for i in range(n):
        day = start_day + timedelta(days=r.randrange(4 * 365))
        start = day.replace(hour=r.choice((8, 9, 10, 11, 13, 14, 15, 16, 17, 19)),
                            minute=r.choice((0, 15, 30, 45)))
        end = start + timedelta(minutes=r.choice((15, 30, 30, 45, 60, 90)))
        uid = f"bench-ev-{i:06d}-{r.getrandbits(32):08x}@calendar.example"
        lines = ["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20240101T000000Z"]
        if i % 3 == 0:
            lines += [f"DTSTART;TZID=America/New_York:{start:%Y%m%dT%H%M%S}",
                      f"DTEND;TZID=America/New_York:{end:%Y%m%dT%H%M%S}"]
        else:
            lines += [f"DTSTART:{start.astimezone(UTC):%Y%m%dT%H%M%SZ}",
                      f"DTEND:{end.astimezone(UTC):%Y%m%dT%H%M%SZ}"]
        if i % 100 == 7:
            who = r.choice(FIRST).lower()
            lines += [f"SUMMARY:Interview with {who.title()} at {r.choice(ORGS)}",
                      f"ATTENDEE;CN={who.title()};ROLE=REQ-PARTICIPANT:mailto:{who}{i}@hr.example",
                      "ORGANIZER:mailto:recruiting@hr.example"]
        else:
            lines.append(f"SUMMARY:{r.choice(MEETINGS)} {i}")
        if i % 50 == 11:
            lines.append("RRULE:FREQ=WEEKLY;COUNT=10")
        if i % 4 == 0:
            lines.append("DESCRIPTION:Agenda: numbers\\, people\\, next steps.\\nBring the deck.")
        if i % 5 == 0:
            lines.append("LOCATION:Room 4\\, 3rd floor")
        lines.append("END:VEVENT")
        tz = _VTIMEZONE_NY if i % 3 == 0 else ""
        text = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//calendar//EN\r\n" + tz
                + "\r\n".join(lines) + "\r\nEND:VCALENDAR\r\n")
        yield f"{uid.split('@')[0]}.ics", text


# ---------------------------------------------------------------------------- notes


def note_lines() -> tuple[list[str], str]:
    """The note lines users type: tests/data/notes_corpus.tsv when present,
    else generated ones. Returns the lines and where they came from."""
    corpus = REPO / "tests" / "data" / "notes_corpus.tsv"
    if corpus.exists():
        data = [ln for ln in corpus.read_text(encoding="utf-8").splitlines()
                if ln and not (ln.startswith("#") and "\t" not in ln)]
        rows = csv.DictReader(data, delimiter="\t", quoting=csv.QUOTE_NONE)
        lines = [re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), row["line"])
                 for row in rows]
        return lines, "tests/data/notes_corpus.tsv"
    r = random.Random(3)
    words = ("no answer", "left voicemail", "vm", "spoke with her", "reached him",
             "gatekeeper said he is out", "sent the deck", "replied, wants a call",
             "wrong number", "skip", "pause until jan 5", "next tue 10am", "snooze 2 weeks")
    times = ("", "9:10 ", "10am ", "14:30 ", "yesterday 4pm ", "mon 9:05 ")
    return [f"{r.choice(times)}{r.choice(words)}" for _ in range(500)], "generated"


# ---------------------------------------------------------------------------- config

CADENCES = """\
cadences:
  pursue:        {channel: call,  every: 2 business days, until: reached, then: keep_in_touch}
  keep_in_touch: {channel: email, every: 4 weeks}
  long_haul:     {channel: call,  every: 1 month, stop_after: 2 years}
rules:
  - {match: {label: Hiring managers}, cadence: pursue}
  - {match: {label: Recruiters}, cadence: pursue}
  - {match: {label: Long haul}, cadence: long_haul}
  - {cadence: keep_in_touch}
"""


def config_text(contacts: str, calendar: str, poll: str = "2m", limit: int = 12) -> str:
    """A config like a user's: 14-day horizon, New York, 12 a day, no holidays."""
    return (f"timezone: America/New_York\npoll_interval: {poll}\nhorizon: 14d\n"
            f"daily_limit: {limit}\nstate_dir: state\n"
            f"contacts:\n{contacts}calendar:\n{calendar}{CADENCES}")
