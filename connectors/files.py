"""Contacts from a local file: vCard (`.vcf`) or CSV (generic or LinkedIn).

`FileSource` implements `syncd.ports.ContactSource` for `type: file`.

Formats
-------
* vCard 4.0 (RFC 6350), 3.0 (RFC 2426) and the 2.1 that phones still export
  (quoted-printable with soft line breaks). The file is split into cards by its
  `BEGIN:VCARD` / `END:VCARD` lines here, and every card is parsed on its own
  with vobject, so one broken card is skipped (a `SourceProblem` at the line of
  its `BEGIN:VCARD`) and the rest import.
* CSV with a header row. Column names are matched case-insensitively:
  `name` (or `first name` + `last name`), `email` / `e-mail` / `email address`,
  `phone`, `company` / `organization`, `title` / `position`, `timezone`,
  `labels`, `note`, `cadence` (the `syncd-cadence` override), `url` and
  `uid` / `id`. `labels` (and several e-mails or phones in one cell) are
  separated by `;`, because `,` is the CSV delimiter and spreadsheet users
  expect `;` inside a cell. Lines before the
  header are skipped, which is how LinkedIn's `Connections.csv` (a "Notes:"
  preamble, a blank line, then `First Name,Last Name,URL,Email Address,
  Company,Position,Connected On`) is read.

Identity (`Contact.uid`)
------------------------
* vCard: its `UID`; without one, a digest of name + first e-mail + first phone.
* CSV: the `uid`/`id` column; else the `url` column (LinkedIn's profile URL);
  else a digest of name + first e-mail.
Digest uids change when those fields are edited; that is the price of a file
without ids, and it is why the UID / URL wins when present.

Bytes that are not UTF-8 never stop a read: the line is decoded with U+FFFD in
place of the bad bytes and reported as a problem, and its contact still imports.

`X-SYNCD-*` vCard properties become `Contact.overrides` keyed by their lower-case
name without `x-` (`X-SYNCD-CADENCE` -> `syncd-cadence`, `X-SYNCD-TIMEZONE` ->
`syncd-timezone`), the keys the planner reads.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
import re
import zoneinfo
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vobject
from vobject.base import parseLine
from vobject.icalendar import stringToTextValues
from vobject.vcard import NAME_ORDER, Name

from syncd.errors import RemoteError, UserError
from syncd.model import Contact, ContactBatch, SourceProblem
from syncd.settings import SourceConfig

__all__ = [
    "CardError",
    "FileSource",
    "parse_csv",
    "parse_vcards",
    "read_contacts",
    "vcard_to_contact",
]

VCARD_SUFFIXES = frozenset({".vcf", ".vcard"})
CSV_SUFFIXES = frozenset({".csv", ".txt"})

# Properties we never use that carry large (and often broken) binary data: a
# photo with bad base64 makes vobject reject the whole card, so drop them first.
_BINARY_PROPS = frozenset({"PHOTO", "LOGO", "SOUND", "KEY"})
_PROP_NAME = re.compile(r"(?:[A-Za-z0-9-]+\.)?([A-Za-z0-9-]+)")
_VOBJECT_LINE = re.compile(r"^At line \d+:\s*")
_OVERRIDE_PREFIX = "X-SYNCD-"


class CardError(ValueError):
    """One vCard cannot become a contact; the message says why (for a problem)."""


# --------------------------------------------------------------------------- source


class FileSource:
    """`type: file` contact source (`.vcf` or `.csv`).

    `read(cursor)` returns every contact with `full=True` whenever the file's
    content changed, and lets the core diff by fingerprint. The cursor is
    `"{mtime_ns}:{size}:{sha256}"`; when the content hash equals the cursor's,
    nothing is parsed and an empty `full=False` batch comes back. The hash (not
    the mtime) decides, so a same-size rewrite within one mtime tick is not
    missed and a `touch` costs no parse.
    """

    kind = "file"

    def __init__(self, cfg: SourceConfig) -> None:
        if cfg.path is None:
            raise UserError(
                f"contact source {cfg.name!r} (type: file) has no `path`",
                hint="set `path:` to a .vcf or .csv file",
            )
        self.name = cfg.name
        self.path = cfg.path.expanduser()

    def read(self, cursor: str | None) -> ContactBatch:
        data, st = _read_file(self.path)
        digest = hashlib.sha256(data).hexdigest()
        new_cursor = f"{st.st_mtime_ns}:{st.st_size}:{digest}"
        if cursor is not None and cursor.rsplit(":", 1)[-1] == digest:
            return ContactBatch(contacts=(), cursor=new_cursor, full=False)
        contacts, problems = parse_bytes(data, self.path, self.name)
        return ContactBatch(
            contacts=tuple(contacts), cursor=new_cursor, full=True, problems=tuple(problems)
        )

    def close(self) -> None:
        """Nothing to release: the file is opened and closed on each read."""


def read_contacts(path: Path, source_name: str) -> tuple[list[Contact], list[SourceProblem]]:
    """Parse the file at `path` (format by suffix, else sniffed). Raises
    `RemoteError(retryable=False)` when the file cannot be read at all."""
    data, _ = _read_file(path)
    return parse_bytes(data, path, source_name)


def parse_bytes(
    data: bytes, path: Path, source_name: str
) -> tuple[list[Contact], list[SourceProblem]]:
    """Parse file content; `path` names the format (suffix) and the problems."""
    lines, problems = _decode_lines(data, str(path))
    if _is_vcard(path, lines):
        contacts, more = parse_vcards(lines, str(path), source_name)
    else:
        contacts, more = parse_csv(lines, str(path), source_name)
    return contacts, problems + more


def _read_file(path: Path) -> tuple[bytes, os.stat_result]:
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            return f.read(), st
    except FileNotFoundError:
        raise RemoteError(
            f"contact file {path} does not exist",
            hint="check `path:` in the config, or export the file again",
            retryable=False,
        ) from None
    except OSError as e:
        raise RemoteError(
            f"cannot read contact file {path}: {e.strerror or e}", retryable=False
        ) from None


def _decode_lines(data: bytes, where: str) -> tuple[list[str], list[SourceProblem]]:
    """Lines without their line ending; bad UTF-8 is replaced and reported per line."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return _split_lines(text), []
    lines: list[str] = []
    problems: list[SourceProblem] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.decode("utf-8", errors="replace")
            problems.append(
                SourceProblem(
                    f"{where}:{number}",
                    f"not valid UTF-8 (byte {e.object[e.start]:#04x} at column {e.start + 1});"
                    " undecodable bytes replaced with U+FFFD",
                )
            )
        lines.append(line.removesuffix("\r"))
    if lines and lines[-1] == "":
        lines.pop()
    return lines, problems


