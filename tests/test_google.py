"""Google specifics: Google Contacts (People API) and Google Calendar (API v3)
through the real google-api-python-client, google-auth and
google-auth-oauthlib, against the local emulators in tests/emulators/.

The port contracts run in test_contact_sources.py / test_calendar_contract.py;
here: sync-token expiry, resource-name changes, labels, custom-field
overrides, retries and Retry-After, permission and sign-in errors, the token
file, TLS, the sign-in flow, the emulators' own faithfulness, and the CLI end
to end.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
import requests

from connectors.google_auth import run_sign_in
from connectors.google_calendar import GoogleCalendar, event_id
from connectors.google_common import interruptible_sleep
from connectors.google_people import PERSON_FIELDS, GooglePeopleSource
from syncd import retry
from syncd.errors import AlreadyExists, AuthError, RemoteError
from syncd.model import EventDraft, RemoteEvent
from syncd.settings import CalendarConfig, Connection, Secret, SourceConfig
from tests.conftest_google import ALL_SCOPES, TlsGoogle
from tests.emulators._http import Response, Server
from tests.emulators.google import CALENDAR_SCOPES, CONTACTS_READONLY, GoogleEmulator
from tests.emulators.google_oauth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from tests.mirror import Mirror

NY = ZoneInfo("America/New_York")
CONNECTIONS = "/v1/people/me/connections"


# --------------------------------------------------------------------------- helpers


def people(emu: GoogleEmulator, token: Path, state: Path, labels: tuple[str, ...] = (),
           **conn: Any) -> GooglePeopleSource:
    connection = Connection(api_endpoint=emu.people_endpoint, token_file=token,
                            **{"timeout": 10, **conn})
    return GooglePeopleSource(
        SourceConfig(name="google", type="google", labels=labels, connection=connection), state
    )


def calendar(emu: GoogleEmulator, token: Path, state: Path, name: str = "Follow-ups",
             busy: tuple[str, ...] = ()) -> GoogleCalendar:
    connection = Connection(api_endpoint=emu.calendar_endpoint, token_file=token, timeout=10)
    return GoogleCalendar(
        CalendarConfig(type="google", calendar=name, busy_calendars=busy,
                       connection=connection), state
    )


@pytest.fixture
def src(google: GoogleEmulator, google_token: Path, tmp_path: Path
        ) -> Iterator[GooglePeopleSource]:
    s = people(google, google_token, tmp_path)
    yield s
    s.close()


@pytest.fixture
def cal(google: GoogleEmulator, google_token: Path, tmp_path: Path) -> Iterator[GoogleCalendar]:
    c = calendar(google, google_token, tmp_path)
    yield c
    c.close()


def statuses(emu: GoogleEmulator, prefix: str) -> list[int]:
    return [r.status for r in emu.server.requests(prefix)]


def draft(uid: str = "0123456789abcdef-1@syncd", summary: str = "Call Jane Roe #1",
          start: datetime | None = None) -> EventDraft:
    start = start or datetime(2026, 12, 1, 9, 0, tzinfo=NY)
    return EventDraft(uid.split("@")[0], uid, summary, start, start + timedelta(minutes=15),
                      "syncd block\nLog attempts below:\n")


# --------------------------------------------------------------------------- People: reading


def test_every_page_repeats_fields_page_size_and_request_sync_token(
    google: GoogleEmulator, src: GooglePeopleSource
) -> None:
    for i in range(1201):
        google.people.add_contact(f"Person {i:04d}", [f"p{i}@example.com"])
    mirror = Mirror(src)
    first = mirror.read()
    assert first.full and len(first.contacts) == 1201
    for i, rn in enumerate(list(google.people.persons)[:1001]):
        google.people.update_contact(rn, title=f"Title {i}")
    second = mirror.read()
    assert not second.full and len(second.contacts) == 1001

    sent = [r.query for r in google.server.requests(CONNECTIONS)]
    assert len(sent) == 4  # two pages, twice
    for q in sent:
        assert q["personFields"] == [PERSON_FIELDS]
        assert q["pageSize"] == ["1000"] and q["requestSyncToken"] == ["true"]
    assert "pageToken" not in sent[0] and "pageToken" in sent[1]
    assert "syncToken" not in sent[0] and "syncToken" not in sent[1]
    # The incremental read follows nextPageToken with the same sync token.
    assert sent[2]["syncToken"] == sent[3]["syncToken"] and "pageToken" in sent[3]


@pytest.mark.parametrize("how", ["400-expired", "410", "seven-days-later"])
def test_expired_sync_token_means_one_full_read_without_duplicates_or_losses(
    google: GoogleEmulator, src: GooglePeopleSource, how: str
) -> None:
    jane = google.people.add_contact("Jane Roe", ["jane@acme.example"])
    bob = google.people.add_contact("Bob Li", ["bob@northwind.example"])
    google.people.add_contact("Priya Natarajan", ["priya@contoso.example"])
    mirror = Mirror(src)
    mirror.read()
    google.people.update_contact(jane, title="CIO")
    google.people.delete_contact(bob)
    google.people.add_contact("Dan Ong", ["dan@example.com"])
    if how == "410":
        google.people.expired_status = 410
        google.people.expire_sync_tokens()
    elif how == "seven-days-later":
        google.clock.advance(timedelta(days=7, minutes=1))
    else:
        google.people.expire_sync_tokens()

    batch = mirror.read()
    assert batch.full
    assert sorted(c.name for c in batch.contacts) == ["Dan Ong", "Jane Roe", "Priya Natarajan"]
    assert mirror.names()["Jane Roe"] == "CIO"
    # One rejected incremental request, then the full read (seven days on, the
    # access token has expired too: a 401 and a refresh come first).
    seen = [s for s in statuses(google, CONNECTIONS)[1:] if s != 401]
    assert seen == [410 if how == "410" else 400, 200]

    google.people.update_contact(jane, title="CEO")
    again = mirror.read()
    assert not again.full and [c.title for c in again.contacts] == ["CEO"]


def test_incremental_reads_do_not_extend_a_sync_token_past_seven_days(
    google: GoogleEmulator, src: GooglePeopleSource
) -> None:
    google.people.add_contact("Jane Roe", ["jane@acme.example"])
    mirror = Mirror(src)
    assert mirror.read().full
    for _ in range(2):
        google.clock.advance(timedelta(days=3))
        assert not mirror.read().full
    google.clock.advance(timedelta(days=1, minutes=1))  # 7 days after the full read
    batch = mirror.read()
    assert batch.full and [c.name for c in batch.contacts] == ["Jane Roe"]


def test_expired_sync_token_error_is_googles_exact_body(google: GoogleEmulator) -> None:
    google.people.add_contact("Jane Roe", ["jane@acme.example"])
    headers = google.bearer([CONTACTS_READONLY])
    url = google.base + CONNECTIONS
    params = {"personFields": "names", "requestSyncToken": "true"}
    token = requests.get(url, params=params, headers=headers, timeout=10).json()["nextSyncToken"]
    google.people.expire_sync_tokens()
    r = requests.get(url, params={**params, "syncToken": token}, headers=headers, timeout=10)
    assert r.status_code == 400
    assert r.json() == {"error": {
        "code": 400,
        "message": "Sync token is expired. Clear local cache and retry call without the sync "
                   "token.",
        "status": "FAILED_PRECONDITION",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                     "reason": "EXPIRED_SYNC_TOKEN", "domain": "people.googleapis.com"}],
    }}


@pytest.mark.parametrize("tombstone_for_old_name", [False, True])
def test_resource_name_change_keeps_the_contact_id(
    google: GoogleEmulator, src: GooglePeopleSource, tombstone_for_old_name: bool
) -> None:
    google.people.tombstone_on_rename = tombstone_for_old_name
    rn = google.people.add_contact("Jane Roe", ["jane@acme.example"])
    google.people.add_contact("Bob Li", ["bob@northwind.example"])
    mirror = Mirror(src)
    mirror.read()
    uid = next(c.uid for c in mirror.contacts.values() if c.name == "Jane Roe")
    assert uid == rn

    renamed = google.people.relink(rn)  # linked to a profile: a new resource name
    batch = mirror.read()
    assert [c.uid for c in batch.contacts] == [uid] and batch.removed == ()

    twice = google.people.relink(renamed)
    google.people.update_contact(twice, title="CIO")
    batch = mirror.read()
    assert [(c.uid, c.title) for c in batch.contacts] == [(uid, "CIO")]

    # A full re-read (expired token) still knows who it is.
    google.people.expire_sync_tokens()
    full = mirror.read()
    assert full.full and uid in {c.uid for c in full.contacts}
    assert len(full.contacts) == 2

    google.people.delete_contact(twice)
    gone = mirror.read()
    assert gone.removed == (uid,)


def test_deleted_contacts_come_back_as_removed(google: GoogleEmulator,
                                               src: GooglePeopleSource) -> None:
    rn = google.people.add_contact("Bob Li", ["bob@northwind.example"])
    mirror = Mirror(src)
    mirror.read()
    google.people.delete_contact(rn)
    batch = mirror.read()
    assert (batch.full, batch.contacts, batch.removed) == (False, (), (rn,))


def test_labels_filter_by_user_and_system_group_names(
    google: GoogleEmulator, google_token: Path, tmp_path: Path
) -> None:
    p = google.people
    jane = p.add_contact("Jane Roe", ["jane@acme.example"], labels=["Job search"])
    p.add_contact("Bob Li", ["bob@northwind.example"], labels=["Job search", "Hiring managers"])
    p.add_contact("Sam Reyes", ["sam@example.com"], labels=["Starred"])  # a system group
    carol = p.add_contact("Carol Diaz", ["carol@example.com"])
    source = people(google, google_token, tmp_path, labels=("Job search", "starred"))
    mirror = Mirror(source)
    batch = mirror.read()
    got = {c.name: c.labels for c in batch.contacts}
    assert got == {"Jane Roe": ("Job search",), "Bob Li": ("Hiring managers", "Job search"),
                   "Sam Reyes": ("Starred",)}

    p.update_contact(carol, labels=["Job search"])
    p.update_contact(jane, labels=[])  # left the label
    batch = mirror.read()
    assert [c.name for c in batch.contacts] == ["Carol Diaz"]
    assert batch.removed == (jane,)
    source.close()


def test_unknown_label_fails_the_source_listing_the_labels_that_exist(
    google: GoogleEmulator, google_token: Path, tmp_path: Path
) -> None:
    google.people.add_contact("Jane Roe", ["jane@acme.example"], labels=["Job search"])
    google.people.add_group("Hiring managers")
    source = people(google, google_token, tmp_path, labels=("Job serch",))
    with pytest.raises(RemoteError) as info:
        source.read(None)
    e = info.value
    assert not e.retryable and not isinstance(e, AuthError)
    assert e.message.startswith("contacts[google].labels: no Google Contacts label named "
                                "'Job serch'; existing labels: ")
    existing = e.message.split("existing labels: ")[1].split(", ")
    assert {"Job search", "Hiring managers", "Starred", "Family"} <= set(existing)
    assert "My Contacts" not in existing
    assert "contacts[google].labels" in e.hint


def test_changing_the_label_filter_reads_in_full(
    google: GoogleEmulator, google_token: Path, tmp_path: Path
) -> None:
    google.people.add_contact("Jane Roe", ["jane@acme.example"], labels=["Job search"])
    google.people.add_contact("Bob Li", ["bob@northwind.example"], labels=["Investors"])
    first = people(google, google_token, tmp_path, labels=("Job search",)).read(None)
    assert [c.name for c in first.contacts] == ["Jane Roe"]
    widened = people(google, google_token, tmp_path, labels=("Job search", "Investors"))
    batch = widened.read(first.cursor)
    assert batch.full and sorted(c.name for c in batch.contacts) == ["Bob Li", "Jane Roe"]


def test_custom_fields_override_cadence_and_time_zone(google: GoogleEmulator,
                                                      src: GooglePeopleSource) -> None:
    google.people.add_contact(
        "Jane Roe", ["jane@acme.example"], ["+1 212 555 0101"], "Acme Capital", "PM",
        user_defined={"Syncd-Cadence": " long_haul ", "syncd-timezone": "Asia/Tokyo",
                      "Birthday gift": "tea"},
        note="Met at the CFA dinner",
    )
    (jane,) = src.read(None).contacts
    assert jane.overrides == (("syncd-cadence", "long_haul"), ("syncd-timezone", "Asia/Tokyo"))
    assert (jane.company, jane.title, jane.note) == ("Acme Capital", "PM", "Met at the CFA dinner")
    assert (jane.emails, jane.phones) == (("jane@acme.example",), ("+1 212 555 0101",))


def test_idle_incremental_read_is_one_request(google: GoogleEmulator,
                                              src: GooglePeopleSource) -> None:
    google.people.add_contact("Jane Roe", ["jane@acme.example"], labels=["Job search"])
    cursor = src.read(None).cursor
    before = google.api_requests()
    assert src.read(cursor).contacts == ()
    assert google.api_requests() - before == 1


# --------------------------------------------------------------------------- retries


def test_retry_after_is_honoured(google: GoogleEmulator, src: GooglePeopleSource) -> None:
    google.people.add_contact("Jane Roe", ["jane@acme.example"])
    google.people.fail(429, retry_after="1")
    batch = src.read(None)
    assert [c.name for c in batch.contacts] == ["Jane Roe"]
    tries = google.server.requests(CONNECTIONS)
    assert [t.status for t in tries] == [429, 200]
    assert tries[1].at - tries[0].at >= 1.0  # waited as asked, measured by the server


def test_calendar_rate_limits_and_server_errors_are_retried(
    google: GoogleEmulator, cal: GoogleCalendar
) -> None:
    cal.url()
    google.calendar.fail(403, reason="userRateLimitExceeded", path="/events")
    google.calendar.fail(403, reason="rateLimitExceeded", path="/events")
    google.calendar.fail(503, path="/events", retry_after="0")
    made = cal.create(draft())
    assert made.syncd_id
    # The duplicate-UID lookup (GET) met the faults, then the insert (POST) went through.
    assert statuses(google, "/calendar/v3/calendars/") == [403, 403, 503, 200, 200]


def test_creates_go_in_one_batch_request_and_a_throttled_part_alone(
    google: GoogleEmulator, cal: GoogleCalendar
) -> None:
    cal.url()
    google.calendar.fail(403, reason="rateLimitExceeded", path="/events", method="POST")
    drafts = [draft(uid=f"{i:016x}-1@syncd", start=datetime(2026, 12, 1, 9 + i, 0, tzinfo=NY))
              for i in range(4)]
    before = google.api_requests()
    made = cal.create_many(drafts)
    assert [m.syncd_id if isinstance(m, RemoteEvent) else m for m in made] == [
        d.syncd_id for d in drafts]
    sent = google.server.requests()[-6:]
    # One batch request carrying four inserts; the throttled one again, alone.
    assert [(r.method, r.path.rsplit("/", 1)[-1], r.batched, r.status) for r in sent] == [
        ("POST", "events", True, 403), ("POST", "events", True, 200),
        ("POST", "events", True, 200), ("POST", "events", True, 200),
        ("POST", "v3", False, 200), ("POST", "events", False, 200)]
    assert google.api_requests() - before == 2
    again = cal.create_many(drafts)  # a repeat: 409 for each part
    assert all(isinstance(a, AlreadyExists) for a in again)


def test_a_failed_batch_request_is_sent_again(google: GoogleEmulator,
                                              cal: GoogleCalendar) -> None:
    cal.url()
    google.calendar.fail(503, path="/batch/", retry_after="0")
    drafts = [draft(uid=f"{i:016x}-2@syncd", start=datetime(2026, 12, 2, 9 + i, 0, tzinfo=NY))
              for i in range(3)]
    made = cal.create_many(drafts)
    assert [m.syncd_id if isinstance(m, RemoteEvent) else m for m in made] == [
        d.syncd_id for d in drafts]
    assert [r.status for r in google.server.requests("/batch/")] == [503, 200]


def test_long_retry_after_ends_the_try_without_sleeping(google: GoogleEmulator,
                                                        src: GooglePeopleSource) -> None:
    google.people.fail(429, retry_after="3600")
    t0 = time.monotonic()
    with pytest.raises(RemoteError) as info:
        src.read(None)
    assert time.monotonic() - t0 < 5
    assert info.value.retryable and "3600" in info.value.hint
    # The daemon's per-source backoff honours it across cycles.
    assert isinstance(info.value, retry.ServerBusy) and info.value.retry_after == 3600
    assert statuses(google, CONNECTIONS) == [429]


def test_a_stop_request_ends_a_retry_wait_at_once(google: GoogleEmulator,
                                                  src: GooglePeopleSource) -> None:
    google.people.fail(503, retry_after="30")
    waiting = threading.Event()

    def observed_sleep(seconds: float) -> None:
        waiting.set()  # the connector is now waiting out the Retry-After
        interruptible_sleep(seconds)

    src.api.sleep = observed_sleep
    outcome: dict[str, BaseException] = {}

    def read() -> None:
        try:
            src.read(None)
        except RemoteError as e:
            outcome["error"] = e

    worker = threading.Thread(target=read)
    t0 = time.monotonic()
    worker.start()
    try:
        assert waiting.wait(timeout=10)
        retry.interrupt()  # SIGTERM in the daemon
        worker.join(timeout=10)
    finally:
        retry.reset_interrupt()
    assert time.monotonic() - t0 < 5
    assert isinstance(outcome.get("error"), RemoteError)
    assert statuses(google, CONNECTIONS) == [503]  # no further try after the stop


def test_permission_errors_are_reported_not_retried(google: GoogleEmulator,
                                                    cal: GoogleCalendar) -> None:
    cal.url()
    google.calendar.fail(403, reason="forbidden", path="/events")
    with pytest.raises(RemoteError) as info:
        cal.changes(None)
    assert not info.value.retryable and not isinstance(info.value, AuthError)
    assert statuses(google, "/calendar/v3/calendars/") == [403]


def test_missing_scope_on_the_server_asks_to_sign_in_again(
    google: GoogleEmulator, tmp_path: Path
) -> None:
    token = tmp_path / "t.json"
    google.write_token_file(token, CALENDAR_SCOPES)
    info = json.loads(token.read_text())
    del info["scopes"]  # a file that does not say what it was granted
    token.write_text(json.dumps(info))
    with pytest.raises(AuthError) as e:
        people(google, token, tmp_path).read(None)
    assert e.value.hint == "syncd auth google"
    assert statuses(google, CONNECTIONS) == [403]  # not retried


def test_token_file_without_the_needed_scope_fails_before_any_request(
    google: GoogleEmulator, tmp_path: Path
) -> None:
    token = tmp_path / "t.json"
    google.write_token_file(token, [CONTACTS_READONLY])
    with pytest.raises(AuthError) as e:
        calendar(google, token, tmp_path).changes(None)
    assert e.value.hint == "syncd auth calendar"
    assert "calendar.events" in e.value.message
    assert google.api_requests() == 0


def test_unreachable_and_silent_servers_are_retryable_errors(tmp_path: Path,
                                                             google_token: Path) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        cfg = SourceConfig(name="google", type="google", connection=Connection(
            api_endpoint=f"http://127.0.0.1:{port}/", token_file=google_token, timeout=0.3))
        source = GooglePeopleSource(cfg, tmp_path)
        source.api.sleep = lambda _s: None  # the timeouts are the point, not the backoff
        t0 = time.monotonic()
        with pytest.raises(RemoteError) as info:
            source.read(None)  # the token refresh works; the API never answers
        assert time.monotonic() - t0 < 5
        assert info.value.retryable and not isinstance(info.value, AuthError)
    # Nothing listens there any more: connection refused.
    with pytest.raises(RemoteError) as info:
        source.read(None)
    assert info.value.retryable


# --------------------------------------------------------------------------- auth and tokens


def test_not_signed_in_names_the_command(google: GoogleEmulator, tmp_path: Path) -> None:
    with pytest.raises(AuthError) as e:
        people(google, tmp_path / "none.json", tmp_path).read(None)
    assert e.value.hint == "syncd auth google"
    assert "none.json" in e.value.message
    with pytest.raises(AuthError) as e2:
        calendar(google, tmp_path / "none.json", tmp_path).changes(None)
    assert e2.value.hint == "syncd auth calendar"


def test_revoked_grant_is_an_auth_error_with_the_command(
    google: GoogleEmulator, tmp_path: Path
) -> None:
    token = tmp_path / "t.json"
    refresh = google.write_token_file(token, ALL_SCOPES)
    google.oauth.revoke(refresh)
    with pytest.raises(AuthError) as e:
        people(google, token, tmp_path).read(None)
    assert e.value.hint == "syncd auth google" and not e.value.retryable
    assert "invalid_grant" in e.value.message


def test_token_file_is_private_and_saved_after_each_refresh(
    google: GoogleEmulator, google_token: Path, src: GooglePeopleSource
) -> None:
    google_token.chmod(0o644)
    google.people.add_contact("Jane Roe", ["jane@acme.example"])
    cursor = src.read(None).cursor
    first = json.loads(google_token.read_text())
    assert stat.S_IMODE(google_token.stat().st_mode) == 0o600
    assert first["token"].startswith("ya29.") and first["expiry"]
    assert first["token_uri"] == google.token_uri  # kept, not Google's default

    google.oauth.expire_access_tokens()  # the API now answers 401
    src.read(cursor)
    second = json.loads(google_token.read_text())
    assert second["token"] != first["token"]
    assert second["refresh_token"] == first["refresh_token"]
    assert stat.S_IMODE(google_token.stat().st_mode) == 0o600
    assert google.oauth.token_requests == 2
    assert statuses(google, CONNECTIONS) == [200, 401, 200]


def test_source_and_calendar_may_share_a_token_file(
    google: GoogleEmulator, google_token: Path, tmp_path: Path
) -> None:
    google.people.add_contact("Jane Roe", ["jane@acme.example"])
    source = people(google, google_token, tmp_path)
    cal = calendar(google, google_token, tmp_path)
    source.read(None)
    cal.changes(None)
    google.oauth.expire_access_tokens()
    source.read(None)  # refreshes and rewrites the shared file
    assert set(json.loads(google_token.read_text())["scopes"]) == set(ALL_SCOPES)
    cal.create(draft())
    calendar(google, google_token, tmp_path).changes(None)  # a new instance reads the file


def test_configured_ca_bundle_wins_over_the_environment(
    google_tls: TlsGoogle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = google_tls.emulator
    token = tmp_path / "t.json"
    emu.write_token_file(token, ALL_SCOPES)
    emu.people.add_contact("Jane Roe", ["jane@acme.example"])
    assert emu.token_uri.startswith("https://")

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(google_tls.other_ca_file))
    trusted = people(emu, token, tmp_path, ca_bundle=google_tls.ca_file)
    assert [c.name for c in trusted.read(None).contacts] == ["Jane Roe"]

    untrusted = people(emu, token, tmp_path)  # only the environment's (wrong) CA
    waits: list[float] = []
    untrusted.api.sleep = waits.append
    with pytest.raises(RemoteError) as info:
        untrusted.read(None)
    assert info.value.retryable and "ca_bundle" in info.value.hint
    assert "TLS verification failed" in info.value.message
    assert waits == []  # a certificate that does not verify is not tried again

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(google_tls.ca_file))
    from_env = people(emu, token, tmp_path)
    assert [c.name for c in from_env.read(None).contacts] == ["Jane Roe"]


def _sign_in_with_browser(google: GoogleEmulator, cfg: SourceConfig, state: Path,
                          capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Run `syncd auth`'s flow with --no-browser in a thread and play the
    user: read the printed URL, open it (the emulator consents at once and
    redirects to the loopback server)."""
    outcome: dict[str, Any] = {}

    def sign_in() -> None:
        try:
            outcome["line"] = run_sign_in(cfg, state, True, auth_uri=google.auth_uri,
                                          token_uri=google.token_uri, timeout=20)
        except Exception as e:
            outcome["error"] = e

    worker = threading.Thread(target=sign_in)
    worker.start()
    printed = ""
    deadline = time.monotonic() + 10
    url = None
    while url is None and time.monotonic() < deadline and worker.is_alive():
        printed += capsys.readouterr().out
        found = re.search(r"(http://127\.0\.0\.1:\d+/o/oauth2/auth\?\S+)", printed)
        url = found.group(1) if found else None
        time.sleep(0.01)  # polling for the printed URL (readiness), not a fixed wait
    assert url, f"no sign-in URL printed: {printed!r} {outcome}"
    outcome["landing"] = requests.get(url, timeout=10)  # the user's browser
    worker.join(timeout=20)
    return outcome


