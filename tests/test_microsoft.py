"""Outlook contacts, the Outlook calendar and MSAL sign-in, against the local
identity-platform and Graph emulators (real HTTPS with a throwaway CA, real
msal and requests; see tests/emulators/). The port contracts run in
test_calendar_contract.py and test_contact_sources.py; these are the
provider-specific behaviours, ending with the real CLI end to end."""

from __future__ import annotations

import email.utils
import json
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connectors.graph_calendar import PROP_GUID, PROP_ID, TX_NAMESPACE, GraphCalendar
from connectors.graph_http import parse_retry_after
from connectors.outlook_contacts import OutlookContactsSource
from syncd.errors import AuthError, PreconditionFailed, RemoteError
from syncd.model import EventDraft, RemoteEvent
from tests.cli_env import cycles
from tests.conftest_microsoft import MsCloud
from tests.emulators.graph import Fault, on

NY = ZoneInfo("America/New_York")
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def person(name: str, email: str, **extra: Any) -> dict[str, Any]:
    first, *_, last = name.split()
    return {"displayName": name, "givenName": first, "surname": last,
            "emailAddresses": [{"name": name, "address": email}], **extra}


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


def source(ms: MsCloud, state: Path, **kw: Any) -> OutlookContactsSource:
    page = kw.pop("page_size", 2)
    cfg = ms.source_cfg(**kw)
    if not (state / f"msal-{cfg.name}.json").exists():
        ms.sign_in(cfg, state)
    return OutlookContactsSource(cfg, state, page_size=page)


def calendar(ms: MsCloud, state: Path, name: str = "Follow-ups", **kw: Any) -> GraphCalendar:
    cfg = ms.calendar_cfg(name)
    if not (state / "msal-calendar.json").exists():
        ms.sign_in(cfg, state)
    return GraphCalendar(cfg, state, **kw)


def draft(start: datetime, text: str = "block\nLog attempts below:\n") -> EventDraft:
    fid = f"fu-{uuid.uuid4().hex}"
    return EventDraft(fid, f"{fid}@syncd", "Call Jane Roe (Acme Capital) #1", start,
                      start + timedelta(minutes=15), text)


def soon(days: int = 3, hour: int = 10) -> datetime:
    """A time inside the connector's window whatever today is."""
    now = datetime.now(NY)
    return (now + timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0)


# --------------------------------------------------------------------------
# Contacts: delta rounds
# --------------------------------------------------------------------------


def test_contacts_delta_follows_next_links_and_stores_delta_links(ms: MsCloud, state: Path
                                                                  ) -> None:
    g = ms.graph
    recruiters = g.add_folder("Recruiters")
    for i in range(5):
        g.put_contact(person(f"Ann Lee{i}", f"ann{i}@x.example", categories=["Follow up"]))
    g.put_contact(person("Bob Li", "bob@x.example", jobTitle="CTO", companyName="Northwind",
                         mobilePhone="+1 415 555 0102", businessPhones=["+1 415 555 0100"],
                         personalNotes="met at\r\nthe fair"), folder=recruiters)
    src = source(ms, state, page_size=2)
    g.server.clear_log()
    batch = src.read(None)
    assert batch.full and len(batch.contacts) == 6 and not batch.problems
    deltas = [r for r in g.requests if "/delta" in r.path]
    assert sum(1 for r in deltas if r.q("$skiptoken")) == 2  # root: 5 → 3 pages; child: 1
    bob = next(c for c in batch.contacts if c.name == "Bob Li")
    assert (bob.title, bob.company, bob.phones, bob.note) == (
        "CTO", "Northwind", ("+1 415 555 0102", "+1 415 555 0100"), "met at\nthe fair")
    links = json.loads(batch.cursor or "")["links"]
    assert set(links) == {g.root.id, recruiters} and all("$deltatoken=" in v
                                                         for v in links.values())
    # An idle round is one HTTP request: a JSON batch of both folder listings
    # and each folder's deltaLink.
    g.server.clear_log()
    idle = src.read(batch.cursor)
    assert (idle.contacts, idle.removed, idle.full) == ((), (), False)
    assert [(r.method, r.path) for r in g.requests if not r.batched] == [
        ("POST", "/v1.0/$batch")]
    assert [r.q("$deltatoken") is not None for r in g.requests if "/delta" in r.path] == [
        True, True]
    assert all(r.batched for r in g.requests[1:])


def test_a_throttled_batch_step_is_sent_again_alone(ms: MsCloud, state: Path) -> None:
    g = ms.graph
    g.add_folder("Recruiters")
    jane = g.put_contact(person("Jane Roe", "jane@x.example"))
    src = source(ms, state)
    first = src.read(None)
    g.put_contact(person("Jane Roe", "jane@x.example", jobTitle="CIO"), contact_id=jane)
    g.inject(Fault(lambda r: r.batched and r.q("$deltatoken") is not None, 429,
                   "ApplicationThrottled", "Too many requests.", {"Retry-After": "0.01"}))
    g.server.clear_log()
    batch = src.read(first.cursor)
    assert [(c.uid, c.title) for c in batch.contacts] == [(jane, "CIO")]
    alone = [r for r in g.requests if not r.batched and "/delta" in r.path]
    assert len(alone) == 1 and alone[0].q("$deltatoken") is not None