def _split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _is_vcard(path: Path, lines: Sequence[str]) -> bool:
    suffix = path.suffix.lower()
    if suffix in VCARD_SUFFIXES:
        return True
    if suffix in CSV_SUFFIXES:
        return False
    for line in lines:
        if line.strip():
            return line.strip().upper() == "BEGIN:VCARD"
    return False


# --------------------------------------------------------------------------- vCard


def parse_vcards(
    lines: Sequence[str], where: str, source_name: str
) -> tuple[list[Contact], list[SourceProblem]]:
    """Contacts from the lines of a vCard file; `where` is the path for problems."""
    contacts: list[Contact] = []
    problems: list[SourceProblem] = []
    first_line: dict[str, int] = {}
    for start, card_lines, error in _split_cards(lines):
        at = f"{where}:{start}"
        if error:
            problems.append(SourceProblem(at, error))
            continue
        try:
            contact = vcard_to_contact(_card_text(card_lines), source_name)
        except CardError as e:
            problems.append(SourceProblem(at, str(e)))
            continue
        if contact.uid in first_line:
            problems.append(
                SourceProblem(
                    at,
                    f"duplicate UID {contact.uid!r} (first at line {first_line[contact.uid]});"
                    " card skipped",
                )
            )
            continue
        first_line[contact.uid] = start
        contacts.append(contact)
    return contacts, problems


