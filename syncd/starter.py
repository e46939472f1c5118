"""The commented starter config that `syncd init` writes.

It is a working config (a CSV/vCard export in, a CalDAV calendar out) so the
first `syncd config check` passes once the password variable is set; every
line says what it does, and config/example.yaml documents the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from syncd.errors import UserError

STARTER_CONFIG = """\
# syncd configuration: who to follow up with, and which calendar to write to.
# Check it with `syncd config check`; every key is documented in
# config/example.yaml. Durations read like `2m`, `14d`, `2 business days`,
# `4 weeks`, `1 month`. Secrets never go in this file: use *_env, *_file
# or *_command keys.

# Your time zone (an IANA name). Left out, syncd uses this machine's zone.
# timezone: America/New_York

poll_interval: 2m        # how often syncd re-reads contacts and your notes
horizon: 14d             # how far ahead follow-ups are written into the calendar
daily_limit: 12          # at most this many follow-ups on one day

# Follow-ups are only placed inside these hours (in your time zone).
working_hours:
  days: [mon, tue, wed, thu, fri]
  start: "08:00"         # 24-hour HH:MM
  end: "18:30"

# holidays: US           # a country code; no follow-ups on its public holidays

# Where contacts come from: one or more sources, each with a unique name.
contacts:
  - name: linkedin                        # used in `syncd status` and in rules
    type: file                            # a .csv or .vcf export on disk
    path: ~/Downloads/Connections.csv     # relative paths start at this file's folder

# Where follow-ups are written: one calendar.
calendar:
  type: caldav                            # any CalDAV server (Nextcloud, Fastmail, iCloud...)
  url: https://caldav.example.com/        # your server's CalDAV address
  calendar: Follow-ups                    # created when missing
  username: me                            # your CalDAV user name
  password_env: CALDAV_PASSWORD           # the environment variable holding the password
  # busy_calendars: [Work]                # also keep follow-ups clear of events here

# How often to follow up, and when to change tack. These are the defaults.
cadences:
  # Call every 2 business days; once you reach them, switch to keep_in_touch.
  pursue: {channel: call, every: 2 business days, until: reached, then: keep_in_touch}
  # An e-mail every 4 weeks, with news to share.
  keep_in_touch: {channel: email, every: 4 weeks}
  # A monthly call for two years, for the long game.
  long_haul: {channel: call, every: 1 month, stop_after: 2 years}

# Which cadence each contact gets: the first rule that matches wins.
rules:
  # - {match: {label: "Hiring managers"}, cadence: pursue}
  - {cadence: pursue}                     # no match: applies to everyone else

# After a calendar event whose title contains this, thank each attendee.
interviews:
  match: {title_contains: Interview}
  thank_you_within: 1d

# After this many calls, dial links carry the prefix that hides your number.
caller_id: {hide_after_attempts: 3, prefix: "*67"}   # quote it: * starts a YAML alias

# Things worth telling contacts; keep-in-touch follow-ups suggest one each time.
# news:
#   - {date: 2026-11-02, text: "Passed CFA level II"}
"""


def write_starter(path: Path, force: bool) -> None:
    """Write STARTER_CONFIG to `path`, creating its folder. An existing file is
    kept unless `force`: it may hold hours of the user's edits."""
    write_config(path, STARTER_CONFIG, force)


def refuse_existing(path: Path, force: bool) -> None:
    """Fail early (before asking anything) when `path` exists and not `force`."""
    if path.exists() and not force:
        raise UserError(
            f"{path} already exists; not overwriting it",
            hint="pass --force to replace it, or --config PATH to write another file",
        )


