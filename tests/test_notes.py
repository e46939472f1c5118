"""The notes grammar and block ownership (pure; no servers)."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd import notes
from syncd.model import Channel, Outcome

NY = ZoneInfo("America/New_York")
START = datetime(2026, 11, 25, 10, 0, tzinfo=NY)  # a Wednesday
CALL = notes.LineContext(Channel.CALL, START)
MAIL = notes.LineContext(Channel.EMAIL, START)


def attempts(line: str, ctx: notes.LineContext = CALL) -> list[tuple[str, str | None, bool]]:
    out = []
    for e in notes.parse_line(line, ctx):
        assert isinstance(e, notes.AttemptEntry)
        out.append((e.outcome.value, f"{e.at:%H:%M}" if not e.time_inferred else None,
                    e.time_inferred))
    return out


@pytest.mark.parametrize(("line", "expected"), [
    # SPEC table rows
    ("no answer", [("no_answer", None, True)]),
    ("9:10 no answer", [("no_answer", "09:10", False)]),
    ("rang out", [("no_answer", None, True)]),
    ("busy", [("no_answer", None, True)]),
    ("vm", [("voicemail", None, True)]),
    ("voicemail", [("voicemail", None, True)]),
    ("left message", [("voicemail", None, True)]),
    ("2:30pm left vm", [("voicemail", "14:30", False)]),
    ("gatekeeper", [("gatekeeper", None, True)]),
    ("spoke to assistant", [("gatekeeper", None, True)]),
    ("spoke", [("reached", None, True)]),
    ("reached", [("reached", None, True)]),
    ("talked", [("reached", None, True)]),
    ("connected", [("reached", None, True)]),
    ("replied", [("replied", None, True)]),
    ("they replied", [("replied", None, True)]),
    ("wrong number", [("wrong_number", None, True)]),
    ("bounced", [("wrong_number", None, True)]),
    # natural phrasing
    ("Called at 8:15, no answer", [("no_answer", "08:15", False)]),
    ("9:10 no answer, 14:05 vm", [("no_answer", "09:10", False), ("voicemail", "14:05", False)]),
    ("LM 2:30pm", [("voicemail", "14:30", False)]),
    ("talked to her assistant", [("gatekeeper", None, True)]),
    ("spoke - interview Tue", [("reached", None, True)]),
    ("NO ANSWER", [("no_answer", None, True)]),
    ("2pm vm", [("voicemail", "14:00", False)]),
    ("14:05 voicemail", [("voicemail", "14:05", False)]),
    ("09:10 no answer", [("no_answer", "09:10", False)]),
    ("9:10am no answer", [("no_answer", "09:10", False)]),
])
def test_attempt_lines(line: str, expected: list[tuple[str, str | None, bool]]) -> None:
    assert attempts(line) == expected


def test_twelve_hour_time_takes_the_working_hours_reading() -> None:
    # "2:30" is 14:30 and "9:10" is 09:10 with hours 08:00-18:30 (SPEC).
    assert attempts("2:30 no answer") == [("no_answer", "14:30", False)]
    assert attempts("9:10 no answer") == [("no_answer", "09:10", False)]


def test_ambiguous_twelve_hour_time_is_nearest_the_event() -> None:
    # Both 7:00 and 19:00 are outside 08:00-18:30: the nearer to the start wins.
    late = notes.LineContext(Channel.CALL, datetime(2026, 11, 25, 18, 0, tzinfo=NY))
    assert attempts("7:00 vm", late) == [("voicemail", "19:00", False)]
    assert attempts("7:00 vm", CALL) == [("voicemail", "07:00", False)]


def test_done_counts_only_on_written_channels() -> None:
    assert attempts("done", MAIL) == [("sent", None, True)]
    assert notes.parse_line("done", CALL) == []
    assert attempts("sent", MAIL) == [("sent", None, True)]
    assert attempts("emailed", CALL) == [("sent", None, True)]
    assert notes.parse_line("emailed", CALL)[0].channel is Channel.EMAIL  # type: ignore[union-attr]


def test_dates_in_lines() -> None:
    (e,) = notes.parse_line("Nov 24 9:10 busy", CALL)
    assert isinstance(e, notes.AttemptEntry)
    assert e.at == datetime(2026, 11, 24, 9, 10, tzinfo=NY)
    (e,) = notes.parse_line("2026-11-20 14:00 vm", CALL)
    assert isinstance(e, notes.AttemptEntry)
    assert e.at == datetime(2026, 11, 20, 14, 0, tzinfo=NY)
    (e,) = notes.parse_line("11/23 no answer", CALL)
    assert isinstance(e, notes.AttemptEntry)
    assert e.at.date().isoformat() == "2026-11-23"
    assert e.time_inferred


@pytest.mark.parametrize(("line", "kind", "until"), [
    ("skip", "skip", None),
    ("stop", "stop", None),
    ("pause until 2027-01-10", "pause", datetime(2027, 1, 10, 8, 0, tzinfo=NY)),
    ("snooze 2w", "snooze", datetime(2026, 12, 9, 10, 0, tzinfo=NY)),
    ("next mon 8:30", "next", datetime(2026, 11, 30, 8, 30, tzinfo=NY)),
    ("next 2026-12-03 2pm", "next", datetime(2026, 12, 3, 14, 0, tzinfo=NY)),
])
def test_commands(line: str, kind: str, until: datetime | None) -> None:
    assert notes.parse_line(line, CALL) == [notes.CommandEntry(kind, until)]


def test_news_and_interview() -> None:
    assert notes.parse_line("news: passed CFA level II", CALL) == [
        notes.NewsEntry("passed CFA level II")]
    assert notes.parse_line("interview 2026-12-02 10:00", CALL) == [
        notes.InterviewEntry(datetime(2026, 12, 2, 10, 0, tzinfo=NY))]


@pytest.mark.parametrize("line", [
    "hello world", "call back later?", "done", "pause until whenever", "snooze forever",
    "next week maybe", "stop by the office", "she is great",
])
def test_unknown_lines_stay_unparsed(line: str) -> None:
    assert notes.parse_line(line, CALL) == []


def test_keys_survive_rereading_and_reordering() -> None:
    a = notes.parse_notes(["9:10 no answer", "vm", "vm"], CALL, "f1")
    b = notes.parse_notes(["vm", "9:10 no answer", "vm"], CALL, "f1")
    assert sorted(x.key for x in a) == sorted(x.key for x in b)
    assert len({x.key for x in a}) == 3  # the two "vm" lines are two attempts


def test_edited_line_gets_a_new_key() -> None:
    (a,) = notes.parse_notes(["9:10 no answer"], CALL, "f1")
    (b,) = notes.parse_notes(["9:15 no answer"], CALL, "f1")
    assert a.key != b.key


# -- ownership ---------------------------------------------------------------

BLOCK = "Call Jane Roe (Acme) #1\nDial: tel:+12125550101\nHistory: first attempt"


def test_compose_then_split_gives_back_the_user_text() -> None:
    desc = notes.compose(BLOCK) + "9:10 no answer\n  trailing  \n\nwith blank line"
    sp = notes.split(desc, BLOCK)
    assert sp.has_marker
    assert sp.head_user == ()
    assert sp.tail == "9:10 no answer\n  trailing  \n\nwith blank line"


def test_user_lines_above_the_block_are_kept() -> None:
    desc = "my own note\n" + notes.compose(BLOCK) + "vm"
    sp = notes.split(desc, BLOCK)
    assert sp.head_user == ("my own note",)
    assert notes.compose("NEW BLOCK", sp) == "my own note\nNEW BLOCK\nLog attempts below:\nvm"


user_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=200)


@settings(max_examples=200, deadline=None)
@given(tail=user_text, new_block=st.sampled_from(["B1", "B2\nsecond line", BLOCK]))
def test_user_tail_survives_any_block_rewrite_byte_for_byte(tail: str, new_block: str) -> None:
    desc = notes.compose(BLOCK) + tail
    sp = notes.split(desc, BLOCK)
    rewritten = notes.compose(new_block, sp)
    again = notes.split(rewritten, new_block)
    assert again.tail == tail


@settings(max_examples=200, deadline=None)
@given(line=st.text(max_size=120))
def test_parser_never_crashes(line: str) -> None:
    for e in notes.parse_line(line, CALL):
        if isinstance(e, notes.AttemptEntry):
            assert e.outcome in Outcome
            assert isinstance(e.at.time(), time)
