"""The commented starter config that `syncd init` writes.

It is a working config (a CSV/vCard export in, a CalDAV calendar out) so the
first `syncd config check` passes once the password variable is set; every
line says what it does, and config/example.yaml documents the rest.
"""

from __future__ import annotations

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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # "x" fails if the file exists, with no window between check and write.
        with path.open("w" if force else "x", encoding="utf-8") as out:
            out.write(STARTER_CONFIG)
    except FileExistsError:
        raise UserError(
            f"{path} already exists; not overwriting it",
            hint="pass --force to replace it with the starter config",
        ) from None
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
