"""Load the YAML config and validate it into `syncd.settings` objects.

Validation walks PyYAML's node tree (`yaml.compose`) rather than loaded
Python values, for two reasons:

* every node carries its line, so each problem names file:line:key;
* scalars keep the text the user typed, which side-steps YAML 1.1 surprises
  (`holidays: NO` loads as False, `start: 8:30` as the integer 510).

Every problem is collected and raised at once as one `ConfigError`, so a
single `syncd config check` shows everything that is wrong.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import shlex
import subprocess
from collections.abc import Collection, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from syncd.durations import ACCEPTED_FORMS, parse_duration
from syncd.errors import ConfigError, UserError
from syncd.settings import (
    Cadence,
    CalendarConfig,
    CallerId,
    Config,
    Connection,
    Duration,
    Interviews,
    NewsItem,
    Rule,
    RuleMatch,
    Secret,
    SourceConfig,
    Unit,
    WorkingHours,
)

__all__ = [
    "ACCEPTED_FORMS",
    "DEFAULT_CADENCES",
    "default_path",
    "default_state_dir",
    "load",
    "load_text",
    "parse_duration",
    "resolve_secret",
    "system_timezone",
]

T = TypeVar("T")

SOURCE_TYPES = ("file", "carddav", "google", "outlook")
CALENDAR_TYPES = ("caldav", "google", "graph")
CHANNELS = ("call", "email", "message", "meeting")
UNTILS = ("reached", "replied", "never")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

PASSWORD_KEYS = ("password_env", "password_file", "password_command")
CLIENT_SECRET_KEYS = ("client_secret_env", "client_secret_file", "client_secret_command")
CONNECTION_KEYS = (
    "api_endpoint",
    "graph_endpoint",
    "authority",
    "ca_bundle",
    "token_file",
    "token_cache",
    "timeout",
)

# Keys each type accepts besides `name`/`type`. SPEC: the connection
# overrides are accepted by every remote source and by the calendar.
SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "file": ("path",),
    "carddav": ("url", "username", *PASSWORD_KEYS, *CONNECTION_KEYS),
    "google": ("labels", "client_id", *CLIENT_SECRET_KEYS, *CONNECTION_KEYS),
    "outlook": (
        "categories",
        "folders",
        "client_id",
        "tenant",
        *CLIENT_SECRET_KEYS,
        *CONNECTION_KEYS,
    ),
}
CALENDAR_KEYS: dict[str, tuple[str, ...]] = {
    "caldav": ("url", "username", *PASSWORD_KEYS),
    "google": ("client_id", *CLIENT_SECRET_KEYS),
    "graph": ("client_id", "tenant", *CLIENT_SECRET_KEYS),
}
_CALENDAR_COMMON = ("type", "calendar", "busy_calendars", *CONNECTION_KEYS)
_TOP_KEYS = (
    "timezone",
    "poll_interval",
    "horizon",
    "daily_limit",
    "working_hours",
    "holidays",
    "state_dir",
    "contacts",
    "calendar",
    "cadences",
    "rules",
    "interviews",
    "caller_id",
    "news",
)
_CADENCE_KEYS = ("channel", "every", "until", "then", "stop_after", "max_attempts")

# Key names that hold a secret itself. Compared after lower-casing and
# dropping `_`/`-`, so `api-key`, `apiKey` and `API_KEY` are all caught.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "passphrase",
        "secret",
        "clientsecret",
        "token",
        "accesstoken",
        "refreshtoken",
        "authtoken",
        "apitoken",
        "bearertoken",
        "apikey",
        "privatekey",
    }
)

DEFAULT_CADENCES: tuple[Cadence, ...] = (
    Cadence(
        "pursue",
        channel="call",
        every=Duration(2, Unit.BUSINESS_DAYS),
        until="reached",
        then="keep_in_touch",
    ),
    Cadence("keep_in_touch", channel="email", every=Duration(4, Unit.WEEKS)),
    Cadence(
        "long_haul",
        channel="call",
        every=Duration(1, Unit.MONTHS),
        stop_after=Duration(2, Unit.YEARS),
    ),
)

# Single source of truth for defaults: the dataclasses in settings.py.
_CONFIG_DEFAULTS = Config(path=Path(), timezone="UTC", state_dir=Path())
_SOURCE_DEFAULTS = SourceConfig(name="", type="file")
_CALENDAR_DEFAULTS = CalendarConfig(type="caldav")

# poll_interval is slept on, so it must have a fixed length in seconds.
_FIXED_UNITS = frozenset({Unit.MINUTES, Unit.HOURS, Unit.DAYS, Unit.WEEKS})

_NULL_TAG = "tag:yaml.org,2002:null"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAP_TAG = "tag:yaml.org,2002:map"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_COUNTRY = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,3})?")
_DIAL_PREFIX = re.compile(r"[0-9*#+]*")

SECRET_COMMAND_TIMEOUT = 30.0


# --------------------------------------------------------------------------
# Public entry points


def default_path() -> Path:
    """`$SYNCD_CONFIG`, else `$XDG_CONFIG_HOME/syncd/config.yaml`."""
    explicit = os.environ.get("SYNCD_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    return _xdg_home("XDG_CONFIG_HOME", ".config") / "syncd" / "config.yaml"


def default_state_dir() -> Path:
    """`$XDG_STATE_HOME/syncd` (XDG default `~/.local/state/syncd`)."""
    return _xdg_home("XDG_STATE_HOME", ".local/state") / "syncd"


def system_timezone(etc: Path = Path("/etc")) -> str:
    """The machine's IANA zone: `$TZ`, `/etc/timezone`, the `/etc/localtime`
    link, else "UTC". `etc` is a parameter so tests can fake the machine."""
    candidates = [os.environ.get("TZ", "")]
    with suppress(OSError):
        candidates.append((etc / "timezone").read_text(encoding="utf-8"))
    with suppress(OSError):
        candidates.append(os.readlink(etc / "localtime"))
    for text in candidates:
        # `TZ=:Europe/Paris` and `/usr/share/zoneinfo/Europe/Paris` both name
        # Europe/Paris; POSIX rules like `EST5EDT,M3.2.0` are skipped.
        name = text.strip().lstrip(":")
        if "zoneinfo/" in name:
            name = name.split("zoneinfo/", 1)[1]
        if name and _is_zone(name):
            return name
    return "UTC"


def load(path: Path) -> Config:
    """Read, parse and validate the config at `path`; raise `ConfigError`
    listing every problem, each as `file:line: key: message`."""
    file = Path(os.path.abspath(path.expanduser()))
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise _unreadable(file, exc) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{file}:{line}: not UTF-8 text (byte {exc.start})"]) from None
    return load_text(text, file)


def load_text(text: str, path: Path) -> Config:
    """Validate config `text` as if read from `path` (which names the file in
    messages and anchors relative paths). Handy for tests and for callers that
    already hold the text."""
    file = Path(os.path.abspath(path.expanduser()))
    reader = _Reader(file)
    root = reader.compose(text)
    # Validation only makes sense on a tree that parsed.
    config = None if reader.problems else _config(reader, root)
    if config is None or reader.problems:
        raise ConfigError(reader.report())
    return config


def resolve_secret(secret: Secret, what: str) -> str:
    """Read the secret that `secret` points at.

    `what` is the key stem as the user wrote it, e.g. `calendar.password` or
    `contacts[cards].client_secret`; messages name `{what}_env` etc. so the
    user knows which key to fix. No message ever contains the secret value.
    """
    if secret.env:
        return _secret_from_env(secret.env, f"{what}_env")
    if secret.file:
        return _secret_from_file(secret.file, f"{what}_file")
    if secret.command:
        return _secret_from_command(secret.command, f"{what}_command")
    raise UserError(
        f"{what}: no secret configured",
        hint=f"set one of {what}_env, {what}_file or {what}_command in the config",
    )


# --------------------------------------------------------------------------
# Small helpers


def _xdg_home(variable: str, fallback: str) -> Path:
    # The XDG spec says relative values are invalid and must be ignored.
    value = os.environ.get(variable, "")
    return Path(value) if os.path.isabs(value) else Path.home() / fallback


def _unreadable(file: Path, exc: OSError) -> ConfigError:
    if isinstance(exc, FileNotFoundError):
        error = ConfigError([f"{file}: no such file"])
        error.hint = "run `syncd init` to write a starter config, or pass --config PATH"
        return error
    if isinstance(exc, IsADirectoryError):
        return ConfigError([f"{file}: is a directory, not a config file"])
    return ConfigError([f"{file}: cannot read: {exc.strerror or exc}"])


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _line(node: Node | None) -> int:
    mark = node.start_mark if node is not None else None
    return mark.line + 1 if mark is not None else 1


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _describe(node: Node) -> str:
    """What the user wrote, for "expected X, got Y" messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return repr(str(node.value))


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(kind: str, value: str, options: Collection[str]) -> str:
    """`unknown cadence 'x' (did you mean 'y'?)`, else list what exists."""
    hint = _suggest(value, options) or f" (defined: {', '.join(options) or 'none'})"
    return f"unknown {kind} {value!r}{hint}"


