"""Stop a cycle after step N (every remote write and every commit is a step),
for every N, restart, and require the calendar and state of an uninterrupted
run, and that one more cycle writes nothing (the isync way).

On CalDAV each create is its own intent, write and commit; on Graph the
creates go in one JSON batch (intents in one commit, one request, one commit
of the results), so both shapes of a cycle are cut at every step."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from connectors.caldav_calendar import CalDavCalendar
from connectors.files import FileSource
from connectors.graph_calendar import GraphCalendar
from syncd.config import load_text
from syncd.cycle import Cycle
from syncd.ports import Calendar
from syncd.settings import Config
from syncd.store import Store
from tests.conftest_microsoft import MsCloud
from tests.servers import DavServer

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=ZoneInfo("UTC"))
CARDS = "".join(
    f"BEGIN:VCARD\nVERSION:3.0\nUID:p{i}\nFN:Person {i}\nTEL:+1212555010{i}\nEND:VCARD\n"
    for i in range(3))


class Crash(BaseException):
    """Not an Exception: nothing in the cycle may swallow it."""


def make_config(tmp: Path, server: DavServer, calendar: str) -> Config:
    return _config(tmp, f'{{type: caldav, url: "{server.base}/", calendar: "{calendar}", '
                        'username: alice}')


def _config(tmp: Path, calendar: str) -> Config:
    (tmp / "cards.vcf").write_text(CARDS)
    return load_text(f"""\
timezone: America/New_York
state_dir: state
contacts: [{{name: cards, type: file, path: cards.vcf}}]
calendar: {calendar}
""", tmp / "config.yaml")


def _open(cfg: Config) -> Calendar:
    assert cfg.calendar is not None
    if cfg.calendar.type == "graph":
        return GraphCalendar(cfg.calendar, cfg.state_dir)
    return CalDavCalendar(cfg.calendar, "x")


def run_cycle(cfg: Config, crash_after: int | None = None) -> tuple[int, list[str]]:
    steps: list[str] = []

    def hook(step: str) -> None:
        steps.append(step)
        if crash_after is not None and len(steps) == crash_after:
            raise Crash(step)

    store = Store(cfg.state_dir)
    cal = _open(cfg)
    src = FileSource(cfg.contacts[0])
    try:
        res = Cycle(cfg, store, [src], cal, now=lambda: NOW, step_hook=hook).run()
        return res.writes, steps
    finally:
        cal.close()
        src.close()
        store.close()


def snapshot(cfg: Config) -> list[tuple[str | None, str, str]]:
    cal = _open(cfg)
    try:
        evs = cal.changes(None).events
    finally:
        cal.close()
    return sorted((e.syncd_id, e.start.isoformat(), e.summary) for e in evs)


def test_every_crash_point_converges(tmp_path: Path, dav_server: DavServer) -> None:
    def make(d: Path, name: str) -> Config:
        return make_config(d, dav_server, name)

    steps = every_crash_point_converges(tmp_path, make)
    assert len(steps) >= 10  # read + 3 x (intent, create, commit)


def test_every_crash_point_of_a_batched_create_converges(tmp_path: Path, ms: MsCloud) -> None:
    def make(d: Path, name: str) -> Config:
        cfg = _config(d, f'{{type: graph, calendar: "{name}", client_id: {ms.client_id}, '
                         f'authority: "{ms.identity.authority()}", '
                         f'graph_endpoint: "{ms.graph.base}", ca_bundle: "{ms.ca_pem}", '
                         'token_cache: tokens.json, timeout: 10}')
        assert cfg.calendar is not None
        ms.sign_in(cfg.calendar, cfg.state_dir)
        return cfg

    steps = every_crash_point_converges(tmp_path, make)
    # read, then one commit of 3 intents, one batch request, one commit
    assert steps[-3:] == ["commit-intent", "create", "commit-create"]
    assert steps.count("create") == 1


def every_crash_point_converges(tmp_path: Path, make: Callable[[Path, str], Config]
                                ) -> list[str]:
    (tmp_path / "ref").mkdir()
    ref_cfg = make(tmp_path / "ref", f"ref-{uuid.uuid4().hex[:6]}")
    _, steps = run_cycle(ref_cfg)
    expected = snapshot(ref_cfg)
    assert len(expected) == 3 and len({e[0] for e in expected}) == 3

    for n in range(1, len(steps) + 1):
        d = tmp_path / f"crash{n}"
        d.mkdir()
        cfg = make(d, f"crash{n}-{uuid.uuid4().hex[:6]}")
        with pytest.raises(Crash):
            run_cycle(cfg, crash_after=n)
        run_cycle(cfg)  # restart
        assert snapshot(cfg) == expected, f"after a crash at step {n} ({steps[n - 1]})"
        writes, _ = run_cycle(cfg)
        assert writes == 0, f"a crash at step {n} left work for a later cycle"
        store = Store(cfg.state_dir)
        try:
            live = store.db.execute(
                "SELECT COUNT(*) FROM followups WHERE status='live'").fetchone()[0]
        finally:
            store.close()
        assert live == 3
    return steps
