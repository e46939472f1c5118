"""Faults from remotes (issue 7), injected by a real proxy process between
syncd and Radicale (tests/faultproxy.py): 500/502/503, timeouts, connection
resets, answers lost after the write landed, truncated bodies, 401, 412, 429
with Retry-After. Each test asserts what the user sees (exit status, the
message, `status --json`), what went over the wire (the proxy's log), and
that no event is doubled and no contact or attempt lost.
"""

from __future__ import annotations

import json
import random
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from syncd import retry
from syncd.errors import AuthError, RemoteError
from tests.daemon_helpers import (
    NOW,
    Proc,
    Setup,
    base_env,
    check_consistent,
    cycle_lines,
    raw_events,
    state_db,
    syncd,
    vcards,
)
from tests.faultproxy import Proxy
from tests.servers import DavServer

MKCOL_ADDRESSBOOK = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:mkcol xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:set><D:prop>'
    "<D:resourcetype><D:collection/><C:addressbook/></D:resourcetype>"
    "</D:prop></D:set></D:mkcol>"
)


@pytest.fixture(scope="module")
def proxy(radicale: DavServer) -> Iterator[Proxy]:
    p = Proxy(radicale.base)
    yield p
    p.stop()


@pytest.fixture
def fresh(proxy: Proxy) -> Proxy:
    proxy.reset()
    return proxy


def make_setup(tmp: Path, proxy: Proxy, cards: int = 2, extra: str = "") -> Setup:
    setup = Setup(tmp, proxy.base, calendar_extra="  timeout: 1.5\n" + extra)
    setup.write(vcards(cards))
    return setup


def address_book(radicale: DavServer, people: int) -> str:
    """A fresh address book on Radicale with `people` cards; its path."""
    path = f"/alice/book-{uuid.uuid4().hex[:8]}/"
    r = requests.request("MKCOL", radicale.base + path, data=MKCOL_ADDRESSBOOK,
                         auth=("alice", "x"), headers={"Content-Type": "application/xml"})
    assert r.status_code == 201, r.text
    for i in range(people):
        card = (f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:b{i}\r\nFN:Booked {i}\r\n"
                f"TEL:+1415555{i:04d}\r\nEND:VCARD\r\n")
        put = requests.put(f"{radicale.base}{path}b{i}.vcf", data=card, auth=("alice", "x"),
                           headers={"Content-Type": "text/vcard"})
        assert put.status_code == 201
    return path


def ours(radicale: DavServer, setup: Setup) -> list[str]:
    return sorted(str(e.marker) for e in raw_events(radicale, setup.calendar) if e.marker)