def test_folders_at_any_depth_are_read_and_an_idle_read_is_one_request(
    ms: MsCloud, state: Path
) -> None:
    g = ms.graph
    clients = g.add_folder("Clients")
    europe = g.add_folder("Europe", parent=clients)
    berlin = g.add_folder("Berlin", parent=europe)
    g.put_contact(person("Ann Lee", "ann@x.example"), folder=clients)
    g.put_contact(person("Eva Braun", "eva@x.example"), folder=berlin)
    src = source(ms, state)
    first = src.read(None)
    assert sorted(c.name for c in first.contacts) == ["Ann Lee", "Eva Braun"]
    g.server.clear_log()
    idle = src.read(first.cursor)
    assert (idle.contacts, idle.removed, idle.full) == ((), (), False)
    assert [(r.method, r.path) for r in g.requests if not r.batched] == [
        ("POST", "/v1.0/$batch")]
    # A folder made since, deep down, is found and read; one removed goes.
    rome = g.add_folder("Rome", parent=europe)
    g.put_contact(person("Gio Rossi", "gio@x.example"), folder=rome)
    g.delete_folder(berlin)
    later = src.read(idle.cursor)
    assert sorted(c.name for c in later.contacts) == ["Ann Lee", "Gio Rossi"]  # a full re-read
    assert later.full  # a folder went away: its contacts must go too
    # `folders:` names a folder at any depth; idle, still one request (the
    # cursor remembers the folders it did not read, to list them in the batch).
    rome_only = source(ms, state, folders=("rome",))
    only = rome_only.read(None)
    assert [c.name for c in only.contacts] == ["Gio Rossi"]
    g.server.clear_log()
    assert rome_only.read(only.cursor).contacts == ()
    assert [(r.method, r.path) for r in g.requests if not r.batched] == [
        ("POST", "/v1.0/$batch")]


def test_removed_and_moved_contacts(ms: MsCloud, state: Path) -> None:
    g = ms.graph
    other = g.add_folder("Other")
    jane = g.put_contact(person("Jane Roe", "jane@x.example"))
    bob = g.put_contact(person("Bob Li", "bob@x.example"))
    src = source(ms, state)
    first = src.read(None)
    g.delete_contact(bob)
    g.put_contact(person("Jane Roe", "jane@x.example", jobTitle="CIO"), folder=other,
                  contact_id=jane)  # moved to another folder (and edited)
    batch = src.read(first.cursor)
    assert not batch.full
    assert batch.removed == (bob,)  # the move is not a removal
    assert [(c.uid, c.title) for c in batch.contacts] == [(jane, "CIO")]


def test_expired_delta_state_gives_one_full_read_without_duplicates(ms: MsCloud, state: Path
                                                                    ) -> None:
    g = ms.graph
    ids = [g.put_contact(person(f"Ann Lee{i}", f"a{i}@x.example")) for i in range(4)]
    src = source(ms, state)
    first = src.read(None)
    g.delete_contact(ids[0])
    g.put_contact(person("Priya Natarajan", "priya@x.example"))
    g.evict()
    g.server.clear_log()
    batch = src.read(first.cursor)
    assert batch.full
    uids = [c.uid for c in batch.contacts]
    assert len(uids) == len(set(uids)) == 4
    assert ids[0] not in uids
    gone = [r for r in g.requests if r.q("$deltatoken")]
    assert len(gone) == 1  # the expired link, answered 410 with Location
    again = src.read(batch.cursor)
    assert (again.contacts, again.full) == ((), False)


@pytest.mark.parametrize("status,code", [(410, "SyncStateNotFound"), (400, "resyncRequired")])
def test_resync_codes_on_the_first_delta_page_read_in_full(
    ms: MsCloud, state: Path, status: int, code: str
) -> None:
    g = ms.graph
    g.put_contact(person("Jane Roe", "jane@x.example"))
    src = source(ms, state)
    first = src.read(None)
    g.inject(Fault(on("GET", "/delta", "$deltatoken"), status=status, code=code))
    batch = src.read(first.cursor)
    assert batch.full and [c.name for c in batch.contacts] == ["Jane Roe"]


def test_failing_next_link_restarts_the_round(ms: MsCloud, state: Path) -> None:
    g = ms.graph
    for i in range(5):
        g.put_contact(person(f"Ann Lee{i}", f"a{i}@x.example"))
    src = source(ms, state, page_size=2)
    first = src.read(None)
    for i in range(5, 10):
        g.put_contact(person(f"Ann Lee{i}", f"a{i}@x.example"))
    # A server error (not retried by the HTTP layer) on the second page.
    g.inject(Fault(on("GET", "/delta", "$skiptoken"), status=500, code="generalException",
                   message="An internal server error occurred."))
    g.server.clear_log()
    batch = src.read(first.cursor)
    assert not batch.full
    assert sorted(c.name for c in batch.contacts) == [f"Ann Lee{i}" for i in range(5, 10)]
    starts = [r for r in g.requests if r.q("$deltatoken")]
    assert len(starts) == 2  # the round began again from its deltaLink
    # A stale skip token (SyncStateNotFound mid-round) means a full re-read.
    g.put_contact(person("Zed Last", "z@x.example"))
    g.put_contact(person("Zoe Last", "zo@x.example"))
    g.put_contact(person("Zia Last", "zi@x.example"))
    g.inject(Fault(on("GET", "/delta", "$skiptoken"), status=410, code="SyncStateNotFound"))
    full = src.read(batch.cursor)
    assert full.full and len(full.contacts) == 13