def _is_secret_key(key: str) -> bool:
    return re.sub(r"[^a-z]", "", key.lower()) in _SECRET_WORDS


def _secret_key_message(key: str) -> str:
    stem = "client_secret" if "client" in key.lower() else "password"
    message = (
        f"secrets never live in the config file; use {stem}_env, {stem}_file or {stem}_command"
    )
    if "token" in key.lower():
        message += " (OAuth tokens come from `syncd auth NAME`, or point token_file at one)"
    return message


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a directory such as "America" is not a zone.
        return False
    return True


@functools.cache
def _zones_by_lower() -> dict[str, str]:
    return {zone.lower(): zone for zone in available_timezones()}


def _zone_suggestion(name: str) -> str:
    zones = _zones_by_lower()
    exact = zones.get(name.lower().replace(" ", "_"))
    if exact:
        return f" (did you mean {exact!r}?)"
    close = difflib.get_close_matches(name.lower(), list(zones), n=1)
    return f" (did you mean {zones[close[0]]!r}?)" if close else ""


# --------------------------------------------------------------------------
# The node reader: typed accessors that record problems instead of raising.


@dataclass
class _Map:
    """One YAML mapping: its entries by key and where it sits in the file."""

    node: Node
    where: str
    entries: dict[str, tuple[Node, Node]]  # key -> (key node, value node)
    anchor: Node  # where a missing key is reported: the `calendar:` line, say

    def key(self, key: str) -> Node:
        """The key node of a present key (for the line of a nested section)."""
        return self.entries[key][0]

    def value(self, key: str) -> Node | None:
        """The value node, or None when the key is absent or set to null."""
        entry = self.entries.get(key)
        if entry is None or _is_null(entry[1]):
            return None
        return entry[1]

    def at(self, key: str) -> str:
        return _join(self.where, key)


