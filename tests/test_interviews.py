"""Interviews in the calendar become thank-you e-mails to each person met."""

from __future__ import annotations

import caldav
import requests

from tests.cli_env import Env, user_edit

INTERVIEW = """\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
BEGIN:VEVENT
UID:interview-acme-1
DTSTAMP:20261120T120000Z
DTSTART:20261125T150000Z
DTEND:20261125T160000Z
SUMMARY:Interview at Acme Capital
ORGANIZER;CN=Jane Roe:mailto:jane@acme.example
ATTENDEE;CN=Jane Roe:mailto:jane@acme.example
ATTENDEE;CN=Kim Park:mailto:kim.park@acme.example
ATTENDEE;CN=Me:mailto:me@example.com
END:VEVENT
END:VCALENDAR
"""


def put_interview(env: Env) -> None:
    cal = env.calendar()
    url = str(cal.url).rstrip("/") + "/interview-acme-1.ics"
    r = requests.put(url, data=INTERVIEW.encode(), auth=("alice", "x"), timeout=30,
                     headers={"Content-Type": "text/calendar; charset=utf-8",
                              "If-None-Match": "*"})
    assert r.status_code == 201, r.text


def test_thank_you_for_everyone_met_then_keep_in_touch(env: Env) -> None:
    env.config.write_text(env.config.read_text() + "interviews:\n  me: [me@example.com]\n")
    env.run("sync", now="2026-11-25T14:00:00+00:00")  # creates the calendar
    put_interview(env)
    # Before it ends: nothing to thank yet.
    env.run("sync", now="2026-11-25T15:30:00+00:00")
    assert not [e for e in env.events()
                if str(e.icalendar_component["SUMMARY"]).startswith("Thank-you")]
    # After it ends: one thank-you per attendee other than me, within a day.
    env.run("sync", now="2026-11-25T16:05:00+00:00")
    thanks = sorted(str(e.icalendar_component["SUMMARY"]) for e in env.events()
                    if str(e.icalendar_component["SUMMARY"]).startswith("Thank-you"))
    assert thanks == ["Thank-you e-mail: Jane Roe (interview Nov 25)",
                      "Thank-you e-mail: Kim Park (interview Nov 25)"]
    status = env.json("status")
    kim = next(c for c in status["contacts"] if c["name"] == "Kim Park")
    assert kim["source"] == "interview"
    assert kim["next_followup"]["channel"] == "email"
    assert kim["next_followup"]["start"] < "2026-11-26T11:05"

    # The thank-you is sent: Kim moves to keep-in-touch, four weeks on.
    kim_ev = next(e for e in env.events()
                  if str(e.icalendar_component["SUMMARY"]).startswith("Thank-you e-mail: Kim"))
    user_edit(kim_ev.url, lambda d: d + "sent\n")
    env.run("sync", now="2026-11-26T20:00:00+00:00")
    status = env.json("status")
    kim = next(c for c in status["contacts"] if c["name"] == "Kim Park")
    assert kim["cadence"] == "keep_in_touch"
    assert kim["next_followup"]["start"].startswith("2026-12-2")
    # Re-reading changes nothing: still two thank-yous, no duplicates.
    env.run("sync", now="2026-11-26T20:05:00+00:00")
    thanks = sorted(str(e.icalendar_component["SUMMARY"]) for e in env.events()
                    if "Thank-you" in str(e.icalendar_component["SUMMARY"]))
    # Kim's now reads as history; no duplicates.
    assert thanks == ["Thank-you e-mail: Jane Roe (interview Nov 25)",
                      "✓ Thank-you e-mail: Kim Park (interview Nov 25) — sent"]


def test_interviews_in_a_busy_calendar_are_thanked_too(env: Env) -> None:
    work = f"Work {env.calendar_name[-8:]}"
    env.config.write_text(env.config.read_text().replace(
        f"  calendar: {env.calendar_name}\n",
        f"  calendar: {env.calendar_name}\n  busy_calendars: [{work}]\n")
        + "interviews:\n  me: [me@example.com]\n")
    client = caldav.DAVClient(url=env.server.principal_url, username="alice", password="x",
                              timeout=30)
    cal = client.principal().make_calendar(name=work)
    url = str(cal.url).rstrip("/") + "/interview-acme-1.ics"
    r = requests.put(url, data=INTERVIEW.encode(), auth=("alice", "x"), timeout=30,
                     headers={"Content-Type": "text/calendar; charset=utf-8",
                              "If-None-Match": "*"})
    assert r.status_code == 201, r.text
    env.run("sync", now="2026-11-25T16:05:00+00:00")
    thanks = sorted(str(e.icalendar_component["SUMMARY"]) for e in env.events()
                    if str(e.icalendar_component["SUMMARY"]).startswith("Thank-you"))
    assert thanks == ["Thank-you e-mail: Jane Roe (interview Nov 25)",
                      "Thank-you e-mail: Kim Park (interview Nov 25)"]