def test_categories_filter_and_losing_the_category(ms: MsCloud, state: Path) -> None:
    g = ms.graph
    jane = g.put_contact(person("Jane Roe", "jane@x.example", categories=["Follow Up", "VIP"]))
    g.put_contact(person("Bob Li", "bob@x.example", categories=["Personal"]))
    src = source(ms, state, categories=("follow up",))
    first = src.read(None)
    assert [(c.name, c.labels) for c in first.contacts] == [("Jane Roe", ("Follow Up", "VIP"))]
    g.put_contact(person("Jane Roe", "jane@x.example", categories=["VIP"]), contact_id=jane)
    batch = src.read(first.cursor)
    assert batch.removed == (jane,) and batch.contacts == ()


def test_folders_setting_reads_only_the_named_folders(ms: MsCloud, state: Path) -> None:
    g = ms.graph
    work = g.add_folder("Work")
    g.put_contact(person("Jane Roe", "jane@x.example"), folder=work)
    g.put_contact(person("Bob Li", "bob@x.example"))
    src = source(ms, state, folders=("work",))
    assert [c.name for c in src.read(None).contacts] == ["Jane Roe"]
    missing = source(ms, state, folders=("Nope",))
    with pytest.raises(RemoteError, match="'Nope' not found; available: 'Contacts', 'Work'") as e:
        missing.read(None)
    assert not e.value.retryable


# --------------------------------------------------------------------------
# Calendar
# --------------------------------------------------------------------------


def test_retried_post_after_a_lost_response_creates_one_event(ms: MsCloud, state: Path) -> None:
    cal = calendar(ms, state)
    g = ms.graph
    # The first POST is processed, then its answer is lost (504, then a
    # dropped connection): the retries carry the same transactionId.
    g.inject(Fault(on("POST", r"/events$"), status=504, code="GatewayTimeout", after=True))
    g.inject(Fault(on("POST", r"/events$"), drop=True, after=True))
    made = cal.create(draft(soon()))
    posts = [r for r in g.requests if r.method == "POST" and r.path.endswith("/events")]
    assert len(posts) == 3
    # One transactionId, derived from the calendar and the follow-up (the
    # same in any process).
    cal_id = cal.url().rsplit("/", 1)[1]
    assert {json.loads(r.body)["transactionId"] for r in posts} == {
        str(uuid.uuid5(TX_NAMESPACE, f"{cal_id}/{made.syncd_id}"))}
    events = g.events_in(cal_id)
    assert [e.id for e in events] == [made.ref]


def test_a_lost_batch_answer_is_sent_again_and_makes_each_event_once(
    ms: MsCloud, state: Path
) -> None:
    cal = calendar(ms, state)
    g = ms.graph
    cal_id = cal.url().rsplit("/", 1)[1]
    # The batch runs, then its answer is lost: the retry carries the same
    # transactionIds, and Graph answers each with the event made first.
    g.inject(Fault(on("POST", r"/\$batch$"), status=504, code="GatewayTimeout", after=True))
    drafts = [draft(soon(2 + i)) for i in range(3)]
    made = cal.create_many(drafts)
    assert [m.syncd_id if isinstance(m, RemoteEvent) else m for m in made] == [
        d.syncd_id for d in drafts]
    assert len([r for r in g.requests if not r.batched and r.path.endswith("$batch")]) == 2
    assert sorted(e.id for e in g.events_in(cal_id)) == sorted(
        m.ref for m in made if isinstance(m, RemoteEvent))


def test_create_looks_up_our_property_first(ms: MsCloud, state: Path) -> None:
    cal = calendar(ms, state)
    d = draft(soon())
    made = cal.create(d)
    g = ms.graph
    g.server.clear_log()
    # Another instance (after a crash) retries the create: found by $filter.
    again = calendar(ms, state)
    from syncd.errors import AlreadyExists

    with pytest.raises(AlreadyExists):
        again.create(d)
    filters = [r.q("$filter") or "" for r in g.requests if r.q("$filter")]
    assert filters and PROP_ID in filters[0] and d.syncd_id in filters[0]
    assert not any(r.method == "POST" and r.path.endswith("/events") for r in g.requests)
    # Property values match case-insensitively on Exchange: an id differing
    # only in case is not ours.
    twin = EventDraft(d.syncd_id.upper(), d.uid.upper(), d.summary, d.start, d.end, "x")
    other = again.create(twin)
    assert other.ref != made.ref


def test_stale_etag_is_precondition_failed_and_the_user_edit_survives(
    ms: MsCloud, state: Path
) -> None:
    cal = calendar(ms, state)
    d = draft(soon())
    made = cal.create(d)
    http = ms.other_client()
    url = f"{ms.graph.root_url}/me/events/{made.ref}"
    body = http.get(url, headers={"Prefer": 'outlook.body-content-type="text"'}, timeout=10
                    ).json()["body"]["content"]
    r = http.patch(url, json={"body": {"contentType": "text", "content": body + "9:10 vm\r\n"}},
                   headers={"If-Match": made.etag}, timeout=10)
    assert r.status_code == 200
    moved = EventDraft(d.syncd_id, d.uid, d.summary, d.start + timedelta(hours=2),
                       d.end + timedelta(hours=2), d.description)
    with pytest.raises(PreconditionFailed):
        cal.update(made.ref, made.etag, moved)
    now = cal.get(d.uid)
    assert now is not None and now.description == d.description + "9:10 vm\n"
    assert now.start == d.start
    merged = cal.update(now.ref, now.etag, EventDraft(
        d.syncd_id, d.uid, d.summary, moved.start, moved.end, now.description))
    assert merged.description.endswith("9:10 vm\n") and merged.start == moved.start