def _split_cards(lines: Sequence[str]) -> Iterator[tuple[int, list[str], str]]:
    """(line of BEGIN:VCARD, the card's lines, error or "") for each card.

    Done by hand rather than by vobject.readComponents so that a broken card
    costs only itself and is reported at its own line. A BEGIN:VCARD inside an
    open card means the open one lost its END:VCARD (a truncated card is far
    more common than vCard 2.1's nested AGENT cards, which we do not support).
    """
    current: list[str] | None = None
    start = 0
    stray_from = 0
    for number, line in enumerate(lines, start=1):
        # Continuation lines start with whitespace (RFC 6350 §3.2), so only
        # trailing whitespace is stripped: " BEGIN:VCARD" is folded text.
        key = line.rstrip().upper()
        if key == "BEGIN:VCARD":
            if current is not None:
                yield start, [], "card has no END:VCARD before the next BEGIN:VCARD; skipped"
            current, start, stray_from = [line], number, 0
        elif key == "END:VCARD":
            if current is None:
                yield number, [], "END:VCARD without BEGIN:VCARD; ignored"
            else:
                current.append(line)
                yield start, current, ""
                current = None
        elif current is not None:
            current.append(line)
        elif line.strip() and not stray_from:
            stray_from = number
            yield number, [], "text outside BEGIN:VCARD … END:VCARD; ignored"
    if current is not None:
        yield start, [], "card has no END:VCARD (the file ends inside it); skipped"


def _card_text(lines: Sequence[str]) -> str:
    """The card as text for vobject, minus binary properties, with vCard 2.1
    quoted-printable soft line breaks ("=" at the end of a line) joined."""
    logical: list[list[str]] = []
    for line in lines:
        if logical and line[:1] in (" ", "\t"):
            logical[-1].append(line)  # folded continuation (RFC 6350 §3.2)
        elif logical and _qp_continues(logical[-1]):
            logical[-1][-1] = logical[-1][-1][:-1] + line
        else:
            logical.append([line])
    out: list[str] = []
    for prop in logical:
        m = _PROP_NAME.match(prop[0])
        if m and m.group(1).upper() in _BINARY_PROPS:
            continue
        out.extend(prop)
    return "\r\n".join(out) + "\r\n"


def _qp_continues(prop: list[str]) -> bool:
    head = prop[0].split(":", 1)[0].upper()
    return "QUOTED-PRINTABLE" in head and prop[-1].endswith("=")


def vcard_to_contact(text: str, source_name: str) -> Contact:
    """One vCard (3.0/4.0/2.1 text) as a Contact. Raises `CardError`.

    Used by the CardDAV source too, so both map fields the same way.
    """
    contents = _plain_card(text)
    if contents is None:
        try:
            card = vobject.readOne(text, validate=False)
        except Exception as e:  # vobject raises ParseError, binascii.Error, UnicodeError, …
            reason = _VOBJECT_LINE.sub("", str(e)) or type(e).__name__
            raise CardError(f"not a valid vCard: {reason}") from None
        if getattr(card, "name", "").upper() != "VCARD":
            raise CardError("not a vCard")
        contents = card.contents
    return _contact_from(contents, source_name)


def _contact_from(contents: dict[str, list[Any]], source_name: str) -> Contact:
    name = _full_name(contents)
    if not name:
        raise CardError("card has no name (FN and N are empty)")
    emails = _dedupe(_strip_scheme(str(p.value), "mailto:") for p in _by_pref(contents, "email"))
    phones = _dedupe(_strip_scheme(str(p.value), "tel:") for p in _by_pref(contents, "tel"))
    company = next((s for p in contents.get("org", []) for s in _texts(p.value)), "")
    title = next((s for p in contents.get("title", []) for s in _texts(p.value)), "")
    labels = _dedupe(s for p in contents.get("categories", []) for s in _texts(p.value))
    note = "\n".join(s for p in contents.get("note", []) for s in _texts(p.value))
    timezone = next((z for p in contents.get("tz", []) if (z := _tz_name(p))), "")
    overrides: dict[str, str] = {}
    for key, props in contents.items():
        if key.upper().startswith(_OVERRIDE_PREFIX):
            value = next((s for p in props for s in _texts(p.value)), "")
            if value:
                # X-SYNCD-CADENCE -> "syncd-cadence": the key the planner reads,
                # and the name Google/Outlook custom fields use.
                overrides[key.lower().removeprefix("x-")] = value
    uid = next((s for p in contents.get("uid", []) for s in _texts(p.value)), "")
    if not uid:
        uid = digest_uid(name, emails[0] if emails else "", phones[0] if phones else "")
    return Contact(
        source=source_name,
        uid=uid,
        name=name,
        emails=emails,
        phones=phones,
        company=company,
        title=title,
        timezone=timezone,
        labels=labels,
        note=note,
        overrides=tuple(sorted(overrides.items())),
    )


