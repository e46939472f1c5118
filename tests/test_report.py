"""`syncd report`: state built through the real CLI against Radicale (a sync,
attempts logged with `syncd log` and typed into an event's notes), the HTML
written by the CLI, then rendered by headless Chromium and checked from the
screenshot's pixels: the weekly bars, the heatmap and the days-with-effort
strip are drawn, effort above outcomes.

Chromium is Debian's `chromium`; scripts/test installs it when missing. When
it is not there this test fails (it never skips): the charts are the point.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import deque
from dataclasses import dataclass
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from syncd.report import (
    CHANNEL_COLORS,
    EFFORT_DAY,
    HEAT_HIGH,
    HEAT_LOW,
    streaks,
)
from tests.cli_env import Env, make_env, user_edit
from tests.servers import DavServer

XSS_NAME = "<script>alert(1)</script>"
XSS_CARD = f"""\
BEGIN:VCARD
VERSION:3.0
UID:xss
FN:{XSS_NAME}
ORG:Evil & Co
TEL:+44 20 7946 0000
CATEGORIES:Hiring managers
END:VCARD
"""
NOW = "2026-11-25T20:00:00+00:00"  # Wed Nov 25, 15:00 in New York

# (contact, outcome, --at in the user's zone America/New_York, channel, note)
LOGGED = [
    ("Jane", "no_answer", "2026-11-03 09:10", "call", ""),
    ("Bob", "no_answer", "2026-11-04 12:05", "call", ""),  # 09:05 in Los Angeles
    ("Jane", "reached", "2026-11-10 14:30", "call", "spoke, send CV"),
    ("Jane", "sent", "2026-11-11 10:00", "email", "CV sent"),
    ("script", "voicemail", "2026-11-12 10:00", "call", "<b>bold</b>"),  # 15:00 London
    ("Bob", "voicemail", "2026-11-20 11:00", "call", ""),  # Fri, 08:00 LA
    ("Bob", "reached", "2026-11-23 16:00", "call", ""),  # Mon, 13:00 LA
    ("script", "sent", "2026-11-24 09:30", "email", ""),
]
# ...and "9:10 no answer" typed into Jane's event of Wed Nov 25.


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium is needed to render the report and was not found: "
                "install Debian's `chromium` (scripts/test does: apt-get update && "
                "apt-get install -y chromium, as root)")


def screenshot(page: Path, png: Path, profile: Path) -> Image.Image:
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1",
         "--force-color-profile=srgb", f"--user-data-dir={profile}",
         f"--screenshot={png}", "--window-size=1200,2000", page.as_uri()],
        capture_output=True, text=True, timeout=90,
        env={**os.environ, "HOME": str(profile)},
    )
    assert proc.returncode == 0 and png.exists(), proc.stderr[-2000:]
    return Image.open(png).convert("RGB")


@dataclass(frozen=True)
class Blob:
    left: int
    top: int
    right: int
    bottom: int
    pixels: int

    @property
    def height(self) -> int:
        return self.bottom - self.top + 1

    @property
    def width(self) -> int:
        return self.right - self.left + 1


def rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def blobs(img: Image.Image, colors: list[tuple[int, int, int]]) -> dict[
        tuple[int, int, int], list[Blob]]:
    """Connected regions (4-neighbour) of each exact colour, top to bottom."""
    w = img.width
    want = set(colors)
    where: dict[tuple[int, int, int], set[int]] = {c: set() for c in colors}
    flat = getattr(img, "get_flattened_data", img.getdata)  # Pillow >= 12.1 renamed it
    for i, px in enumerate(flat()):
        if px in want:
            where[px].add(i)
    out: dict[tuple[int, int, int], list[Blob]] = {}
    for color, todo in where.items():
        found = []
        while todo:
            start = todo.pop()
            queue, xs, ys, n = deque([start]), [], [], 0
            while queue:
                i = queue.popleft()
                n += 1
                y, x = divmod(i, w)
                xs.append(x)
                ys.append(y)
                for j in (i - 1 if x else -1, i + 1 if x < w - 1 else -1, i - w, i + w):
                    if j in todo:
                        todo.remove(j)
                        queue.append(j)
            found.append(Blob(min(xs), min(ys), max(xs), max(ys), n))
        out[color] = sorted(found, key=lambda b: (b.top, b.left))
    return out


class Tags(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def with_class(self, cls: str) -> list[dict[str, str]]:
        return [a for _t, a in self.tags if cls in a.get("class", "").split()]

    def by_id(self, ident: str) -> dict[str, str]:
        return next(a for _t, a in self.tags if a.get("id") == ident)


@pytest.fixture
def env(tmp_path: Path, radicale: DavServer) -> Env:
    """The CLI environment of tests/cli_env.py on Radicale (the report does
    not depend on the server, so one is enough)."""
    e = make_env(tmp_path, radicale)
    contacts = tmp_path / "contacts.vcf"
    contacts.write_text(contacts.read_text() + XSS_CARD)
    return e


def build_state(env: Env) -> None:
    env.run("sync", now="2026-11-25T15:00:00+00:00")
    for who, outcome, at, channel, note in LOGGED:
        env.run("log", who, outcome, "--at", at, "--channel", channel, "--note", note)
    jane = next(e for e in env.events()
                if str(e.icalendar_component["SUMMARY"]).startswith("Call Jane Roe"))
    assert jane.icalendar_component.decoded("DTSTART").date() == date(2026, 11, 25)
    user_edit(jane.url, lambda d: d + "9:10 no answer\n")
    env.run("sync", now=NOW)
    logged = env.json("attempts")
    assert len(logged) == len(LOGGED) + 1
    assert [a["at"] for a in logged if a["followup_uid"]] == ["2026-11-25T09:10:00-05:00"]


def test_report_draws_effort_first_and_escapes_user_data(env: Env, tmp_path: Path) -> None:
    build_state(env)
    out = tmp_path / "out" / "report.html"
    proc = env.run("report", "--out", str(out), now=NOW)
    assert f"wrote {out}" in proc.stdout
    page = out.read_text(encoding="utf-8")

    # Offline and inert: no script, no external resource of any kind.
    assert "<script" not in page.lower()
    for pattern in (r"\ssrc=", r"<link", r"url\(", r"@import", r"<iframe", r"<img"):
        assert not re.search(pattern, page, re.I), pattern
    assert set(re.findall(r"https?://[^'\"\s]+", page)) == {"http://www.w3.org/2000/svg"}
    # User data is escaped: the contact's name and a note are shown as text.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page

    tags = Tags()
    tags.feed(page)
    sections = [a["id"] for t, a in tags.tags if t == "section"]
    assert sections == ["effort", "outcomes"]  # eyes off the scoreboard: effort first
    assert tags.by_id("streak")["data-streak"] == "4"  # Fri 20, Mon 23, Tue 24, Wed 25
    assert tags.by_id("longest-streak")["data-longest"] == "4"
    assert tags.by_id("this-week")["data-count"] == "3"
    assert tags.by_id("total")["data-count"] == "9"

    bars = {(a["data-week"], a["data-channel"]): int(a["data-count"])
            for a in tags.with_class("bar")}
    assert bars == {("2026-11-02", "call"): 2, ("2026-11-09", "call"): 2,
                    ("2026-11-09", "email"): 1, ("2026-11-16", "call"): 1,
                    ("2026-11-23", "call"): 2, ("2026-11-23", "email"): 1}
    # Reach rate per weekday and hour in each contact's own zone.
    cells = {(a["data-weekday"], int(a["data-hour"])): (int(a["data-calls"]),
                                                        int(a["data-reached"]))
             for a in tags.with_class("cell")}
    assert cells == {("Tue", 9): (1, 0), ("Tue", 14): (1, 1), ("Wed", 9): (2, 0),
                     ("Fri", 8): (1, 0), ("Mon", 13): (1, 1), ("Thu", 15): (1, 0)}
    effort_days = [a["data-date"] for a in tags.with_class("day") if a["data-effort"] == "1"]
    assert sorted(effort_days) == ["2026-11-03", "2026-11-04", "2026-11-10", "2026-11-11",
                                   "2026-11-12", "2026-11-20", "2026-11-23", "2026-11-24",
                                   "2026-11-25"]
    per_contact = {a["data-contact-id"]: int(a["data-attempts"])
                   for a in tags.with_class("contact")}
    assert per_contact == {"cards:jane": 4, "cards:bob": 3, "cards:xss": 2}
    assert page.count("class='next'>Next: ") == 3  # every contact's next follow-up

    best = re.findall(r"<tr data-contact-id='([^']+)'><td>[^<]*</td><td class='slot'>([^<]*)<",
                      page)
    slots = dict(best)
    assert slots["cards:jane"] == "afternoon 13:30–16:00"
    assert slots["cards:bob"] == "midday 11:30–13:30"
    assert "1 of 1 call(s) in this slot reached them" in page

    img = screenshot(out, tmp_path / "shot.png", tmp_path / "chromium")
    call, email = rgb(CHANNEL_COLORS["call"]), rgb(CHANNEL_COLORS["email"])
    found = blobs(img, [call, email, HEAT_LOW, HEAT_HIGH, rgb(EFFORT_DAY)])
    # Bars (legend swatches are 10 px high): one call bar per week, an e-mail
    # segment stacked right on top of the call bar in two of them.
    call_bars = sorted((b for b in found[call] if b.height >= 12), key=lambda b: b.left)
    email_bars = [b for b in found[email] if b.height >= 12]
    assert len(call_bars) == 4, found[call]
    assert len({b.bottom for b in call_bars}) == 1  # one baseline
    heights = [b.height for b in call_bars]  # 2, 2, 1 and 2 calls
    assert heights[0] == heights[1] == heights[3] and abs(heights[0] - 2 * heights[2]) <= 1
    assert len(email_bars) == 2
    for e in email_bars:
        under = [b for b in call_bars if b.left == e.left and b.right == e.right]
        assert under and abs(under[0].top - (e.bottom + 1)) <= 1, (e, call_bars)
    # The heatmap: four cells never reached (lightest), two always (darkest),
    # each a full cell, all below the bars.
    low = [b for b in found[HEAT_LOW] if b.width >= 30 and b.height >= 20]
    high = [b for b in found[HEAT_HIGH] if b.width >= 30 and b.height >= 20]
    assert len(low) == 4 and len(high) == 2, (found[HEAT_LOW], found[HEAT_HIGH])
    bars_bottom = max(b.bottom for b in call_bars)
    assert min(b.top for b in low + high) > bars_bottom  # outcomes after effort
    # The days-with-effort strip: one square per working day with an attempt,
    # between the bars and the heatmap.
    days = [b for b in found[rgb(EFFORT_DAY)] if b.width >= 10]
    assert len(days) == 9
    assert bars_bottom < min(b.top for b in days) < min(b.top for b in low + high)


def test_report_without_attempts_says_how_to_start(env: Env, tmp_path: Path) -> None:
    env.run("sync", now="2026-11-25T15:00:00+00:00")
    out = tmp_path / "empty.html"
    env.run("report", "--out", str(out), now="2026-11-25T15:00:00+00:00")
    page = out.read_text(encoding="utf-8")
    assert "No attempts logged yet" in page and "Log attempts below:" in page
    assert "class='bar'" not in page and "class='cell'" not in page
    assert page.count("class='next'>Next: ") == 3


def test_streaks_count_working_days_only() -> None:
    def weekday(d: date) -> bool:
        return d.weekday() < 5 and d != date(2026, 11, 26)  # Thanksgiving off

    wed = date(2026, 11, 25)
    effort = {date(2026, 11, 20), date(2026, 11, 23), date(2026, 11, 24), wed}
    assert streaks(effort, wed, weekday) == (4, 4)
    # Today without an attempt yet does not break the run; yesterday does.
    assert streaks(effort - {wed}, wed, weekday) == (3, 3)
    assert streaks(effort - {date(2026, 11, 24)}, wed, weekday) == (1, 2)
    # Weekends and holidays neither count nor break it; a weekend attempt is extra.
    assert streaks(effort | {date(2026, 11, 28)}, date(2026, 11, 30), weekday) == (0, 4)
    assert streaks(effort | {date(2026, 11, 27)}, date(2026, 11, 27), weekday) == (5, 5)
    assert streaks(set(), wed, weekday) == (0, 0)
    assert streaks({wed - timedelta(days=7 * k) for k in range(3)}, wed, weekday) == (1, 1)