def test_out_of_window_removed_is_not_a_deletion(ms: MsCloud, state: Path) -> None:
    cal = calendar(ms, state)
    g = ms.graph
    keep = cal.create(draft(soon(2)))
    far = cal.create(draft(soon(3)))
    gone = cal.create(draft(soon(4)))
    base = cal.changes(None)
    # The user drags one event two years ahead, and deletes another.
    start = soon(730)
    g.move_event(far.ref, start, start + timedelta(minutes=15))
    cal.delete(gone.ref, gone.etag)
    g.server.clear_log()
    ch = cal.changes(base.cursor)
    delta = [r for r in g.requests if "/calendarView/delta" in r.path]
    assert len(delta) == 1
    assert ch.deleted == (gone.ref,)
    assert [(e.ref, e.start) for e in ch.events] == [(far.ref, start)]
    assert ch.events[0].syncd_id == far.syncd_id
    assert keep.ref not in {e.ref for e in ch.events}


def test_calendar_delta_pages_restarts_and_resyncs(ms: MsCloud, state: Path) -> None:
    cal = calendar(ms, state, page_size=2)
    g = ms.graph
    made = [cal.create(draft(soon(2 + i))) for i in range(5)]
    base = cal.changes(None)
    assert base.full and {e.ref for e in base.events} == {m.ref for m in made}
    assert all(e.syncd_id for e in base.events)
    more = [cal.create(draft(soon(9 + i))) for i in range(3)]
    g.inject(Fault(on("GET", "/calendarView/delta", "$skiptoken"), status=500,
                   code="generalException"))
    ch = cal.changes(base.cursor)
    assert not ch.full and {e.ref for e in ch.events} == {m.ref for m in more}
    g.evict()
    full = cal.changes(ch.cursor)
    refs = [e.ref for e in full.events]
    assert full.full and len(refs) == len(set(refs)) == 8


def test_foreign_events_keep_syncd_id_none_without_extra_requests(ms: MsCloud, state: Path
                                                                  ) -> None:
    cal = calendar(ms, state)
    base = cal.changes(None)
    http = ms.other_client()
    cal_id = cal.url().rsplit("/", 1)[1]
    start = soon(5, 14)
    for i in range(3):
        r = http.post(f"{ms.graph.root_url}/me/calendars/{cal_id}/events", json={
            "subject": f"Interview {i}", "start": {"dateTime": start.strftime(
                "%Y-%m-%dT%H:%M:%S"), "timeZone": "Eastern Standard Time"},
            "end": {"dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                    "timeZone": "Eastern Standard Time"},
            "body": {"contentType": "HTML", "content": "<p>Bring <b>CV</b></p>"}}, timeout=10)
        assert r.status_code == 201
    ms.graph.server.clear_log()
    ch = cal.changes(base.cursor)
    assert len(ms.graph.requests) == 1  # no transactionId: not ours, nothing to expand
    assert {(e.summary, e.syncd_id, e.description) for e in ch.events} == {
        (f"Interview {i}", None, "Bring CV") for i in range(3)}
    assert all(e.start == start and getattr(e.start.tzinfo, "key", "") == "America/New_York"
               for e in ch.events)


# --------------------------------------------------------------------------
# Throttling and faults
# --------------------------------------------------------------------------


def _gap(ms: MsCloud, path_part: str) -> float:
    hits = [r.at for r in ms.graph.requests if path_part in r.path]
    assert len(hits) == 2, hits
    return hits[1] - hits[0]


def test_retry_after_fractional_seconds_is_honoured(ms: MsCloud, state: Path) -> None:
    cal = calendar(ms, state)
    cal.url()
    ms.graph.server.clear_log()
    ms.graph.inject(Fault(on("GET", "/calendarView/delta"), status=429, code="TooManyRequests",
                          message="Please retry again later.", headers={"Retry-After": "0.35"}))
    cal.changes(None)
    assert _gap(ms, "/calendarView/delta") >= 0.35


def test_retry_after_http_date_is_honoured(ms: MsCloud, state: Path) -> None:
    cal = calendar(ms, state)
    cal.url()
    ms.graph.server.clear_log()
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # 1-second resolution
    ms.graph.inject(Fault(on("GET", "/calendarView/delta"), status=503,
                          headers={"Retry-After": when}))
    cal.changes(None)
    assert _gap(ms, "/calendarView/delta") >= 0.9


def test_long_retry_after_fails_the_cycle_instead_of_sleeping(ms: MsCloud, state: Path
                                                              ) -> None:
    cal = calendar(ms, state)
    cal.url()
    ms.graph.inject(Fault(on("GET", "/calendarView/delta"), status=429, code="TooManyRequests",
                          headers={"Retry-After": "3600"}))
    t0 = time.monotonic()
    with pytest.raises(RemoteError, match="429") as e:
        cal.changes(None)
    assert e.value.retryable and "3600 s" in e.value.hint
    assert time.monotonic() - t0 < 5


def test_parse_retry_after() -> None:
    assert parse_retry_after("2.128") == 2.128
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("-3") == 0.0


def test_at_most_four_requests_in_flight_per_mailbox(ms: MsCloud, state: Path) -> None:
    cal = calendar(ms, state)
    for i in range(8):
        cal.create(draft(soon(2 + i)))
    twins = [calendar(ms, state) for _ in range(6)]  # connectors on the same mailbox
    for t in twins:
        t.url()
    ms.graph.latency = 0.05  # every request takes a while: parallel ones overlap
    ms.graph.max_in_flight = 0
    # Six full reads at once (a delta, then a JSON batch of expanded GETs
    # each, which Graph runs four at a time: four slots) must still stay
    # within Outlook's 4 per mailbox.
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda c: c.changes(None), twins))
    assert all(len(ch.events) == 8 and all(e.syncd_id for e in ch.events) for ch in results)
    assert ms.graph.max_in_flight == 4
    assert ms.graph.throttled == 0


