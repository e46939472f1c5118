"""syncd.config: loading, validation messages, durations, defaults, secrets."""

from __future__ import annotations

import re
import sys
import textwrap
from datetime import time
from pathlib import Path

import pytest

from syncd import config as config_module
from syncd.config import (
    CALENDAR_KEYS,
    DEFAULT_CADENCES,
    SOURCE_KEYS,
    default_path,
    default_state_dir,
    load,
    load_text,
    parse_duration,
    resolve_secret,
    system_timezone,
)
from syncd.errors import ConfigError, UserError
from syncd.settings import Config, Duration, Rule, RuleMatch, Secret, Unit
from syncd.starter import STARTER_CONFIG, write_starter

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "example.yaml"

# The smallest valid config: one source, one calendar.
MINIMAL = """\
contacts:
  - {name: cards, type: file, path: people.vcf}
calendar: {type: caldav, url: "https://dav.example.com/"}
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def with_minimal(extra: str) -> str:
    """MINIMAL plus more top-level keys, written indented in the test."""
    return MINIMAL + textwrap.dedent(extra)


def load_ok(tmp_path: Path, text: str) -> Config:
    return load(write(tmp_path, text))


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    return caught.value.problems


# --------------------------------------------------------------------------
# The shipped configs


def test_example_loads() -> None:
    cfg = load(EXAMPLE)
    assert cfg.timezone == "America/New_York"
    assert [s.name for s in cfg.contacts] == ["linkedin", "cards", "google", "work"]
    assert [s.type for s in cfg.contacts] == ["file", "carddav", "google", "outlook"]
    assert cfg.calendar is not None and cfg.calendar.type == "caldav"
    assert cfg.calendar.password == Secret(env="CALDAV_PASSWORD")
    assert cfg.cadence("pursue").then == "keep_in_touch"
    assert cfg.cadence("recruiter").max_attempts == 6
    assert cfg.holidays == "US"
    assert cfg.caller_id.prefix == "*67"
    assert cfg.news[0].date == "2026-11-02"


def test_example_documents_every_key() -> None:
    """Each key the validator accepts appears in the reference, commented or not."""
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = set(config_module._TOP_KEYS) | set(config_module._CADENCE_KEYS)
    keys |= {k for ks in SOURCE_KEYS.values() for k in ks}
    keys |= {k for ks in CALENDAR_KEYS.values() for k in ks} | set(config_module._CALENDAR_COMMON)
    keys |= {"name", "type", "match", "cadence", "label", "source", "company", "timezone"}
    keys |= {"days", "start", "end", "title_contains", "thank_you_within"}
    keys |= {"hide_after_attempts", "prefix", "date", "text"}
    missing = sorted(k for k in keys if not re.search(rf"\b{k}:", text))
    assert missing == []


def test_starter_text_loads(tmp_path: Path) -> None:
    cfg = load_text(STARTER_CONFIG, tmp_path / "config.yaml")
    assert cfg.calendar is not None and cfg.calendar.type == "caldav"
    assert [s.type for s in cfg.contacts] == ["file"]
    assert cfg.cadences == DEFAULT_CADENCES


def test_write_starter_creates_folders_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "syncd" / "config.yaml"
    write_starter(path, force=False)
    assert path.read_text(encoding="utf-8") == STARTER_CONFIG
    assert load(path).contacts[0].name == "linkedin"


def test_write_starter_refuses_to_overwrite(tmp_path: Path) -> None:
    path = write(tmp_path, "mine: true\n")
    with pytest.raises(UserError) as caught:
        write_starter(path, force=False)
    assert "already exists" in caught.value.message
    assert "--force" in caught.value.hint
    assert path.read_text(encoding="utf-8") == "mine: true\n"
    write_starter(path, force=True)
    assert path.read_text(encoding="utf-8") == STARTER_CONFIG


# --------------------------------------------------------------------------
# Messages: file:line: key: message


def test_unknown_key_with_did_you_mean(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        contacts:
          - {name: cards, type: file, path: people.vcf}
          - name: dav
            type: carddav
            url: https://dav.example.com/
            pasword_env: DAV_PASSWORD
        calendar: {type: caldav, url: "https://dav.example.com/"}
        """,
    )
    file = tmp_path / "config.yaml"
    assert found == [
        f"{file}:6: contacts[1].pasword_env: unknown key (did you mean 'password_env'?)"
    ]


