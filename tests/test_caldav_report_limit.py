"""Radicale refuses (400) a REPORT that would carry more events' data than
`[reporting] max_expand_occurrence` (10,000 by default). A first read of a
calendar that big must still work and stay on sync-collection, so that every
later cycle is one small REPORT (found by bench/run.py: with 10,080 events
the connector fell back to listing every ETag on each cycle)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from connectors import caldav_calendar
from connectors.caldav_calendar import CalDavCalendar
from syncd.model import EventDraft
from syncd.settings import CalendarConfig
from tests.servers import DavServer, free_port, wait_listening

LIMIT = 5


@pytest.fixture
def small_radicale(tmp_path: Path) -> Iterator[DavServer]:
    port = free_port()
    cfg = tmp_path / "radicale.conf"
    cfg.write_text(
        f"[server]\nhosts = 127.0.0.1:{port}\n[auth]\ntype = none\n"
        f"[storage]\nfilesystem_folder = {tmp_path / 'collections'}\n"
        f"[rights]\ntype = owner_only\n[reporting]\nmax_expand_occurrence = {LIMIT}\n"
        "[logging]\nlevel = warning\n"
    )
    with open(tmp_path / "server.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "radicale", "--config", str(cfg)],
                                stdout=log, stderr=subprocess.STDOUT)
    wait_listening(port, proc)
    base = f"http://127.0.0.1:{port}"
    server = DavServer("radicale", port, proc, tmp_path, f"{base}/alice/", f"{base}/alice/",
                       f"{base}/alice/contacts/")
    yield server
    server.stop()


def test_a_calendar_bigger_than_the_report_limit_stays_on_sync_collection(
    small_radicale: DavServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scaled down: 8 events over a limit of 5 (the multigets stay under it,
    # as 500 at a time do under 10,000).
    monkeypatch.setattr(caldav_calendar, "_MULTIGET_CHUNK", LIMIT - 1)
    cal = CalDavCalendar(CalendarConfig(type="caldav", url=small_radicale.base + "/",
                                        calendar="Big", username="alice"), "x")
    calls: list[str] = []
    session: Any = cal.http_session
    inner = session.request

    def counting(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method)
        return inner(method, url, *args, **kwargs)

    session.request = counting
    start = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
    for i in range(LIMIT + 3):
        at = start + timedelta(hours=i)
        cal.create(EventDraft(f"fu-{i}", f"fu-{i}@syncd", f"Call {i}", at,
                              at + timedelta(minutes=15), "notes"))
    direct = requests.request(
        "REPORT", cal.url(), auth=("alice", ""), headers={"Depth": "0"},
        data='<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:" '
             'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:sync-token/><D:sync-level>1'
             "</D:sync-level><D:prop><C:calendar-data/></D:prop></D:sync-collection>")
    assert direct.status_code == 400  # the server's limit is what this test is about

    first = cal.changes(None)
    assert first.full and len(first.events) == LIMIT + 3
    assert {e.syncd_id for e in first.events} == {f"fu-{i}" for i in range(LIMIT + 3)}
    calls.clear()
    idle = cal.changes(first.cursor)
    assert (idle.events, idle.deleted, idle.full) == ((), (), False)
    assert calls == ["REPORT"]  # one sync-collection REPORT, not a PROPFIND of every ETag
    cal.close()
