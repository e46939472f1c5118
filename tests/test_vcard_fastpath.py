"""The fast reader of plain vCards (`connectors.files._plain_card`) must give
exactly what vobject gives: the same Contact, or the same CardError, for any
card. Generated cards mix the properties syncd reads with others, escapes,
commas and semicolons, parameters, groups, folding and line endings."""

from __future__ import annotations

from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import files
from connectors.files import CardError, vcard_to_contact
from syncd.model import Contact

TEXT = st.text(
    alphabet=st.sampled_from([*"ab ,;:\\\"=nN\t", "é", "☎", "\u200f", "x"]),
    max_size=12,
)
NAMES = st.sampled_from([
    "FN", "N", "ORG", "TITLE", "EMAIL", "TEL", "CATEGORIES", "NOTE", "TZ", "UID",
    "X-SYNCD-CADENCE", "X-SYNCD-TIMEZONE", "x-syncd-cadence", "X_SYNCD_TIMEZONE", "ADR",
    "PHOTO", "VERSION", "PRODID", "X-OTHER", "item1.EMAIL", "item2.X-ABLABEL", "fn",
])
PARAMS = st.lists(st.sampled_from([
    ";TYPE=work", ";TYPE=INTERNET,pref", ";type=pref", ";PREF=1", ";PREF=50", ";VALUE=text",
    ";VALUE=utc-offset", ";TYPE=\"work,voice\"", ";CELL", ";CHARSET=utf-8",
    ";ENCODING=QUOTED-PRINTABLE", ";ENCODING=b", ";LANGUAGE=en",
]), max_size=2).map("".join)
PROP = st.tuples(NAMES, PARAMS, TEXT).map(lambda t: f"{t[0]}{t[1]}:{t[2]}")


@st.composite
def cards(draw: st.DrawFn) -> str:
    lines = ["BEGIN:VCARD", draw(st.sampled_from(["VERSION:3.0", "VERSION:4.0", "VERSION:2.1"]))]
    lines += draw(st.lists(PROP, min_size=0, max_size=8))
    lines.append(draw(st.sampled_from(["END:VCARD", "end:vcard", "END:VCARD "])))
    out = []
    for line in lines:
        cut = draw(st.integers(0, 12))
        if draw(st.booleans()) and 0 < cut < len(line):  # fold it
            line = line[:cut] + "\r\n" + draw(st.sampled_from([" ", "\t"])) + line[cut:]
        out.append(line)
        if draw(st.integers(0, 30)) == 0:
            out.append(draw(st.sampled_from(["", " ", "x"])))
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    return eol.join(out) + eol


def _with_vobject(text: str) -> Contact | str:
    with mock.patch.object(files, "_plain_card", lambda _t: None):
        return _read(text)


def _read(text: str) -> Contact | str:
    try:
        return vcard_to_contact(text, "src")
    except CardError as e:
        return f"CardError: {e}"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cards())
def test_plain_cards_read_as_vobject_reads_them(text: str) -> None:
    assert _read(text) == _with_vobject(text)


def test_the_fast_reader_takes_the_usual_cards() -> None:
    usual = (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:jane\r\nFN:Jane Roe\r\nN:Roe;Jane;;;\r\n"
        "ORG:Acme Capital;Research\r\nTITLE:Portfolio Manager\r\n"
        "TEL;TYPE=work,voice;TYPE=pref:+1 212 555 0101\r\nEMAIL;TYPE=INTERNET:jane@acme.example\r\n"
        "CATEGORIES:Hiring managers,Friends\r\nNOTE:Met at the conference\\, talked rates\\n"
        "more\r\nTZ;VALUE=text:America/New_York\r\nX-SYNCD-CADENCE:pursue\r\n"
        "ADR;TYPE=work:;;1 Main St;Springfield;IL;62701;USA\r\nEND:VCARD\r\n"
    )
    assert files._plain_card(usual) is not None
    assert _read(usual) == _with_vobject(usual)
    contact = _read(usual)
    assert isinstance(contact, Contact)
    assert contact.note == "Met at the conference, talked rates\nmore"
    assert contact.labels == ("Hiring managers", "Friends")
    assert contact.phones == ("+1 212 555 0101",)
    assert contact.timezone == "America/New_York"
    assert contact.overrides == (("syncd-cadence", "pursue"),)


def test_cards_the_fast_reader_leaves_to_vobject() -> None:
    qp = ("BEGIN:VCARD\r\nVERSION:2.1\r\nN;ENCODING=QUOTED-PRINTABLE:M=C3=BCller;Hans\r\n"
          "FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Hans M=C3=BCller\r\nTEL;CELL:+49 30 1\r\n"
          "END:VCARD\r\n")
    assert files._plain_card(qp) is None
    contact = _read(qp)
    assert isinstance(contact, Contact) and contact.name == "Hans Müller"
    broken = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN Jane\r\nEND:VCARD\r\n"
    assert files._plain_card(broken) is None
    assert _read(broken) == _with_vobject(broken)
    assert str(_read(broken)).startswith("CardError: not a valid vCard")