def test_unknown_key_without_close_match_lists_known_keys(tmp_path: Path) -> None:
    [found] = problems(tmp_path, MINIMAL + "caller_id: {zzz: 1}\n")
    assert found.endswith("caller_id.zzz: unknown key (known keys: hide_after_attempts, prefix)")


def test_key_of_another_type(tmp_path: Path) -> None:
    [found] = problems(
        tmp_path,
        """\
        contacts:
          - {name: cards, type: file, path: people.vcf, labels: [x]}
        calendar: {type: caldav, url: "https://dav.example.com/"}
        """,
    )
    assert found.endswith(":2: contacts[0].labels: not used by type 'file' (only by: google)")


def test_missing_required_keys_name_the_mapping_line(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    found = problems(
        tmp_path,
        """\
        contacts:
          - {type: carddav}
        calendar:
          type: caldav
        """,
    )
    assert found == [
        f"{file}:2: contacts[0].name: required: a short unique name, e.g. google or linkedin",
        f"{file}:2: contacts[0].url: required for type 'carddav'",
        f"{file}:3: calendar.url: required for type 'caldav'",
    ]


def test_empty_file_needs_contacts_and_calendar(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    assert problems(tmp_path, "# nothing yet\n") == [
        f"{file}:1: contacts: required: list one or more contact sources",
        f"{file}:1: calendar: required: where follow-ups are written "
        "(type: caldav, google or graph)",
    ]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    assert problems(tmp_path, "- a\n- b\n") == [
        f"{file}:1: (top level): expected a mapping (key: value), got a list"
    ]


def test_many_problems_reported_at_once_in_file_order(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        timezone: Mars/Olympus
        poll_interval: 2
        daily_limit: 0
        working_hours: {days: [mon, fry], start: "09:00", end: "08:00"}
        contacts:
          - {name: cards, type: file, path: people.txt}
          - {name: cards, type: gogle}
        calendar: {type: caldav, url: "https://dav.example.com/", colour: red}
        cadences:
          pursue: {channel: phone, every: 2d}
        rules:
          - {match: {source: card}, cadence: pursue}
        """,
    )
    lines = [int(p.split(":")[1]) for p in found]
    assert lines == sorted(lines)
    assert len(found) == 11
    text = "\n".join(found)
    for expected in [
        ":1: timezone: unknown time zone 'Mars/Olympus'",
        ":2: poll_interval: '2' needs a unit",
        ":3: daily_limit: must be at least 1",
        ":4: working_hours.days[1]: 'fry' is not a day; use mon, tue, wed, thu, fri, sat, sun"
        " (did you mean 'fri'?)",
        ":4: working_hours.end: must be later than start (09:00)",
        ":6: contacts[0].path: must be a .vcf or .csv file",
        ":7: contacts[1].name: 'cards' is already the name of the source at line 6",
        ":7: contacts[1].type: 'gogle' is not one of file, carddav, google, outlook"
        " (did you mean 'google'?)",
        ":8: calendar.colour: unknown key",
        ":10: cadences.pursue.channel: 'phone' is not one of call, email, message, meeting",
        ":12: rules[0].match.source: unknown contact source 'card' (did you mean 'cards'?)",
    ]:
        assert expected in text


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    assert problems(tmp_path, 'timezone: UTC\nholidays: "US\n') == [
        f"{file}:3: YAML syntax error at column 1: found unexpected end of stream"
    ]


@pytest.mark.parametrize(
    ("text", "tip"),
    [
        (
            "caller_id: {prefix: *67}\n",
            'a value starting with * must be quoted, e.g. prefix: "*67"',
        ),
        ("contacts:\n\t- {}\n", "indent with spaces, not tabs"),
    ],
)
def test_yaml_errors_people_make_get_a_tip(tmp_path: Path, text: str, tip: str) -> None:
    [found] = problems(tmp_path, text)
    assert found.endswith(tip)
    assert found.startswith(f"{tmp_path / 'config.yaml'}:")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "nope.yaml")
    assert caught.value.problems == [f"{tmp_path / 'nope.yaml'}: no such file"]
    assert "syncd init" in caught.value.hint


def test_directory_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_bytes(b"timezone: UTC\nholidays: \xff\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.problems == [f"{path}:2: not UTF-8 text (byte 24)"]


def test_duplicate_keys(tmp_path: Path) -> None:
    [found] = problems(tmp_path, MINIMAL + "daily_limit: 3\ndaily_limit: 4\n")
    assert found.endswith(":5: daily_limit: duplicate key (first at line 4)")


def test_reserved_and_odd_source_names(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        contacts:
          - {name: calendar, type: file, path: a.vcf}
          - {name: ../x, type: file, path: b.vcf}
        calendar: {type: caldav, url: "https://dav.example.com/"}
        """,
    )
    assert "reserved" in found[0]
    assert found[1].endswith("contacts[1].name: use letters, digits, '-', '_' and '.' only")


# --------------------------------------------------------------------------
# Cadences and rules


def test_then_must_name_a_defined_cadence(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    found = problems(
        tmp_path,
        with_minimal(
            """\
        cadences:
          pursue: {every: 2 business days, until: reached, then: keep_intouch}
          keep_in_touch: {channel: email, every: 4 weeks}
        """
        ),
    )
    assert found == [
        f"{file}:5: cadences.pursue.then: unknown cadence 'keep_intouch' "
        "(did you mean 'keep_in_touch'?)"
    ]


def test_then_needs_an_until(tmp_path: Path) -> None:
    [found] = problems(
        tmp_path, MINIMAL + "cadences:\n  a: {every: 1w, then: b}\n  b: {every: 2w}\n"
    )
    assert found.endswith(
        "cadences.a.then: has no effect with until: never; set until: reached or replied"
    )


def test_cadence_needs_every(tmp_path: Path) -> None:
    [found] = problems(tmp_path, MINIMAL + "cadences:\n  a: {channel: email}\n")
    assert ":5: cadences.a.every: required: how often" in found


def test_rule_cadence_must_exist(tmp_path: Path) -> None:
    [found] = problems(tmp_path, MINIMAL + "rules:\n  - {cadence: chase}\n")
    assert found.endswith(
        ":5: rules[0].cadence: unknown cadence 'chase' (defined: pursue, keep_in_touch, long_haul)"
    )


def test_rules_and_their_match(tmp_path: Path) -> None:
    cfg = load_ok(
        tmp_path,
        with_minimal(
            """\
        rules:
          - {match: {label: VIP, company: Acme}, cadence: long_haul, timezone: Asia/Tokyo}
          - {cadence: keep_in_touch}
        """
        ),
    )
    assert cfg.rules == (
        Rule(RuleMatch(label="VIP", company="Acme"), "long_haul", "Asia/Tokyo"),
        Rule(RuleMatch(), "keep_in_touch"),
    )


# --------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2m", Duration(2, Unit.MINUTES)),
        ("30 min", Duration(30, Unit.MINUTES)),
        ("2h", Duration(2, Unit.HOURS)),
        ("1 hour", Duration(1, Unit.HOURS)),
        ("14d", Duration(14, Unit.DAYS)),
        ("1 day", Duration(1, Unit.DAYS)),
        ("2w", Duration(2, Unit.WEEKS)),
        ("4 weeks", Duration(4, Unit.WEEKS)),
        ("2 business days", Duration(2, Unit.BUSINESS_DAYS)),
        ("1 business day", Duration(1, Unit.BUSINESS_DAYS)),
        ("3 Business-Days", Duration(3, Unit.BUSINESS_DAYS)),
        ("1 month", Duration(1, Unit.MONTHS)),
        ("3 months", Duration(3, Unit.MONTHS)),
        ("6mo", Duration(6, Unit.MONTHS)),
        ("2 years", Duration(2, Unit.YEARS)),
        ("1y", Duration(1, Unit.YEARS)),
        ("  2   weeks ", Duration(2, Unit.WEEKS)),
    ],
)
def test_parse_duration(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2", "'2' needs a unit, e.g. 2m, 2h, 14d, 2w, 2 business days"),
        ("90s", "'90s' has an unknown unit 's'; use one of: 2m, 2h"),
        ("2 fortnights", "unknown unit 'fortnights'"),
        ("1.5h", "'1.5h' is not a duration; use a whole number and a unit"),
        ("weekly", "'weekly' is not a duration"),
        ("-2d", "is not a duration"),
        ("", "is not a duration"),
        ("0d", "'0d' must be longer than zero"),
    ],
)
def test_parse_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(text)


