"""Command line: argument parsing and the one place errors are rendered.

User errors (config, arguments) print one clear message and exit 2; remote
failures exit 1; tracebacks only for bugs, and only with -v.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from syncd import __version__
from syncd.errors import SyncdError, UserError
from syncd.settings import CalendarConfig, SourceConfig

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
    ini = sub.add_parser("init", help="write a commented starter config")
    ini.add_argument("--force", action="store_true", help="overwrite an existing file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from syncd import log

    fmt = args.log_format or ("console" if sys.stderr.isatty() else "json")
    log.setup(fmt, args.verbose)
    handlers: dict[str, Handler] = {
        "run": cmd_run, "sync": cmd_sync, "status": cmd_status, "attempts": cmd_attempts,
        "log": cmd_log, "config": cmd_config, "auth": cmd_auth, "report": cmd_report,
        "init": cmd_init, "agenda": cmd_agenda,
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
    from syncd.starter import write_starter

    path = _config_path(args)
    write_starter(path, force=args.force)
    print(f"wrote {path}\nnext: edit it, then run `syncd config check` and `syncd sync`")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from syncd.cycle import Cycle
    from syncd.store import Store, lock_state_dir
    from syncd.wiring import make_all

    cfg = _load(args)
    lock = lock_state_dir(cfg.state_dir)
    store = Store(cfg.state_dir)
    sources, calendar = make_all(cfg)
    try:
        res = Cycle(cfg, store, sources, calendar, now=_now_fn()).run()
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

    return Daemon(_load(args)).run()


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
    write_report(cfg, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
