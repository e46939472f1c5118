"""Builds the connectors a config names. The only place the core reaches into
`connectors/`; imports are lazy so `syncd --help` and `status` stay fast and
never load caldav, google or msal."""

from __future__ import annotations

from syncd.errors import UserError
from syncd.ports import Calendar, ContactSource
from syncd.settings import CalendarConfig, Config, SourceConfig


def make_source(cfg: SourceConfig) -> ContactSource:
    if cfg.type == "file":
        from connectors.files import FileSource

        return FileSource(cfg)
    if cfg.type == "carddav":
        from connectors.carddav import CardDavSource

        return CardDavSource(cfg)
    raise UserError(f"contact source {cfg.name!r}: type {cfg.type!r} is not supported yet")


def make_calendar(cfg: CalendarConfig) -> Calendar:
    from syncd.config import resolve_secret

    if cfg.type == "caldav":
        from connectors.caldav_calendar import CalDavCalendar

        password = resolve_secret(cfg.password, "calendar.password") if cfg.password.is_set() \
            else None
        return CalDavCalendar(cfg, password)
    raise UserError(f"calendar type {cfg.type!r} is not supported yet")


def make_all(cfg: Config) -> tuple[list[ContactSource], Calendar]:
    if cfg.calendar is None:
        raise UserError(f"{cfg.path}: no `calendar:` configured",
                        hint="add a calendar section (see config/example.yaml)")
    return [make_source(s) for s in cfg.contacts], make_calendar(cfg.calendar)
