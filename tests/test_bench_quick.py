"""`bench/run.py --quick` as a smoke test. Performance is measured by the
benchmark, not by timed tests, so this asserts what does not depend on the
machine: how many requests a cycle sends, and that change detection takes
the incremental path (bench/run.py prints the numbers; README "Performance")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| Idle cycle" in proc.stdout  # the table
    data: dict[str, Any] = json.loads(out.read_text())
    return data


pytestmark = pytest.mark.timeout(900)


def test_an_idle_cycle_is_one_request_per_source_plus_one_for_the_calendar(
    bench: dict[str, Any],
) -> None:
    runs = bench["idle"]
    assert {r["backend"] for r in runs} == {"radicale", "xandikos"}
    for r in runs:
        want = r["sources"] + 1
        assert r["requests"] == [want] * len(r["requests"]), r
        assert r["writes"] == 0, r
        # One sync-collection REPORT each: no listing, no discovery, no fetch.
        assert [q.split()[0] for qs in r["sent"].values() for q in qs] == ["REPORT"] * want
        # syncd's own request counter (the cycle log's `requests`) agrees with the wire.
        assert r["requests_seen_by_syncd"] == r["requests"], r
    for backend in ("radicale", "xandikos"):
        sizes = {r["contacts"]: r["requests"] for r in runs if r["backend"] == backend}
        assert len(sizes) == 2 and len({tuple(v) for v in sizes.values()}) == 1, sizes


def test_change_detection_takes_the_incremental_path(bench: dict[str, Any]) -> None:
    for c in bench["change"]:
        inc, naive = c["incremental"], c["naive"]
        assert not inc["full"], c
        # Radicale sends the changed event inline; Xandikos needs one multiget.
        assert max(inc["requests"]) <= 2 and len(set(inc["requests"])) == 1, c
        assert all(q.startswith("REPORT ") for q in inc["sent"]), c
        assert all(n >= 1 for n in inc["attempts_read"]), c  # the edit was read
        assert naive["attempts_read"] == inc["attempts_read"], c  # the same result
        assert c["events"] >= 300


def test_first_sync_shows_progress_and_start_up_imports_no_connector_library(
    bench: dict[str, Any],
) -> None:
    first = bench["first_sync"]
    assert first["exit"] == 0 and first["progress_bar"], first
    assert first["created"] and first["created"] > 0
    assert bench["startup"]["heavy_imported"] == []
    assert bench["memory"]["exit"] == 0 and bench["memory"]["contacts"] == first["contacts"]
    assert bench["parser"]["lines"] > 100


def test_providers_read_changes_through_tokens_and_deltas(bench: dict[str, Any]) -> None:
    google, graph = bench["providers"]["google"], bench["providers"]["graph"]
    assert google["status"] == "ok", google
    for size in google["sizes"].values():
        assert size["idle"]["requests"] == [2] * len(size["idle"]["requests"]), size
        # the follow-ups of a first sync go in batch requests, not one insert each
        kinds = size["first_sync"]["by_kind"]
        assert kinds.get("POST batch/calendar") and not kinds.get(
            "POST calendars/{id}/events"), kinds
    assert google["change"]["incremental"]["requests"] == 1
    assert graph["status"] == "ok", graph
    for size in graph["sizes"].values():
        # one request per source (a JSON batch) plus one for the calendar
        assert size["idle"]["requests"] == [2] * len(size["idle"]["requests"]), size
        kinds = size["first_sync"]["by_kind"]
        assert kinds.get("POST $batch") and not kinds.get("POST calendars/{id}/events"), kinds
    change = graph["change"]["incremental"]
    assert change["requests"] <= 2, change  # the delta link, and the event for its marker
    assert change["requests"] < graph["change"]["naive"]["requests"]
