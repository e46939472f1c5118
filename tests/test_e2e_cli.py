"""End to end through the real CLI (a separate process) and a real CalDAV
server: contacts file → `syncd sync` → events → the user types a line into
an event's notes with another client → `syncd sync` → attempt recorded, next
follow-up written, the user's lines untouched."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import timedelta

from tests.cli_env import USER_LINES, Env, cycles, marker, user_edit


def test_contacts_to_events_to_attempts_and_back(env: Env) -> None:
    first = env.run("sync")
    assert cycles(first.stderr)[-1]["created"] == 2

    events = env.events()
    bob_first = next(e for e in events if "Bob" in str(e.icalendar_component["SUMMARY"]))
    summaries = sorted(str(e.icalendar_component["SUMMARY"]) for e in events)
    assert summaries == ["Call Bob Li (Northwind) #1", "Call Jane Roe (Acme Capital) #1"]
    assert all(marker(e) for e in events)

    status = env.json("status")
    jane = next(c for c in status["contacts"] if c["name"] == "Jane Roe")
    assert jane["state"] == "active" and jane["cadence"] == "pursue"
    assert jane["next_followup"]["channel"] == "call"
    jane_ev = next(e for e in events if "Jane" in str(e.icalendar_component["SUMMARY"]))
    assert jane["next_followup"]["event_uid"] == str(jane_ev.icalendar_component["UID"])

    # The user logs a call in Jane's event, with another CalDAV client (raw
    # GET + PUT with If-Match, so no client library rewrites the text).
    user_edit(jane_ev.url, lambda d: d + USER_LINES)

    second = env.run("sync", now="2026-11-25T20:00:00+00:00")
    rec = cycles(second.stderr)[-1]
    assert rec["attempts_read"] == 1
    assert rec["created"] == 1  # Jane's next follow-up
    # Jane's first event now reads as history, and Bob's untouched call, whose
    # time passed with nothing logged, rolls forward.
    assert rec["updated"] == 2

    attempts = env.json("attempts")
    assert [(a["contact"], a["at"], a["outcome"], a["time_inferred"]) for a in attempts] == [
        ("Jane Roe", "2026-11-25T09:10:00-05:00", "no_answer", False)]

    events = env.events()
    assert len(events) == 3
    assert len({marker(e) for e in events}) == 3  # no duplicates
    (bob,) = [e for e in events if "Bob" in str(e.icalendar_component["SUMMARY"])]
    assert marker(bob) == marker(bob_first)  # the same event, moved on
    assert (bob.icalendar_component.decoded("DTSTART")
            > bob_first.icalendar_component.decoded("DTSTART"))
    jane_events = sorted((e for e in events if "Jane" in str(e.icalendar_component["SUMMARY"])),
                         key=lambda e: e.icalendar_component.decoded("DTSTART"))
    # The user's lines are still there, byte for byte.
    desc = str(jane_events[0].icalendar_component["DESCRIPTION"])
    assert desc.endswith("Log attempts below:\n" + USER_LINES)
    assert str(jane_events[0].icalendar_component["SUMMARY"]) == (
        "✓ Call Jane Roe (Acme Capital) #1 — no answer")
    nxt = jane_events[1].icalendar_component
    assert str(nxt["SUMMARY"]) == "Call Jane Roe (Acme Capital) #2"
    # Two business days after Wednesday's attempt: Friday.
    assert nxt.decoded("DTSTART").strftime("%a") == "Fri"
    status = env.json("status")
    jane = next(c for c in status["contacts"] if c["name"] == "Jane Roe")
    assert jane["attempts"] == 1
    assert jane["last_attempt"]["outcome"] == "no_answer"
    assert jane["next_followup"]["event_uid"] == str(nxt["UID"])
    assert jane["unparsed"] == ["she said call after lunch", "✨ مرحبا trailing"]

    # Nothing changed: the next cycles write nothing and duplicate nothing.
    etags = sorted((e.url, e.etag) for e in events)
    for _ in range(2):
        idle = env.run("sync", now="2026-11-25T20:05:00+00:00")
        rec = cycles(idle.stderr)[-1]
        assert (rec["created"], rec["updated"], rec["deleted"]) == (0, 0, 0)
    assert sorted((e.url, e.etag) for e in env.events()) == etags
    assert len(env.json("attempts")) == 1


def test_the_zone_a_phone_pins_is_stored_with_the_contact(env: Env) -> None:
    """Found once, at import, not at every plan; a state made before the store
    kept it (migration 6: NULL) gets it on the next cycle."""
    env.run("sync")
    db_path = env.config.parent / "state" / "state.db"

    def stored() -> dict[str, str | None]:
        with sqlite3.connect(db_path) as db:
            return dict(db.execute("SELECT name, phone_zone FROM contacts"))

    assert stored() == {"Jane Roe": "America/New_York", "Bob Li": "America/Los_Angeles"}
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE contacts SET phone_zone = NULL")
    zones = {c["name"]: (c["timezone"], c["timezone_source"])
             for c in env.json("status")["contacts"]}
    assert zones == {"Jane Roe": ("America/New_York", "phone"),
                     "Bob Li": ("America/Los_Angeles", "phone")}  # looked up meanwhile
    env.run("sync", now="2026-11-25T15:05:00+00:00")
    assert stored() == {"Jane Roe": "America/New_York", "Bob Li": "America/Los_Angeles"}


def test_planning_is_skipped_while_nothing_changed_and_the_plan_holds(env: Env) -> None:
    """At 10,000 contacts planning was nearly all of an idle cycle's CPU. A
    cycle plans again when the inputs change (notes, config) or the plan's
    expiry comes (here: a follow-up's time passes, and it rolls forward)."""

    def sync(now: str) -> dict[str, object]:
        return cycles(env.run("sync", now=now).stderr)[-1]

    assert sync("2026-11-25T15:00:00+00:00")["created"] == 2
    assert sync("2026-11-25T15:02:00+00:00")["planned"] is True  # reads its writes back
    idle = sync("2026-11-25T15:04:00+00:00")
    assert (idle["planned"], idle["written"]) == (False, 0)
    # Another setting: plan again (then it holds again).
    env.config.write_text(env.config.read_text() + "daily_limit: 5\n")
    assert sync("2026-11-25T15:06:00+00:00")["planned"] is True
    assert sync("2026-11-25T15:08:00+00:00")["planned"] is False
    # A line in a note: plan again, and Jane's next call is written.
    jane = next(e for e in env.events() if "Jane" in str(e.icalendar_component["SUMMARY"]))
    user_edit(jane.url, lambda d: d + "9:10 no answer\n")
    rec = sync("2026-11-25T15:10:00+00:00")
    assert (rec["planned"], rec["attempts_read"], rec["created"]) == (True, 1, 1)
    assert sync("2026-11-25T15:12:00+00:00")["planned"] is True  # reads its writes back
    assert sync("2026-11-25T15:14:00+00:00")["planned"] is False
    # Nothing changed, but Bob's call passed with nothing logged: the plan's
    # expiry has come, and the call rolls forward.
    bob = next(e for e in env.events() if "Bob" in str(e.icalendar_component["SUMMARY"]))
    after = bob.icalendar_component.decoded("DTEND") + timedelta(minutes=1)
    rec = sync(after.isoformat())
    assert rec["planned"] is True and rec["updated"] >= 1
    moved = next(e for e in env.events() if marker(e) == marker(bob))
    assert moved.icalendar_component.decoded("DTSTART") > after


def test_second_daemon_on_the_same_state_is_refused(env: Env) -> None:
    env.run("sync")
    holder = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(env.config), "--log-format", "json",
         "run"],
        env={**os.environ, "E2E_PASSWORD": "x"}, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Wait for the holder's first cycle: it has the lock once it logs.
        assert holder.stderr is not None
        for line in holder.stderr:
            if '"cycle"' in line:
                break
        second = env.run("sync", check=False)
        assert second.returncode == 1
        assert f"another syncd (pid {holder.pid}) holds the state directory" in second.stderr
    finally:
        holder.terminate()
        assert holder.wait(timeout=15) == 0


def test_config_error_names_file_line_and_key(env: Env) -> None:
    env.config.write_text(env.config.read_text().replace("horizon: 14d", "horizn: 14d"))
    proc = env.run("config", "check", check=False)
    assert proc.returncode == 2
    assert f"{env.config}:2: horizn: unknown key (did you mean 'horizon'?)" in proc.stderr
    assert "Traceback" not in proc.stderr
