"""Command line: argument parsing and the one place errors are rendered.

User errors (config, arguments) print one clear message and exit 2; remote
failures exit 1; tracebacks only for bugs, and only with -v.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from syncd import __version__
from syncd.errors import SyncdError, UserError
from syncd.settings import CalendarConfig, SourceConfig

if TYPE_CHECKING:
    from syncd.starter import Answers

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syncd",
        description="Follow-up daemon: contacts in, next follow-ups out to your calendar, "
        "attempts read back from the event notes.",
    )
    p.add_argument("--version", action="version", version=f"syncd {__version__}")
    p.add_argument("--config", type=Path, help="config file (default: $SYNCD_CONFIG, else "
                   "$XDG_CONFIG_HOME/syncd/config.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--log-format", choices=["json", "console"], default=None,
                   help="log format (default: console on a terminal, json otherwise)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("run", help="the daemon: sync every poll_interval until stopped")
    sub.add_parser("sync", help="exactly one full cycle, then exit")
    st = sub.add_parser("status", help="tracked contacts and sources")
    st.add_argument("--json", action="store_true")
    ag = sub.add_parser("agenda", help="the follow-ups of the coming days")
    ag.add_argument("--json", action="store_true")
    ag.add_argument("--url", action="store_true", help="print the calendar's URL and exit")
    at = sub.add_parser("attempts", help="the attempt log")
    at.add_argument("--json", action="store_true")
    at.add_argument("--contact", help="only contacts whose name or id contains TEXT")
    lg = sub.add_parser("log", help="log an attempt from the shell")
    lg.add_argument("contact", metavar="CONTACT", help="name (or part of it) or contact id")
    lg.add_argument("outcome", metavar="OUTCOME",
                    help="no_answer, voicemail, gatekeeper, reached, sent, replied, wrong_number")
    lg.add_argument("--at", dest="at_time", metavar="TIME",
                    help="when: HH:MM today, or YYYY-MM-DD HH:MM (your zone); default now")
    lg.add_argument("--note", default="", metavar="TEXT")
    lg.add_argument("--channel", choices=["call", "email", "message", "meeting"])
    cfg = sub.add_parser("config", help="config file tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION")
    cfg_sub.required = True
    cfg_sub.add_parser("check", help="validate the config file")
    au = sub.add_parser("auth", help="sign in for a contact source, or `calendar`")
    au.add_argument("name", metavar="NAME")
    au.add_argument("--no-browser", action="store_true")
    rp = sub.add_parser("report", help="write the HTML report")
    rp.add_argument("--out", type=Path, default=Path("syncd-report.html"))
    ini = sub.add_parser("init", help="set up a config: interactive on a terminal, or from "
                         "flags; with neither, a commented starter config")
    ini.add_argument("--force", action="store_true", help="overwrite an existing file")
    _init_flags(ini)
    sub.add_parser("doctor", help="check the config, each source and the calendar")
    return p


def _init_flags(ini: argparse.ArgumentParser) -> None:
    ini.add_argument("--interactive", action="store_true",
                     help="ask questions even when stdin is not a terminal")
    ini.add_argument("--no-verify", action="store_true",
                     help="write without checking the connections")
    ini.add_argument("--timezone", metavar="ZONE", help="your IANA zone (default: the system's)")
    ini.add_argument("--days", metavar="DAYS", help="working days, e.g. mon-fri (default)")
    ini.add_argument("--hours", metavar="START-END", help="working hours, e.g. 08:00-18:30")
    ini.add_argument("--contacts-file", metavar="PATH", action="append", type=Path,
                     default=[], help="a .vcf or .csv export (repeatable)")
    ini.add_argument("--carddav-url", metavar="URL", help="a CardDAV address book or account")
    ini.add_argument("--carddav-username", metavar="USER")
    ini.add_argument("--carddav-password-env", metavar="VAR",
                     help="environment variable holding the CardDAV password")
    ini.add_argument("--google-contacts", action="store_true", help="add Google Contacts")
    ini.add_argument("--outlook-contacts", action="store_true",
                     help="add Outlook / Microsoft 365 contacts")
    ini.add_argument("--calendar-type", choices=["caldav", "google", "graph"],
                     help="default: caldav")
    ini.add_argument("--calendar-url", metavar="URL", help="CalDAV server, account or calendar")
    ini.add_argument("--calendar-name", metavar="NAME", default="Follow-ups",
                     help="calendar to write to, created when missing (default: Follow-ups)")
    ini.add_argument("--username", metavar="USER", help="CalDAV user name")
    ini.add_argument("--password-env", metavar="VAR",
                     help="environment variable holding the CalDAV password")
    ini.add_argument("--client-id", metavar="ID",
                     help="Azure app (client) ID for --outlook-contacts / --calendar-type graph")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from syncd import log

    fmt = args.log_format or ("console" if sys.stderr.isatty() else "json")
    log.setup(fmt, args.verbose)
    handlers: dict[str, Handler] = {
        "run": cmd_run, "sync": cmd_sync, "status": cmd_status, "attempts": cmd_attempts,
        "log": cmd_log, "config": cmd_config, "auth": cmd_auth, "report": cmd_report,
        "init": cmd_init, "agenda": cmd_agenda, "doctor": cmd_doctor,
    }
    try:
        return handlers[args.command](args)
    except SyncdError as e:
        print(f"syncd: {e.render()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def _config_path(args: argparse.Namespace) -> Path:
    from syncd.config import default_path

    path: Path = args.config or default_path()
    return path


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from syncd.config import load

    path = _config_path(args)
    if not path.exists():
        raise UserError(f"{path}: no config file", hint=f"create one with: syncd init "
                        f"(or pass --config){' --config ' + str(path) if args.config else ''}")
    return load(path)


def cmd_config(args: argparse.Namespace) -> int:
    cfg = _load(args)
    print(f"{cfg.path}: ok ({len(cfg.contacts)} contact source(s), calendar "
          f"{cfg.calendar.type if cfg.calendar else 'none'}, {len(cfg.cadences)} cadences)")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from syncd.starter import refuse_existing, write_starter
    from syncd.wizard import from_flags, interactive

    path = _config_path(args)
    refuse_existing(path, args.force)
    answers = _init_answers(args)
    given = bool(answers.sources or args.calendar_url or args.calendar_type)
    if args.interactive or (not given and sys.stdin.isatty() and sys.stdout.isatty()):
        steps = interactive(path, answers, verify=not args.no_verify, force=args.force)
    elif given:
        from rich.console import Console

        steps = from_flags(answers, path, not args.no_verify,
                           Console(highlight=False, soft_wrap=True), args.force)
    else:
        write_starter(path, force=args.force)
        print(f"wrote {path}\nnext: edit it, then run `syncd config check` and `syncd sync`")
        return 0
    print(f"wrote {path}\nnext: " + "; then ".join(f"`{s}`" for s in steps))
    return 0


def _init_answers(args: argparse.Namespace) -> Answers:
    """`syncd init`'s flags as answers (the defaults of the interactive path)."""
    from syncd.config import system_timezone
    from syncd.starter import Answers, CalendarAnswer, SourceAnswer
    from syncd.wizard import parse_days, parse_env_name, parse_hours, parse_zone, source_name

    a = Answers(timezone=parse_zone(args.timezone) if args.timezone else system_timezone())
    if args.days:
        a.days = parse_days(args.days)
    if args.hours:
        a.start, a.end = parse_hours(args.hours)
    taken: list[str] = []

    def add(s: SourceAnswer) -> None:
        taken.append(s.name)
        a.sources.append(s)

    for f in args.contacts_file:
        p = f.expanduser().resolve()
        add(SourceAnswer(name=source_name(p.stem, taken), type="file", path=p))
    if args.carddav_url:
        add(SourceAnswer(name=source_name("cards", taken), type="carddav", url=args.carddav_url,
                         username=args.carddav_username,
                         password_env=parse_env_name(args.carddav_password_env)
                         if args.carddav_password_env else None))
    if args.google_contacts:
        add(SourceAnswer(name=source_name("google", taken), type="google"))
    if args.outlook_contacts:
        add(SourceAnswer(name=source_name("outlook", taken), type="outlook",
                         client_id=args.client_id))
    kind = args.calendar_type or ("caldav" if args.calendar_url else None)
    if kind == "caldav" and not args.calendar_url and not args.interactive:
        raise UserError("--calendar-type caldav needs --calendar-url URL")
    if kind:
        a.calendar = CalendarAnswer(
            type=kind, url=args.calendar_url if kind == "caldav" else None,
            calendar=args.calendar_name, username=args.username,
            password_env=parse_env_name(args.password_env) if args.password_env else None,
            client_id=args.client_id if kind == "graph" else None)
    return a