def test_sign_in_with_the_installed_app_flow(
    google: GoogleEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the emulator speaks http
    monkeypatch.setenv("SYNCD_TEST_GOOGLE_SECRET", DEFAULT_CLIENT_SECRET)
    state = tmp_path / "state"
    token = state / "google-google.json"
    cfg = SourceConfig(name="google", type="google", client_id=DEFAULT_CLIENT_ID,
                       client_secret=Secret(env="SYNCD_TEST_GOOGLE_SECRET"),
                       connection=Connection(api_endpoint=google.people_endpoint, timeout=10))
    outcome = _sign_in_with_browser(google, cfg, state, capsys)
    assert "line" in outcome, outcome
    assert outcome["landing"].status_code == 200 and "signed in" in outcome["landing"].text
    assert str(token) in outcome["line"]
    info = json.loads(token.read_text())
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert info["scopes"] == [CONTACTS_READONLY] and info["refresh_token"]
    assert info["token_uri"] == google.token_uri
    google.people.add_contact("Jane Roe", ["jane@acme.example"])
    source = GooglePeopleSource(cfg, state)  # the default token path
    assert [c.name for c in source.read(None).contacts] == ["Jane Roe"]

    # A wrong client secret: the code exchange is refused, nothing is written.
    monkeypatch.setenv("SYNCD_TEST_GOOGLE_SECRET", "not-the-secret")
    token.unlink()
    failed = _sign_in_with_browser(google, cfg, state, capsys)
    assert isinstance(failed.get("error"), AuthError), failed
    assert "invalid_client" in failed["error"].message
    assert not token.exists()


# --------------------------------------------------------------------------- Calendar


def test_events_carry_a_base32hex_id_the_private_marker_and_reminders(
    google: GoogleEmulator, cal: GoogleCalendar
) -> None:
    made = cal.create(draft())
    (raw,) = google.calendar.events_of("Follow-ups")
    assert raw["id"] == made.ref == event_id("0123456789abcdef-1@syncd")
    assert re.fullmatch(r"[a-v0-9]{5,1024}", raw["id"])
    assert raw["extendedProperties"] == {"private": {
        "syncdId": "0123456789abcdef-1", "syncdUid": "0123456789abcdef-1@syncd"}}
    assert raw["reminders"] == {"useDefault": False,
                                "overrides": [{"method": "popup", "minutes": 0}]}
    assert raw["start"] == {"dateTime": "2026-12-01T09:00:00-05:00",
                            "timeZone": "America/New_York"}
    assert made.etag == raw["etag"]


def test_event_ids_for_odd_uids_stay_valid() -> None:
    for uid in ("a", "x" * 700, "ü-@/.. ☃"):
        assert re.fullmatch(r"[a-v0-9]{5,1024}", event_id(uid)), uid
    assert event_id("a") != event_id("b")


def test_a_retried_insert_meets_409_and_makes_no_duplicate(
    google: GoogleEmulator, cal: GoogleCalendar
) -> None:
    d = draft()
    cal.create(d)
    with pytest.raises(AlreadyExists):
        cal.create(d)
    assert 409 in statuses(google, "/calendar/v3/calendars/")
    assert len(google.calendar.events_of("Follow-ups")) == 1


def test_expired_calendar_sync_token_is_one_full_reread(google: GoogleEmulator,
                                                       cal: GoogleCalendar) -> None:
    kept = cal.create(draft("aaaaaaaaaaaaaaaa-1@syncd"))
    dropped = cal.create(draft("bbbbbbbbbbbbbbbb-1@syncd"))
    cursor = cal.changes(None).cursor
    cal.delete(dropped.ref, dropped.etag)
    added = cal.create(draft("cccccccccccccccc-1@syncd"))
    google.calendar.expire_sync_tokens()
    before = len(google.server.requests("/calendar/v3/calendars/"))
    ch = cal.changes(cursor)
    assert ch.full and ch.deleted == ()
    assert sorted(e.ref for e in ch.events) == sorted([kept.ref, added.ref])
    assert statuses(google, "/calendar/v3/calendars/")[before:] == [410, 200]
    assert cal.changes(ch.cursor).events == ()


def test_updates_keep_what_other_clients_added(google: GoogleEmulator,
                                               cal: GoogleCalendar) -> None:
    made = cal.create(draft())
    other = requests.Session()
    other.headers.update(google.bearer(CALENDAR_SCOPES))
    r = other.patch(f"{cal.url()}/events/{made.ref}",
                    json={"location": "Desk phone", "colorId": "5"}, timeout=10)
    assert r.status_code == 200
    moved = draft(start=datetime(2026, 12, 2, 14, 0, tzinfo=NY))
    updated = cal.update(made.ref, r.json()["etag"], moved)
    (raw,) = google.calendar.events_of("Follow-ups")
    assert (raw["location"], raw["colorId"]) == ("Desk phone", "5")
    assert updated.start == moved.start and raw["sequence"] == 1
    sent = [q for q in google.server.requests("/calendar/v3/calendars/") if q.method == "PATCH"]
    assert sent[-1].headers["if-match"] == r.json()["etag"]


def test_busy_skips_free_and_cancelled_events_and_knows_primary(
    google: GoogleEmulator, google_token: Path, tmp_path: Path
) -> None:
    other = requests.Session()
    other.headers.update(google.bearer(CALENDAR_SCOPES))
    base = f"{google.calendar_endpoint}calendars/primary/events"
    day = datetime(2026, 12, 7, tzinfo=UTC)

    def add(hour: int, **extra: Any) -> str:
        body = {"summary": f"at {hour}",
                "start": {"dateTime": (day + timedelta(hours=hour)).isoformat()},
                "end": {"dateTime": (day + timedelta(hours=hour + 1)).isoformat()}, **extra}
        r = other.post(base, json=body, timeout=10)
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    add(9)
    add(11, transparency="transparent")
    gone = add(13)
    assert other.delete(f"{base}/{gone}", timeout=10).status_code == 204
    target = calendar(google, google_token, tmp_path, busy=("primary",))
    got = target.busy(day, day + timedelta(days=1))
    assert got == [(day + timedelta(hours=9), day + timedelta(hours=10))]


def test_everything_goes_to_the_configured_endpoint_with_no_discovery_fetch(
    google: GoogleEmulator, cal: GoogleCalendar, src: GooglePeopleSource
) -> None:
    src.read(None)
    cal.changes(None)
    paths = [r.path for r in google.server.requests()]
    assert paths and all(p.startswith(("/v1/", "/calendar/v3/", "/token")) for p in paths)
    assert not any("discovery" in p for p in paths)


# --------------------------------------------------------------------------- the emulators


def test_people_emulator_binds_page_tokens_and_issues_sync_tokens_last(
    google: GoogleEmulator
) -> None:
    for name in ("Jane Roe", "Bob Li"):
        google.people.add_contact(name, [f"{name.split()[0].lower()}@example.com"])
    h = google.bearer([CONTACTS_READONLY])
    url = google.base + CONNECTIONS
    q = {"personFields": "names", "pageSize": "1", "requestSyncToken": "true"}
    first = requests.get(url, params=q, headers=h, timeout=10).json()
    assert "nextPageToken" in first and "nextSyncToken" not in first
    assert list(first["connections"][0]) == ["resourceName", "etag", "names"]  # the mask
    drift = requests.get(url, params={**q, "personFields": "names,emailAddresses",
                                      "pageToken": first["nextPageToken"]}, headers=h, timeout=10)
    assert (drift.status_code, drift.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
    last = requests.get(url, params={**q, "pageToken": first["nextPageToken"]}, headers=h,
                        timeout=10).json()
    assert "nextPageToken" not in last and "nextSyncToken" in last
    plain = requests.get(url, params={"personFields": "names"}, headers=h, timeout=10).json()
    assert "nextSyncToken" not in plain and plain["totalItems"] == 2
    for bad in ({}, {"personFields": "names,nonsense"}, {"personFields": "names", "foo": "1"},
                {"personFields": "names", "pageSize": "1001"}):
        r = requests.get(url, params=bad, headers=h, timeout=10)
        assert r.status_code == 400, bad
    assert requests.get(url, params=q, timeout=10).status_code == 401
    no_scope = google.bearer(CALENDAR_SCOPES)
    denied = requests.get(url, params=q, headers=no_scope, timeout=10)
    assert denied.status_code == 403
    assert denied.json()["error"]["details"][0]["reason"] == "ACCESS_TOKEN_SCOPE_INSUFFICIENT"


def test_calendar_emulator_ids_deletions_etags_and_sync_rules(google: GoogleEmulator) -> None:
    s = requests.Session()
    s.headers.update(google.bearer(CALENDAR_SCOPES))
    made = s.post(f"{google.calendar_endpoint}calendars", json={"summary": "X"}, timeout=10)
    url = f"{google.calendar_endpoint}calendars/{quote(made.json()['id'], safe='')}/events"
    ev = {"start": {"dateTime": "2026-12-01T09:00:00Z"},
          "end": {"dateTime": "2026-12-01T10:00:00Z"}}

    def reason(r: requests.Response) -> tuple[int, str]:
        return r.status_code, r.json()["error"]["errors"][0]["reason"]

    for bad_id in ("abcd", "ABCDEFG", "wxyz0123"):
        assert reason(s.post(url, json={**ev, "id": bad_id}, timeout=10)) == (400, "invalid")
    ok = s.post(url, json={**ev, "id": "abcdef0123"}, timeout=10).json()
    dup = s.post(url, json={**ev, "id": "abcdef0123"}, timeout=10)
    assert reason(dup) == (409, "duplicate")
    assert dup.json()["error"]["message"] == "The requested identifier already exists."
    stale = s.patch(f"{url}/abcdef0123", json={"summary": "x"},
                    headers={"If-Match": '"1"'}, timeout=10)
    assert reason(stale) == (412, "conditionNotMet")
    assert s.get(f"{url}/abcdef0123", headers={"If-None-Match": ok["etag"]},
                 timeout=10).status_code == 304
    assert s.delete(f"{url}/abcdef0123", timeout=10).status_code == 204
    assert s.get(f"{url}/abcdef0123", timeout=10).json()["status"] == "cancelled"
    assert reason(s.delete(f"{url}/abcdef0123", timeout=10)) == (410, "deleted")
    assert reason(s.post(url, json={**ev, "id": "abcdef0123"}, timeout=10)) == (409, "duplicate")
    backwards = {"start": ev["end"], "end": ev["start"]}
    assert reason(s.post(url, json=backwards, timeout=10)) == (400, "timeRangeEmpty")

    s.post(url, json=ev, timeout=10)
    s.post(url, json=ev, timeout=10)
    first = s.get(url, params={"maxResults": 1, "showDeleted": "true"}, timeout=10).json()
    assert "nextPageToken" in first and "nextSyncToken" not in first
    drift = s.get(url, params={"maxResults": 2, "pageToken": first["nextPageToken"]}, timeout=10)
    assert drift.status_code == 400
    token = s.get(url, params={"maxResults": 50, "showDeleted": "true"},
                  timeout=10).json()["nextSyncToken"]
    for clash in ({"timeMin": "2026-01-01T00:00:00Z"}, {"iCalUID": "x"}, {"showDeleted": "false"}):
        assert s.get(url, params={"syncToken": token, **clash}, timeout=10).status_code == 400
    assert reason(s.get(url, params={"syncToken": google.calendar.forge_sync_token()},
                        timeout=10)) == (410, "fullSyncRequired")


# --------------------------------------------------------------------------- end to end (CLI)


@dataclass
class Cli:
    dir: Path
    emu: GoogleEmulator
    contacts_refresh: str

    def run(self, *args: str, now: str = "2026-11-25T15:00:00+00:00",
            code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "syncd", "--config", str(self.dir / "config.yaml"),
             "--log-format", "json", *args],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "SYNCD_NOW": now},
        )
        assert proc.returncode == code, proc.stderr
        return proc

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run("status", "--json").stdout)
        return data

    def live_events(self) -> list[dict[str, Any]]:
        return [e for e in self.emu.calendar.events_of("Follow-ups")
                if e["status"] != "cancelled"]