def test_duration_in_config_names_the_key(tmp_path: Path) -> None:
    [found] = problems(tmp_path, MINIMAL + "horizon: 14\n")
    assert found == (
        f"{tmp_path / 'config.yaml'}:4: horizon: '14' needs a unit, "
        "e.g. 2m, 2h, 14d, 2w, 2 business days, 4 weeks, 1 month, 2 years"
    )


def test_poll_interval_must_have_a_fixed_length(tmp_path: Path) -> None:
    [found] = problems(tmp_path, MINIMAL + "poll_interval: 1 month\n")
    assert "poll_interval: must have a fixed length" in found


# --------------------------------------------------------------------------
# Defaults


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    cfg = load_ok(tmp_path, MINIMAL)
    assert cfg.path == tmp_path / "config.yaml"
    assert cfg.state_dir == tmp_path / "xdg-state" / "syncd"
    assert cfg.poll_interval == Duration(2, Unit.MINUTES)
    assert cfg.horizon == Duration(14, Unit.DAYS)
    assert cfg.daily_limit == 12
    assert cfg.working_hours.days == frozenset(range(5))
    assert (cfg.working_hours.start, cfg.working_hours.end) == (time(8, 0), time(18, 30))
    assert cfg.holidays is None
    assert cfg.cadences == DEFAULT_CADENCES
    assert cfg.rules == (Rule(RuleMatch(), "pursue"),)
    assert cfg.interviews.title_contains == "Interview"
    assert cfg.interviews.thank_you_within == Duration(1, Unit.DAYS)
    assert (cfg.caller_id.hide_after_attempts, cfg.caller_id.prefix) == (3, "*67")
    assert cfg.calendar is not None and cfg.calendar.calendar == "Follow-ups"
    assert cfg.contacts[0].path == tmp_path / "people.vcf"
    assert cfg.contacts[0].line == 2