def cmd_doctor(args: argparse.Namespace) -> int:
    from syncd.doctor import Finding, run

    def emit(f: Finding) -> None:
        print(f.line(), flush=True)

    now_fn = _now_fn()
    return run(_config_path(args), emit, now_fn() if now_fn else None)


def cmd_sync(args: argparse.Namespace) -> int:
    import structlog

    from syncd.cycle import Cycle
    from syncd.daemon import StopRequested, SyncStopper
    from syncd.store import Store, lock_state_dir
    from syncd.wiring import make_all

    cfg = _load(args)
    lock = lock_state_dir(cfg.state_dir)
    store = Store(cfg.state_dir)
    sources, calendar = make_all(cfg)
    from syncd.progress import for_stream

    stopper = SyncStopper()
    try:
        with stopper, for_stream(sys.stderr) as progress:
            res = Cycle(cfg, store, sources, calendar, now=_now_fn(),
                        step_hook=stopper, progress=progress).run()
    except StopRequested:
        # SIGTERM/SIGINT: the write in flight was finished and committed;
        # the next sync (or `run`) does the rest.
        took = round(time.monotonic() - (stopper.signalled_at or time.monotonic()), 3)
        structlog.get_logger("syncd").info("stopped", signal=stopper.stopping,
                                           at="step boundary", stop_took=took)
        return 0
    finally:
        for s in sources:
            s.close()
        calendar.close()
        store.close()
        lock.release()
    if res.calendar_error:
        print(f"syncd: calendar: {res.calendar_error}", file=sys.stderr)
    for name in res.failed_sources:
        print(f"syncd: source {name} failed (see `syncd status`)", file=sys.stderr)
    return 0 if res.ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    from syncd.daemon import Daemon

    return Daemon(_load(args), now=_now_fn()).run()


