"""`syncd status` on a terminal: rich tables built from `status.collect()`.

What needs doing comes first: overdue follow-ups, then those due today, then
the rest by time. Unparsed note lines get their own table (they are lines
syncd refused to guess), and every source shows its last sync and last error.
User data is always passed to rich as `Text`, never as markup, so a name like
`[bold]x[/]` prints as typed.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from syncd.timeutil import parse_iso


def urgency(c: dict[str, Any], today: date, tz: ZoneInfo) -> int:
    """0 overdue, 1 due today, 2 later, 3 nothing planned."""
    nxt = c.get("next_followup")
    if c.get("overdue"):
        return 0
    if not nxt:
        return 3
    return 1 if parse_iso(nxt["start"]).astimezone(tz).date() == today else 2


def ordered(contacts: list[dict[str, Any]], today: date,
            tz: ZoneInfo) -> list[dict[str, Any]]:
    return sorted(contacts, key=lambda c: (
        urgency(c, today, tz), (c.get("next_followup") or {}).get("start") or "",
        str(c["name"]).casefold()))


def _when(iso_text: str | None, tz: ZoneInfo, today: date) -> str:
    if not iso_text:
        return "-"
    at = parse_iso(iso_text).astimezone(tz)
    if at.date() == today:
        return f"today {at:%H:%M}"
    fmt = "%a %b %d %H:%M" if at.year == today.year else "%Y-%m-%d %H:%M"
    return at.strftime(fmt)


def build(data: dict[str, Any], now: datetime, tz: ZoneInfo) -> RenderableType:
    today = now.astimezone(tz).date()
    contacts = ordered(list(data["contacts"]), today, tz)
    overdue = sum(1 for c in contacts if urgency(c, today, tz) == 0)
    due_today = sum(1 for c in contacts if urgency(c, today, tz) == 1)
    head = Text.assemble(
        (f"{len(contacts)} contacts", "bold"), " · ",
        (f"{overdue} overdue", "bold red" if overdue else "dim"), " · ",
        (f"{due_today} due today", "bold yellow" if due_today else "dim"), " · ",
        (f"{now.astimezone(tz):%a %b %d %H:%M} {tz.key}", "dim"))

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    t.add_column("", no_wrap=True)
    t.add_column("contact", overflow="fold", max_width=30)
    t.add_column("next follow-up", no_wrap=True)
    t.add_column("state", no_wrap=True)
    t.add_column("cadence", overflow="fold")
    t.add_column("tries", justify="right")
    t.add_column("last attempt", no_wrap=True)
    t.add_column("best slot (their time)", overflow="fold")
    for c in contacts:
        due = urgency(c, today, tz)
        flag = {0: Text("OVERDUE", "bold red"),
                1: Text("TODAY", "bold yellow")}.get(due, Text(""))
        nxt = c.get("next_followup")
        when = Text(f"{_when(nxt['start'], tz, today)} {nxt['channel']}" if nxt else "-",
                    "red" if due == 0 else "yellow" if due == 1 else "")
        if nxt and not nxt.get("event_uid"):
            when.append(" (not written yet)", "dim")
        last = c.get("last_attempt")
        last_t = (Text(f"{_when(last['at'], tz, today)} {last['outcome'].replace('_', ' ')}")
                  if last else Text("-", "dim"))
        b = c.get("best_slot")
        best = Text("-", "dim")
        if b:
            tried = (f"{b['reached']}/{b['attempts']} reached" if b["attempts"]
                     else "not tried yet")
            best = Text(f"{b['slot']} {b['from']}–{b['to']} ") + Text(
                f"({tried}; {round(100 * b['probability'])}% likely)", "dim")
        state = Text(str(c["state"]), "green" if c["state"] == "reached" else
                     "dim" if c["state"] in ("paused", "stopped") else "")
        name = Text(str(c["name"]))
        if c.get("removed"):
            name.append(" (removed)", "dim")
        t.add_row(flag, name, when, state, Text(str(c["cadence"])), str(c["attempts"]),
                  last_t, best)
    parts: list[RenderableType] = [head, t]

    unparsed = [(c, line) for c in contacts for line in c.get("unparsed") or []]
    if unparsed:
        parts.append(Text.assemble(("\nUnparsed note lines", "bold"),
                                   (" (not counted: rewrite them to log an attempt)", "dim")))
        u = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        u.add_column("contact", overflow="fold", max_width=30)
        u.add_column("line", overflow="fold")
        for c, line in unparsed:
            u.add_row(Text(str(c["name"])), Text(str(line)))
        parts.append(u)

    parts.append(Text("\nSources", "bold"))
    s = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    s.add_column("name", no_wrap=True)
    s.add_column("kind", no_wrap=True)
    s.add_column("last sync", no_wrap=True)
    s.add_column("problem", overflow="fold")
    for src in data["sources"]:
        err = src.get("last_error")
        skipped = src.get("skipped") or []
        problem = Text(str(err), "red") if err else Text("ok", "green")
        if src.get("next_try"):
            problem.append(f"  (next try {_when(src['next_try'], tz, today)})", "yellow")
        if skipped:
            problem.append(f"  ({len(skipped)} entries skipped: "
                           + "; ".join(f"{p['where']}: {p['problem']}" for p in skipped[:3])
                           + (" …" if len(skipped) > 3 else "") + ")", "yellow")
        s.add_row(Text(str(src["name"])), Text(str(src["kind"])),
                  Text(_when(src.get("last_sync"), tz, today) if src.get("last_sync")
                       else "never", "" if src.get("last_sync") else "yellow"), problem)
    cal = data.get("calendar") or {}
    if cal.get("type"):
        cerr = cal.get("last_error")
        cproblem = Text(str(cerr), "red") if cerr else Text("ok", "green")
        if cal.get("next_try"):
            cproblem.append(f"  (next try {_when(cal['next_try'], tz, today)})", "yellow")
        s.add_row(Text("calendar"), Text(str(cal["type"])), Text("-", "dim"), cproblem)
    parts.append(s)
    return Group(*parts)


def print_status(data: dict[str, Any], now: datetime, tz: ZoneInfo,
                 console: Console | None = None) -> None:
    (console or Console()).print(build(data, now, tz))