# ---------------------------------------------------------------- plain vCards, fast
#
# vobject spends ~0.9 ms on a card, most of it building objects for every
# line: 9 s for a 10,000-contact export. `_plain_card` reads the cards almost
# every exporter writes (vCard 3.0/4.0 without quoted-printable or base64)
# with vobject's own line parser and unescaping functions, and produces the
# `contents` vobject would (same keys, values and params for every property
# `_contact_from` reads), in a tenth of the time. Anything else (a line
# vobject cannot parse, an ENCODING or bare vCard 2.1 parameter, a nested
# component, text after END) returns None and the card goes through vobject,
# errors and all. tests/test_vcard_fastpath.py compares both on generated cards.

_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # vobject's line ends, in its order
# Properties `_contact_from` reads (lower case, as vobject keys `contents`).
_READ = frozenset({"fn", "n", "email", "tel", "org", "title", "categories", "note", "tz",
                   "uid"})


class _Prop:
    """What `_contact_from` reads of a vobject ContentLine."""

    __slots__ = ("params", "value")

    def __init__(self, value: Any, params: dict[str, list[str]]) -> None:
        self.value = value
        self.params = params


def _split_text(s: str, sep: str = ",", chars: str | None = None) -> list[str]:
    """vobject's `stringToTextValues(s, sep, chars)`; text without a backslash
    is split directly (its state machine drops only a trailing empty item)."""
    if "\\" in s:
        out: list[str] = stringToTextValues(s, listSeparator=sep, charList=chars)
        return out
    parts = s.split(sep)
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    return parts


def _split_fields(s: str) -> list[Any]:
    """vobject.vcard.splitFields: `;`-separated fields, each a string or, when
    it holds unescaped commas, a list."""
    out: list[Any] = []
    for field in _split_text(s, ";", ";"):
        values = _split_text(field)
        out.append(values[0] if len(values) == 1 else values)
    return out


def _plain_card(text: str) -> dict[str, list[Any]] | None:
    """The `contents` vobject.readOne would give for a plain card, or None
    when the card needs vobject itself (see above)."""
    logical: list[str] = []
    for line in _LINE_BREAK.split(text):
        if line[:1] in (" ", "\t") and logical:
            logical[-1] += line[1:]  # unfolding: the line break and one blank go
        else:
            logical.append(line)
    lines = [line for line in logical if line]
    if len(lines) < 2:
        return None
    parsed = []
    for line in lines:
        try:
            name, params, value, _group = parseLine(line)
        except Exception:
            return None  # vobject reports it
        parsed.append((name.upper(), params, value))
    (first, _p, begin), (last, _q, end) = parsed[0], parsed[-1]
    if first != "BEGIN" or last != "END" or begin.upper() != "VCARD" or end.upper() != "VCARD":
        return None
    contents: dict[str, list[Any]] = {}
    for name, raw, value in parsed[1:-1]:
        if name in ("BEGIN", "END", "PROFILE"):
            return None
        table: dict[str, list[str]] = {}
        for param in raw:
            if len(param) == 1:
                return None  # a bare vCard 2.1 parameter (`TEL;CELL:`, QUOTED-PRINTABLE)
            table.setdefault(param[0].upper(), []).extend(param[1:])
        if "ENCODING" in table:
            return None  # base64 or quoted-printable: vobject decodes those
        key = name.lower()
        if key not in _READ and not name.startswith(_OVERRIDE_PREFIX):
            continue  # never read; vobject's decoding of it cannot fail
        decoded: Any
        if key == "n":  # NameBehavior
            decoded = Name(**dict(zip(NAME_ORDER, _split_fields(value), strict=False)))
        elif key == "org":  # OrgBehavior
            decoded = _split_fields(value)
        elif key == "categories":  # MultiTextBehavior
            decoded = _split_text(value)
        else:  # (VCard)TextBehavior: unescaped, the first of a comma list
            decoded = _split_text(value)[0]
        contents.setdefault(key, []).append(_Prop(decoded, table))
    return contents


def _texts(value: object) -> list[str]:
    """Non-empty stripped strings of a property value (ORG/CATEGORIES are lists)."""
    items = value if isinstance(value, list | tuple) else [value]
    return [s for s in (str(v).strip() for v in items if v is not None) if s]