def test_default_cadences_match_spec() -> None:
    pursue, keep, long_haul = DEFAULT_CADENCES
    assert (pursue.channel, pursue.every, pursue.until, pursue.then) == (
        "call",
        Duration(2, Unit.BUSINESS_DAYS),
        "reached",
        "keep_in_touch",
    )
    assert (keep.channel, keep.every, keep.until) == ("email", Duration(4, Unit.WEEKS), "never")
    assert (long_haul.channel, long_haul.every, long_haul.stop_after) == (
        "call",
        Duration(1, Unit.MONTHS),
        Duration(2, Unit.YEARS),
    )


def test_default_rule_uses_first_cadence_without_pursue(tmp_path: Path) -> None:
    cfg = load_ok(tmp_path, MINIMAL + "cadences:\n  chase: {every: 3d}\n  nudge: {every: 1w}\n")
    assert cfg.rules == (Rule(RuleMatch(), "chase"),)


def test_system_timezone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TZ", raising=False)
    assert system_timezone(tmp_path) == "UTC"
    (tmp_path / "localtime").symlink_to("/usr/share/zoneinfo/Europe/Paris")
    assert system_timezone(tmp_path) == "Europe/Paris"
    (tmp_path / "timezone").write_text("Asia/Tokyo\n", encoding="utf-8")
    assert system_timezone(tmp_path) == "Asia/Tokyo"
    monkeypatch.setenv("TZ", ":America/Chicago")
    assert system_timezone(tmp_path) == "America/Chicago"
    monkeypatch.setenv("TZ", "EST5EDT,M3.2.0,M11.1.0")  # POSIX rule: not a zone name
    assert system_timezone(tmp_path) == "Asia/Tokyo"


def test_timezone_defaults_to_system_zone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Australia/Sydney")
    assert load_ok(tmp_path, MINIMAL).timezone == "Australia/Sydney"


