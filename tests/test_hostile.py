"""Hostile input (issue 7): contact names and notes carrying CR/LF and
iCalendar property text, HTML and script, 1 MB notes, a 10,000-entry vCard
file, invalid UTF-8, huge CSV fields. Nothing may be injected into the events
syncd writes (each written object is parsed: one VEVENT, only our
properties), nothing may crash or hang (pytest-timeout bounds every test).
The notes parser and the contact-file readers are fuzzed with hypothesis,
bounded for CI.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.files import parse_csv, parse_vcards, read_contacts
from syncd import notes
from syncd.errors import RemoteError
from syncd.model import Channel
from tests.daemon_helpers import (
    RawEvent,
    Setup,
    cycle_lines,
    raw_events,
    syncd,
    type_note,
)
from tests.servers import DavServer

INJECT = "\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:evil\r\nATTENDEE:mailto:evil@x.example"
SCRIPT = "<script>alert('x')</script><img src=x onerror=alert(1)>"
# The properties syncd writes; anything else in a written event was injected.
OURS = {"UID", "DTSTAMP", "DTSTART", "DTEND", "SUMMARY", "DESCRIPTION", "X-SYNCD-ID",
        "CATEGORIES"}


def vcard_escape(text: str) -> str:
    """RFC 6350 §3.4 TEXT escaping: a newline inside a value is `\\n`."""
    return (text.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n"))


def assert_not_injected(ev: RawEvent) -> None:
    """Parse what the server holds: one VEVENT, only our properties, and no
    line of the raw text that starts a component or an attendee."""
    comps = [c.name for c in ev.cal.walk() if c.name not in ("VCALENDAR", "VTIMEZONE",
                                                              "STANDARD", "DAYLIGHT")]
    assert comps == ["VEVENT"], (ev.href, comps)
    vevent = ev.vevents[0]
    assert set(vevent.keys()) <= OURS, set(vevent.keys()) - OURS
    assert "\n" not in str(vevent["SUMMARY"]) and "\r" not in str(vevent["SUMMARY"])
    # (XML carries the object with its CRLFs normalised to LF.)
    lines = re.sub(r"\r?\n[ \t]", "", ev.text).splitlines()
    assert sum(ln == "BEGIN:VEVENT" for ln in lines) == 1
    assert not [ln for ln in lines if ln.startswith(("ATTENDEE", "UID:evil"))]


def test_names_and_notes_cannot_inject_into_written_events(
        tmp_path: Path, radicale: DavServer) -> None:
    cards = "".join([
        "BEGIN:VCARD\nVERSION:3.0\nUID:eve\n",
        f"FN:{vcard_escape('Eve' + INJECT)}\n",
        f"ORG:{vcard_escape('Acme' + INJECT)}\n",
        f"NOTE:{vcard_escape(SCRIPT)}\nTEL:+12125550101\nEND:VCARD\n",
        "BEGIN:VCARD\nVERSION:3.0\nUID:html\n",
        f"FN:{vcard_escape(SCRIPT)}\nEMAIL:x@example.com\nEND:VCARD\n",
    ])
    setup = Setup(tmp_path, radicale.base)
    setup.write(cards)
    # A CSV source too: a quoted field may hold real CR/LF.
    (tmp_path / "more.csv").write_text(
        'name,phone,company\r\n"Mallory' + INJECT + '",+12125550102,"Evil\r\nCorp"\r\n',
        newline="")
    setup.contacts = "  - {name: more, type: file, path: more.csv}\n"
    setup.write()
    first = syncd(setup, "sync")
    assert first.returncode == 0, first.stderr
    evs = [e for e in raw_events(radicale, setup.calendar) if e.marker]
    assert len(evs) == 3
    for ev in evs:
        assert_not_injected(ev)
    # The user types hostile lines into every event: property text, CR/LF,
    # HTML and script, and a 1 MB line.
    huge = "x" * (1 << 20)
    for ev in evs:
        type_note(radicale, ev, "9:10 no answer " + INJECT)
    type_note(radicale, evs[0], SCRIPT + "\n" + huge)
    t0 = time.monotonic()
    second = syncd(setup, "sync")
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - t0 < 60
    rec = cycle_lines(second.stderr)[-1]
    print(f"\nthe cycle that read 1 MB of hostile notes: {rec['duration']:.1f} s")
    assert rec["attempts_read"] == 3
    evs = [e for e in raw_events(radicale, setup.calendar) if e.marker]
    assert len(evs) == 6  # each contact's next follow-up, nothing else
    for ev in evs:
        assert_not_injected(ev)
    # The user's text is kept as typed (as TEXT, never as properties).
    done = [e for e in evs if str(e.vevents[0]["SUMMARY"]).startswith("✓")]
    assert len(done) == 3
    descs = [str(ev.vevents[0]["DESCRIPTION"]) for ev in done]
    assert sum(SCRIPT in d and huge in d for d in descs) == 1
    attempts = json.loads(syncd(setup, "attempts", "--json").stdout)
    assert sorted(a["outcome"] for a in attempts) == ["no_answer"] * 3
    status = json.loads(syncd(setup, "status", "--json").stdout)
    names = sorted(c["name"] for c in status["contacts"])
    assert len(names) == 3 and any(n.startswith("Eve") for n in names)
    # The report shows names and notes as text, never as markup.
    out = tmp_path / "report.html"
    rep = syncd(setup, "report", "--out", str(out))
    assert rep.returncode == 0, rep.stderr
    html = out.read_text()
    assert "<script>alert('x')</script>" not in html
    assert "<img src=x onerror" not in html
    # Idle afterwards: nothing to write.
    assert cycle_lines(syncd(setup, "sync").stderr)[-1]["written"] == 0


def test_ten_thousand_cards_are_read_and_synced(tmp_path: Path, radicale: DavServer) -> None:
    cards = "".join(
        f"BEGIN:VCARD\nVERSION:3.0\nUID:u{i}\nFN:Person {i}\nTEL:+1212555{i % 10000:04d}\n"
        f"EMAIL:p{i}@example.com\nEND:VCARD\n" for i in range(10_000))
    setup = Setup(tmp_path, radicale.base, extra="daily_limit: 2\n")
    setup.write(cards)
    t0 = time.monotonic()
    contacts, problems = read_contacts(tmp_path / "cards.vcf", "cards")
    parse = time.monotonic() - t0
    assert len(contacts) == 10_000 and problems == []
    run = syncd(setup, "sync", timeout=110)
    assert run.returncode == 0, run.stderr
    rec = cycle_lines(run.stderr)[-1]
    print(f"\n10,000 cards: parsed in {parse:.1f} s, first sync {rec['duration']:.1f} s")
    assert rec["contacts"] == 10_000
    assert 0 < rec["created"] <= 2 * 15  # daily_limit a day, within the horizon
    assert parse < 30


def test_invalid_utf8_and_huge_csv_fields_are_skipped_not_fatal(
        tmp_path: Path, radicale: DavServer) -> None:
    bad = (b"BEGIN:VCARD\nVERSION:3.0\nUID:a\nFN:Ann \xff\xfe Lee\nEND:VCARD\n"
           b"BEGIN:VCARD\nVERSION:3.0\nUID:b\nFN:Bob \xc3\x28 Ray\nEND:VCARD\n"
           b"BEGIN:VCARD\nVERSION:3.0\nUID:c\nFN:\xed\xa0\x80Cy\nEND:VCARD\n")
    setup = Setup(tmp_path, radicale.base)
    setup.write()
    (tmp_path / "cards.vcf").write_bytes(bad)
    big = "y" * (2 << 20)  # 2 MB: beyond csv's field_size_limit
    (tmp_path / "more.csv").write_text(
        f"name,note\nDee Ok,fine\nHuge One,{big}\nEve Ok,\"{big[:1000]}\"\n")
    setup.contacts = "  - {name: more, type: file, path: more.csv}\n"
    setup.write()
    run = syncd(setup, "sync")
    assert run.returncode == 0, run.stderr
    status = json.loads(syncd(setup, "status", "--json").stdout)
    names = sorted(c["name"] for c in status["contacts"])
    assert "Dee Ok" in names and "Eve Ok" in names
    assert sum(n.startswith(("Ann", "Bob")) for n in names) == 2
    cards = next(s for s in status["sources"] if s["name"] == "cards")
    assert cards["skipped"], "the bad bytes are reported"
    for ev in raw_events(radicale, setup.calendar):
        assert_not_injected(ev)


# ---------------------------------------------------------------------------
# Fuzzing (bounded: a fixed number of examples, no shrinking budget blowup)

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
CTX = notes.LineContext(Channel.CALL, datetime(2026, 11, 25, 10, 0,
                                               tzinfo=ZoneInfo("America/New_York")),
                        dtime(8, 0), dtime(18, 30))
# Text people type, and text an attacker types.
line_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["9:10", "no", "answer", "vm", "spoke", "to", "assistant",
                              "2pm", "next", "mon", "8:30", "snooze", "2w", "pause",
                              "until", "2027-01-10", "news:", "interview", "12/02",
                              ",", "-", "skip", "stop", "\t", "⏰", "\u202e", "am", "pm",
                              "99:99", "0:00", "24:00", "Feb", "30", "\x00"]),
             max_size=12).map(" ".join),
)


@FUZZ
@given(line_text)
def test_fuzz_parse_line_never_crashes(text: str) -> None:
    for entry in notes.parse_line(text, CTX):
        at = getattr(entry, "at", None) or getattr(entry, "until", None)
        if at is not None:
            assert at.tzinfo is not None


@FUZZ
@given(block=st.text(max_size=300), head=st.lists(st.text(max_size=40), max_size=4),
       tail=st.text(max_size=300))
def test_fuzz_split_keeps_every_user_line(block: str, head: list[str], tail: str) -> None:
    head = [h for h in head if "\n" not in h and "\r" not in h]
    user = notes.Split(tuple(head), tail, True)
    composed = notes.compose(block, user)
    back = notes.split(composed, block)
    # The user's tail comes back exactly when it holds no marker of its own
    # (a second marker line typed by the user is, by design, text below the first).
    assert back.has_marker
    if notes.MARKER not in tail and notes.MARKER not in "".join(head):
        assert back.tail == tail
    assert notes.split(composed, block) == back  # deterministic


@FUZZ
@given(st.lists(st.one_of(
    st.text(max_size=80),
    st.sampled_from(["BEGIN:VCARD", "END:VCARD", "VERSION:3.0", "VERSION:2.1",
                     "FN:Jane", "N:Roe;Jane;;;", "UID:x", "TEL:+1 212 555 0101",
                     "EMAIL;TYPE=INTERNET:a@b.c", "ORG:Acme\\nATTENDEE:x",
                     "NOTE;ENCODING=QUOTED-PRINTABLE:=0D=0AEND:VCARD=",
                     "X-SYNCD-TIMEZONE:Mars/Base",
                     " folded", "\tfolded", "PHOTO;ENCODING=b:!!!", "BEGIN:VCARD\rFN:x"])),
    max_size=30))
def test_fuzz_vcard_reader_never_crashes(lines: list[str]) -> None:
    contacts, problems = parse_vcards(lines, "fuzz.vcf", "fuzz")
    for c in contacts:
        assert c.name.strip() and c.uid
    assert all(p.where.startswith("fuzz.vcf:") for p in problems)


@FUZZ
@given(st.lists(st.lists(st.text(max_size=30), max_size=6), max_size=12),
       st.sampled_from([["name", "email", "phone"], ["First Name", "Last Name", "URL"],
                        ["uid", "name", "labels", "timezone"], []]))
def test_fuzz_csv_reader_never_crashes(rows: list[list[str]], header: list[str]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    if header:
        w.writerow(header)
    for r in rows:
        w.writerow(r)
    lines = buf.getvalue().splitlines()
    try:
        contacts, _problems = parse_csv(lines, "fuzz.csv", "fuzz")
    except RemoteError as e:  # no header row: the one way a CSV cannot be read
        assert not e.retryable and "header" in e.message
        return
    for c in contacts:
        assert c.name.strip()


@settings(max_examples=80, deadline=None, derandomize=True)
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".vcf", ".csv", ".txt"]))
def test_fuzz_read_contacts_on_arbitrary_bytes(
        tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"contacts{suffix}"
    path.write_bytes(data)
    try:
        contacts, problems = read_contacts(path, "fuzz")
    except RemoteError as e:
        assert not e.retryable
        return
    assert isinstance(contacts, list) and isinstance(problems, list)