def puts(log: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    return [(e["path"].rsplit("/", 1)[-1], e["action"], e.get("status"))
            for e in log if e["method"] == "PUT"]


# ---------------------------------------------------------------------------
# Retried within the cycle


RETRIED: dict[str, tuple[dict[str, Any], list[str]]] = {
    # the fault on the first create, and what the wire shows for that event
    "500 twice": ({"method": "PUT", "action": "status", "status": 500, "times": 2},
                  ["status", "status", "forward"]),
    "502": ({"method": "PUT", "action": "status", "status": 502},
            ["status", "forward"]),
    "503 without Retry-After": ({"method": "PUT", "action": "status", "status": 503},
                                ["status", "forward"]),
    "connection reset before the server saw it": ({"method": "PUT", "action": "reset"},
                                                  ["reset", "forward"]),
    # The create landed but its answer was lost: the retry's If-None-Match
    # meets 412, and syncd adopts the event it wrote instead of writing twice.
    "answer lost after the write landed": ({"method": "PUT", "action": "lost"},
                                           ["lost", "forward"]),
}


@pytest.mark.parametrize("fault", list(RETRIED))
def test_a_failed_create_is_retried_and_written_once(
        fault: str, tmp_path: Path, fresh: Proxy, radicale: DavServer) -> None:
    rule, wire = RETRIED[fault]
    setup = make_setup(tmp_path, fresh)
    fresh.script(rule)
    run = syncd(setup, "sync")
    assert run.returncode == 0, run.stderr
    assert run.stderr.count('"event": "retrying request"') == len(wire) - 1
    log = fresh.log()
    first = puts(log)[0][0]
    assert [a for name, a, _s in puts(log) if name == first] == wire
    if fault.startswith("answer lost"):
        assert [s for name, _a, s in puts(log) if name == first] == [201, 412]
    assert all(e["if_none_match"] == "*" for e in log if e["method"] == "PUT")
    markers = ours(radicale, setup)
    assert len(markers) == len(set(markers)) == 2
    check_consistent(setup, radicale)
    fresh.reset()
    again = cycle_lines(syncd(setup, "sync").stderr)[-1]
    assert again["written"] == 0
    # Discovery and one sync-collection REPORT: no write goes out.
    assert {e["method"] for e in fresh.log()} == {"PROPFIND", "REPORT"}


def test_reads_survive_a_timeout_and_a_truncated_answer(
        tmp_path: Path, fresh: Proxy, radicale: DavServer) -> None:
    setup = make_setup(tmp_path, fresh)
    fresh.script({"method": "REPORT", "action": "hang", "seconds": 4},
                 {"method": "PROPFIND", "action": "truncate"})
    run = syncd(setup, "sync")
    assert run.returncode == 0, run.stderr
    log = fresh.log()
    assert [e["action"] for e in log if e["method"] == "REPORT"][:2] == ["hang", "forward"]
    assert [e["action"] for e in log if e["method"] == "PROPFIND"][:2] == ["truncate",
                                                                           "forward"]
    assert cycle_lines(run.stderr)[-1]["created"] == 2
    assert len(ours(radicale, setup)) == 2


def test_retry_after_is_honoured(tmp_path: Path, fresh: Proxy, radicale: DavServer) -> None:
    setup = make_setup(tmp_path, fresh)
    fresh.script({"method": "REPORT", "action": "status", "status": 429,
                  "headers": {"Retry-After": "2"}},
                 {"method": "PUT", "action": "status", "status": 503,
                  "headers": {"Retry-After": "1"}})
    run = syncd(setup, "sync")
    assert run.returncode == 0, run.stderr
    log = fresh.log()
    reports = [e for e in log if e["method"] == "REPORT"]
    assert reports[0]["status"] == 429 and reports[1]["status"] == 207
    assert reports[1]["t"] - reports[0]["t"] >= 2.0
    first_put = [e for e in log if e["method"] == "PUT"][:2]
    assert first_put[0]["status"] == 503 and first_put[1]["status"] == 201
    assert first_put[1]["t"] - first_put[0]["t"] >= 1.0
    assert len(ours(radicale, setup)) == 2
    # Every try is counted in the cycle's summary line.
    rec = cycle_lines(run.stderr)[-1]
    assert rec["requests"] == len(log)


# ---------------------------------------------------------------------------
# Not retried: the user must act, or a later cycle will


def test_401_is_not_retried_and_names_what_to_fix(
        tmp_path: Path, fresh: Proxy, radicale: DavServer) -> None:
    setup = make_setup(tmp_path, fresh)
    fresh.script({"action": "status", "status": 401, "times": -1,
                  "headers": {"WWW-Authenticate": 'Basic realm="syncd test"'}})
    run = syncd(setup, "sync")
    assert run.returncode == 1
    assert (f"syncd: calendar: CalDAV server {fresh.base}/ rejected the credentials of alice "
            "(hint: check calendar.username and the password source (calendar.password_env "
            "/ password_file / password_command))") in run.stderr
    assert "Traceback" not in run.stderr
    assert '"retrying request"' not in run.stderr
    # The first request, once more without the up-front Basic guess (the way a
    # Digest server is met), and that is all.
    assert len(fresh.log()) <= 3
    status = json.loads(syncd(setup, "status", "--json").stdout)
    assert status["calendar"]["last_error"].startswith("CalDAV server")
    # A fatal error waits at least 15 minutes (or until SIGHUP / a restart).
    nxt = datetime.fromisoformat(status["calendar"]["next_try"])
    assert nxt - datetime.now(UTC) > timedelta(minutes=13)
    assert raw_events(radicale, setup.calendar) == []


def test_a_412_on_create_leaves_the_intent_for_the_next_cycle(
        tmp_path: Path, fresh: Proxy, radicale: DavServer) -> None:
    """A 412 that does not come from our own earlier write (the event is not
    there): the cycle stops with the calendar error, the intent stays, and
    the next cycle writes it exactly once."""
    setup = make_setup(tmp_path, fresh)
    fresh.script({"method": "PUT", "action": "status", "status": 412})
    run = syncd(setup, "sync")
    assert run.returncode == 1
    assert "syncd: calendar: event '" in run.stderr and "already exists" in run.stderr
    assert [a for _n, a, _s in puts(fresh.log())] == ["status"]  # a 412 is never retried
    status = json.loads(syncd(setup, "status", "--json").stdout)
    assert "already exists" in status["calendar"]["last_error"]
    fresh.reset()
    again = syncd(setup, "sync")
    assert again.returncode == 0, again.stderr
    assert cycle_lines(again.stderr)[-1]["created"] == 2
    markers = ours(radicale, setup)
    assert len(markers) == len(set(markers)) == 2
    status = json.loads(syncd(setup, "status", "--json").stdout)
    assert status["calendar"]["last_error"] is None and status["calendar"]["next_try"] is None


def test_a_long_retry_after_backs_the_source_off_and_the_rest_goes_on(
        tmp_path: Path, fresh: Proxy, radicale: DavServer) -> None:
    book = address_book(radicale, 2)
    setup = make_setup(tmp_path, fresh)
    setup.contacts = (f"  - {{name: book, type: carddav, url: \"{fresh.base}{book}\", "
                      "username: alice, password_env: CAL_PASSWORD}\n")
    setup.write()
    fresh.script({"path": "^/alice/book-", "action": "status", "status": 429, "times": -1,
                  "headers": {"Retry-After": "3600"}})
    run = syncd(setup, "sync")
    assert run.returncode == 1
    assert "syncd: source book failed (see `syncd status`)" in run.stderr
    # Beyond what a cycle waits for: one request, no retry in the cycle.
    assert len([e for e in fresh.log() if e["path"].startswith("/alice/book-")]) == 1
    # The file source's contacts were written all the same.
    assert cycle_lines(run.stderr)[-1]["created"] == 2
    status = json.loads(syncd(setup, "status", "--json").stdout)
    book_st = next(s for s in status["sources"] if s["name"] == "book")
    assert book_st["last_error"] == (
        f"CardDAV source 'book': PROPFIND {fresh.base}{book} answered HTTP 429 "
        "(hint: it asked to retry after 3600s)")
    wait = datetime.fromisoformat(book_st["next_try"]) - datetime.now(UTC)
    assert timedelta(minutes=59) < wait <= timedelta(hours=1)
    cards = next(s for s in status["sources"] if s["name"] == "cards")
    assert cards["last_error"] is None and cards["next_try"] is None
    text = syncd(setup, "status").stdout  # as a person reads it
    assert f"source book (carddav): last sync never  ERROR: {book_st['last_error']}  " \
        f"next try {book_st['next_try']}" in text


def test_a_broken_source_never_stalls_the_others_in_the_daemon(
        tmp_path: Path, fresh: Proxy, radicale: DavServer) -> None:
    """`syncd run`: the CardDAV source fails (502), is left alone until its
    next try while the file source and the calendar go on every cycle; after
    a reload (the user fixed it) it is tried at once and recovers."""
    book = address_book(radicale, 2)
    setup = make_setup(tmp_path, fresh)
    setup.contacts = (f"  - {{name: book, type: carddav, url: \"{fresh.base}{book}\", "
                      "username: alice, password_env: CAL_PASSWORD}\n")
    setup.write()
    fresh.script({"path": "^/alice/book-", "action": "status", "status": 502, "times": -1})
    proc = Proc(setup)
    try:
        first = proc.wait_event("cycle")
        assert first["failed_sources"] == ["book"] and first["created"] == 2
        book_requests = len([e for e in fresh.log() if e["path"].startswith("/alice/book-")])
        assert book_requests == 4  # the first try and three retries, then it gives up
        status = json.loads(syncd(setup, "status", "--json").stdout)
        book_st = next(s for s in status["sources"] if s["name"] == "book")
        assert book_st["last_error"].endswith("answered HTTP 502")
        assert datetime.fromisoformat(book_st["next_try"]) > datetime.now(UTC)

        # The next cycle: the file source and the calendar as usual, the
        # broken source not even asked.
        (tmp_path / "cards.vcf").write_text(vcards(3))
        proc.send(signal.SIGUSR1)
        waiting = proc.wait_event("sources backing off")
        assert list(waiting["next_try"]) == ["book"]
        second = proc.wait_event("cycle")
        assert second["failed_sources"] == [] and second["created"] == 1
        assert len([e for e in fresh.log()
                    if e["path"].startswith("/alice/book-")]) == book_requests

        # Fixed (here: the server is back) and reloaded: tried at once.
        fresh.reset()
        proc.send(signal.SIGHUP)
        proc.wait_event("config reloaded")
        third = proc.wait_event("cycle")
        assert third["failed_sources"] == [] and third["created"] == 2
        proc.send(signal.SIGTERM)
        assert proc.wait() == 0
    finally:
        proc.stop()
    status = json.loads(syncd(setup, "status", "--json").stdout)
    book_st = next(s for s in status["sources"] if s["name"] == "book")
    assert book_st["last_error"] is None and book_st["next_try"] is None
    assert len(ours(radicale, setup)) == 5
    assert NOW  # the daemon ran on the pinned clock of the other tests


# ---------------------------------------------------------------------------
# The policy itself (pure: a function stands in for one HTTP request)

FAST = retry.Policy(initial=0.001, max_wait=0.002)


def test_only_safe_requests_are_retried_and_only_for_transient_failures() -> None:
    calls: list[str] = []

    def flaky(err: Exception) -> Any:
        def fn() -> str:
            calls.append("x")
            raise err
        return fn

    for method, err, tries in [
        ("REPORT", RemoteError("reset"), 4),
        ("PUT", RemoteError("reset"), 4),  # conditional writes: safe to repeat
        ("MKCALENDAR", RemoteError("reset"), 1),  # not idempotent
        ("POST", RemoteError("reset"), 1),
        ("GET", AuthError("401"), 1),
        ("GET", RemoteError("403", retryable=False), 1),
        ("GET", retry.ServerBusy("429", retry_after=3600), 1),  # longer than a cycle waits
        ("GET", ValueError("a bug"), 1),
    ]:
        calls.clear()
        with pytest.raises(type(err)):
            retry.call(flaky(err), method=method, policy=FAST)
        assert len(calls) == tries, (method, err)

    answers = iter([503, 502, 200])
    got = retry.call(lambda: next(answers), method="GET", policy=FAST,
                     result_delay=lambda s: 0.0 if s >= 500 else None)
    assert got == 200
    answers = iter([503] * 10)
    assert retry.call(lambda: next(answers), method="GET", policy=FAST,
                      result_delay=lambda s: 0.0 if s >= 500 else None) == 503


def test_backoff_doubles_from_the_poll_interval_and_honours_retry_after() -> None:
    rng = random.Random(1)
    transient = RemoteError("502")
    delays = [retry.next_delay(n, 120, transient, rng).total_seconds() for n in range(1, 8)]
    for n, d in enumerate(delays, 1):
        assert 0.9 * min(120 * 2 ** (n - 1), 3600) <= d <= 1.1 * min(120 * 2 ** (n - 1), 3600)
    fatal = retry.next_delay(1, 120, AuthError("401"), rng)
    assert fatal >= timedelta(minutes=13.5)
    asked = retry.next_delay(1, 120, retry.ServerBusy("429", retry_after=7200), rng)
    assert asked >= timedelta(hours=2)
    assert retry.parse_retry_after("120") == 120
    soon = datetime.now(UTC) + timedelta(seconds=90)
    from email.utils import format_datetime

    assert 80 < (retry.parse_retry_after(format_datetime(soon, usegmt=True)) or 0) <= 90
    assert retry.parse_retry_after("soon") is None


def test_a_lost_answer_to_a_move_is_taken_as_our_own_write(
        tmp_path: Path, fresh: Proxy, radicale: DavServer) -> None:
    """The move's PUT (If-Match) lands but its answer is lost: the retry meets
    412, and the event the server holds is recognised as our own write (not
    the user's move, nor the user's notes)."""
    setup = make_setup(tmp_path, fresh)
    assert syncd(setup, "sync").returncode == 0
    later = base_env(SYNCD_NOW="2026-11-25T22:00:00+00:00")  # Wednesday's calls passed
    fresh.script({"method": "PUT", "header": "If-Match", "action": "lost"})
    run = syncd(setup, "sync", env=later)
    assert run.returncode == 0, run.stderr
    moves = [(e["action"], e["status"]) for e in fresh.log()
             if e["method"] == "PUT" and e["if_match"]]
    assert moves[:2] == [("lost", 204), ("forward", 412)]
    check_consistent(setup, radicale)
    status = json.loads(syncd(setup, "status", "--json", env=later).stdout)
    assert all(c["unparsed"] == [] for c in status["contacts"])
    assert status["calendar"]["last_error"] is None
    fresh.reset()
    idle = cycle_lines(syncd(setup, "sync", env=later).stderr)[-1]
    assert idle["written"] == 0
    with state_db(setup) as db:
        assert db.execute("SELECT COUNT(*) FROM followups WHERE user_moved=1 "
                          "OR pending IS NOT NULL").fetchone()[0] == 0