@pytest.fixture
def cli(google: GoogleEmulator, tmp_path: Path) -> Cli:
    refresh = google.write_token_file(tmp_path / "contacts-token.json", [CONTACTS_READONLY])
    google.write_token_file(tmp_path / "calendar-token.json", CALENDAR_SCOPES)
    (tmp_path / "contacts.vcf").write_text(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:eve\r\nFN:Eve Park\r\nTEL:+1 646 555 0103\r\n"
        "END:VCARD\r\n")
    (tmp_path / "config.yaml").write_text(f"""\
timezone: America/New_York
horizon: 14d
state_dir: state
contacts:
  - name: google
    type: google
    labels: [Job search]
    api_endpoint: "{google.people_endpoint}"
    token_file: contacts-token.json
    timeout: 10
  - {{name: cards, type: file, path: contacts.vcf}}
calendar:
  type: google
  calendar: Follow-ups
  api_endpoint: "{google.calendar_endpoint}"
  token_file: calendar-token.json
cadences:
  pursue: {{channel: call, every: 2 business days, until: reached, then: keep_in_touch}}
  keep_in_touch: {{channel: email, every: 4 weeks}}
rules:
  - {{match: {{label: Job search}}, cadence: pursue}}
  - {{match: {{source: cards}}, cadence: pursue}}
""")
    return Cli(tmp_path, google, refresh)


