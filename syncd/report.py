"""`syncd report`: one self-contained HTML file of your effort, then what the
experiments learned.

The article's advice is the layout: "treat the search as a job ... keep your
eyes off the scoreboard". So the page opens with effort (attempts per week by
channel, the streak of working days with at least one attempt, a strip of the
days with effort) and only then shows outcomes (reach rate by weekday and hour
in each contact's own time, the best slot per contact with its evidence, and
a timeline per contact).

The file opens offline: inline CSS and SVG, no script, no fonts or images to
fetch. Every piece of user data (names, notes, source names) is HTML-escaped.
Chart elements carry `data-*` attributes (week, channel, count; weekday,
hour, calls, reached) so the numbers can be checked without reading pixels.
"""

from __future__ import annotations

import html
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from syncd.errors import UserError
from syncd.learning import FAILURE, SUCCESS
from syncd.model import Channel, Outcome
from syncd.planner import holiday_dates
from syncd.settings import Config
from syncd.status import attempts, collect
from syncd.timeutil import parse_iso

# Colours are part of the test contract (tests/test_report.py finds the charts
# in a screenshot by them): each is used by exactly one kind of chart element.
CHANNEL_COLORS = {"call": "#2563eb", "email": "#f59e0b", "message": "#db2777",
                  "meeting": "#475569"}
HEAT_LOW = (0xCC, 0xFB, 0xF1)  # reach rate 0
HEAT_HIGH = (0x0F, 0x76, 0x6E)  # reach rate 1
HEAT_EMPTY = "#f3f4f6"  # no calls in that hour
EFFORT_DAY = "#4338ca"  # a working day with at least one attempt
IDLE_DAY = "#e5e7eb"
OUTCOME_COLORS = {"reached": "#16a34a", "replied": "#15803d", "no_answer": "#9ca3af",
                  "voicemail": "#a78bfa", "gatekeeper": "#eab308", "sent": "#0ea5e9",
                  "wrong_number": "#dc2626"}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MAX_WEEKS = 26  # bars shown; older weeks are summed in the text
