"""`syncd doctor`: check the config, every contact source and the calendar,
and say in one line per problem what to do about it.

Checks, in order (a check that cannot run because an earlier one failed is
skipped, not failed twice):

* config      the file exists and validates (else: exit 2, nothing else runs)
* state       the state directory exists or can be created, and is writable
* each source built (secrets resolved), read once in full (reachable, signed
              in, entries that would be skipped), then read again with the
              cursor it returned: a remote source that answers the second read
              with everything again does not keep its sync token
* calendar    built, found (the URL it resolves to; a missing calendar is
              created, as `syncd sync` would), its changes read in full and
              then with the returned cursor (CalDAV: does the server keep its
              RFC 6578 sync token, or fall back to an ETag listing?), and each
              of `busy_calendars` read for the next day

Doctor never writes syncd's state. Exit: 0 all ok (warnings allowed), 1 a
remote check failed, 2 the config (or an argument/secret it names) is wrong.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from syncd.errors import AuthError, ConfigError, SyncdError, UserError
from syncd.settings import CalendarConfig, Config, SourceConfig

OK, WARN, FAIL, BAD_CONFIG = "ok", "warn", "FAIL", "CONFIG"
T = TypeVar("T")


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn | FAIL | CONFIG
    what: str  # "config", "contacts 'cards'", "calendar"
    text: str

    def line(self) -> str:
        return f"{self.level:<6} {self.what}: {self.text}"


Emit = Callable[[Finding], None]


def exit_code(findings: list[Finding]) -> int:
    levels = {f.level for f in findings}
    if BAD_CONFIG in levels:
        return 2
    return 1 if FAIL in levels else 0


def run(path: Path, emit: Emit, now: datetime | None = None) -> int:
    """Run every check, emitting each finding as soon as it is known (remote
    checks can take a while); return the exit code."""
    found: list[Finding] = []

    def say(level: str, what: str, text: str) -> None:
        f = Finding(level, what, text)
        found.append(f)
        emit(f)

    cfg = _check_config(path, say)
    if cfg is None:
        return exit_code(found)
    _check_state(cfg, say)
    for src in cfg.contacts:
        _check_source(cfg, src, say)
    if cfg.calendar is not None:
        _check_calendar(cfg, cfg.calendar, say,
                        now or datetime.now(ZoneInfo(cfg.timezone)))
    return exit_code(found)


Say = Callable[[str, str, str], None]


def _problem(e: SyncdError) -> str:
    """The error and what to do about it, on one line."""
    return f"{e.message} → {e.hint}" if e.hint else e.message


def _check_config(path: Path, say: Say) -> Config | None:
    from syncd.config import load

    if not path.exists():
        say(BAD_CONFIG, "config", f"no config file at {path} → create one with `syncd init` "
            "(or pass --config PATH)")
        return None
    try:
        cfg = load(path)
    except ConfigError as e:
        for p in e.problems:
            say(BAD_CONFIG, "config", p)
        return None
    except UserError as e:
        say(BAD_CONFIG, "config", _problem(e))
        return None
    cal = cfg.calendar.type if cfg.calendar else "none"
    say(OK, "config", f"{cfg.path} is valid ({len(cfg.contacts)} contact source(s), "
        f"calendar {cal}, zone {cfg.timezone})")
    if cfg.calendar is None:
        say(BAD_CONFIG, "config", f"{cfg.path}: no `calendar:` section → add one "
            "(see config/example.yaml)")
    return cfg


def _check_state(cfg: Config, say: Say) -> None:
    d = cfg.state_dir
    probe = d
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        say(FAIL, "state", f"{d}: {probe} is not a directory → set state_dir to a folder")
    elif not os.access(probe, os.W_OK | os.X_OK):
        say(FAIL, "state", f"{d} is not writable (by this user) → fix its permissions or "
            "set state_dir")
    elif probe == d:
        db = d / "state.db"
        say(OK, "state", f"{d}" + (" (database present)" if db.exists()
                                   else " (no database yet: `syncd sync` creates it)"))
    else:
        say(OK, "state", f"{d} will be created on the first `syncd sync`")


def _where(kind: str, url: str | None, path: Path | None) -> str:
    if path is not None:
        return f"{kind} {path}"
    return f"{kind} at {url}" if url else kind


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


def _classify(e: BaseException) -> tuple[str, str]:
    if isinstance(e, AuthError):
        return FAIL, _problem(e)
    if isinstance(e, UserError):
        return BAD_CONFIG, _problem(e)
    if isinstance(e, SyncdError):
        return FAIL, _problem(e)
    if isinstance(e, ImportError):
        return FAIL, (f"this connector is not available in this install ({e.name or e}) → "
                      "reinstall syncd with its dependencies")
    return FAIL, f"unexpected {type(e).__name__}: {e}"


def _check_source(cfg: Config, src: SourceConfig, say: Say) -> None:
    from syncd.wiring import make_source

    what = f"contacts '{src.name}'"
    where = _where(src.type, src.url, src.path)
    try:
        source = make_source(src, cfg.state_dir)
    except (SyncdError, ImportError) as e:
        level, text = _classify(e)
        say(level, what, f"({where}) {text}")
        return
    try:
        try:
            batch, secs = _timed(lambda: source.read(None))
        except AuthError as e:
            hint = e.hint or (f"run `syncd auth {src.name}`" if src.type in ("google", "outlook")
                              else "check username and the password source")
            say(FAIL, what, f"({where}) signed out or credentials rejected: {e.message} → {hint}")
            return
        except (SyncdError, ImportError) as e:
            level, text = _classify(e)
            say(level, what, f"({where}) {text}")
            return
        skipped = f"; {len(batch.problems)} entries would be skipped (see `syncd status`)" \
            if batch.problems else ""
        how = "readable" if src.type == "file" else "reachable"
        say(OK, what, f"({where}) {how}, {len(batch.contacts)} contact(s) read "
            f"in {secs:.2f}s{skipped}")
        if src.type == "file":
            return  # a file has no sync token: its content hash is the cursor
        try:
            again = source.read(batch.cursor)
        except SyncdError as e:
            say(FAIL, what, f"({where}) the incremental read failed: {_problem(e)}")
            return
        if again.full:
            say(WARN, what, f"({where}) the server did not keep the sync token: every cycle "
                "re-reads the whole address book (works, but slow when it is large)")
        else:
            say(OK, what, f"({where}) incremental sync works")
    finally:
        source.close()


def _check_calendar(cfg: Config, cal_cfg: CalendarConfig, say: Say, now: datetime) -> None:
    from syncd.wiring import make_calendar

    where = _where(cal_cfg.type, cal_cfg.url, None)
    what = "calendar"
    try:
        cal = make_calendar(cal_cfg, cfg.state_dir)
    except (SyncdError, ImportError) as e:
        level, text = _classify(e)
        say(level, what, f"({where}) {text}")
        return
    try:
        try:
            url = cal.url()
        except AuthError as e:
            hint = e.hint or ("run `syncd auth calendar`" if cal_cfg.type != "caldav"
                              else "check calendar.username and the password source")
            say(FAIL, what, f"({where}) signed out or credentials rejected: {e.message} → "
                f"{hint}")
            return
        except (SyncdError, ImportError) as e:
            level, text = _classify(e)
            say(level, what, f"({where}) cannot reach the calendar: {text}")
            return
        say(OK, what, f"'{cal_cfg.calendar}' found at {url}")
        try:
            first, secs = _timed(lambda: cal.changes(None))
            again = cal.changes(first.cursor)
        except SyncdError as e:
            level, text = _classify(e)
            say(level, what, f"({where}) reading events failed: {text}")
            return
        say(OK, what, f"{len(first.events)} event(s) read in {secs:.2f}s")
        if again.full:
            say(WARN, what, "the server fell back to a full read with its own sync token: "
                f"every cycle re-reads all {len(first.events)} events (works, but slow on a "
                "big calendar; a server with RFC 6578 sync-collection avoids it)")
        elif cal_cfg.type == "caldav" and _etag_listing(first.cursor):
            say(WARN, what, "the server has no sync-collection (RFC 6578): syncd lists every "
                "event's ETag each cycle instead (works; one request per cycle)")
        else:
            say(OK, what, "sync token works (incremental reads)")
        if cal_cfg.busy_calendars:
            names = ", ".join(f"'{n}'" for n in cal_cfg.busy_calendars)
            try:
                cal.busy(now, now + timedelta(days=1))
            except SyncdError as e:
                level, text = _classify(e)
                say(level, what, f"busy calendars ({names}): {text}")
            else:
                say(OK, what, f"busy calendars readable: {names}")
    finally:
        cal.close()


def _etag_listing(cursor: str | None) -> bool:
    """CalDAV cursors are JSON with the sync token under "s", or an ETag
    listing under "e" when the server lacks sync-collection."""
    try:
        data = json.loads(cursor or "")
    except ValueError:
        return False
    return isinstance(data, dict) and "e" in data and not data.get("s")