def test_google_contacts_to_google_calendar_and_back(cli: Cli) -> None:
    p, emu = cli.emu.people, cli.emu
    jane = p.add_contact("Jane Roe", ["jane@acme.example"], ["+1 212 555 0101"],
                         "Acme Capital", labels=["Job search"])
    bob = p.add_contact("Bob Li", ["bob@northwind.example"], ["+1 415 555 0102"], "Northwind",
                        labels=["Job search"])
    p.add_contact("Carol Diaz", ["carol@example.com"])  # not in the label
    p.add_contact("Dan Ong", ["dan@example.com"], labels=["Job search"],
                  user_defined={"syncd-cadence": "keep_in_touch",
                                "syncd-timezone": "Europe/London"})

    cli.run("sync", now="2026-11-25T14:00:00+00:00")  # Wed 09:00 in New York
    events = cli.live_events()
    assert sorted(e["summary"] for e in events) == [
        "Call Bob Li (Northwind) #1", "Call Eve Park #1", "Call Jane Roe (Acme Capital) #1",
        "E-mail Dan Ong"]
    assert all(e["extendedProperties"]["private"]["syncdId"] for e in events)
    status = cli.status()
    by_name = {c["name"]: c for c in status["contacts"]}
    assert set(by_name) == {"Jane Roe", "Bob Li", "Dan Ong", "Eve Park"}
    assert (by_name["Dan Ong"]["cadence"], by_name["Dan Ong"]["timezone"]) == (
        "keep_in_touch", "Europe/London")
    assert by_name["Jane Roe"]["id"] == f"google:{jane}"

    # The user logs a call in Jane's event from another client (Google's web UI).
    ev = next(e for e in events if e["summary"].startswith("Call Jane"))
    assert ev["description"].endswith("Log attempts below:\n")
    other = requests.Session()
    other.headers.update(emu.bearer(CALENDAR_SCOPES))
    target = emu.calendar.calendar_named("Follow-ups")
    assert target is not None
    edit = other.patch(
        f"{emu.calendar_endpoint}calendars/{quote(target.id, safe='')}/events/{ev['id']}",
        json={"description": ev["description"] + "9:10 no answer\nshe said try after lunch"},
        headers={"If-Match": ev["etag"]}, timeout=10)
    assert edit.status_code == 200, edit.text

    cli.run("sync", now="2026-11-25T20:00:00+00:00")
    attempts = json.loads(cli.run("attempts", "--json").stdout)
    day = ev["start"]["dateTime"][:10]  # 9:10 on the event's day, in the user's zone
    assert [(a["contact"], a["at"], a["outcome"]) for a in attempts] == [
        ("Jane Roe", f"{day}T09:10:00-05:00", "no_answer")]
    janes = sorted((e for e in cli.live_events() if "Jane" in e["summary"]),
                   key=lambda e: e["start"]["dateTime"])
    assert len(janes) == 2
    assert "Call Jane Roe (Acme Capital) #1" in janes[0]["summary"]  # kept as the record
    assert janes[1]["summary"] == "Call Jane Roe (Acme Capital) #2"
    assert janes[0]["description"].endswith("9:10 no answer\nshe said try after lunch")

    # Bob is deleted in Google Contacts; every token expires meanwhile.
    p.delete_contact(bob)
    p.update_contact(jane, title="CIO")
    emu.people.expire_sync_tokens()
    emu.calendar.expire_sync_tokens()
    emu.oauth.expire_access_tokens()
    cli.run("sync", now="2026-11-25T21:00:00+00:00")
    assert 410 in statuses(emu, "/calendar/v3/calendars/")  # the calendar re-read in full
    assert 400 in statuses(emu, CONNECTIONS)  # so did the contacts

    status = cli.status()
    by_name = {c["name"]: c for c in status["contacts"]}
    assert by_name["Bob Li"]["removed"] and not by_name["Jane Roe"]["removed"]
    assert by_name["Jane Roe"]["attempts"] == 1  # history survived the full re-reads
    assert [c["id"] for c in status["contacts"]].count(f"google:{jane}") == 1
    live = cli.live_events()
    markers = [e["extendedProperties"]["private"]["syncdId"] for e in live]
    assert len(markers) == len(set(markers))  # no duplicate follow-ups
    assert not any("Bob" in e["summary"] and e["start"]["dateTime"] > "2026-11-25T16:00"
                   for e in live)  # Bob's future follow-up is withdrawn
    for name in ("contacts-token.json", "calendar-token.json"):
        assert stat.S_IMODE((cli.dir / name).stat().st_mode) == 0o600

    cli.run("sync", now="2026-11-25T21:05:00+00:00")  # and a quiet cycle after that
    assert sorted(markers) == sorted(e["extendedProperties"]["private"]["syncdId"]
                                     for e in cli.live_events())