def test_401_refreshes_once_then_reports(ms: MsCloud, state: Path) -> None:
    cal = calendar(ms, state)
    cal.url()
    ms.identity.revoke_access_tokens()  # the token dies before its expiry
    cal.changes(None)  # 401 → MSAL refresh (force) → retried with the new token
    ms.graph.inject(Fault(on("GET", "/calendarView/delta"), status=401,
                          code="InvalidAuthenticationToken", times=2))
    with pytest.raises(AuthError) as e:
        cal.changes(None)
    assert e.value.hint == "run `syncd auth calendar`"


# --------------------------------------------------------------------------
# Sign-in and tokens
# --------------------------------------------------------------------------


def test_refresh_token_rotation_is_persisted_0600(ms: MsCloud, state: Path) -> None:
    src = source(ms, state)
    cache = state / "msal-work.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    first_rt = ms.identity.latest_refresh_token()
    assert first_rt in cache.read_text()
    ms.identity.revoke_access_tokens()
    ms.graph.put_contact(person("Jane Roe", "jane@x.example"))
    assert [c.name for c in src.read(None).contacts] == ["Jane Roe"]
    rotated = ms.identity.latest_refresh_token()
    assert rotated != first_rt
    text = cache.read_text()
    assert rotated in text and first_rt not in text
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert not list(state.glob(".msal-work.json.*"))  # no temp files left behind


@pytest.mark.parametrize("what", ["invalid_grant", "interaction_required"])
def test_expired_sign_in_is_an_auth_error_naming_the_command(
    ms: MsCloud, state: Path, what: str
) -> None:
    src = source(ms, state)
    ms.identity.revoke_access_tokens()
    if what == "invalid_grant":
        ms.identity.revoke_refresh_tokens()
    else:
        ms.identity.require_interaction()
    with pytest.raises(AuthError) as e:
        src.read(None)
    assert what in e.value.message
    assert e.value.hint == "run `syncd auth work`"
    assert not e.value.retryable


def test_not_signed_in_and_missing_client_id(ms: MsCloud, state: Path) -> None:
    src = OutlookContactsSource(ms.source_cfg("fresh"), state)
    with pytest.raises(AuthError, match="not signed in") as e:
        src.read(None)
    assert e.value.hint == "run `syncd auth fresh`"
    cfg = ms.source_cfg("nocid")
    bare = OutlookContactsSource(type(cfg)(name="nocid", type="outlook",
                                           connection=cfg.connection), state)
    with pytest.raises(AuthError, match="no client_id"):
        bare.read(None)


