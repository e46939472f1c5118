"""A stateful property test against a real Radicale: user actions (append,
edit and delete note lines, move or delete events, a second client writing
between our read and our write) interleaved with daemon cycles. After every
step: no user line lost or altered; after every cycle: no attempt duplicated
or missing, at most one live follow-up per contact."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from tempfile import mkdtemp
from urllib.parse import urljoin

import icalendar
import pytest
import requests
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from connectors.caldav_calendar import CalDavCalendar
from syncd.config import load_text
from syncd.cycle import Cycle
from syncd.store import Store
from syncd.timeutil import iso
from tests.servers import DavServer
from tests.test_reconcile import T0, World, append, edit

CARDS = "".join(
    f"BEGIN:VCARD\nVERSION:3.0\nUID:p{i}\nFN:Person {i}\nTEL:+1212555010{i}\nEND:VCARD\n"
    for i in range(3))
OUTCOMES = {"no answer": "no_answer", "vm": "voicemail", "spoke to assistant": "gatekeeper"}
UNPARSED = ["call back after lunch", "  she's travelling  ", "✨ مرحبا", "tel: ask for Bo"]


class NotesMachine(RuleBasedStateMachine):
    server: DavServer  # set by the test below

    @initialize()
    def start(self) -> None:
        tmp = Path(mkdtemp(prefix="stateful-"))
        (tmp / "cards.vcf").write_text(CARDS)
        cfg = load_text(f"""\
timezone: America/New_York
state_dir: state
contacts: [{{name: cards, type: file, path: cards.vcf}}]
calendar: {{type: caldav, url: "{self.server.base}/", calendar: "s-{uuid.uuid4().hex[:8]}",
           username: alice}}