def test_notes_edited_in_the_web_ui_as_html_are_read_as_text(cli: Cli) -> None:
    """Google Calendar's web UI saves a description as HTML: <br> between
    lines, entities for &. The user's lines are read from the text."""
    cli.emu.people.add_contact("Jane Roe", ["jane@acme.example"], ["+1 212 555 0101"],
                               labels=["Job search"])
    # Wed 07:00 in New York: every slot of the day is still ahead, whichever one
    # the planner draws for this (randomly named) contact.
    cli.run("sync", now="2026-11-25T12:00:00+00:00")
    ev = next(e for e in cli.live_events() if e["summary"].startswith("Call Jane"))
    assert ev["start"]["dateTime"].startswith("2026-11-25")
    as_html = ev["description"].replace("\n", "<br>") + "9:10 no answer<br>R&amp;D said: later"
    other = requests.Session()
    other.headers.update(cli.emu.bearer(CALENDAR_SCOPES))
    target = cli.emu.calendar.calendar_named("Follow-ups")
    assert target is not None
    edit = other.patch(
        f"{cli.emu.calendar_endpoint}calendars/{quote(target.id, safe='')}/events/{ev['id']}",
        json={"description": as_html}, headers={"If-Match": ev["etag"]}, timeout=10)
    assert edit.status_code == 200, edit.text
    cli.run("sync", now="2026-11-25T20:00:00+00:00")
    attempts = json.loads(cli.run("attempts", "--json").stdout)
    assert [(a["at"], a["outcome"]) for a in attempts] == [
        ("2026-11-25T09:10:00-05:00", "no_answer")]
    jane = next(c for c in cli.status()["contacts"] if c["name"] == "Jane Roe")
    assert jane["unparsed"] == ["R&D said: later"]