def _now_fn() -> Callable[[], datetime] | None:
    """SYNCD_NOW pins the clock (tests and demos); unset in production."""
    pinned = os.environ.get("SYNCD_NOW")
    if not pinned:
        return None
    at = datetime.fromisoformat(pinned)
    return lambda: at


def cmd_status(args: argparse.Namespace) -> int:
    from syncd.status import collect, render_text

    cfg = _load(args)
    data = collect(cfg, _now_fn())
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif sys.stdout.isatty():
        from syncd.status_table import print_status

        tz = ZoneInfo(cfg.timezone)
        now_fn = _now_fn()
        print_status(data, now_fn() if now_fn else datetime.now(tz), tz)
    else:
        print(render_text(data))
    return 0


def cmd_agenda(args: argparse.Namespace) -> int:
    from syncd.status import agenda, render_agenda

    cfg = _load(args)
    if args.url:
        from syncd.wiring import make_calendar

        if cfg.calendar is None:
            raise UserError(f"{cfg.path}: no `calendar:` configured")
        cal = make_calendar(cfg.calendar, cfg.state_dir)
        try:
            print(cal.url())
        finally:
            cal.close()
        return 0
    rows = agenda(cfg)
    print(json.dumps(rows, indent=2, ensure_ascii=False) if args.json else render_agenda(rows))
    return 0


def cmd_attempts(args: argparse.Namespace) -> int:
    from syncd.status import attempts, render_attempts

    cfg = _load(args)
    rows = attempts(cfg, args.contact)
    print(json.dumps(rows, indent=2, ensure_ascii=False) if args.json else render_attempts(rows))
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from syncd.status import log_attempt

    cfg = _load(args)
    tz = ZoneInfo(cfg.timezone)
    now_fn = _now_fn()
    now = (now_fn() if now_fn else datetime.now(tz)).astimezone(tz)
    row = log_attempt(cfg, args.contact, args.outcome, args.at_time, args.note, args.channel, now)
    print(f"logged {row['outcome']} for {row['contact']} at {row['at']}")
    return 0


def cmd_auth(args: argparse.Namespace) -> int:
    from syncd.store import ensure_state_dir
    from syncd.wiring import sign_in

    cfg = _load(args)
    target: SourceConfig | CalendarConfig | None
    if args.name == "calendar":
        target = cfg.calendar
    else:
        target = next((s for s in cfg.contacts if s.name == args.name), None)
    if target is None:
        names = ", ".join(["calendar", *(s.name for s in cfg.contacts)])
        raise UserError(f"{cfg.path}: no contact source named {args.name!r}",
                        hint=f"known names: {names}")
    ensure_state_dir(cfg.state_dir)
    print(sign_in(target.type, target, cfg.state_dir, args.no_browser))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from syncd.report import write_report

    cfg = _load(args)
    write_report(cfg, args.out, _now_fn())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
