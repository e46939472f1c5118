"""`syncd run` as a production daemon (issue 7): systemd units and sd_notify
on a real datagram socket, signals (TERM/INT finish the write in flight and
exit within 10 s; HUP reloads, an invalid config keeps the old one), and
"safe to kill at any step" with real processes: the test hook ends
`syncd sync` after step N for every N of a representative cycle, and
`kill -9` lands on a running `syncd run` at random moments 50+ times.

Every test runs real `syncd` processes against a real Radicale.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.config import load
from syncd.cycle import Cycle, CycleResult
from syncd.daemon import TEST_EXIT, TEST_STOP_ENV
from syncd.sdnotify import Notifier
from syncd.store import Store
from syncd.wiring import make_all
from tests.daemon_helpers import (
    NOW,
    NotifySocket,
    Proc,
    RawEvent,
    Setup,
    base_env,
    check_consistent,
    cycle_lines,
    raw_events,
    records,
    state_db,
    syncd,
    type_note,
    vcards,
)
from tests.servers import DavServer

UNITS = Path(__file__).parent.parent / "systemd"


# ---------------------------------------------------------------------------
# systemd units


def _unit(path: Path) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            keys.setdefault(k.strip(), []).append(v.strip())
    return keys


@pytest.mark.parametrize("name", ["syncd.service", "syncd@.service"])
def test_units_are_notify_watchdog_restart_and_hardened(name: str, tmp_path: Path) -> None:
    keys = _unit(UNITS / name)
    want = {
        "Type": "notify", "Restart": "on-failure", "NoNewPrivileges": "yes",
        "ProtectSystem": "strict", "ProtectHome": "read-only", "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "UMask": "0077",
        "StateDirectoryMode": "0700", "MemoryDenyWriteExecute": "yes",
        "LockPersonality": "yes", "CapabilityBoundingSet": "",
    }
    for k, v in want.items():
        assert keys.get(k, [None])[0] == v, k
    assert "@system-service" in keys["SystemCallFilter"]
    assert keys["WatchdogSec"] and keys["StateDirectory"] and keys["ExecReload"]
    # The state directory is the one writable place.
    assert name == "syncd@.service" or keys["ReadWritePaths"] == ["%S/syncd"]
    assert " run" in keys["ExecStart"][0]
    if shutil.which("systemd-analyze") is None:
        return
    # `systemd-analyze verify` wants an existing executable and an instance name.
    exe = shutil.which("syncd") or str(Path(__import__("sys").executable).parent / "syncd")
    text = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={exe}", (UNITS / name).read_text())
    target = tmp_path / name.replace("@.", "@work.")
    target.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True,
                          text=True, timeout=60)
    warnings = [ln for ln in done.stderr.splitlines() if str(target) in ln]
    assert done.returncode == 0 and not warnings, done.stderr


# ---------------------------------------------------------------------------
# sd_notify


def test_notifier_speaks_the_protocol_on_a_path_socket(tmp_path: Path) -> None:
    ns = NotifySocket(tmp_path / "notify")
    try:
        n = Notifier({"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": "4000000"})
        assert n.watchdog == 4.0 and n.kick_interval() == 2.0
        n.ready("line one\nline two")
        assert ns.recv(5) == {"READY": "1", "STATUS": "line one line two"}
        n.kick(force=True)
        assert ns.recv(5) == {"WATCHDOG": "1"}
        n.kick()  # within half the interval: nothing sent
        n.stopping()
        assert ns.recv(5) == {"STOPPING": "1", "STATUS": "stopping"}
    finally:
        ns.close()
    # Not under systemd, or the watchdog is meant for another process: no-ops.
    assert not Notifier({}).send(READY=1)
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
                    ).watchdog is None


def test_run_reports_ready_status_and_watchdog_to_systemd(
        tmp_path: Path, radicale: DavServer) -> None:
    """On the abstract-namespace socket systemd really uses (`@…`)."""
    setup = Setup(tmp_path, radicale.base)
    setup.write(vcards(3))
    ns = NotifySocket()
    proc = Proc(setup, env=base_env(NOTIFY_SOCKET=ns.address, WATCHDOG_USEC="2000000"))
    try:
        assert ns.wait_for("STATUS") == {"STATUS": "starting"}
        # Ready only once the first cycle is done, with its summary first.
        first = ns.wait_for("STATUS")
        assert first["WATCHDOG"] == "1"
        assert re.fullmatch(r"last cycle \d\d:\d\d:\d\d: 3 contacts, 0 attempts read, "
                            r"3 events written, \d+ requests, \d+\.\ds", first["STATUS"])
        assert ns.wait_for("READY") == {"READY": "1"}
        assert [c["created"] for c in cycle_lines(proc.text())] == [3]
        # Idle (poll_interval is minutes away): fed every half WatchdogSec.
        assert ns.recv(5) == {"WATCHDOG": "1"}
        assert ns.recv(5) == {"WATCHDOG": "1"}
        proc.send(signal.SIGUSR1)  # sync now
        second = ns.wait_for("STATUS")
        assert second["WATCHDOG"] == "1" and "0 events written" in second["STATUS"]
        proc.send(signal.SIGTERM)
        assert ns.wait_for("STOPPING") == {"STOPPING": "1", "STATUS": "stopping"}
        assert proc.wait() == 0
    finally:
        proc.stop()
        ns.close()


# ---------------------------------------------------------------------------
# Signals


def sigterm_after_creates(proc: Proc, creates: int) -> float:
    """SIGTERM once `creates` events were made; the seconds until exit 0."""
    try:
        proc.wait_for(lambda r: r.get("event") == "step" and r.get("step") == "commit-create"
                      and r["n"] >= creates, timeout=90)
        t0 = time.monotonic()
        proc.send(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within 15 s:\n{proc.text()[-3000:]}") from None
        took = time.monotonic() - t0
        assert rc == 0, proc.text()
    finally:
        proc.stop()
    return took


def stopped_after_a_commit(proc: Proc, setup: Setup, server: DavServer
                          ) -> tuple[list[str], list[RawEvent]]:
    """The process stopped at a step boundary, after a commit, with its cycle
    cut short; and the state is consistent: every event it knows is on the
    server with the same ETag, nothing half-done, nothing it does not know.
    Returns the steps it logged and the events."""
    steps = [r["step"] for r in proc.records if r.get("event") == "step"]
    assert steps[-1] == "commit-create", "it stopped at a step boundary, after a commit"
    assert not cycle_lines(proc.text()), "the cycle was cut short"
    evs = check_consistent(setup, server)
    with state_db(setup) as db:
        assert db.execute("SELECT COUNT(*) FROM followups WHERE status='creating'"
                          ).fetchone()[0] == 0
    return steps, evs


def test_sigterm_stops_a_one_shot_sync_at_a_step_boundary(tmp_path: Path,
                                                         radicale: DavServer) -> None:
    """`syncd sync` too finishes the write in flight, commits and exits 0."""
    setup = Setup(tmp_path, radicale.base)
    setup.write(vcards(60))
    proc = Proc(setup, "sync", verbose=True)
    took = sigterm_after_creates(proc, 20)
    assert took < 10
    assert any(r.get("event") == "stopped" and r.get("signal") == "SIGTERM"
               for r in proc.records)
    steps, evs = stopped_after_a_commit(proc, setup, radicale)
    assert len(evs) == steps.count("commit-create") < 60
    done = syncd(setup, "sync")  # the rest, then nothing left to do
    assert done.returncode == 0, done.stderr
    check_consistent(setup, radicale)
    assert cycle_lines(syncd(setup, "sync").stderr)[-1]["written"] == 0


def test_sigterm_during_many_creates_finishes_the_write_and_exits_fast(
        tmp_path: Path, radicale: DavServer) -> None:
    setup = Setup(tmp_path, radicale.base)
    setup.write(vcards(60))
    proc = Proc(setup, verbose=True)
    took = sigterm_after_creates(proc, 30)
    print(f"\nSIGTERM to exit: {took:.3f} s")
    assert took < 10
    stopped = next(r for r in proc.records if r.get("event") == "stopped")
    assert stopped["stop_took"] < 10
    steps, evs = stopped_after_a_commit(proc, setup, radicale)
    with state_db(setup) as db:
        live = {r["ref"]: r["etag"] for r in db.execute(
            "SELECT ref, etag FROM followups WHERE status='live'")}
    assert len(live) == steps.count("commit-create") == len(evs)
    assert {e.href: e.etag for e in evs} == live
    # The rest is written by the next run, and then nothing is left to do.
    done = syncd(setup, "sync")
    assert done.returncode == 0, done.stderr
    assert cycle_lines(done.stderr)[-1]["created"] > 0
    check_consistent(setup, radicale)
    again = cycle_lines(syncd(setup, "sync").stderr)[-1]
    assert again["written"] == 0


def test_sighup_reload_keeps_the_old_config_when_the_new_one_is_invalid(
        tmp_path: Path, radicale: DavServer) -> None:
    setup = Setup(tmp_path, radicale.base)
    setup.write(vcards(2))
    (tmp_path / "more.vcf").write_text(vcards(3, prefix="m"))
    proc = Proc(setup)
    try:
        proc.wait_event("cycle")
        good = setup.config.read_text()
        setup.config.write_text(good.replace("horizon: 14d", "horizon: soon"))
        proc.send(signal.SIGHUP)
        failed = proc.wait_event("config reload failed; keeping the running config")
        assert failed["path"] == str(setup.config)
        assert failed["problems"][0].startswith(f"{setup.config}:2: horizon: 'soon'")
        # Still running on the old config: a cycle still works.
        proc.send(signal.SIGUSR1)
        assert proc.wait_event("cycle")["failed_sources"] == []
        # A valid new config (one more source) is taken, and used at once.
        setup.config.write_text(good.replace(
            "  - {name: cards, type: file, path: cards.vcf}\n",
            "  - {name: cards, type: file, path: cards.vcf}\n"
            "  - {name: more, type: file, path: more.vcf}\n"))
        proc.send(signal.SIGHUP)
        proc.wait_event("config reloaded")
        assert proc.wait_event("cycle")["created"] == 3
        proc.send(signal.SIGINT)  # Ctrl-C stops it as cleanly as SIGTERM
        assert proc.wait() == 0
        assert proc.wait_event("stopping")["signal"] == "SIGINT"
    finally:
        proc.stop()
    assert len(raw_events(radicale, setup.calendar)) == 5


# ---------------------------------------------------------------------------
# Safe to kill at any step: real processes


def in_process_cycle(setup: Setup, now: str) -> CycleResult:
    """One cycle in this process, through the real connectors (fast)."""
    cfg = load(setup.config)
    store = Store(cfg.state_dir)
    sources, cal = make_all(cfg)
    try:
        return Cycle(cfg, store, sources, cal, now=lambda: datetime.fromisoformat(now)).run()
    finally:
        for s in sources:
            s.close()
        cal.close()
        store.close()


def _prepare(setup: Setup, server: DavServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cycle 1 in-process (the real connectors, fast), then the user's edits
    that make cycle 2 representative: a note line to read (attempt → a new
    follow-up and a history update), a removed contact (a delete), a new
    contact (a create)."""
    setup.write(vcards(4))
    monkeypatch.setenv("CAL_PASSWORD", "x")
    in_process_cycle(setup, NOW)
    with state_db(setup) as db:
        uid = db.execute("SELECT uid FROM followups WHERE contact_id='cards:p0'"
                         ).fetchone()[0]
    ev = next(e for e in raw_events(server, setup.calendar) if uid in e.text)
    type_note(server, ev, "9:10 no answer")
    (setup.dir / "cards.vcf").write_text(vcards(3) + vcards(1, prefix="q"))


