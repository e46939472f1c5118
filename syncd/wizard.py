"""`syncd init`: set up a config in minutes.

Three ways in (cli.py picks one):

* interactive, on a terminal or with `--interactive`: asks for the time
  zone, working hours, the contact sources and the calendar, checks each
  connection as soon as it is answered (file read, CardDAV address book
  found, CalDAV calendar found), and writes the file at the end;
* from flags (`--contacts-file`, `--calendar-url`, ...): the same checks,
  no questions; a failed check writes nothing (exit 1) unless `--no-verify`;
* neither: the commented starter config to edit by hand.

Google and Outlook need a browser/device sign-in, which `syncd auth NAME`
does once the file exists; init says so instead of checking them.
An existing config is never overwritten without `--force`, and that is
checked before the first question.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from rich.console import Console
from rich.markup import escape

from syncd.errors import RemoteError, SyncdError, UserError
from syncd.settings import Config
from syncd.starter import (
    Answers,
    CalendarAnswer,
    SourceAnswer,
    refuse_existing,
    render_config,
    write_config,
)

SOURCE_TYPES = ("file", "carddav", "google", "outlook")
CALENDAR_TYPES = ("caldav", "google", "graph")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")

Ask = Callable[[str], str]


# --------------------------------------------------------------------------
# Parsing answers (shared by prompts and flags)


def parse_zone(text: str) -> str:
    name = text.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"time zone {name!r} is not an IANA zone name",
                        hint="e.g. America/New_York, Europe/London, Asia/Tokyo") from None
    if name not in available_timezones() and name != "UTC":
        raise UserError(f"time zone {name!r} is not an IANA zone name",
                        hint="e.g. America/New_York, Europe/London, Asia/Tokyo")
    return name


def parse_days(text: str) -> tuple[str, ...]:
    """`mon-fri`, `mon,tue,thu`, `mon tue`, full names too."""
    out: list[str] = []
    for part in re.split(r"[\s,]+", text.strip().lower()):
        if not part:
            continue
        a, _, b = part.partition("-")
        lo, hi = _day(a), _day(b) if b else _day(a)
        i, j = WEEKDAYS.index(lo), WEEKDAYS.index(hi)
        span = range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)]
        out += [WEEKDAYS[k] for k in span if WEEKDAYS[k] not in out]
    if not out:
        raise UserError("no working days given", hint="e.g. mon-fri or mon,tue,wed,thu")
    return tuple(sorted(out, key=WEEKDAYS.index))


def _day(text: str) -> str:
    key = text[:3]
    if key not in WEEKDAYS:
        raise UserError(f"{text!r} is not a weekday", hint="use mon, tue, wed, thu, fri, sat, sun")
    return key


def parse_clock(text: str) -> str:
    m = _CLOCK.match(text.strip())
    if not m:
        raise UserError(f"{text!r} is not a 24-hour time", hint="use HH:MM, e.g. 08:30")
    return f"{int(m[1]):02d}:{m[2]}"


def parse_hours(text: str) -> tuple[str, str]:
    """`08:00-18:30`."""
    a, sep, b = text.partition("-")
    if not sep:
        raise UserError(f"--hours {text!r}: give start-end", hint="e.g. 08:00-18:30")
    start, end = parse_clock(a), parse_clock(b)
    if end <= start:
        raise UserError(f"--hours {text!r}: the end must be after the start")
    return start, end


def parse_env_name(text: str) -> str:
    name = text.strip()
    if not _ENV_NAME.match(name):
        raise UserError(f"{name!r} is not an environment variable name",
                        hint="letters, digits and _, e.g. CALDAV_PASSWORD")
    return name


def source_name(base: str, taken: list[str]) -> str:
    stem = _NAME.sub("-", base.strip().lower()).strip("-.") or "contacts"
    if not stem[0].isalnum():
        stem = "c" + stem
    if stem == "calendar":
        stem = "calendar-contacts"
    name, n = stem, 2
    while name in taken:
        name, n = f"{stem}-{n}", n + 1
    return name


# --------------------------------------------------------------------------
# Checks (through the same connectors `syncd sync` uses)


def _config_for(answers: Answers, path: Path) -> Config:
    from syncd.config import load_text

    return load_text(render_config(answers), path)


def check_source(s: SourceAnswer, answers: Answers, path: Path) -> str:
    """A one-line success; raises SyncdError (with a hint) when it fails."""
    if s.type in ("google", "outlook"):
        return f"sign in after writing the config: syncd auth {s.name}"
    if s.password_env and os.environ.get(s.password_env) is None:
        raise UserError(f"{s.password_env} is not set in this shell",
                        hint=f"export {s.password_env}=... and try again (it is read at "
                        "every sync; it never goes into the config)")
    from syncd.wiring import make_source

    trial = replace(answers, sources=[s], calendar=answers.calendar or _PLACEHOLDER_CAL)
    cfg = _config_for(trial, path)
    src = make_source(cfg.contacts[0], cfg.state_dir)
    try:
        batch = src.read(None)
    finally:
        src.close()
    skipped = f", {len(batch.problems)} entries skipped" if batch.problems else ""
    return f"{len(batch.contacts)} contact(s) read{skipped}"


def check_calendar(c: CalendarAnswer, answers: Answers, path: Path) -> str:
    if c.type in ("google", "graph"):
        return "sign in after writing the config: syncd auth calendar"
    if c.password_env and os.environ.get(c.password_env) is None:
        raise UserError(f"{c.password_env} is not set in this shell",
                        hint=f"export {c.password_env}=... and try again (it is read at "
                        "every sync; it never goes into the config)")
    from syncd.wiring import make_calendar

    trial = replace(answers, sources=answers.sources or [_PLACEHOLDER_SOURCE], calendar=c)
    cfg = _config_for(trial, path)
    assert cfg.calendar is not None
    cal = make_calendar(cfg.calendar, cfg.state_dir)
    try:
        url = cal.url()
    finally:
        cal.close()
    return f"calendar {c.calendar!r} is at {url}"


# Stand-ins so a config with only the part being checked validates.
_PLACEHOLDER_CAL = CalendarAnswer(type="caldav", url="http://localhost/")
_PLACEHOLDER_SOURCE = SourceAnswer(name="placeholder", type="file", path=Path("x.vcf"))


# --------------------------------------------------------------------------
# From flags


def from_flags(answers: Answers, path: Path, verify: bool, out: Console,
               force: bool) -> list[str]:
    """Check (unless told not to) and write; returns the next steps."""
    if not answers.sources:
        raise UserError("no contact source given",
                        hint="pass --contacts-file PATH, --carddav-url URL, --google-contacts "
                        "or --outlook-contacts (or run `syncd init --interactive`)")
    if answers.calendar is None:
        raise UserError("no calendar given",
                        hint="pass --calendar-url URL (CalDAV), or --calendar-type google/graph")
    _validate(answers, path)
    if verify:
        failed = []
        for s in answers.sources:
            failed += _report(out, f"contacts '{s.name}'", partial(check_source, s, answers, path))
        failed += _report(out, "calendar", partial(check_calendar, answers.calendar, answers, path))
        if failed:
            raise RemoteError(f"{len(failed)} check(s) failed; nothing written to {path}",
                              hint="fix the flags above, or pass --no-verify to write anyway",
                              retryable=False)
    write_config(path, render_config(answers), force)
    return next_steps(answers)


def _validate(answers: Answers, path: Path) -> None:
    """The rendered file must pass `syncd config check`."""
    _config_for(answers, path)


def _report(out: Console, what: str, check: Callable[[], str]) -> list[str]:
    try:
        line = check()
    except SyncdError as e:
        hint = f" → {e.hint}" if e.hint else ""
        out.print(f"[red]✗[/] {escape(what)}: {escape(e.message)}{escape(hint)}")
        return [what]
    out.print(f"[green]✓[/] {escape(what)}: {escape(line)}")
    return []


def next_steps(answers: Answers) -> list[str]:
    steps = [f"syncd auth {s.name}" for s in answers.sources if s.type in ("google", "outlook")]
    if answers.calendar is not None and answers.calendar.type in ("google", "graph"):
        steps.append("syncd auth calendar")
    return [*steps, "syncd sync", "syncd status"]


# --------------------------------------------------------------------------
# Interactive


class Wizard:
    """The questions. `ask(prompt)` returns a line (input(), or a test's
    feed); EOF aborts with nothing written."""

    def __init__(self, path: Path, out: Console, ask: Ask, defaults: Answers,
                 verify: bool = True) -> None:
        self.path = path
        self.out = out
        self._ask = ask
        self.a = defaults
        self.verify = verify

    def ask(self, question: str, default: str = "",
            parse: Callable[[str], str] | None = None) -> str:
        """Ask until the answer parses; Enter takes the default."""
        while True:
            shown = f" [{default}]" if default else ""
            try:
                raw = self._ask(f"{question}{shown}: ")
            except EOFError:
                raise UserError("init cancelled (end of input); nothing written") from None
            text = raw.strip() or default
            if parse is None:
                return text
            try:
                return parse(text)
            except UserError as e:
                hint = f" ({e.hint})" if e.hint else ""
                self.out.print(f"  [red]{escape(e.message)}{escape(hint)}[/]")

    def yes(self, question: str, default: bool) -> bool:
        def yn(text: str) -> str:
            if text.lower() in ("y", "yes", "n", "no"):
                return text.lower()[0]
            raise UserError("answer y or n")

        return self.ask(question, "Y/n" if default else "y/N",
                        lambda t: yn({"Y/n": "y", "y/N": "n"}.get(t, t))) == "y"

    def choice(self, question: str, options: tuple[str, ...], default: str,
               allow_empty: bool = False) -> str:
        def pick(text: str) -> str:
            if allow_empty and text == "":
                return ""
            t = text.lower()
            hits = [o for o in options if o.startswith(t)] if t else []
            if len(hits) == 1:
                return hits[0]
            raise UserError(f"{text!r}: choose one of {', '.join(options)}")

        return self.ask(f"{question} ({'/'.join(options)})", default, pick)

    def run(self) -> Answers:
        o = self.out
        o.print(f"[bold]syncd setup[/]: answers go into {escape(str(self.path))}; nothing is "
                "written until the end. Press Enter to take the \\[default].")
        a = self.a
        o.print("\n[bold]You[/]")
        a.timezone = self.ask("Your time zone (IANA name)", a.timezone, parse_zone)
        a.days = parse_days(self.ask("Working days", _days_text(a.days),
                                     lambda t: ",".join(parse_days(t))))
        a.start = self.ask("Working hours start (HH:MM)", a.start, parse_clock)
        while True:
            a.end = self.ask("Working hours end (HH:MM)", a.end, parse_clock)
            if a.end > a.start:
                break
            o.print("  [red]the end must be after the start[/]")
        o.print("\n[bold]Contact sources[/]: where the people to follow up come from "
                "(file = a .vcf/.csv export, e.g. LinkedIn's Connections.csv).")
        sources = list(a.sources)
        while True:
            first = not sources
            kind = self.choice("Add a contact source" + ("" if first else
                               " (Enter when done)"), SOURCE_TYPES,
                               "file" if first else "", allow_empty=not first)
            if not kind:
                break
            src = self._source(kind, [s.name for s in sources])
            if src is not None:
                sources.append(src)
        a.sources = sources
        o.print("\n[bold]Calendar[/]: where follow-ups are written "
                "(graph = Outlook / Microsoft 365).")
        default_kind = a.calendar.type if a.calendar else "caldav"
        while True:
            cal = self._calendar(self.choice("Calendar type", CALENDAR_TYPES, default_kind))
            if cal is not None:
                a.calendar = cal
                break
        _validate(a, self.path)
        if not self.yes(f"\nWrite {self.path}?", True):
            raise UserError("init cancelled; nothing written")
        return a

    def _source(self, kind: str, taken: list[str]) -> SourceAnswer | None:
        s = SourceAnswer(name="", type=kind)
        while True:
            if kind == "file":
                p = self.ask("  Path to the .vcf or .csv file",
                             str(s.path) if s.path else "", _existing_export)
                s.path = Path(p).expanduser().resolve()
                s.name = source_name(s.name or s.path.stem, taken)
            elif kind == "carddav":
                s.url = self.ask("  CardDAV URL (address book, or your account's URL)",
                                 s.url or "", _url)
                s.username = self.ask("  User name", s.username or "") or None
                if s.username:
                    s.password_env = self.ask("  Environment variable holding the password",
                                              s.password_env or "CARDDAV_PASSWORD",
                                              parse_env_name)
                s.name = s.name or source_name("cards", taken)
            elif kind == "google":
                labels = self.ask("  Only contacts with these labels (comma-separated, Enter "
                                  "for all)", ", ".join(s.labels))
                s.labels = tuple(x.strip() for x in labels.split(",") if x.strip())
                s.name = s.name or source_name("google", taken)
            else:
                s.client_id = self.ask("  Azure app (client) ID", s.client_id or "") or None
                cats = self.ask("  Only contacts in these categories (comma-separated, "
                                "Enter for all)", ", ".join(s.categories))
                s.categories = tuple(x.strip() for x in cats.split(",") if x.strip())
                s.name = s.name or source_name("outlook", taken)
            s.name = self.ask("  Name for this source", s.name,
                              lambda t: _fresh_name(t, taken))
            if self._checked(f"contacts '{s.name}'",
                             lambda: check_source(s, self.a, self.path)):
                return s
            if self.yes("  Change the answers and check again?", True):
                continue
            if self.yes("  Keep this source anyway (unchecked)?", False):
                return s
            return None

    def _calendar(self, kind: str) -> CalendarAnswer | None:
        c = CalendarAnswer(type=kind)
        while True:
            if kind == "caldav":
                c.url = self.ask("  CalDAV URL (server, account or calendar)", c.url or "",
                                 _url)
                c.username = self.ask("  User name", c.username or "") or None
                if c.username:
                    c.password_env = self.ask("  Environment variable holding the password",
                                              c.password_env or "CALDAV_PASSWORD",
                                              parse_env_name)
            elif kind == "graph":
                c.client_id = self.ask("  Azure app (client) ID", c.client_id or "") or None
            c.calendar = self.ask("  Calendar name (created when missing)", c.calendar)
            if self._checked("calendar", lambda: check_calendar(c, self.a, self.path)):
                return c
            if self.yes("  Change the answers and check again?", True):
                continue
            if self.yes("  Keep this calendar anyway (unchecked)?", False):
                return c
            return None

    def _checked(self, what: str, check: Callable[[], str]) -> bool:
        if not self.verify:
            return True
        self.out.print("  checking…")
        return not _report(self.out, what, check)


def _days_text(days: tuple[str, ...]) -> str:
    i = [WEEKDAYS.index(d) for d in days]
    if i and i == list(range(i[0], i[-1] + 1)) and len(i) > 2:
        return f"{days[0]}-{days[-1]}"
    return ",".join(days)


def _existing_export(text: str) -> str:
    p = Path(text).expanduser()
    if not text:
        raise UserError("a path is needed")
    if p.suffix.lower() not in (".vcf", ".csv"):
        raise UserError(f"{text}: not a .vcf or .csv file")
    if not p.is_file():
        raise UserError(f"{text}: no such file", hint="export it first, then give its path")
    return text


def _url(text: str) -> str:
    if not re.match(r"^https?://[^\s/]+", text):
        raise UserError(f"{text!r} is not an http(s) URL", hint="e.g. https://dav.example.com/")
    return text


def _fresh_name(text: str, taken: list[str]) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise UserError(f"{text!r}: use letters, digits, '-', '_' and '.'")
    if text == "calendar":
        raise UserError("'calendar' is reserved (it means the calendar in `syncd auth`)")
    if text in taken:
        raise UserError(f"{text!r} is already the name of another source")
    return text


def interactive(path: Path, defaults: Answers, verify: bool, force: bool,
                ask: Ask | None = None, out: Console | None = None) -> list[str]:
    refuse_existing(path, force)
    console = out or Console(highlight=False, soft_wrap=True)
    wizard = Wizard(path, console, ask or (lambda q: console.input(escape(q))), defaults,
                    verify)
    answers = wizard.run()
    write_config(path, render_config(answers), force)
    return next_steps(answers)