def _full_name(contents: dict[str, list[Any]]) -> str:
    for p in contents.get("fn", []):
        if s := " ".join(_texts(p.value)):
            return s
    for p in contents.get("n", []):
        n = p.value
        parts = [getattr(n, a, "") for a in ("prefix", "given", "additional", "family", "suffix")]
        if s := " ".join(t for part in parts for t in _texts(part)):
            return s
    return ""


def _by_pref(contents: dict[str, list[Any]], key: str) -> list[Any]:
    """Properties in preference order: vCard 4 `PREF=1..100` (RFC 6350 §5.3),
    vCard 3 `TYPE=pref` (RFC 2426 §3.3.1-2); unmarked ones keep file order."""

    def rank(p: Any) -> int:
        params: dict[str, list[str]] = p.params
        for v in params.get("PREF", []):
            if v.strip().isdigit():
                return int(v)
        types = {t.strip().lower() for v in params.get("TYPE", []) for t in v.split(",")}
        return 1 if "pref" in types else 101

    return sorted(contents.get(key, []), key=rank)


def _strip_scheme(value: str, scheme: str) -> str:
    value = value.strip()
    return value[len(scheme) :].strip() if value.lower().startswith(scheme) else value


def _dedupe(values: Iterable[str]) -> tuple[str, ...]:
    """Non-empty values in order, without case-insensitive repeats."""
    seen: set[str] = set()
    out: list[str] = []
    for v in values:
        if v and v.casefold() not in seen:
            seen.add(v.casefold())
            out.append(v)
    return tuple(out)


def _tz_name(prop: Any) -> str:
    """An IANA zone from TZ, else "". vCard 4 defaults TZ to text (RFC 6350
    §6.5.1); vCard 3 to utc-offset (RFC 2426 §3.4.1) but clients also write
    `TZ;VALUE=text:`. A fixed offset is ignored: it cannot say which zone (and
    so which DST rules) the person lives by, and the core then falls back to
    rules or the phone number."""
    params: dict[str, list[str]] = prop.params
    if any(v.lower() not in ("text", "") for v in params.get("VALUE", [])):
        return ""
    return valid_zone(str(prop.value).strip())


@functools.lru_cache(maxsize=1024)
def valid_zone(name: str) -> str:
    """`name` if it is an IANA zone this system knows, else ""."""
    # Names without "/" are offsets ("-05:00") or abbreviations: zoneinfo
    # knows "EST" and "MST", but as fixed offsets without DST, which would
    # put a New Yorker an hour off all summer. Only UTC/GMT pass.
    if not name or ("/" not in name and name.upper() not in ("UTC", "GMT")):
        return ""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return ""
    return name


def digest_uid(*parts: str) -> str:
    """A stable id for an entry without one: case- and space-insensitive."""
    norm = "\x1f".join(" ".join(p.split()).casefold() for p in parts)
    return "sha256:" + hashlib.sha256(norm.encode()).hexdigest()[:24]


# --------------------------------------------------------------------------- CSV


@dataclass(frozen=True)
class _Columns:
    """Header index per field; lists where several columns may feed one field."""

    width: int
    name: list[int]
    first: list[int]
    last: list[int]
    email: list[int]
    phone: list[int]
    company: list[int]
    title: list[int]
    timezone: list[int]
    labels: list[int]
    note: list[int]
    uid: list[int]
    url: list[int]
    cadence: list[int]


_HEADER_PATTERNS: dict[str, re.Pattern[str]] = {
    key: re.compile(pattern)
    for key, pattern in {
        "name": r"name|full name|display name|fn",
        "first": r"first name|firstname|given name|first",
        "last": r"last name|lastname|family name|surname|last",
        "email": r"e-?mail(?: address)?(?: \d+)?(?: address)?(?: - value)?",
        "phone": r"(?:(?:mobile|cell|work|business|home|primary|other) )?"
        r"(?:phone|telephone|tel)(?: number)?(?: \d+)?(?: - value)?|mobile",
        "company": r"company|company name|organi[sz]ation(?: \d+ - name)?|org",
        "title": r"title|job title|position|organi[sz]ation \d+ - title",
        "timezone": r"time ?zone|tz",
        "labels": r"labels?|tags?|categories|groups?",
        "note": r"notes?",
        "uid": r"uid|id",
        "url": r"url|profile url|linkedin url",
        "cadence": r"cadence",
    }.items()
}