# Cycle 2 runs that evening: the follow-ups of Wednesday noon that nobody
# touched have passed and move (updates).
LATER = {"SYNCD_NOW": "2026-11-25T22:00:00+00:00"}


def _snapshot(setup: Setup, server: DavServer) -> dict[str, Any]:
    evs = raw_events(server, setup.calendar)
    cal = sorted(
        (e.marker, str(v.get("DTSTART").to_ical()), str(v.get("SUMMARY")),
         str(v.get("DESCRIPTION")))
        for e in evs for v in e.vevents)
    with state_db(setup) as db:
        # Every column but those a server or the clock makes different per run.
        cols = [r[1] for r in db.execute("PRAGMA table_info(followups)")
                if r[1] not in ("ref", "etag", "created_at")]
        fus = sorted(tuple(r) for r in db.execute(f"SELECT {', '.join(cols)} FROM followups"))
        entries = sorted(tuple(r) for r in db.execute(
            "SELECT key, kind, outcome, at FROM entries"))
    return {"calendar": cal, "followups": fus, "entries": entries}


def test_stop_after_every_step_of_a_real_sync_converges(
        tmp_path: Path, radicale: DavServer, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = Setup(tmp_path / "ref", radicale.base)
    ref.dir.mkdir()
    _prepare(ref, radicale, monkeypatch)
    run = syncd(ref, "sync", verbose=True, env=base_env(**{TEST_STOP_ENV: "0"}, **LATER))
    assert run.returncode == 0, run.stderr
    steps = [r["step"] for r in records(run.stderr) if r.get("event") == "step"]
    expected = _snapshot(ref, radicale)
    # Representative: reading notes, creates, moves, a history update, a
    # delete, each with its commits (intents before, results after).
    for kind in ("read-calendar", "create", "update", "update-history", "delete"):
        assert kind in steps, (kind, steps)
    assert sum(s.startswith("commit-") for s in steps) >= len(steps) // 2
    print(f"\nstop after every step: {len(steps)} steps: {' '.join(steps)}")

    # One fresh calendar + state per N; the stopped syncs run side by side,
    # then the restarts (each N is independent of the others).
    setups = []
    for n in range(1, len(steps) + 1):
        s = Setup(tmp_path / f"n{n}", radicale.base)
        s.dir.mkdir()
        _prepare(s, radicale, monkeypatch)
        setups.append(s)
    crashes = [Proc(s, "sync", env=base_env(**{TEST_STOP_ENV: str(n)}, **LATER), verbose=True)
               for n, s in enumerate(setups, 1)]
    for n, p in enumerate(crashes, 1):
        assert p.wait(60) == TEST_EXIT, p.text()
        last = [r for r in p.records if r.get("event") == "step"][-1]
        assert (last["n"], last["step"]) == (n, steps[n - 1])
    restarts = [Proc(s, "sync", env=base_env(**LATER)) for s in setups]
    for p in restarts:
        assert p.wait(60) == 0, p.text()
    diverged: list[str] = []
    for n, s in enumerate(setups, 1):
        step = steps[n - 1]
        got = _snapshot(s, radicale)
        if got != expected:
            diff = {k: (sorted(set(got[k]) - set(expected[k])),
                        sorted(set(expected[k]) - set(got[k])))
                    for k in got if got[k] != expected[k]}
            diverged.append(f"after a stop at step {n} ({step}): {diff}")
        idle = in_process_cycle(s, LATER["SYNCD_NOW"])
        if idle.writes:
            diverged.append(f"a stop at step {n} ({step}) left work for a later cycle")
    assert not diverged, "\n".join(diverged)


WORDS = ["no answer", "vm", "left message", "busy", "9:15 no answer", "gatekeeper"]


@dataclass
class Chain:
    """One daemon's life of kills: its own calendar and state."""

    setup: Setup
    rng: random.Random
    people: list[int] = field(default_factory=lambda: list(range(6)))
    typed: dict[str, list[str]] = field(default_factory=dict)  # marker -> lines
    kills: int = 0
    idle_kills: int = 0
    early_kills: int = 0

    def life(self, server: DavServer) -> None:
        """The user acts while syncd is down (so there is no race with our
        own writes: that is test_reconcile's business), then syncd starts and
        is killed at a random step of its cycle, or idle, or in the next."""
        rng = self.rng
        evs = [e for e in raw_events(server, self.setup.calendar) if e.marker]
        if evs and rng.random() < 0.8:
            ev = rng.choice(evs)
            line = rng.choice(WORDS)
            type_note(server, ev, line)
            self.typed.setdefault(str(ev.marker), []).append(line)
        if rng.random() < 0.2:
            if rng.random() < 0.5 and len(self.people) > 3:
                self.people.remove(rng.choice(self.people))
            else:
                self.people.append(max(self.people) + 1)
            (self.setup.dir / "cards.vcf").write_text(vcards(self.people))
        proc = Proc(self.setup, verbose=True)
        try:
            if rng.random() < 0.15:
                # Early: while it connects, discovers the calendar, reads contacts.
                proc.wait_event("starting", timeout=60)
                rec = {"event": "starting"}
                self.early_kills += 1
            else:
                target = rng.randint(1, 10)
                rec = proc.wait_for(lambda r: (r.get("event") == "step" and r["n"] >= target)
                                    or r.get("event") == "cycle", timeout=60)
            if rec.get("event") == "cycle":
                self.idle_kills += 1
                if rng.random() < 0.5:
                    proc.send(signal.SIGUSR1)  # kill inside the next cycle instead
                    proc.wait_for(lambda r: r.get("event") == "step", timeout=60)
            # The fault's timing (not synchronisation): up to 50 ms after the line.
            time.sleep(rng.random() * 0.05)
            proc.send(signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL
            self.kills += 1
        finally:
            proc.stop()


def test_kill_9_at_random_moments_loses_nothing_and_duplicates_nothing(
        tmp_path: Path, radicale: DavServer) -> None:
    """Two daemons side by side (own calendar and state each), 26 kills each."""
    chains = []
    for i in range(2):
        setup = Setup(tmp_path / f"c{i}", radicale.base)
        setup.dir.mkdir()
        setup.write(vcards(list(range(6))))
        chains.append(Chain(setup, random.Random(7 + i)))
    t0 = time.monotonic()
    errors: list[BaseException] = []

    def live(chain: Chain) -> None:
        try:
            for _ in range(26):
                chain.life(radicale)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=live, args=(c,)) for c in chains]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    kills = sum(c.kills for c in chains)
    print(f"\nkill -9: {kills} kills ({sum(c.early_kills for c in chains)} before the first "
          f"step, {sum(c.idle_kills for c in chains)} after a finished cycle) in "
          f"{time.monotonic() - t0:.1f} s")
    assert kills >= 50

    for chain in chains:
        setup = chain.setup
        final = syncd(setup, "sync")
        assert final.returncode == 0, final.stderr
        check_consistent(setup, radicale)
        # Every line typed before a kill is an attempt now, on the right contact.
        with state_db(setup) as db:
            owner = {r["id"]: r["contact_id"] for r in db.execute(
                "SELECT id, contact_id FROM followups")}
        got = Counter(a["contact_id"]
                      for a in json.loads(syncd(setup, "attempts", "--json").stdout))
        want: Counter[str] = Counter()
        for marker, lines in chain.typed.items():
            want[owner[marker]] += len(lines)
        assert got == want
        assert sum(want.values()) >= 10
        idle = cycle_lines(syncd(setup, "sync").stderr)[-1]
        assert idle["written"] == 0