STRIP_WEEKS = 12  # weeks in the days-with-effort strip


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def heat_color(rate: float) -> str:
    """Linear from HEAT_LOW (0) to HEAT_HIGH (1)."""
    rate = min(max(rate, 0.0), 1.0)
    r, g, b = (round(lo + (hi - lo) * rate) for lo, hi in zip(HEAT_LOW, HEAT_HIGH, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass(frozen=True)
class Attempt:
    contact_id: str
    contact: str
    at: datetime  # in the user's zone
    local: datetime  # in the contact's zone
    channel: str
    outcome: str
    note: str
    time_inferred: bool


@dataclass(frozen=True)
class ReportData:
    now: datetime  # user's zone
    timezone: str
    attempts: tuple[Attempt, ...]
    contacts: tuple[dict[str, Any], ...]  # `status --json` contacts
    is_workday: Callable[[date], bool]
    workdays: frozenset[int]  # Monday = 0


# --------------------------------------------------------------------------
# Entry points


def write_report(cfg: Config, out: Path,
                 now_fn: Callable[[], datetime] | None = None) -> None:
    """Render the report and write it to `out` atomically (a reader never
    sees half a file)."""
    text = render(gather(cfg, now_fn))
    target = out.expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".syncd-report-", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as e:
        raise UserError(f"cannot write {target}: {e.strerror or e}") from None


def gather(cfg: Config, now_fn: Callable[[], datetime] | None = None) -> ReportData:
    tz = ZoneInfo(cfg.timezone)
    now = (now_fn() if now_fn else datetime.now(tz)).astimezone(tz)
    status = collect(cfg, now_fn)
    zones = {c["id"]: c["timezone"] for c in status["contacts"]}
    rows = []
    for r in attempts(cfg, None):
        at = parse_iso(r["at"]).astimezone(tz)
        ctz = ZoneInfo(zones.get(r["contact_id"]) or cfg.timezone)
        rows.append(Attempt(r["contact_id"], r["contact"], at, at.astimezone(ctz),
                            r["channel"], r["outcome"], r["note"] or "",
                            bool(r["time_inferred"])))
    rows.sort(key=lambda a: (a.at, a.contact_id))
    first = min((a.at.year for a in rows), default=now.year)
    hol = holiday_dates(cfg.holidays, first, now.year)
    days = cfg.working_hours.days

    def is_workday(d: date) -> bool:
        return d.weekday() in days and d not in hol

    return ReportData(now, cfg.timezone, tuple(rows), tuple(status["contacts"]), is_workday,
                      days)


# --------------------------------------------------------------------------
# Numbers


def streaks(effort: set[date], today: date,
            is_workday: Callable[[date], bool]) -> tuple[int, int]:
    """(current, longest) runs of working days with at least one attempt.
    Days off neither count nor break a run; today without an attempt yet does
    not break the current one (the day is not over)."""
    if not effort:
        return 0, 0
    start = min(effort)
    current, d = 0, today
    while d >= start:
        if is_workday(d):
            if d in effort:
                current += 1
            elif d != today:
                break
        d -= timedelta(days=1)
    longest = run = 0
    d = start
    while d <= today:
        if is_workday(d):
            run = run + 1 if d in effort else 0
            longest = max(longest, run)
        d += timedelta(days=1)
    return current, max(longest, current)


def week_of(d: date) -> date:
    return d - timedelta(days=d.weekday())


def weekly(data: ReportData) -> list[tuple[date, Counter[str]]]:
    """Attempts per week (Monday first, user's zone) by channel, from the
    first attempt's week to this week, empty weeks included."""
    per: dict[date, Counter[str]] = defaultdict(Counter)
    for a in data.attempts:
        per[week_of(a.at.date())][a.channel] += 1
    if not per:
        return []
    w, last = min(per), week_of(data.now.date())
    out = []
    while w <= max(last, max(per)):
        out.append((w, per.get(w, Counter())))
        w += timedelta(days=7)
    return out


@dataclass(frozen=True)
class Cell:
    weekday: int
    hour: int
    calls: int
    reached: int


def heat_cells(data: ReportData) -> dict[tuple[int, int], Cell]:
    """Calls with a reach outcome (reached/replied vs no answer, voicemail,
    gatekeeper: the same split the time-of-day learning uses), per weekday and
    hour in the contact's own zone."""
    calls: Counter[tuple[int, int]] = Counter()
    won: Counter[tuple[int, int]] = Counter()
    for a in data.attempts:
        if a.channel != Channel.CALL.value:
            continue
        o = Outcome(a.outcome)
        if o not in SUCCESS and o not in FAILURE:
            continue
        k = (a.local.weekday(), a.local.hour)
        calls[k] += 1
        won[k] += o in SUCCESS
    return {k: Cell(k[0], k[1], n, won[k]) for k, n in calls.items()}


# --------------------------------------------------------------------------
# HTML


CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 margin:0;padding:24px 32px;color:#111827;background:#fff;max-width:1100px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px;
 border-bottom:1px solid #e5e7eb;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.sub{color:#6b7280;margin:0 0 8px}.muted{color:#6b7280}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:8px 0}
.card{border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:26px}
.legend{display:flex;gap:14px;font-size:13px;margin:4px 0}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
table{border-collapse:collapse;font-size:14px}td,th{padding:4px 10px;text-align:left;
 border-bottom:1px solid #f3f4f6;vertical-align:top}th{color:#374151}
.contact{border:1px solid #e5e7eb;border-radius:8px;padding:8px 14px;margin:10px 0}
.contact h3{margin:4px 0}.contact ol{margin:4px 0;padding-left:22px;font-size:13px}
svg text{font-family:inherit}
"""


def render(data: ReportData) -> str:
    effort = _effort_section(data)
    outcomes = _outcomes_section(data)
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>syncd report {esc(f'{data.now:%Y-%m-%d}')}</title><style>{CSS}</style>"
        "</head><body>"
        "<h1>Your follow-up effort</h1>"
        f"<p class='sub'>As of {esc(f'{data.now:%a %b %d %Y, %H:%M}')} ({esc(data.timezone)}). "
        "Treat the search as a job: effort comes first; what the calls taught you "
        "comes after.</p>"
        f"{effort}{outcomes}</body></html>\n"
    )


def _effort_section(data: ReportData) -> str:
    today = data.now.date()
    days = {a.at.date() for a in data.attempts}
    current, longest = streaks(days, today, data.is_workday)
    this_week = sum(1 for a in data.attempts if week_of(a.at.date()) == week_of(today))
    people = len({a.contact_id for a in data.attempts})
    cards = (
        f"<div class='card'><b id='streak' data-streak='{current}'>{current}</b>"
        "working day(s) in a row with at least one attempt</div>"
        f"<div class='card'><b id='longest-streak' data-longest='{longest}'>{longest}</b>"
        "longest run of working days</div>"
        f"<div class='card'><b id='this-week' data-count='{this_week}'>{this_week}</b>"
        "attempts this week</div>"
        f"<div class='card'><b id='total' data-count='{len(data.attempts)}'>"
        f"{len(data.attempts)}</b>attempts to {people} people in all</div>"
    )
    return (
        "<section id='effort'><h2>Effort</h2>"
        f"<div class='cards'>{cards}</div>"
        "<h3>Attempts per week, by channel</h3>"
        f"{_legend()}{_weekly_chart(data)}"
        f"<h3>Days with effort (last {STRIP_WEEKS} weeks)</h3>{_day_strip(data, days)}"
        "</section>"
    )


def _legend() -> str:
    items = "".join(f"<span><i style='background:{c}'></i>{esc(ch)}</span>"
                    for ch, c in CHANNEL_COLORS.items())
    return f"<div class='legend'>{items}</div>"


def _nice_max(n: int) -> int:
    for step in (4, 8, 10, 20, 40, 50, 100, 200, 400, 500, 1000):
        if n <= step:
            return step
    return (n // 1000 + 1) * 1000


def _weekly_chart(data: ReportData) -> str:
    weeks = weekly(data)
    if not weeks:
        return ("<p id='weekly' class='muted'>No attempts logged yet. Type what happened "
                "under <q>Log attempts below:</q> in a follow-up's notes "
                "(<q>9:10 no answer</q>, <q>vm</q>, <q>spoke</q>) or use "
                "<code>syncd log</code>.</p>")
    older = sum(sum(c.values()) for _w, c in weeks[:-MAX_WEEKS])
    weeks = weeks[-MAX_WEEKS:]
    width, height, left, top, bottom = 760, 230, 40, 12, 36
    plot_w, plot_h = width - left - 10, height - top - bottom
    slot = plot_w // len(weeks)
    bar = max(4, min(40, slot - 8))
    ymax = _nice_max(max(sum(c.values()) for _w, c in weeks))
    parts = [f"<svg id='weekly' xmlns='http://www.w3.org/2000/svg' width='{width}' "
             f"height='{height}' role='img' aria-label='attempts per week by channel'>"]
    for tick in (0, ymax // 2, ymax):
        y = top + plot_h - round(plot_h * tick / ymax)
        parts.append(f"<line x1='{left}' x2='{width - 10}' y1='{y}' y2='{y}' "
                     "stroke='#e5e7eb'/>"
                     f"<text x='{left - 6}' y='{y + 4}' font-size='11' text-anchor='end' "
                     f"fill='#6b7280'>{tick}</text>")
    label_every = max(1, (len(weeks) + 9) // 10)
    for i, (w, counts) in enumerate(weeks):
        x = left + i * slot + (slot - bar) // 2
        base, done = top + plot_h, 0
        for ch in CHANNEL_COLORS:
            n = counts.get(ch, 0)
            if not n:
                continue
            y0 = top + plot_h - round(plot_h * done / ymax)
            done += n
            y1 = top + plot_h - round(plot_h * done / ymax)
            parts.append(
                f"<rect class='bar' x='{x}' y='{y1}' width='{bar}' height='{y0 - y1}' "
                f"fill='{CHANNEL_COLORS[ch]}' data-week='{w.isoformat()}' "
                f"data-channel='{esc(ch)}' data-count='{n}'>"
                f"<title>week of {esc(f'{w:%b %d}')}: {n} {esc(ch)}</title></rect>")
        total = sum(counts.values())
        if total:
            ytop = base - round(plot_h * total / ymax)
            parts.append(f"<text x='{x + bar // 2}' y='{ytop - 3}' font-size='11' "
                         f"text-anchor='middle' fill='#374151'>{total}</text>")
        if i % label_every == 0:
            parts.append(f"<text x='{x + bar // 2}' y='{height - bottom + 16}' font-size='11' "
                         f"text-anchor='middle' fill='#6b7280'>{esc(f'{w:%b %d}')}</text>")
    parts.append("</svg>")
    note = (f"<p class='muted'>{older} earlier attempts are not drawn.</p>" if older else "")
    return "".join(parts) + note


def _day_strip(data: ReportData, effort: set[date]) -> str:
    today = data.now.date()
    first_week = week_of(today) - timedelta(weeks=STRIP_WEEKS - 1)
    rows = [d for d in range(7) if any(data.is_workday(first_week + timedelta(days=d + 7 * k))
                                       for k in range(STRIP_WEEKS))] or [0, 1, 2, 3, 4]
    size, gap, left = 14, 3, 34
    width = left + STRIP_WEEKS * (size + gap)
    height = 16 + len(rows) * (size + gap)
    parts = [f"<svg id='days' xmlns='http://www.w3.org/2000/svg' width='{width}' "
             f"height='{height}' role='img' aria-label='working days with effort'>"]
    for r, wd in enumerate(rows):
        parts.append(f"<text x='0' y='{16 + r * (size + gap) + 11}' font-size='10' "
                     f"fill='#6b7280'>{WEEKDAYS[wd]}</text>")
    for k in range(STRIP_WEEKS):
        for r, wd in enumerate(rows):
            d = first_week + timedelta(days=wd + 7 * k)
            if d > today or not data.is_workday(d):
                continue
            has = d in effort
            parts.append(
                f"<rect class='day' x='{left + k * (size + gap)}' y='{16 + r * (size + gap)}' "
                f"width='{size}' height='{size}' rx='2' "
                f"fill='{EFFORT_DAY if has else IDLE_DAY}' data-date='{d.isoformat()}' "
                f"data-effort='{int(has)}'><title>{esc(f'{d:%a %b %d}')}: "
                f"{'effort' if has else 'no attempt'}</title></rect>")
    parts.append("</svg>")
    return "".join(parts)


def _outcomes_section(data: ReportData) -> str:
    counts = Counter(a.outcome for a in data.attempts)
    mix = ", ".join(f"{n} {esc(o.replace('_', ' '))}" for o, n in counts.most_common()) or "none"
    return (
        "<section id='outcomes'><h2>What the experiments learned</h2>"
        f"<p class='muted'>Outcomes so far: {mix}. Silence is not rejection: "
        "every no-answer tells syncd when <em>not</em> to call.</p>"
        "<h3>Reach rate by weekday and hour, in each contact's local time</h3>"
        f"{_heatmap(data)}"
        "<h3>Best time to call, per contact</h3>"
        f"{_best_slots(data)}"
        "<h3>Per contact</h3>"
        f"{_timelines(data)}</section>"
    )


def _heatmap(data: ReportData) -> str:
    cells = heat_cells(data)
    if not cells:
        return ("<p id='heatmap' class='muted'>No calls with an outcome yet: the map "
                "fills in as you log calls.</p>")
    hours = [h for _d, h in cells]
    h0, h1 = min(7, *hours), max(19, *hours)
    days = sorted(data.workdays | {d for d, _h in cells})
    cw, ch, gap, left, top = 40, 28, 2, 44, 20
    ncols = h1 - h0 + 1
    width = left + ncols * (cw + gap)
    height = top + len(days) * (ch + gap)
    parts = [f"<svg id='heatmap' xmlns='http://www.w3.org/2000/svg' width='{width}' "
             f"height='{height}' role='img' aria-label='reach rate by weekday and hour'>"]
    for j, h in enumerate(range(h0, h1 + 1)):
        parts.append(f"<text x='{left + j * (cw + gap) + cw // 2}' y='13' font-size='11' "
                     f"text-anchor='middle' fill='#6b7280'>{h:02d}</text>")
    for i, d in enumerate(days):
        y = top + i * (ch + gap)
        parts.append(f"<text x='0' y='{y + 18}' font-size='12' fill='#374151'>"
                     f"{WEEKDAYS[d]}</text>")
        for j, h in enumerate(range(h0, h1 + 1)):
            x = left + j * (cw + gap)
            c = cells.get((d, h))
            if c is None:
                parts.append(f"<rect x='{x}' y='{y}' width='{cw}' height='{ch}' "
                             f"fill='{HEAT_EMPTY}'/>")
                continue
            rate = c.reached / c.calls
            ink = "#ffffff" if rate >= 0.5 else "#134e4a"
            parts.append(
                f"<g class='cell' data-weekday='{WEEKDAYS[d]}' data-hour='{h}' "
                f"data-calls='{c.calls}' data-reached='{c.reached}'>"
                f"<rect x='{x}' y='{y}' width='{cw}' height='{ch}' fill='{heat_color(rate)}'/>"
                f"<text x='{x + cw // 2}' y='{y + 18}' font-size='11' text-anchor='middle' "
                f"fill='{ink}'>{c.reached}/{c.calls}</text>"
                f"<title>{WEEKDAYS[d]} {h:02d}:00–{h:02d}:59 their time: {c.reached} of "
                f"{c.calls} calls reached them</title></g>")
    parts.append("</svg>")
    return ("".join(parts) + "<p class='muted'>Each cell: calls that reached the person / "
            "calls made in that hour of their day. Darker means a higher reach rate; grey "
            "means not tried yet.</p>")


def _by_name(contacts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(contacts, key=lambda c: (str(c["name"]).casefold(), c["id"]))


def _best_slots(data: ReportData) -> str:
    rows = []
    for c in _by_name(data.contacts):
        b = c.get("best_slot")
        if b:
            slot = f"{b['slot']} {b['from']}–{b['to']}"
            tried = (f"{b['reached']} of {b['attempts']} call(s) in this slot reached them"
                     if b["attempts"] else "not tried yet; everyone's calls favour it")
            evidence = (f"{tried}; {round(100 * b['probability'])}% likely their best slot; "
                        f"estimated reach chance {round(100 * b['reach_rate'])}%")
        else:
            slot, evidence = "-", "no calls with an outcome yet"
        rows.append(f"<tr data-contact-id='{esc(c['id'])}'><td>{esc(c['name'])}</td>"
                    f"<td class='slot'>{esc(slot)}</td><td>{esc(c['timezone'])}</td>"
                    f"<td>{esc(evidence)}</td></tr>")
    if not rows:
        return "<p id='best-slots' class='muted'>No contacts yet.</p>"
    return ("<table id='best-slots'><tr><th>contact</th><th>best slot (their time)</th>"
            f"<th>their zone</th><th>evidence</th></tr>{''.join(rows)}</table>")


def _timelines(data: ReportData) -> str:
    per: dict[str, list[Attempt]] = defaultdict(list)
    for a in data.attempts:
        per[a.contact_id].append(a)
    nexts = {c["id"]: parse_iso(c["next_followup"]["start"]).astimezone(data.now.tzinfo)
             for c in data.contacts if c.get("next_followup")}
    stamps = [a.at for a in data.attempts] + list(nexts.values()) + [data.now]
    lo, hi = min(stamps), max(stamps)
    span = max((hi - lo).total_seconds(), 86400.0)
    width, height, pad = 720, 48, 12

    def x_of(t: datetime) -> int:
        return pad + round((width - 2 * pad) * (t - lo).total_seconds() / span)

    out = []
    for c in _by_name(data.contacts):
        mine = per.get(c["id"], [])
        nxt = nexts.get(c["id"])
        if not mine and nxt is None:
            continue
        svg = [f"<svg class='timeline' xmlns='http://www.w3.org/2000/svg' width='{width}' "
               f"height='{height}'><line x1='{pad}' x2='{width - pad}' y1='17' y2='17' "
               f"stroke='#d1d5db'/><line x1='{x_of(data.now)}' x2='{x_of(data.now)}' "
               "y1='4' y2='30' stroke='#9ca3af' stroke-dasharray='2 2'/>"
               f"<text x='{x_of(data.now)}' y='44' font-size='10' fill='#6b7280' "
               "text-anchor='middle'>today</text>"]
        if x_of(data.now) - pad > 60:
            svg.append(f"<text x='{pad}' y='44' font-size='10' fill='#6b7280'>"
                       f"{esc(f'{lo:%b %d}')}</text>")
        if width - pad - x_of(data.now) > 60:
            svg.append(f"<text x='{width - pad}' y='44' font-size='10' fill='#6b7280' "
                       f"text-anchor='end'>{esc(f'{hi:%b %d}')}</text>")
        for a in mine:
            svg.append(f"<circle cx='{x_of(a.at)}' cy='17' r='6' "
                       f"fill='{OUTCOME_COLORS.get(a.outcome, '#6b7280')}'><title>"
                       f"{esc(f'{a.at:%a %b %d %H:%M}')} {esc(a.channel)}: "
                       f"{esc(a.outcome.replace('_', ' '))}</title></circle>")
        if nxt is not None:
            svg.append(f"<circle class='next' cx='{x_of(nxt)}' cy='17' r='6' fill='#ffffff' "
                       "stroke='#111827' stroke-width='2'><title>next follow-up "
                       f"{esc(f'{nxt:%a %b %d %H:%M}')}</title></circle>")
        svg.append("</svg>")
        items = []
        for a in mine:
            theirs = (f" (their {a.local:%H:%M})"
                      if a.local.utcoffset() != a.at.utcoffset() else "")
            approx = " ~" if a.time_inferred else ""
            note = f" — {esc(a.note)}" if a.note else ""
            items.append(f"<li class='attempt' data-outcome='{esc(a.outcome)}'>"
                         f"{esc(f'{a.at:%a %b %d %H:%M}')}{esc(theirs)}{approx} · "
                         f"{esc(a.channel)} · <b>{esc(a.outcome.replace('_', ' '))}</b>"
                         f"{note}</li>")
        nf = c.get("next_followup")
        next_line = (f"<p class='next'>Next: {esc(f'{nxt:%a %b %d %H:%M}')} "
                     f"{esc(nf['channel'])}</p>" if nxt is not None and nf
                     else "<p class='next muted'>No follow-up planned.</p>")
        out.append(
            f"<div class='contact' data-contact-id='{esc(c['id'])}' "
            f"data-attempts='{len(mine)}'><h3>{esc(c['name'])}</h3>"
            f"<p class='muted'>{esc(c['state'])} · {esc(c['cadence'])} · "
            f"{esc(c['timezone'])}</p>{''.join(svg)}"
            f"<ol>{''.join(items)}</ol>{next_line}</div>")
    if not out:
        return "<p class='muted'>No attempts or follow-ups yet.</p>"
    return "".join(out)
