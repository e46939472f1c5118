"""`syncd report`: one self-contained HTML file (no network), effort first.

A first version: attempts per week by channel, streak of working days with
effort, and per-contact best slot. Issue 9 grows the charts.
"""

from __future__ import annotations

import html
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from syncd.settings import Config
from syncd.status import attempts, collect
from syncd.timeutil import parse_iso


def write_report(cfg: Config, out: Path) -> None:
    rows = attempts(cfg, None)
    status = collect(cfg)
    tz = ZoneInfo(cfg.timezone)
    weeks: Counter[tuple[date, str]] = Counter()
    days: set[date] = set()
    for r in rows:
        d = parse_iso(r["at"]).astimezone(tz).date()
        days.add(d)
        weeks[(d - timedelta(days=d.weekday()), r["channel"])] += 1
    streak = 0
    if days:
        d = max(days)
        while d in days or d.weekday() >= 5:
            streak += d in days
            d -= timedelta(days=1)
    week_rows = "".join(
        f"<tr><td>{w:%Y-%m-%d}</td><td>{html.escape(ch)}</td><td>{n}</td>"
        f"<td><svg width='{8 * n}' height='10'><rect width='{8 * n}' height='10' "
        f"fill='#3b82f6'/></svg></td></tr>" for (w, ch), n in sorted(weeks.items()))
    contact_rows = "".join(
        f"<tr><td>{html.escape(c['name'])}</td><td>{c['attempts']}</td>"
        f"<td>{html.escape(c['state'])}</td>"
        f"<td>{html.escape(c['best_slot']['slot']) if c['best_slot'] else '-'}</td>"
        f"<td>{html.escape((c['next_followup'] or {}).get('start') or '-')}</td></tr>"
        for c in status["contacts"])
    out.write_text(
        "<!doctype html><meta charset='utf-8'><title>syncd report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px}</style>"
        f"<h1>Your effort</h1><p>{len(rows)} attempts logged; streak: {streak} working "
        f"day(s) with effort.</p><h2>Attempts per week</h2><table><tr><th>week</th>"
        f"<th>channel</th><th>attempts</th><th></th></tr>{week_rows}</table>"
        "<h2>Contacts</h2><table><tr><th>name</th><th>attempts</th><th>state</th>"
        f"<th>best slot</th><th>next</th></tr>{contact_rows}</table>",
        encoding="utf-8",
    )