class _Reader:
    def __init__(self, file: Path) -> None:
        self.file = file
        self.base = file.parent  # relative paths in the config are relative to it
        self.problems: list[tuple[int, str]] = []
        self._yaml = SafeConstructor()

    # -- problems

    def problem(self, node: Node | None, where: str, message: str) -> None:
        line = _line(node)
        self.problems.append((line, f"{self.file}:{line}: {where or '(top level)'}: {message}"))

    def report(self) -> list[str]:
        # In file order, however the checks happened to run.
        return [text for _, text in sorted(self.problems, key=lambda p: p[0])]

    # -- YAML

    def compose(self, text: str) -> Node | None:
        try:
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            column = f" at column {mark.column + 1}" if mark else ""
            what = exc.problem or exc.context or "cannot parse"
            self.problems.append(
                (line, f"{self.file}:{line}: YAML syntax error{column}: {what}{_yaml_tip(what)}")
            )
        except yaml.YAMLError as exc:  # e.g. a control character: no mark
            self.problems.append((1, f"{self.file}: YAML syntax error: {exc}"))
        return None

    def mapping(self, node: Node, where: str, anchor: Node | None = None) -> _Map | None:
        if not isinstance(node, MappingNode):
            self.problem(node, where, f"expected a mapping (key: value), got {_describe(node)}")
            return None
        self._check_duplicates(node, where)
        try:
            # Resolve `<<: *anchor` merges; explicit keys then override merged ones.
            self._yaml.flatten_mapping(node)
        except ConstructorError as exc:
            self.problem(node, where, f"cannot merge: {exc.problem}")
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode):
                entries[str(key_node.value)] = (key_node, value_node)
        # Keep the node as resolved, so reading it again through another alias
        # sees no merged-over keys to mistake for duplicates.
        node.value = list(entries.values())
        return _Map(node, where, entries, anchor or node)

    def _check_duplicates(self, node: MappingNode, where: str) -> None:
        # YAML keeps the last of two equal keys without a word; a duplicate is
        # almost always a mistake, so say so (before merges add legal repeats).
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):
                self.problem(key_node, where, "keys must be plain text")
                continue
            key = str(key_node.value)
            if key in seen:
                self.problem(
                    key_node, _join(where, key), f"duplicate key (first at line {seen[key]})"
                )
            seen.setdefault(key, _line(key_node))

    def check_keys(
        self,
        m: _Map,
        allowed: Collection[str],
        *,
        by_type: Mapping[str, Collection[str]] | None = None,
        type_name: str | None = None,
    ) -> None:
        """Report keys not in `allowed`, then drop them so later reads do not
        report the same key twice."""
        for key, (key_node, _) in m.entries.items():
            if key not in allowed:
                self.problem(
                    key_node, m.at(key), self._key_message(key, allowed, by_type, type_name)
                )
        m.entries = {k: v for k, v in m.entries.items() if k in allowed}

    @staticmethod
    def _key_message(
        key: str,
        allowed: Collection[str],
        by_type: Mapping[str, Collection[str]] | None,
        type_name: str | None,
    ) -> str:
        if _is_secret_key(key):
            return _secret_key_message(key)
        owners = [t for t, keys in (by_type or {}).items() if key in keys]
        if owners and type_name:
            return f"not used by type {type_name!r} (only by: {', '.join(owners)})"
        return "unknown key" + (
            _suggest(key, allowed) or f" (known keys: {', '.join(sorted(allowed))})"
        )

    def sequence(self, node: Node, where: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.problem(node, where, f"expected a list, got {_describe(node)}")
            return []
        return list(node.value)

    # -- scalars

    def text(
        self, m: _Map, key: str, *, required: str | None = None, allow_empty: bool = False
    ) -> str | None:
        """A scalar's text as typed (so `NO`, `8:30` and `0123` stay text).
        `required` is the message for a missing key; None means optional."""
        node = m.value(key)
        if node is None:
            if required is not None:
                self.problem(m.anchor, m.at(key), required)
            return None
        if not isinstance(node, ScalarNode):
            self.problem(node, m.at(key), f"expected text, got {_describe(node)}")
            return None
        value = str(node.value).strip()
        if not value and not allow_empty:
            self.problem(node, m.at(key), "must not be empty")
            return None
        return value

    def choice(
        self,
        m: _Map,
        key: str,
        options: Collection[str],
        *,
        default: str | None = None,
        required: str | None = None,
    ) -> str | None:
        """`default` when absent, None when invalid (already reported)."""
        value = self.text(m, key, required=required)
        if value is None:
            return default if m.value(key) is None else None
        if value.lower() not in options:
            self.problem(
                m.value(key),
                m.at(key),
                f"{value!r} is not one of {', '.join(options)}{_suggest(value.lower(), options)}",
            )
            return None
        return value.lower()

    def integer(self, m: _Map, key: str, *, minimum: int) -> int | None:
        node = m.value(key)
        if node is None:
            return None
        if not (isinstance(node, ScalarNode) and node.tag == _INT_TAG):
            self.problem(node, m.at(key), f"expected a whole number, got {_describe(node)}")
            return None
        number = self._yaml.construct_yaml_int(node)
        if number < minimum:
            self.problem(node, m.at(key), f"must be at least {minimum}")
            return None
        return number

    def seconds(self, m: _Map, key: str) -> float | None:
        node = m.value(key)
        if node is None:
            return None
        if not (isinstance(node, ScalarNode) and node.tag in (_INT_TAG, _FLOAT_TAG)):
            self.problem(node, m.at(key), f"expected a number of seconds, got {_describe(node)}")
            return None
        number = (
            float(self._yaml.construct_yaml_int(node))
            if node.tag == _INT_TAG
            else self._yaml.construct_yaml_float(node)
        )
        if not 0 < number < float("inf"):
            self.problem(node, m.at(key), "must be a number of seconds above zero")
            return None
        return number

    def duration(
        self, m: _Map, key: str, *, required: str | None = None, fixed: bool = False
    ) -> Duration | None:
        text = self.text(m, key, required=required)
        if text is None:
            return None
        try:
            duration = parse_duration(text)
        except ValueError as exc:
            self.problem(m.value(key), m.at(key), str(exc))
            return None
        if fixed and duration.unit not in _FIXED_UNITS:
            self.problem(
                m.value(key),
                m.at(key),
                "must have a fixed length (minutes, hours, days or weeks), "
                f"not {duration.unit.value.replace('_', ' ')}",
            )
            return None
        return duration

    def path(self, m: _Map, key: str, *, required: str | None = None) -> Path | None:
        text = self.text(m, key, required=required)
        if text is None:
            return None
        path = Path(text).expanduser()
        return path if path.is_absolute() else Path(os.path.normpath(self.base / path))

    def url(self, m: _Map, key: str, *, required: str | None = None) -> str | None:
        text = self.text(m, key, required=required)
        if text is None:
            return None
        # The URL is never echoed: people paste URLs with tokens in them.
        try:
            parts = urlsplit(text)
            password = parts.password
        except ValueError:
            parts, password = None, None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            self.problem(m.value(key), m.at(key), "must be an http:// or https:// URL")
            return None
        if password is not None:
            self.problem(
                m.value(key),
                m.at(key),
                "contains a password; secrets never live in the config file, "
                "use password_env, password_file or password_command",
            )
            return None
        return text

    def texts(self, m: _Map, key: str) -> list[tuple[Node, str]]:
        """A list of text items; a single item may be written without brackets."""
        node = m.value(key)
        if node is None:
            return []
        items = [node] if isinstance(node, ScalarNode) else self.sequence(node, m.at(key))
        values: list[tuple[Node, str]] = []
        for i, item in enumerate(items):
            value = str(item.value).strip() if isinstance(item, ScalarNode) else ""
            if value and not _is_null(item):
                values.append((item, value))
            else:
                self.problem(item, f"{m.at(key)}[{i}]", "expected non-empty text")
        return values

    def names(self, m: _Map, key: str) -> tuple[str, ...]:
        return tuple(value for _, value in self.texts(m, key))

    # -- composite values

    def secret(self, m: _Map, stem: str) -> Secret:
        """`{stem}_env`, `{stem}_file` or `{stem}_command`: at most one."""
        keys = (f"{stem}_env", f"{stem}_file", f"{stem}_command")
        given = [key for key in keys if m.value(key) is not None]
        for extra in given[1:]:
            self.problem(m.value(extra), m.at(extra), f"give only one of {', '.join(keys)}")
        env = self.text(m, keys[0])
        if env is not None and not _ENV_NAME.fullmatch(env):
            # Probably the secret itself pasted in: do not echo it.
            self.problem(
                m.value(keys[0]),
                m.at(keys[0]),
                "must be the name of an environment variable (letters, digits, _), "
                "not the secret itself",
            )
            env = None
        command = self.text(m, keys[2])
        if command is not None:
            command = self._command(m, keys[2], command)
        return Secret(env=env, file=self.path(m, keys[1]), command=command)

    def _command(self, m: _Map, key: str, command: str) -> str | None:
        # Split now so a quoting mistake shows up at `config check`, not at 3am.
        try:
            words = shlex.split(command)
        except ValueError as exc:
            self.problem(m.value(key), m.at(key), f"cannot split into words: {exc}")
            return None
        if not words:
            self.problem(m.value(key), m.at(key), "must not be empty")
            return None
        return command

    def connection(self, m: _Map) -> Connection:
        return Connection(
            api_endpoint=self.url(m, "api_endpoint"),
            graph_endpoint=self.url(m, "graph_endpoint"),
            authority=self.url(m, "authority"),
            ca_bundle=self.path(m, "ca_bundle"),
            token_file=self.path(m, "token_file"),
            token_cache=self.path(m, "token_cache"),
            timeout=_or(self.seconds(m, "timeout"), Connection().timeout),
        )

    def timezone(self, m: _Map, key: str) -> str | None:
        name = self.text(m, key)
        if name is None:
            return None
        if not _is_zone(name):
            self.problem(
                m.value(key), m.at(key), f"unknown time zone {name!r}{_zone_suggestion(name)}"
            )
            return None
        return name

    def clock(self, m: _Map, key: str) -> time | None:
        text = self.text(m, key)
        if text is None:
            return None
        shape = _CLOCK.fullmatch(text)
        if shape is None or int(shape.group(1)) > 23 or int(shape.group(2)) > 59:
            self.problem(
                m.value(key), m.at(key), f'expected a 24-hour time like "08:00", got {text!r}'
            )
            return None
        return time(int(shape.group(1)), int(shape.group(2)))


def _yaml_tip(problem: str) -> str:
    """The two YAML mistakes people actually make in this file."""
    if "'\\t'" in problem:
        return "; indent with spaces, not tabs"
    if "undefined alias" in problem:
        return '; a value starting with * must be quoted, e.g. prefix: "*67"'
    return ""


# --------------------------------------------------------------------------
# Sections


def _config(r: _Reader, root: Node | None) -> Config:
    # An empty file composes to None: validate it as an empty mapping so the
    # user hears about the required keys.
    m = r.mapping(root if root is not None else MappingNode(_MAP_TAG, []), "")
    if m is None:
        return _CONFIG_DEFAULTS
    r.check_keys(m, _TOP_KEYS)
    sources = _sources(r, m)
    cadences = _cadences(r, m)
    d = _CONFIG_DEFAULTS
    return Config(
        path=r.file,
        timezone=r.timezone(m, "timezone") or system_timezone(),
        state_dir=_or(r.path(m, "state_dir"), default_state_dir()),
        poll_interval=_or(r.duration(m, "poll_interval", fixed=True), d.poll_interval),
        horizon=_or(r.duration(m, "horizon"), d.horizon),
        daily_limit=_or(r.integer(m, "daily_limit", minimum=1), d.daily_limit),
        working_hours=_working_hours(r, m),
        holidays=_holidays(r, m),
        contacts=sources,
        calendar=_calendar(r, m),
        cadences=cadences,
        rules=_rules(r, m, _names(c.name for c in cadences), _names(s.name for s in sources)),
        interviews=_interviews(r, m, _names(c.name for c in cadences)),
        caller_id=_caller_id(r, m),
        news=_news(r, m),
    )


def _names(names: Iterable[str]) -> list[str]:
    """Distinct non-empty names in order (invalid entries leave "" behind)."""
    return [name for name in dict.fromkeys(names) if name]


def _section(r: _Reader, m: _Map, key: str, allowed: Collection[str]) -> _Map | None:
    """An optional nested mapping with a fixed set of keys."""
    node = m.value(key)
    if node is None:
        return None
    section = r.mapping(node, m.at(key), anchor=m.key(key))
    if section is not None:
        r.check_keys(section, allowed)
    return section


def _working_hours(r: _Reader, m: _Map) -> WorkingHours:
    default = WorkingHours()
    wm = _section(r, m, "working_hours", ("days", "start", "end"))
    if wm is None:
        return default
    start = _or(r.clock(wm, "start"), default.start)
    end = _or(r.clock(wm, "end"), default.end)
    if start >= end:
        r.problem(
            wm.value("end") or wm.anchor, wm.at("end"), f"must be later than start ({start:%H:%M})"
        )
    return WorkingHours(days=_weekdays(r, wm, default.days), start=start, end=end)


def _weekdays(r: _Reader, wm: _Map, default: frozenset[int]) -> frozenset[int]:
    if wm.value("days") is None:
        return default
    days: set[int] = set()
    items = r.texts(wm, "days")
    for i, (node, text) in enumerate(items):
        word = text.lower()
        if word in WEEKDAYS:
            days.add(WEEKDAYS.index(word))
        elif word in _WEEKDAY_NAMES:
            days.add(_WEEKDAY_NAMES.index(word))
        else:
            r.problem(
                node,
                f"{wm.at('days')}[{i}]",
                f"{text!r} is not a day; use {', '.join(WEEKDAYS)}{_suggest(word, WEEKDAYS)}",
            )
    if not items:
        r.problem(wm.value("days"), wm.at("days"), "list at least one day, e.g. [mon, tue, wed]")
    return frozenset(days) or default


def _holidays(r: _Reader, m: _Map) -> str | None:
    code = r.text(m, "holidays")
    if code is None:
        return None
    if not _COUNTRY.fullmatch(code.upper()):
        r.problem(
            m.value("holidays"),
            "holidays",
            f"expected a two-letter country code such as US or GB (optionally with a region, "
            f"US-NY), got {code!r}",
        )
        return None
    return code.upper()


def _sources(r: _Reader, m: _Map) -> tuple[SourceConfig, ...]:
    node = m.value("contacts")
    if node is None:
        r.problem(m.node, "contacts", "required: list one or more contact sources")
        return ()
    items = r.sequence(node, "contacts")
    if isinstance(node, SequenceNode) and not items:
        r.problem(node, "contacts", "list one or more contact sources")
    names: dict[str, int] = {}  # name -> line, to report duplicates
    sources = (_source(r, item, f"contacts[{i}]", names) for i, item in enumerate(items))
    return tuple(source for source in sources if source is not None)


def _source(r: _Reader, node: Node, where: str, names: dict[str, int]) -> SourceConfig | None:
    m = r.mapping(node, where)
    if m is None:
        return None
    kind = r.choice(m, "type", SOURCE_TYPES, required=f"required: one of {', '.join(SOURCE_TYPES)}")
    # With an unknown type, accept any source key rather than flag them all.
    type_keys = SOURCE_KEYS[kind] if kind else tuple(k for ks in SOURCE_KEYS.values() for k in ks)
    r.check_keys(m, ("name", "type", *type_keys), by_type=SOURCE_KEYS, type_name=kind)
    d = _SOURCE_DEFAULTS
    return SourceConfig(
        name=_source_name(r, m, names) or "",
        type=kind or d.type,
        path=_source_path(r, m) if kind == "file" else None,
        url=r.url(m, "url", required="required for type 'carddav'" if kind == "carddav" else None),
        username=r.text(m, "username"),
        password=r.secret(m, "password"),
        labels=r.names(m, "labels"),
        categories=r.names(m, "categories"),
        folders=r.names(m, "folders"),
        client_id=r.text(m, "client_id"),
        client_secret=r.secret(m, "client_secret"),
        tenant=_or(r.text(m, "tenant"), d.tenant),
        connection=r.connection(m),
        line=_line(node),
    )


def _source_name(r: _Reader, m: _Map, names: dict[str, int]) -> str | None:
    name = r.text(m, "name", required="required: a short unique name, e.g. google or linkedin")
    if name is None:
        return None
    node = m.value("name")
    if not _SOURCE_NAME.fullmatch(name):
        # Names end up in `syncd auth NAME` and in token file names.
        r.problem(node, m.at("name"), "use letters, digits, '-', '_' and '.' only")
    elif name == "calendar":
        r.problem(
            node, m.at("name"), "'calendar' is reserved: `syncd auth calendar` means the calendar"
        )
    elif name in names:
        r.problem(
            node, m.at("name"), f"{name!r} is already the name of the source at line {names[name]}"
        )
    else:
        names[name] = _line(node)
    return name


def _source_path(r: _Reader, m: _Map) -> Path | None:
    path = r.path(m, "path", required="required for type 'file' (a .vcf or .csv export)")
    if path is not None and path.suffix.lower() not in (".vcf", ".csv"):
        r.problem(m.value("path"), m.at("path"), "must be a .vcf or .csv file")
    return path


def _calendar(r: _Reader, m: _Map) -> CalendarConfig | None:
    node = m.value("calendar")
    if node is None:
        r.problem(
            m.node,
            "calendar",
            "required: where follow-ups are written (type: caldav, google or graph)",
        )
        return None
    cm = r.mapping(node, "calendar", anchor=m.key("calendar"))
    if cm is None:
        return None
    kind = r.choice(
        cm, "type", CALENDAR_TYPES, required=f"required: one of {', '.join(CALENDAR_TYPES)}"
    )
    type_keys = (
        CALENDAR_KEYS[kind] if kind else tuple(k for ks in CALENDAR_KEYS.values() for k in ks)
    )
    r.check_keys(cm, (*_CALENDAR_COMMON, *type_keys), by_type=CALENDAR_KEYS, type_name=kind)
    d = _CALENDAR_DEFAULTS
    return CalendarConfig(
        type=kind or d.type,
        url=r.url(cm, "url", required="required for type 'caldav'" if kind == "caldav" else None),
        calendar=_or(r.text(cm, "calendar"), d.calendar),
        username=r.text(cm, "username"),
        password=r.secret(cm, "password"),
        busy_calendars=r.names(cm, "busy_calendars"),
        client_id=r.text(cm, "client_id"),
        client_secret=r.secret(cm, "client_secret"),
        tenant=_or(r.text(cm, "tenant"), d.tenant),
        connection=r.connection(cm),
    )


def _cadences(r: _Reader, m: _Map) -> tuple[Cadence, ...]:
    node = m.value("cadences")
    if node is None:
        return DEFAULT_CADENCES
    cm = r.mapping(node, "cadences")
    if cm is None:
        return DEFAULT_CADENCES
    if not cm.entries:
        r.problem(
            node, "cadences", "define at least one cadence, or remove the key for the defaults"
        )
        return DEFAULT_CADENCES
    names = list(cm.entries)
    cadences = (_cadence(r, cm, name, names) for name in cm.entries)
    return tuple(cadence for cadence in cadences if cadence is not None)


def _cadence(r: _Reader, cadences: _Map, name: str, names: list[str]) -> Cadence | None:
    key_node, node = cadences.entries[name]
    m = r.mapping(node, cadences.at(name), anchor=key_node)
    if m is None:
        return None
    r.check_keys(m, _CADENCE_KEYS)
    default = Cadence(name)
    until = r.choice(m, "until", UNTILS, default=default.until)
    then = r.text(m, "then")
    if then is not None and then not in names:
        r.problem(m.value("then"), m.at("then"), _unknown("cadence", then, names))
    elif then is not None and until == "never":
        # `then` applies when `until` is met, which never happens.
        r.problem(
            m.value("then"),
            m.at("then"),
            "has no effect with until: never; set until: reached or replied",
        )
    return Cadence(
        name=name,
        channel=_or(r.choice(m, "channel", CHANNELS, default=default.channel), default.channel),
        every=_or(
            r.duration(m, "every", required=f"required: how often, e.g. {ACCEPTED_FORMS}"),
            default.every,
        ),
        until=_or(until, default.until),
        then=then,
        stop_after=r.duration(m, "stop_after"),
        max_attempts=r.integer(m, "max_attempts", minimum=1),
    )


def _rules(r: _Reader, m: _Map, cadences: list[str], sources: list[str]) -> tuple[Rule, ...]:
    node = m.value("rules")
    if node is None:
        fallback = "pursue" if "pursue" in cadences or not cadences else cadences[0]
        return (Rule(match=RuleMatch(), cadence=fallback),)
    items = r.sequence(node, "rules")
    if isinstance(node, SequenceNode) and not items:
        r.problem(node, "rules", "list at least one rule, or remove the key to track every contact")
    rules = (_rule(r, item, f"rules[{i}]", cadences, sources) for i, item in enumerate(items))
    return tuple(rule for rule in rules if rule is not None)


def _rule(
    r: _Reader, node: Node, where: str, cadences: list[str], sources: list[str]
) -> Rule | None:
    m = r.mapping(node, where)
    if m is None:
        return None
    r.check_keys(m, ("match", "cadence", "timezone"))
    cadence = r.text(
        m, "cadence", required="required: the cadence for the contacts this rule matches"
    )
    if cadence is not None and cadence not in cadences:
        r.problem(m.value("cadence"), m.at("cadence"), _unknown("cadence", cadence, cadences))
    return Rule(
        match=_rule_match(r, m, sources),
        cadence=cadence or "",
        timezone=r.timezone(m, "timezone"),
    )


def _rule_match(r: _Reader, m: _Map, sources: list[str]) -> RuleMatch:
    # A rule without `match` (or with an empty one) matches every contact.
    mm = _section(r, m, "match", ("label", "source", "company"))
    if mm is None:
        return RuleMatch()
    source = mm.value("source")
    name = r.text(mm, "source")
    if name is not None and name not in sources:
        r.problem(source, mm.at("source"), _unknown("contact source", name, sources))
    return RuleMatch(label=r.text(mm, "label"), source=name, company=r.text(mm, "company"))


def _interviews(r: _Reader, m: _Map, cadences: list[str]) -> Interviews:
    default = Interviews()
    im = _section(r, m, "interviews", ("match", "thank_you_within", "then", "me"))
    if im is None:
        return default
    mm = _section(r, im, "match", ("title_contains",))
    title = r.text(mm, "title_contains") if mm is not None else None
    then = r.text(im, "then")
    if then is not None and then not in cadences:
        r.problem(im.value("then"), im.at("then"), _unknown("cadence", then, cadences))
    return Interviews(
        title_contains=_or(title, default.title_contains),
        thank_you_within=_or(r.duration(im, "thank_you_within"), default.thank_you_within),
        then=_or(then, default.then),
        me=tuple(x.lower() for x in r.names(im, "me")),
    )


def _caller_id(r: _Reader, m: _Map) -> CallerId:
    default = CallerId()
    cm = _section(r, m, "caller_id", ("hide_after_attempts", "prefix"))
    if cm is None:
        return default
    # An empty prefix is allowed: it turns the feature off where *67 means nothing.
    prefix = r.text(cm, "prefix", allow_empty=True)
    if prefix is not None and not _DIAL_PREFIX.fullmatch(prefix):
        r.problem(cm.value("prefix"), cm.at("prefix"), 'use only digits, *, # and +, e.g. "*67"')
        prefix = None
    return CallerId(
        hide_after_attempts=_or(
            r.integer(cm, "hide_after_attempts", minimum=0), default.hide_after_attempts
        ),
        prefix=_or(prefix, default.prefix),
    )


def _news(r: _Reader, m: _Map) -> tuple[NewsItem, ...]:
    node = m.value("news")
    if node is None:
        return ()
    items = (_news_item(r, item, f"news[{i}]") for i, item in enumerate(r.sequence(node, "news")))
    return tuple(item for item in items if item is not None)


def _news_item(r: _Reader, node: Node, where: str) -> NewsItem | None:
    m = r.mapping(node, where)
    if m is None:
        return None
    r.check_keys(m, ("date", "text"))
    day = r.text(m, "date", required="required: when it happened, as YYYY-MM-DD")
    text = r.text(m, "text", required="required: what to tell contacts")
    if day is not None and not _is_iso_date(day):
        r.problem(m.value("date"), m.at("date"), f"expected a date as YYYY-MM-DD, got {day!r}")
        day = None
    if day is None or text is None:
        return None
    return NewsItem(date=day, text=text)


def _is_iso_date(text: str) -> bool:
    if not _ISO_DATE.fullmatch(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------
# Secrets, read on use and never echoed


def _secret_from_env(name: str, key: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise UserError(
            f"{key}: environment variable {name} is not set",
            hint=f"export {name}=... in the environment syncd runs in (e.g. the systemd unit)",
        )
    if not value:
        raise UserError(f"{key}: environment variable {name} is empty")
    return value


def _secret_from_file(path: Path, key: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{key}: {path} does not exist") from None
    except OSError as exc:
        raise UserError(
            f"{key}: cannot read {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        value = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        # The decoder's message quotes a byte of the secret: not shown.
        raise UserError(f"{key}: {path} is not UTF-8 text") from None
    if not value:
        raise UserError(f"{key}: {path} is empty")
    return value


def _secret_from_command(command: str, key: str) -> str:
    argv = shlex.split(command)
    if not argv:
        raise UserError(f"{key}: the command is empty")
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=SECRET_COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise UserError(f"{key}: command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise UserError(
            f"{key}: {argv[0]} did not finish within {SECRET_COMMAND_TIMEOUT:g} s"
        ) from None
    except OSError as exc:
        raise UserError(f"{key}: cannot run {argv[0]}: {exc.strerror or exc}") from None
    stdout = done.stdout.decode("utf-8", errors="replace").rstrip("\r\n")
    if done.returncode != 0:
        detail = _stderr_summary(done.stderr, stdout)
        raise UserError(f"{key}: {argv[0]} failed with exit status {done.returncode}{detail}")
    if not stdout:
        raise UserError(f"{key}: {argv[0]} printed nothing")
    return stdout


def _stderr_summary(stderr: bytes, stdout: str) -> str:
    """The first line of stderr, for tools like `pass` that explain failures
    there; any text equal to stdout (which may hold the secret) is cut out."""
    lines = stderr.decode("utf-8", errors="replace").strip().splitlines()
    if not lines:
        return ""
    first = lines[0]
    if stdout:
        first = first.replace(stdout, "[redacted]")
    return f": {first[:200]}"
