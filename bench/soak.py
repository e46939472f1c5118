"""Soak: the daemon's cycle, thousands of times, against a real Radicale,
with a user editing the calendar and the contacts file at random, while
the process's resident memory (RSS) and open file descriptors are watched.

The cycles are driven in this process through `syncd.daemon.Daemon` (the
same `cycle_once` that `syncd run` calls every poll_interval, with its
backoff and notification code, and the real CalDAV and file connectors), so
2,000 cycles take minutes instead of the days `poll_interval` would make
them. The clock advances 10 minutes per cycle, so follow-ups come due, lapse
and move, and the calendar keeps growing as it does for a real user.

Pass criteria (exit 1 otherwise): RSS after warm-up grows by less than 10 %,
and the number of open descriptors stays flat (within 2).

Usage (from the repository root):
    python -m bench.soak                 # 2,000 cycles
    python -m bench.soak --quick         # 200 cycles, a smoke run
    python -m bench.soak --cycles 5000 --seed 3
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import icalendar
import requests

from syncd import log as syncd_log
from syncd.config import load
from syncd.daemon import Daemon
from syncd.sdnotify import Notifier
from tests.servers import DavServer, start_radicale

START = datetime.fromisoformat("2026-11-25T13:00:00+00:00")
WORDS = ["no answer", "vm", "9:15 no answer", "left message", "busy", "gatekeeper",
         "spoke", "sent", "skip", "snooze 1w", "they said call after lunch"]


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cards(ids: list[int]) -> str:
    return "".join(
        f"BEGIN:VCARD\nVERSION:3.0\nUID:s{i}\nFN:Soak Person {i}\nTEL:+1212555{i:04d}\n"
        f"CATEGORIES:{'Hiring managers' if i % 3 == 0 else 'Friends'}\nEND:VCARD\n"
        for i in ids)


def write_config(d: Path, server: DavServer) -> Path:
    cfg = d / "config.yaml"
    cfg.write_text(f"""\
timezone: America/New_York
horizon: 14d
state_dir: state
contacts:
  - {{name: cards, type: file, path: cards.vcf}}
calendar:
  type: caldav
  url: {server.base}/
  calendar: Soak
  username: alice
  password_env: SOAK_PASSWORD
cadences:
  pursue: {{channel: call, every: 2 business days, until: reached, then: keep_in_touch}}
  keep_in_touch: {{channel: email, every: 4 weeks}}
rules:
  - {{match: {{label: Hiring managers}}, cadence: pursue}}
  - {{cadence: keep_in_touch}}