def write_config(path: Path, text: str, force: bool) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # "x" fails if the file exists, with no window between check and write.
        with path.open("w" if force else "x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:
        raise UserError(
            f"{path} already exists; not overwriting it",
            hint="pass --force to replace it with the starter config",
        ) from None
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------
# A config from `syncd init`'s answers (prompts or flags)


@dataclass
class SourceAnswer:
    name: str
    type: str  # file | carddav | google | outlook
    path: Path | None = None
    url: str | None = None
    username: str | None = None
    password_env: str | None = None
    labels: tuple[str, ...] = ()  # google
    categories: tuple[str, ...] = ()  # outlook
    client_id: str | None = None
    tenant: str | None = None


@dataclass
class CalendarAnswer:
    type: str  # caldav | google | graph
    url: str | None = None
    calendar: str = "Follow-ups"
    username: str | None = None
    password_env: str | None = None
    client_id: str | None = None
    tenant: str | None = None


@dataclass
class Answers:
    timezone: str
    days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    start: str = "08:00"
    end: str = "18:30"
    sources: list[SourceAnswer] = field(default_factory=list)
    calendar: CalendarAnswer | None = None


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


_SOURCE_COMMENTS = {
    "file": "a .csv or .vcf export on disk, re-read when it changes",
    "carddav": "a CardDAV address book",
    "google": "Google Contacts: sign in with `syncd auth {name}`",
    "outlook": "Outlook / Microsoft 365 contacts: sign in with `syncd auth {name}`",
}
_CALENDAR_COMMENTS = {
    "caldav": "any CalDAV server (Nextcloud, Fastmail, iCloud, Radicale...)",
    "google": "Google Calendar: sign in with `syncd auth calendar`",
    "graph": "Outlook / Microsoft 365 calendar: sign in with `syncd auth calendar`",
}


def _line(text: str, comment: str = "") -> str:
    """A YAML line with its comment in column 40 (or two spaces after)."""
    return f"{text:<38}  # {comment}" if comment else text


def _source_yaml(s: SourceAnswer) -> list[str]:
    out = [_line(f"  - name: {_q(s.name)}", "used by `syncd auth`, rules and status"),
           _line(f"    type: {s.type}", _SOURCE_COMMENTS[s.type].format(name=s.name))]
    if s.path is not None:
        out.append(f"    path: {_q(str(s.path))}")
    if s.url:
        out.append(f"    url: {_q(s.url)}")
    if s.username:
        out.append(f"    username: {_q(s.username)}")
    if s.password_env:
        out.append(_line(f"    password_env: {s.password_env}", "the variable holding the "
                         "password"))
    if s.labels:
        out.append(_line(f"    labels: [{', '.join(_q(x) for x in s.labels)}]",
                         "only contacts with one of these labels"))
    if s.categories:
        out.append(_line(f"    categories: [{', '.join(_q(x) for x in s.categories)}]",
                         "only contacts in one of these categories"))
    if s.client_id:
        out.append(_line(f"    client_id: {_q(s.client_id)}", "your Azure app registration"))
    if s.tenant:
        out.append(f"    tenant: {_q(s.tenant)}")
    return out


def _calendar_yaml(c: CalendarAnswer) -> list[str]:
    out = [_line(f"  type: {c.type}", _CALENDAR_COMMENTS[c.type])]
    if c.url:
        out.append(_line(f"  url: {_q(c.url)}", "server, account or calendar URL"))
    out.append(_line(f"  calendar: {_q(c.calendar)}", "created when missing"))
    if c.username:
        out.append(f"  username: {_q(c.username)}")
    if c.password_env:
        out.append(_line(f"  password_env: {c.password_env}", "the variable holding the password"))
    if c.client_id:
        out.append(_line(f"  client_id: {_q(c.client_id)}", "your Azure app registration"))
    if c.tenant:
        out.append(f"  tenant: {_q(c.tenant)}")
    out.append(_line("  # busy_calendars: [Work]", "also keep follow-ups clear of events here"))
    return out


def render_config(a: Answers) -> str:
    """The commented config for these answers: the starter's layout and
    comments, with the user's sources, calendar, zone and hours filled in."""
    lines = [
        "# syncd configuration, written by `syncd init`. Check it with",
        "# `syncd config check`, diagnose connections with `syncd doctor`; every key",
        "# is documented in config/example.yaml. Secrets never go in this file: use",
        "# *_env, *_file or *_command keys.",
        "",
        _line(f"timezone: {a.timezone}", "your IANA zone; note times are read in it"),
        _line("poll_interval: 2m", "how often syncd re-reads contacts and your notes"),
        _line("horizon: 14d", "how far ahead follow-ups are written into the calendar"),
        _line("daily_limit: 12", "at most this many follow-ups on one day"),
        "",
        "# Follow-ups are only placed inside these hours (in your time zone).",
        "working_hours:",
        f"  days: [{', '.join(a.days)}]",
        f'  start: "{a.start}"',
        f'  end: "{a.end}"',
        "",
        _line("# holidays: US", "a country code: no follow-ups on its public holidays"),
        "",
        "# Where contacts come from: one or more sources, each with a unique name.",
        "contacts:",
    ]
    for s in a.sources:
        lines += _source_yaml(s)
    lines += ["", "# Where follow-ups are written: one calendar.", "calendar:"]
    if a.calendar is not None:
        lines += _calendar_yaml(a.calendar)
    lines += ["", *STARTER_CONFIG[STARTER_CONFIG.index("# How often to follow up"):]
              .splitlines()]
    return "\n".join(lines) + "\n"
