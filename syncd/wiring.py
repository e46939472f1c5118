"""Builds the connectors a config names. The only place the core reaches into
`connectors/`; imports are lazy so `syncd --help` and `status` stay fast and
never load caldav, google or msal.

Remote connectors that keep tokens get the state directory, where token files
live (0600).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from syncd.errors import UserError
from syncd.ports import Calendar, ContactSource
from syncd.settings import CalendarConfig, Config, SourceConfig

# type -> "module:Class". Each class is constructed as Class(cfg, state_dir).
SOURCES = {
    "file": "connectors.files:FileSource",
    "carddav": "connectors.carddav:CardDavSource",
    "google": "connectors.google_people:GooglePeopleSource",
    "outlook": "connectors.outlook_contacts:OutlookContactsSource",
}
CALENDARS = {
    "caldav": "connectors.caldav_calendar:CalDavCalendar",
    "google": "connectors.google_calendar:GoogleCalendar",
    "graph": "connectors.graph_calendar:GraphCalendar",
}
# type -> "module:function" for `syncd auth NAME`; called as
# fn(cfg: SourceConfig | CalendarConfig, state_dir: Path, no_browser: bool) -> str
# returning a line to print.
SIGN_IN = {
    "google": "connectors.google_auth:sign_in",
    "outlook": "connectors.msal_auth:sign_in",
    "graph": "connectors.msal_auth:sign_in",
}


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_source(cfg: SourceConfig, state_dir: Path) -> ContactSource:
    spec = SOURCES.get(cfg.type)
    if spec is None:
        raise UserError(f"contact source {cfg.name!r}: type {cfg.type!r} is not supported")
    if cfg.type in ("file", "carddav"):  # no tokens to keep
        return _load(spec)(cfg)  # type: ignore[no-any-return]
    return _load(spec)(cfg, state_dir)  # type: ignore[no-any-return]


def make_calendar(cfg: CalendarConfig, state_dir: Path) -> Calendar:
    spec = CALENDARS.get(cfg.type)
    if spec is None:
        raise UserError(f"calendar type {cfg.type!r} is not supported")
    if cfg.type == "caldav":
        from syncd.config import resolve_secret

        password = (resolve_secret(cfg.password, "calendar.password")
                    if cfg.password.is_set() else None)
        return _load(spec)(cfg, password)  # type: ignore[no-any-return]
    return _load(spec)(cfg, state_dir)  # type: ignore[no-any-return]


def sign_in(kind: str, cfg: SourceConfig | CalendarConfig, state_dir: Path,
            no_browser: bool) -> str:
    spec = SIGN_IN.get(kind)
    if spec is None:
        return (f"{kind} needs no sign-in: it uses password_env, password_file or "
                "password_command from the config")
    return _load(spec)(cfg, state_dir, no_browser)  # type: ignore[no-any-return]


def make_all(cfg: Config) -> tuple[list[ContactSource], Calendar]:
    if cfg.calendar is None:
        raise UserError(f"{cfg.path}: no `calendar:` configured",
                        hint="add a calendar section (see config/example.yaml)")
    return ([make_source(s, cfg.state_dir) for s in cfg.contacts],
            make_calendar(cfg.calendar, cfg.state_dir))