""")
    return cfg


class User:
    """Another CalDAV client: types lines into syncd's events."""

    def __init__(self, server: DavServer, rng: random.Random) -> None:
        self.server = server
        self.rng = rng
        self.http = requests.Session()
        self.http.auth = ("alice", "x")
        self.calendar: str | None = None

    def _calendar(self) -> str | None:
        if self.calendar is None:
            body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
                    "<D:displayname/></D:prop></D:propfind>")
            r = self.http.request("PROPFIND", f"{self.server.base}/alice/", data=body,
                                  headers={"Depth": "1"})
            import xml.etree.ElementTree as ET

            for resp in ET.fromstring(r.content).iter("{DAV:}response"):
                if resp.findtext(".//{DAV:}displayname") == "Soak":
                    self.calendar = self.server.base + (resp.findtext("{DAV:}href") or "")
        return self.calendar

    def type_line(self) -> bool:
        cal = self._calendar()
        if cal is None:
            return False
        body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/>'
                "</D:prop></D:propfind>")
        r = self.http.request("PROPFIND", cal, data=body, headers={"Depth": "1"})
        import xml.etree.ElementTree as ET

        hrefs = [h.text for h in ET.fromstring(r.content).iter("{DAV:}href")
                 if h.text and h.text.endswith(".ics")]
        if not hrefs:
            return False
        url = self.server.base + self.rng.choice(hrefs)
        got = self.http.get(url)
        if got.status_code != 200:
            return False
        ical = icalendar.Calendar.from_ical(got.content.decode())
        for comp in ical.walk("VEVENT"):
            comp["DESCRIPTION"] = icalendar.vText(
                str(comp.get("DESCRIPTION", "")) + self.rng.choice(WORDS) + "\n")
        put = self.http.put(url, data=ical.to_ical(), headers={
            "If-Match": got.headers.get("ETag", ""), "Content-Type": "text/calendar"})
        return put.status_code in (201, 204)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="200 cycles (a smoke run)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--every", type=int, default=100, help="print a sample every N cycles")
    args = ap.parse_args(argv)
    cycles = 200 if args.quick else args.cycles
    warmup = max(cycles // 10, 20)
    rng = random.Random(args.seed)
    syncd_log.setup("json", verbose=False)
    import logging

    import structlog

    # The per-cycle log lines would drown the samples; warnings still show.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    with tempfile.TemporaryDirectory(prefix="syncd-soak-") as tmp:
        d = Path(tmp)
        server = start_radicale(d / "radicale")
        try:
            os.environ["SOAK_PASSWORD"] = "x"
            people = list(range(20))
            (d / "cards.vcf").write_text(cards(people))
            cfg = load(write_config(d, server))
            clock = [START]
            daemon = Daemon(cfg, now=lambda: clock[0], notifier=Notifier({}))
            user = User(server, rng)
            daemon.open()
            samples: list[tuple[int, int, int]] = []
            totals = {"writes": 0, "attempts": 0, "requests": 0, "typed": 0, "edits": 0}
            t0 = time.monotonic()
            print(f"{'cycle':>6} {'RSS MiB':>8} {'fds':>4} {'writes':>7} {'attempts':>8} "
                  f"{'typed':>6} {'requests':>8} {'s':>6}")
            try:
                for n in range(1, cycles + 1):
                    if rng.random() < 0.1 and user.type_line():
                        totals["typed"] += 1
                    if rng.random() < 0.02:
                        if rng.random() < 0.5 and len(people) > 10:
                            people.remove(rng.choice(people))
                        else:
                            people.append(max(people) + 1)
                        (d / "cards.vcf").write_text(cards(people))
                        totals["edits"] += 1
                    res = daemon.cycle_once()
                    if res is None:
                        print("connectors could not be set up", file=sys.stderr)
                        return 1
                    totals["writes"] += res.writes
                    totals["attempts"] += res.attempts_read
                    totals["requests"] += res.requests
                    clock[0] += timedelta(minutes=10)
                    if n % args.every == 0 or n in (cycles, warmup):
                        gc.collect()
                        rss, fds = rss_kib(), open_fds()
                        samples.append((n, rss, fds))
                        print(f"{n:>6} {rss / 1024:>8.1f} {fds:>4} {totals['writes']:>7} "
                              f"{totals['attempts']:>8} {totals['typed']:>6} "
                              f"{totals['requests']:>8} {time.monotonic() - t0:>6.0f}",
                              flush=True)
            finally:
                daemon.close()
        finally:
            server.stop()

    base = next(s for s in samples if s[0] >= warmup)
    after = [s for s in samples if s[0] >= warmup]
    peak_rss = max(s[1] for s in after)
    growth = (peak_rss - base[1]) / base[1]
    fd_span = max(s[2] for s in after) - min(s[2] for s in after)
    took = time.monotonic() - t0
    print(f"\n{cycles} cycles in {took:.0f} s ({took / cycles * 1000:.0f} ms/cycle); "
          f"{totals['writes']} writes, {totals['attempts']} attempts read from "
          f"{totals['typed']} typed lines (the rest: commands, unparsed), "
          f"{totals['edits']} contact-file edits, {totals['requests']} requests")
    print(f"RSS after warm-up (cycle {base[0]}): {base[1] / 1024:.1f} MiB, peak "
          f"{peak_rss / 1024:.1f} MiB: growth {growth * 100:+.1f} % (limit 10 %)")
    print(f"open descriptors after warm-up: {min(s[2] for s in after)}.."
          f"{max(s[2] for s in after)} (span {fd_span}, limit 2)")
    ok = growth < 0.10 and fd_span <= 2
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