""", tmp / "config.yaml")
        self.world = World(cfg, self.server)
        assert cfg.calendar is not None
        self.reader = CalDavCalendar(cfg.calendar, "x")
        self.now = T0
        self.minute = 0
        # uid -> the user's lines in that event (what we typed, in order)
        self.lines: dict[str, list[str]] = {}
        # uid -> the lines the daemon has read (expected in the attempt log)
        self.seen: dict[str, list[str]] = {}
        self.deleted: set[str] = set()
        self.world.cycle(self.now)

    # -- helpers --------------------------------------------------------------

    def _events(self) -> dict[str, tuple[str, str]]:
        """Our events on the server: uid -> (url, description), in one REPORT
        through a reader of its own (the connector's parsing is proven exact
        against the raw server text by the calendar contract suite)."""
        base = self.reader.url()
        return {e.uid: (urljoin(base, e.ref), e.description)
                for e in self.reader.changes(None).events
                if e.syncd_id and e.uid not in self.deleted}

    def _pick(self, data: st.DataObject) -> tuple[str, str] | None:
        events = self._events()
        if not events:
            return None
        uid = data.draw(st.sampled_from(sorted(events)))
        return uid, events[uid][0]

    def _write_lines(self, url: str, uid: str, lines: list[str]) -> None:
        def change(c: icalendar.Event) -> None:
            desc = str(c["DESCRIPTION"])
            head = desc[: desc.index("Log attempts below:\n") + len("Log attempts below:\n")]
            c["DESCRIPTION"] = icalendar.vText(head + "".join(f"{x}\n" for x in lines))
        edit(url, change)
        self.lines[uid] = lines

    def _new_line(self, data: st.DataObject) -> str:
        if data.draw(st.booleans()):
            self.minute += 1
            phrase = data.draw(st.sampled_from(sorted(OUTCOMES)))
            return f"{9 + self.minute // 60}:{self.minute % 60:02d} {phrase}"
        return data.draw(st.sampled_from(UNPARSED))

    # -- user actions ---------------------------------------------------------

    @rule(data=st.data())
    def append_line(self, data: st.DataObject) -> None:
        got = self._pick(data)
        if got:
            uid, url = got
            self._write_lines(url, uid, [*self.lines.get(uid, []), self._new_line(data)])

    @rule(data=st.data())
    def edit_line(self, data: st.DataObject) -> None:
        got = self._pick(data)
        if got and self.lines.get(got[0]):
            uid, url = got
            lines = list(self.lines[uid])
            lines[data.draw(st.integers(0, len(lines) - 1))] = self._new_line(data)
            self._write_lines(url, uid, lines)

    @rule(data=st.data())
    def delete_line(self, data: st.DataObject) -> None:
        got = self._pick(data)
        if got and self.lines.get(got[0]):
            uid, url = got
            lines = list(self.lines[uid])
            del lines[data.draw(st.integers(0, len(lines) - 1))]
            self._write_lines(url, uid, lines)

    @rule(data=st.data(), days=st.integers(1, 3))
    def move_event(self, data: st.DataObject, days: int) -> None:
        got = self._pick(data)
        if got:
            def move(c: icalendar.Event) -> None:
                start, end = c.decoded("DTSTART"), c.decoded("DTEND")
                c["DTSTART"] = icalendar.vDDDTypes(start + timedelta(days=days))
                c["DTEND"] = icalendar.vDDDTypes(end + timedelta(days=days))
            edit(got[1], move)

    @rule(data=st.data())
    def delete_event(self, data: st.DataObject) -> None:
        got = self._pick(data)
        if got:
            requests.delete(got[1], auth=("alice", "x"), timeout=30).raise_for_status()
            self.deleted.add(got[0])

    @rule(data=st.data(), hours=st.integers(1, 30))
    def concurrent_cycle(self, data: st.DataObject, hours: int) -> None:
        """A second client appends a line right before our next update."""
        got = self._pick(data)
        if got is None:
            return
        uid, url = got
        line = self._new_line(data)

        def second_client(_ref: str) -> None:
            edit(url, append(f"{line}\n"))
            self.lines[uid] = [*self.lines.get(uid, []), line]
        self.world.before_update = second_client
        self.now += timedelta(hours=hours)
        self.world.cycle(self.now)
        self.world.before_update = None
        # The line may have landed on another event than the one we were
        # updating: only the next read is sure to see it.
        self.cycle(0)

    def teardown(self) -> None:
        if hasattr(self, "reader"):
            self.reader.close()

    @rule(hours=st.integers(1, 30))
    def cycle(self, hours: int) -> None:
        self.now += timedelta(hours=hours, minutes=1)
        self.world.cycle(self.now)
        for uid in self._events():
            self.seen[uid] = list(self.lines.get(uid, []))
        self.check_state()

    @rule(minutes=st.lists(st.integers(1, 20), min_size=2, max_size=4))
    def short_cycles(self, minutes: list[int]) -> None:
        """Minutes apart, after the cycle that reads its own writes back, most
        find the last plan still holds and skip planning: then planning now
        must not have anything to write."""
        for m in minutes:
            self.now += timedelta(minutes=m)
            if not self.world.cycle(self.now).planned:
                self.plan_holds()
        self.cycle(0)

    def plan_holds(self) -> None:
        store = Store(self.world.cfg.state_dir)
        try:
            stored = {r[0]: (r[1], r[2]) for r in
                      store.db.execute("SELECT id, start, basis FROM followups")}
            plans = Cycle(self.world.cfg, store, [], self.reader, now=lambda: self.now).plans()
        finally:
            store.close()
        for p in plans:
            assert p.retire is None, p
            fu = p.followup
            assert fu is None or fu.action == "keep" or (
                fu.action == "planned" and stored.get(fu.id) == (iso(fu.start), fu.basis)), p

    # -- what must hold -------------------------------------------------------

    @invariant()
    def user_lines_survive_byte_for_byte(self) -> None:
        if not hasattr(self, "world"):
            return
        for uid, (_url, desc) in self._events().items():
            want = "".join(f"{x}\n" for x in self.lines.get(uid, []))
            assert desc.endswith("Log attempts below:\n" + want), (uid, desc)

    def check_state(self) -> None:
        expected: Counter[tuple[str, str]] = Counter()
        for lines in self.seen.values():
            for line in lines:
                hhmm, _, phrase = line.partition(" ")
                if phrase in OUTCOMES:
                    h, m = hhmm.split(":")
                    expected[(f"{int(h):02d}:{m}", OUTCOMES[phrase])] += 1
        got = Counter((a[0][11:16], a[1]) for a in self.world.attempts())
        assert got == expected
        store = Store(self.world.cfg.state_dir)
        try:
            live = store.db.execute(
                "SELECT contact_id, COUNT(*) FROM followups WHERE status IN "
                "('live', 'creating') GROUP BY contact_id HAVING COUNT(*) > 1").fetchall()
        finally:
            store.close()
        assert live == []


@pytest.mark.timeout(400)
def test_notes_state_machine(radicale: DavServer) -> None:
    NotesMachine.server = radicale
    run = NotesMachine.TestCase
    run.settings = settings(max_examples=6, stateful_step_count=10, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow])
    run().runTest()