def _columns(header: Sequence[str]) -> _Columns | None:
    found: dict[str, list[int]] = {key: [] for key in _HEADER_PATTERNS}
    for i, raw in enumerate(header):
        h = " ".join(raw.replace("_", " ").split()).lower()
        for key, pattern in _HEADER_PATTERNS.items():
            if pattern.fullmatch(h):
                found[key].append(i)
                break
    has_name = found["name"] or found["first"] or found["last"]
    known = sum(1 for v in found.values() if v)
    if not has_name or known < 2:
        return None
    return _Columns(width=len(header), **found)


def parse_csv(
    lines: Sequence[str], where: str, source_name: str
) -> tuple[list[Contact], list[SourceProblem]]:
    """Contacts from the lines of a CSV file (see the module docstring).

    Rows with the wrong number of fields or no name are skipped with a problem
    at their first line. Raises `RemoteError` when no header row is found (the
    file cannot be read at all, and an empty `full=True` batch would tell the
    core every contact was removed).
    """
    contacts: list[Contact] = []
    problems: list[SourceProblem] = []
    first_line: dict[str, int] = {}
    cols: _Columns | None = None
    reader = csv.reader(line + "\n" for line in lines)
    number = 1  # first line of the record about to be read
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # e.g. a NUL byte: skip that record, keep going
            problems.append(SourceProblem(f"{where}:{number}", f"unreadable CSV: {e}"))
            number = reader.line_num + 1
            continue
        start, number = number, reader.line_num + 1
        if not any(field.strip() for field in row):
            continue
        if cols is None:
            cols = _columns(row)  # lines before the header (LinkedIn's "Notes:") are skipped
            continue
        at = f"{where}:{start}"
        try:
            contact, warning = _row_to_contact(row, cols, source_name)
        except CardError as e:
            problems.append(SourceProblem(at, str(e)))
            continue
        if warning:
            problems.append(SourceProblem(at, warning))
        if contact.uid in first_line:
            problems.append(
                SourceProblem(
                    at, f"duplicate of the row at line {first_line[contact.uid]}; row skipped"
                )
            )
            continue
        first_line[contact.uid] = start
        contacts.append(contact)
    if cols is None:
        raise RemoteError(
            f"contact file {where} has no CSV header row with a name column",
            hint="the first row must name the columns, e.g. name,email,phone,company",
            retryable=False,
        )
    return contacts, problems


def _row_to_contact(row: Sequence[str], cols: _Columns, source_name: str) -> tuple[Contact, str]:
    """The row's contact and a warning ("" if none). Raises `CardError`."""
    if len(row) != cols.width and not (
        len(row) > cols.width and not any(f.strip() for f in row[cols.width :])
    ):
        raise CardError(f"expected {cols.width} fields, found {len(row)}; row skipped")

    def cell(idx: list[int]) -> str:
        return next((v for i in idx if (v := " ".join(row[i].split()))), "")

    def many(idx: list[int]) -> tuple[str, ...]:
        return _dedupe(s.strip() for i in idx for s in row[i].split(";"))

    name = cell(cols.name) or " ".join(p for p in (cell(cols.first), cell(cols.last)) if p)
    if not name:
        raise CardError("row has no name; skipped")
    emails = many(cols.email)
    phones = many(cols.phone)
    uid = cell(cols.uid) or cell(cols.url).rstrip("/")
    if not uid:
        uid = digest_uid(name, emails[0] if emails else "")
    tz_text = cell(cols.timezone)
    timezone = valid_zone(tz_text) if tz_text else ""
    warning = f"unknown time zone {tz_text!r} ignored" if tz_text and not timezone else ""
    cadence = cell(cols.cadence)
    contact = Contact(
        source=source_name,
        uid=uid,
        name=name,
        emails=emails,
        phones=phones,
        company=cell(cols.company),
        title=cell(cols.title),
        timezone=timezone,
        labels=many(cols.labels),
        note="\n".join(row[i].strip() for i in cols.note if row[i].strip()),
        overrides=(("syncd-cadence", cadence),) if cadence else (),
    )
    return contact, warning