def test_ca_bundle_wins_over_requests_ca_bundle(ms: MsCloud, state: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ms.graph.put_contact(person("Jane Roe", "jane@x.example"))
    # The environment names the system bundle (which does not know the test
    # CA); the configured ca_bundle is what counts.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", SYSTEM_BUNDLE)
    src = source(ms, state)  # ca_bundle = the emulator CA
    assert [c.name for c in src.read(None).contacts] == ["Jane Roe"]
    plain = OutlookContactsSource(ms.source_cfg(connection=ms.connection(ca_bundle=None)), state)
    with pytest.raises(RemoteError, match="TLS verification failed") as e:
        plain.read(None)
    assert "ca_bundle" in e.value.hint and not e.value.retryable
    # The other way round: the environment trusts the emulator CA, the
    # configured bundle does not; the configured one still wins.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ms.ca_pem))
    wrong = OutlookContactsSource(
        ms.source_cfg(connection=ms.connection(ca_bundle=Path(SYSTEM_BUNDLE))), state)
    with pytest.raises(RemoteError, match="TLS verification failed"):
        wrong.read(None)


def test_token_cache_shared_by_two_connectors_follows_rotation(ms: MsCloud, state: Path
                                                               ) -> None:
    shared = state / "shared.json"
    conn = ms.connection(token_cache=shared)
    ms.sign_in(ms.source_cfg(connection=conn), state)
    src = OutlookContactsSource(ms.source_cfg(connection=conn), state)
    cal = GraphCalendar(ms.calendar_cfg(connection=conn), state)
    ms.graph.put_contact(person("Jane Roe", "jane@x.example"))
    src.read(None)
    cal.url()
    for _ in range(2):  # each refresh rotates; the other connector picks it up
        ms.identity.revoke_access_tokens()
        ms.identity.revoke_refresh_tokens_except_latest()
        src.read(None)
        ms.identity.revoke_access_tokens()
        ms.identity.revoke_refresh_tokens_except_latest()
        cal.changes(None)
    assert ms.identity.latest_refresh_token() in shared.read_text()


# --------------------------------------------------------------------------
# The real CLI, end to end
# --------------------------------------------------------------------------


USER_LINES = "9:10 no answer\r\n  she said call after lunch  \r\n\r\n✨ مرحبا trailing"


class Cli:
    def __init__(self, ms: MsCloud, tmp: Path) -> None:
        self.ms, self.tmp = ms, tmp
        self.config = tmp / "config.yaml"

    def write_config(self, *, calendar_client: str | None = None, extra_source: str = "") -> None:
        ms = self.ms
        common = (f"authority: {ms.identity.authority()}, graph_endpoint: {ms.graph.base}, "
                  f"ca_bundle: {ms.ca_pem}, timeout: 10")
        cal_cache = "calendar-tokens.json" if calendar_client else "tokens.json"
        self.config.write_text(f"""\
timezone: America/New_York
horizon: 14d
state_dir: state
contacts:
  - {{name: work, type: outlook, client_id: {ms.client_id}, categories: [Follow up],
      token_cache: tokens.json, {common}}}
{extra_source}calendar:
  type: graph
  calendar: Follow-ups
  client_id: {calendar_client or ms.client_id}
  token_cache: {cal_cache}
  {common.replace(', ', chr(10) + '  ')}
cadences:
  pursue: {{channel: call, every: 2 business days, until: reached, then: keep_in_touch}}
  keep_in_touch: {{channel: email, every: 4 weeks}}
rules:
  - {{match: {{label: Hiring managers}}, cadence: pursue}}
""")

    def run(self, *args: str, now: datetime | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ}
        if now is not None:
            env["SYNCD_NOW"] = now.isoformat()
        proc = subprocess.run(
            [sys.executable, "-m", "syncd", "--config", str(self.config), "--log-format", "json",
             *args], capture_output=True, text=True, env=env, timeout=120, cwd=self.tmp)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def json(self, *args: str, now: datetime | None = None) -> Any:
        return json.loads(self.run(*args, "--json", now=now).stdout)

    def auth(self, name: str) -> str:
        """`syncd auth NAME`: read the code MSAL prints, approve it as the user."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "--config", str(self.config), "auth", name],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.tmp)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"enter the code (\S+) ", line)
        assert m, line + (proc.stderr.read() if proc.stderr else "")
        self.ms.identity.approve(m.group(1))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        return out


def next_wednesday() -> datetime:
    """10:00 New York time on a Wednesday 2-8 days ahead: inside the calendar
    window whatever today is."""
    day = datetime.now(NY).replace(hour=10, minute=0, second=0, microsecond=0)
    day += timedelta(days=2)
    while day.weekday() != 2:
        day += timedelta(days=1)
    return day


def our_events(ms: MsCloud) -> list[Any]:
    cal = ms.graph.calendar_named("Follow-ups")
    assert cal is not None
    return [e for e in ms.graph.events_in(cal.id) if any(
        pid.endswith("Name syncdId") for pid, _ in e.props.values())]


def when(e: Any, key: str) -> datetime:
    return datetime.fromisoformat(e.data[key]["dateTime"]).replace(
        tzinfo=ZoneInfo(e.data[key]["timeZone"]))


def subject(e: Any) -> str:
    return str(e.data["subject"])


@pytest.fixture
def cli(ms: MsCloud, tmp_path: Path) -> Iterator[Cli]:
    yield Cli(ms, tmp_path)


def test_e2e_outlook_contacts_to_outlook_calendar_and_back(ms: MsCloud, cli: Cli) -> None:
    g = ms.graph
    recruiters = g.add_folder("Recruiters")
    g.put_contact(person("Jane Roe", "jane@acme.example", companyName="Acme Capital",
                         mobilePhone="+1 212 555 0101",
                         categories=["Follow up", "Hiring managers"]))
    bob = g.put_contact(person("Bob Li", "bob@northwind.example", companyName="Northwind",
                               businessPhones=["+1 415 555 0102"],
                               categories=["Follow up", "Hiring managers"]), folder=recruiters)
    g.put_contact(person("Carol Friend", "carol@x.example", categories=["Family"]))
    cli.write_config()
    assert "signed in to Microsoft as alice@contoso.example" in cli.auth("work")
    assert stat.S_IMODE((cli.tmp / "tokens.json").stat().st_mode) == 0o600

    t0 = next_wednesday()
    first = cli.run("sync", now=t0)
    assert cycles(first.stderr)[-1]["created"] == 2
    events = our_events(ms)
    assert sorted(map(subject, events)) == ["Call Bob Li (Northwind) #1",
                                            "Call Jane Roe (Acme Capital) #1"]
    assert {json.loads(r.body)["transactionId"] for r in g.requests
            if r.method == "POST" and r.path.endswith("/events")}.__len__() == 2

    # Outlook on the web: the user logs a call in Jane's notes.
    jane_ev = next(e for e in events if "Jane" in subject(e))
    http = ms.other_client()
    url = f"{g.root_url}/me/events/{jane_ev.id}"
    got = http.get(url, headers={"Prefer": 'outlook.body-content-type="text"'}, timeout=10)
    text = got.json()["body"]["content"]
    assert text.endswith("Log attempts below:\r\n")
    r = http.patch(url, json={"body": {"contentType": "text", "content": text + USER_LINES}},
                   headers={"If-Match": got.json()["@odata.etag"]}, timeout=10)
    assert r.status_code == 200, r.text

    # The next cycle runs after Jane's call.
    t1 = when(jane_ev, "end") + timedelta(minutes=5)
    second = cli.run("sync", now=t1)
    rec = cycles(second.stderr)[-1]
    assert (rec["attempts_read"], rec["created"]) == (1, 1)
    day = jane_ev.data["start"]["dateTime"][:10]
    attempts = cli.json("attempts")
    assert [(a["contact"], a["at"], a["outcome"]) for a in attempts] == [
        ("Jane Roe", f"{day}T09:10:00-05:00", "no_answer")]
    events = our_events(ms)
    ids = [v for e in events for pid, v in e.props.values() if pid.endswith("Name syncdId")]
    assert len(ids) == len(set(ids)) == 3  # no duplicates
    kept = g.events[jane_ev.id].data["body"]["content"]
    assert kept.replace("\r\n", "\n").endswith(
        "Log attempts below:\n" + USER_LINES.replace("\r\n", "\n"))
    status = cli.json("status")
    jane = next(c for c in status["contacts"] if c["name"] == "Jane Roe")
    assert jane["attempts"] == 1 and jane["next_followup"]["channel"] == "call"
    assert "Carol Friend" not in {c["name"] for c in status["contacts"]}

    # Bob's follow-up is still ahead (moved on if its time had passed).
    bob_ev = next(e for e in our_events(ms) if "Bob" in subject(e))
    assert when(bob_ev, "start") > t1 + timedelta(minutes=5)
    # Bob is removed in Outlook, and Exchange evicts every delta token.
    g.delete_contact(bob)
    g.evict()
    third = cli.run("sync", now=t1 + timedelta(minutes=5))
    assert cycles(third.stderr)[-1]["deleted"] == 1  # Bob's untouched future follow-up
    status = cli.json("status")
    bob_row = next(c for c in status["contacts"] if c["name"] == "Bob Li")
    assert bob_row["removed"] and bob_row["state"] == "stopped"
    assert bob_row["next_followup"] is None
    assert [a["contact"] for a in cli.json("attempts")] == ["Jane Roe"]  # history kept
    events = our_events(ms)
    # Jane's logged call (its title now records the outcome) and her next one.
    titles = sorted(map(subject, events))
    assert len(titles) == 2 and all("Call Jane Roe (Acme Capital) #" in t for t in titles)
    assert any("#1" in t and "no answer" in t for t in titles)
    assert any(t.endswith("#2") for t in titles)
    # Idle: nothing written, nothing duplicated.
    etags = sorted((e.id, e.change_key) for e in our_events(ms))
    idle = cli.run("sync", now=t1 + timedelta(minutes=10))
    rec = cycles(idle.stderr)[-1]
    assert (rec["created"], rec["updated"], rec["deleted"]) == (0, 0, 0)
    assert sorted((e.id, e.change_key) for e in our_events(ms)) == etags
    assert status["sources"][0]["last_error"] is None


def test_e2e_conflicting_edit_is_reread_and_merged(ms: MsCloud, cli: Cli) -> None:
    """The user types into the notes while syncd moves the event: the PATCH
    meets 412, the next cycle reads the user's lines, and nothing is lost."""
    g = ms.graph
    g.put_contact(person("Jane Roe", "jane@acme.example", companyName="Acme Capital",
                         categories=["Follow up", "Hiring managers"]))
    cli.write_config()
    ms.sign_in(ms.source_cfg(connection=ms.connection(token_cache=cli.tmp / "tokens.json")),
               cli.tmp / "state")
    t0 = next_wednesday()
    cli.run("sync", now=t0)
    (ev,) = our_events(ms)

    def user_types() -> None:
        body = ev.data["body"]
        ev.data["body"] = {"contentType": "text",
                           "content": body["content"] + "spoke - interview Tue\n"}
        g._touch(ev)

    # The follow-up's time passes untouched: syncd moves it, racing the user.
    g.inject(Fault(on("PATCH", "/events/"), status=0, action=user_types))
    late = when(ev, "end") + timedelta(hours=1)
    g.server.clear_log()
    cli.run("sync", now=late)
    patches = [r for r in g.requests if r.method == "PATCH"]
    assert len(patches) == 2  # 412 on the stale ETag, then again after the merge
    assert patches[0].headers["if-match"] != patches[1].headers["if-match"]
    assert [a["outcome"] for a in cli.json("attempts")] == ["reached"]
    body = g.events[ev.id].data["body"]["content"].replace("\r\n", "\n")
    assert body.endswith("Log attempts below:\nspoke - interview Tue\n")  # user lines win
    again = cli.run("sync", now=late + timedelta(minutes=5))
    assert cycles(again.stderr)[-1]["attempts_read"] == 0
    assert len(cli.json("attempts")) == 1


def test_e2e_revoked_source_fails_alone_with_the_command_to_run(ms: MsCloud, cli: Cli) -> None:
    other_app = "00000000-aaaa-bbbb-cccc-000000000002"
    ms.identity.register(other_app)
    (cli.tmp / "cards.vcf").write_text(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:bob\r\nFN:Bob Li\r\nEMAIL:bob@x.example\r\n"
        "END:VCARD\r\n")
    cli.write_config(calendar_client=other_app,
                     extra_source="  - {name: cards, type: file, path: cards.vcf}\n")
    ms.graph.put_contact(person("Jane Roe", "jane@x.example", categories=["Follow up"]))
    st = cli.tmp / "state"
    ms.sign_in(ms.source_cfg(connection=ms.connection(token_cache=cli.tmp / "tokens.json")), st)
    ms.sign_in(ms.calendar_cfg("Follow-ups", client_id=other_app, connection=ms.connection(
        token_cache=cli.tmp / "calendar-tokens.json")), st)
    t0 = next_wednesday()
    cli.run("sync", now=t0)
    ms.identity.revoke_client(ms.client_id)  # the admin removes the app's consent
    failed = cli.run("sync", now=t0 + timedelta(minutes=5), check=False)
    assert failed.returncode == 1
    assert "source work failed" in failed.stderr
    status = cli.json("status")
    by_name = {s["name"]: s for s in status["sources"]}
    assert "run `syncd auth work`" in by_name["work"]["last_error"]
    assert "invalid_grant" in by_name["work"]["last_error"]
    assert by_name["cards"]["last_error"] is None
    assert by_name["cards"]["last_sync"] > by_name["work"]["last_sync"]
    assert "syncd: calendar:" not in failed.stderr


# --------------------------------------------------------------------------
# The emulators themselves (a test peer must be faithful, not convenient)
# --------------------------------------------------------------------------


def test_graph_emulator_follows_the_reference(ms: MsCloud) -> None:
    http = ms.other_client()
    root = ms.graph.root_url
    prop = PROP_ID.replace(PROP_GUID, PROP_GUID.upper())  # GUIDs compare case-insensitively
    r = http.post(f"{root}/me/events", json={
        "subject": "x", "start": {"dateTime": "2030-01-02T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2030-01-02T10:30:00", "timeZone": "UTC"},
        "singleValueExtendedProperties": [{"id": PROP_ID, "value": "Fu-1"}]}, timeout=10)
    assert r.status_code == 201 and "singleValueExtendedProperties" not in r.json()
    ev = r.json()
    assert ev["@odata.etag"].startswith('W/"') and "transactionId" not in ev
    # Hidden unless expanded; filtered by value case-insensitively, by name exactly.
    q = f"singleValueExtendedProperties/Any(ep: ep/id eq '{prop}' and ep/value eq 'fu-1')"
    got = http.get(f"{root}/me/events", params={"$filter": q, "$expand":
                   f"singleValueExtendedProperties($filter=id eq '{PROP_ID}')"}, timeout=10)
    assert [p["value"] for p in got.json()["value"][0]["singleValueExtendedProperties"]] == [
        "Fu-1"]
    wrong = q.replace("Name syncdId", "Name SYNCDID")
    assert http.get(f"{root}/me/events", params={"$filter": wrong}, timeout=10
                    ).json()["value"] == []
    # ETags change on every write; a stale If-Match is 412 ErrorIrresolvableConflict.
    one = http.patch(f"{root}/me/events/{ev['id']}", json={"subject": "y"},
                     headers={"If-Match": ev["@odata.etag"]}, timeout=10)
    assert one.status_code == 200 and one.json()["@odata.etag"] != ev["@odata.etag"]
    stale = http.delete(f"{root}/me/events/{ev['id']}", headers={"If-Match": ev["@odata.etag"]},
                        timeout=10)
    assert (stale.status_code, stale.json()["error"]["code"]) == (412, "ErrorIrresolvableConflict")
    # Contacts delta refuses $top; calendarView needs its window.
    top = http.get(f"{root}/me/contactFolders/contacts/contacts/delta", params={"$top": "3"},
                   timeout=10)
    assert (top.status_code, top.json()["error"]["code"]) == (400, "ErrorInvalidUrlQuery")
    assert http.get(f"{root}/me/calendarView/delta", timeout=10).status_code == 400
    # No token, no data.
    assert http.get(f"{root}/me/calendars", headers={"Authorization": "Bearer nope"},
                    timeout=10).status_code == 401
    # The identity platform's instance discovery and OpenID configuration.
    idp = ms.identity
    disc = http.get(f"{idp.base}/common/discovery/instance", params={
        "api-version": "1.1", "authorization_endpoint":
        f"https://127.0.0.1/{idp.tenant_id}/oauth2/v2.0/authorize"}, timeout=10).json()
    oidc = http.get(disc["tenant_discovery_endpoint"], timeout=10).json()
    assert oidc["device_authorization_endpoint"].endswith("/oauth2/v2.0/devicecode")
    assert http.get(f"{idp.base}/nosuch/v2.0/.well-known/openid-configuration",
                    timeout=10).json()["error_codes"] == [90002]