def test_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_CONFIG", str(tmp_path / "explicit.yaml"))
    assert default_path() == tmp_path / "explicit.yaml"
    monkeypatch.delenv("SYNCD_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_path() == tmp_path / "xdg" / "syncd" / "config.yaml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / ".config" / "syncd" / "config.yaml"
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "syncd"


# --------------------------------------------------------------------------
# Paths and YAML 1.1 traps


def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = write(conf_dir, MINIMAL + "state_dir: ../state\n")
    cfg = load(path)
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.contacts[0].path == conf_dir / "people.vcf"
    home = load_ok(conf_dir, MINIMAL + "state_dir: ~/syncd-state\n")
    assert home.state_dir == tmp_path / "home" / "syncd-state"


def test_yaml_11_values_stay_as_typed(tmp_path: Path) -> None:
    # Unquoted, PyYAML would make NO a boolean and 8:30 the integer 510.
    cfg = load_ok(
        tmp_path, MINIMAL + "holidays: NO\nworking_hours: {start: 8:30, end: 17:00, days: [Sat]}\n"
    )
    assert cfg.holidays == "NO"
    assert cfg.working_hours == type(cfg.working_hours)(frozenset({5}), time(8, 30), time(17, 0))


def test_merge_keys_and_overrides(tmp_path: Path) -> None:
    cfg = load_ok(
        tmp_path,
        with_minimal(
            """\
        cadences:
          base: &base {channel: email, every: 1w}
          slower: {<<: *base, every: 2w}
        """
        ),
    )
    assert cfg.cadence("slower").channel == "email"
    assert cfg.cadence("slower").every == Duration(2, Unit.WEEKS)


def test_merged_mapping_read_twice_through_an_alias(tmp_path: Path) -> None:
    cfg = load_ok(
        tmp_path,
        with_minimal(
            """\
            cadences:
              base: &base {channel: email, every: 1w}
              slower: &slower {<<: *base, every: 2w}
              same: *slower
            """
        ),
    )
    assert cfg.cadence("same").every == Duration(2, Unit.WEEKS)


def test_connection_overrides(tmp_path: Path) -> None:
    cfg = load_ok(
        tmp_path,
        """\
        contacts:
          - name: work
            type: outlook
            client_id: abc
            graph_endpoint: http://127.0.0.1:8080
            authority: http://127.0.0.1:8081/tenant
            token_cache: msal.json
            timeout: 2.5
          - {name: g, type: google, api_endpoint: "http://127.0.0.1:9/", token_file: g.json}
        calendar:
          type: graph
          client_id: abc
          ca_bundle: /etc/ssl/ca.pem
        """,
    )
    work, google = cfg.contacts
    assert work.connection.graph_endpoint == "http://127.0.0.1:8080"
    assert work.connection.token_cache == tmp_path / "msal.json"
    assert work.connection.timeout == 2.5
    assert google.connection.token_file == tmp_path / "g.json"
    assert cfg.calendar is not None and cfg.calendar.connection.ca_bundle == Path("/etc/ssl/ca.pem")


# --------------------------------------------------------------------------
# Secrets


@pytest.mark.parametrize(
    ("key", "advice"),
    [
        ("password", "use password_env, password_file or password_command"),
        ("client_secret", "use client_secret_env, client_secret_file or client_secret_command"),
        ("token", "use password_env, password_file or password_command"),
        ("api_key", "use password_env, password_file or password_command"),
        ("apiKey", "use password_env, password_file or password_command"),
    ],
)
def test_secret_keys_are_rejected(tmp_path: Path, key: str, advice: str) -> None:
    [found] = problems(
        tmp_path,
        f"""\
        contacts:
          - {{name: dav, type: carddav, url: "https://dav.example.com/", {key}: hunter2}}
        calendar: {{type: caldav, url: "https://dav.example.com/"}}
        """,
    )
    assert found.startswith(f"{tmp_path / 'config.yaml'}:2: contacts[0].{key}: secrets never live")
    assert advice in found
    assert "hunter2" not in found


def test_secret_values_are_never_echoed(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        contacts:
          - {name: dav, type: carddav, url: "https://me:hunter2@dav.example.com/"}
          - {name: d2, type: carddav, url: "https://dav.example.com/", password_env: "hunter2!"}
          - {name: d3, type: carddav, url: "https://dav.example.com/", pasword: hunter2}
        calendar: {type: caldav, url: "https://dav.example.com/", password: hunter2}
        """,
    )
    assert len(found) == 4
    assert not any("hunter2" in p for p in found)
    assert "contacts[0].url: contains a password" in found[0]
    assert "contacts[1].password_env: must be the name of an environment variable" in found[1]


def test_only_one_secret_source(tmp_path: Path) -> None:
    [found] = problems(
        tmp_path,
        """\
        contacts: [{name: a, type: file, path: a.csv}]
        calendar:
          type: caldav
          url: https://dav.example.com/
          password_env: X
          password_command: pass show dav
        """,
    )
    assert found.endswith(
        ":6: calendar.password_command: give only one of password_env, password_file, "
        "password_command"
    )


def test_password_command_must_split(tmp_path: Path) -> None:
    [found] = problems(
        tmp_path, MINIMAL.replace('url: "https', 'password_command: "pass \'x", url: "https')
    )
    assert "calendar.password_command: cannot split into words: No closing quotation" in found


def test_resolve_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_TEST_PW", "s3cret")
    assert resolve_secret(Secret(env="SYNCD_TEST_PW"), "calendar.password") == "s3cret"
    monkeypatch.delenv("SYNCD_TEST_PW")
    with pytest.raises(UserError) as caught:
        resolve_secret(Secret(env="SYNCD_TEST_PW"), "calendar.password")
    assert caught.value.message == (
        "calendar.password_env: environment variable SYNCD_TEST_PW is not set"
    )
    monkeypatch.setenv("SYNCD_TEST_PW", "")
    with pytest.raises(UserError, match="SYNCD_TEST_PW is empty"):
        resolve_secret(Secret(env="SYNCD_TEST_PW"), "calendar.password")


def test_resolve_secret_from_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("s3cret\n", encoding="utf-8")
    assert resolve_secret(Secret(file=path), "contacts[dav].password") == "s3cret"
    path.write_bytes(b"s3cr\xffet")
    with pytest.raises(UserError) as caught:
        resolve_secret(Secret(file=path), "contacts[dav].password")
    assert caught.value.message == f"contacts[dav].password_file: {path} is not UTF-8 text"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="is empty"):
        resolve_secret(Secret(file=path), "x.password")
    with pytest.raises(UserError, match=r"x\.password_file: .* does not exist"):
        resolve_secret(Secret(file=tmp_path / "none"), "x.password")


def _py(code: str) -> str:
    return f"{sys.executable} -c {code!r}"


def test_resolve_secret_from_command() -> None:
    secret = Secret(command=_py("print('s3cret')"))
    assert resolve_secret(secret, "calendar.password") == "s3cret"


def test_resolve_secret_command_failure_hides_the_value() -> None:
    code = (
        "import sys; print('s3cret'); print('vault locked: s3cret', file=sys.stderr); sys.exit(3)"
    )
    with pytest.raises(UserError) as caught:
        resolve_secret(Secret(command=_py(code)), "calendar.password")
    message = caught.value.render()
    assert "s3cret" not in message
    assert "calendar.password_command:" in message
    assert "failed with exit status 3: vault locked: [redacted]" in message


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("/nonexistent/syncd-pw-helper", "command not found: /nonexistent/syncd-pw-helper"),
        (_py("pass"), "printed nothing"),
    ],
)
def test_resolve_secret_command_errors(command: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        resolve_secret(Secret(command=command), "calendar.password")


def test_resolve_secret_command_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "SECRET_COMMAND_TIMEOUT", 0.2)
    with pytest.raises(UserError, match=re.escape("did not finish within 0.2 s")):
        resolve_secret(Secret(command=_py("import time; time.sleep(5)")), "calendar.password")


def test_resolve_secret_not_configured() -> None:
    with pytest.raises(UserError) as caught:
        resolve_secret(Secret(), "calendar.password")
    assert caught.value.message == "calendar.password: no secret configured"
    assert "calendar.password_env" in caught.value.hint