def test_revoked_google_grant_fails_only_that_source(cli: Cli) -> None:
    cli.emu.people.add_contact("Jane Roe", ["jane@acme.example"], labels=["Job search"])
    cli.emu.oauth.revoke(cli.contacts_refresh)
    proc = cli.run("sync", code=1)
    assert "source google failed" in proc.stderr
    status = cli.status()
    sources = {s["name"]: s for s in status["sources"]}
    assert "syncd auth google" in sources["google"]["last_error"]
    assert "invalid_grant" in sources["google"]["last_error"]
    assert sources["cards"]["last_error"] is None and sources["cards"]["last_sync"]
    # The other source's contact was still planned and written to the calendar.
    assert [e["summary"] for e in cli.live_events()] == ["Call Eve Park #1"]



def test_an_answer_that_is_not_json_is_a_remote_error(
    google: GoogleEmulator, google_token: Path, tmp_path: Path
) -> None:
    """A captive portal (or a proxy's page) answering 200 with HTML."""
    portal = Server(lambda req: Response(200, b"<html>Sign in to the hotel Wi-Fi</html>",
                                         {"Content-Type": "text/html"}))
    try:
        cfg = SourceConfig(name="google", type="google", connection=Connection(
            api_endpoint=portal.base + "/", token_file=google_token, timeout=10))
        with pytest.raises(RemoteError) as info:
            GooglePeopleSource(cfg, tmp_path).read(None)
        assert "not JSON" in info.value.message and "api_endpoint" in info.value.hint
    finally:
        portal.stop()


def test_auth_without_an_oauth_client_says_what_to_configure(cli: Cli) -> None:
    proc = cli.run("auth", "google", "--no-browser", code=2)
    assert "contacts[google].client_id: required for `syncd auth google`" in proc.stderr
    assert "Desktop app" in proc.stderr
    proc = cli.run("auth", "calendar", "--no-browser", code=2)
    assert "calendar.client_id: required for `syncd auth calendar`" in proc.stderr
