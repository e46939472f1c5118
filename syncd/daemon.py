"""The long-running loop behind `syncd run`.

* A cycle every `poll_interval`; SIGUSR1 starts one at once.
* SIGTERM/SIGINT: the write in flight finishes and is committed, then the
  cycle stops at the next step boundary and the process exits 0 (waits
  between retries end at once). A second signal exits immediately (safe
  too: every step is replayable, see `syncd.cycle`).
* SIGHUP reloads the config; an invalid new config keeps the old one running
  and the log says why.
* systemd (`Type=notify`): READY=1 after the first cycle, STATUS= with the
  last cycle's summary, WATCHDOG=1 after every cycle and, while idle or busy,
  at least every half `WatchdogSec` (see `syncd.sdnotify`).
* A contact source (or the calendar) that failed is left alone until its
  `next_try` (`syncd.retry`), so one broken source never stalls the others.

Test hook: `SYNCD_TEST_STOP_AFTER_STEP=N` ends the process with `os._exit`
right after step N (every remote write and every commit is a step, counted
over the life of the process), the way isync's tests interrupt a sync at
every step. Unset in production; N=0 only logs the steps.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from syncd import config as config_mod
from syncd import memory, retry
from syncd.cycle import Cycle, CycleResult
from syncd.errors import ConfigError, SyncdError
from syncd.ports import Calendar, ContactSource
from syncd.sdnotify import Notifier
from syncd.settings import Config
from syncd.store import Lock, Store, lock_state_dir
from syncd.wiring import make_all

log = structlog.get_logger("syncd")

TEST_STOP_ENV = "SYNCD_TEST_STOP_AFTER_STEP"
TEST_EXIT = 99  # the exit status of a process the test hook ended


class StopRequested(BaseException):
    """Raised at a step boundary after SIGTERM/SIGINT. Not an Exception, so
    nothing in the cycle can swallow it."""


def _safe_to_stop_after(step: str) -> bool:
    """A step after which no remote write is under way: a commit that closes
    a write (not an intent that opens one), or the calendar read."""
    return step == "read-calendar" or (step.startswith("commit-")
                                       and not step.endswith("intent"))


class StepCounter:
    """Counts steps, logs each at debug level, and applies the test hook."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get(TEST_STOP_ENV, "")
        self.stop_after = int(raw) if raw.isdigit() else 0
        self.steps = 0

    def __call__(self, step: str) -> None:
        self.steps += 1
        log.debug("step", n=self.steps, step=step)
        if self.stop_after and self.steps == self.stop_after:
            log.warning("test hook: exiting", n=self.steps, step=step)
            sys.stderr.flush()
            os._exit(TEST_EXIT)


class SyncStopper:
    """The step hook of `syncd sync` (logging, the test hook) and its signals:
    SIGTERM/SIGINT finish the write in flight and stop at the next step
    after which no remote write is under way, as `run` does; a second
    signal leaves at once (every step replays). Waits between retries end
    early."""

    def __init__(self) -> None:
        self.counter = StepCounter()
        self.stopping: str | None = None
        self.signalled_at: float | None = None
        self._old: dict[int, Any] = {}

    def __call__(self, step: str) -> None:
        self.counter(step)
        if self.stopping is not None and _safe_to_stop_after(step):
            raise StopRequested

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping is not None:
            raise KeyboardInterrupt
        self.stopping = signal.Signals(signum).name
        self.signalled_at = time.monotonic()
        retry.interrupt()

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self.stopping is None and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))

    def __enter__(self) -> SyncStopper:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._on_stop)
        retry.set_sleep(self._sleep)
        return self

    def __exit__(self, *_exc: object) -> None:
        retry.set_sleep(None)
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Daemon:
    def __init__(self, cfg: Config, *, now: Callable[[], datetime] | None = None,
                 notifier: Notifier | None = None,
                 after_cycle: Callable[[CycleResult], None] | None = None) -> None:
        self.cfg = cfg
        self.now = now
        self.notifier = notifier or Notifier()
        self.after_cycle = after_cycle or (lambda _r: None)
        # Set by signal handlers, which do nothing else: a handler that logs or
        # takes a lock can deadlock with the code it interrupted (structlog's
        # write lock, threading.Event's). signal.set_wakeup_fd ends waits.
        self.stopping: str | None = None  # the signal's name
        self.reload = False
        self.wake = False
        self.counter = StepCounter()
        self.cycles = 0
        self._stop_signalled_at: float | None = None
        self._wakeup: tuple[int, int] | None = None
        self._lock: Lock | None = None
        self._store: Store | None = None
        self._ports: tuple[list[ContactSource], Calendar] | None = None

    # -- signals --------------------------------------------------------------

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping is not None:
            # The second TERM/INT: leave now (the replay makes this safe).
            raise KeyboardInterrupt
        self._stop_signalled_at = time.monotonic()
        self.stopping = signal.Signals(signum).name
        retry.interrupt()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self.reload = True

    def _on_usr1(self, _signum: int, _frame: FrameType | None) -> None:
        self.wake = True

    def _install_signals(self) -> None:
        r, w = os.pipe()
        for fd in (r, w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        self._wakeup = (r, w)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        retry.set_sleep(self._sleep)

    def _restore_signals(self) -> None:
        retry.set_sleep(None)
        if self._wakeup is not None:
            signal.set_wakeup_fd(-1)
            for fd in self._wakeup:
                os.close(fd)
            self._wakeup = None

    def _sleep(self, seconds: float) -> None:
        """Wait up to `seconds`; a signal (its byte on the wakeup pipe) ends it."""
        if self._wakeup is None:
            time.sleep(seconds)
            return
        r = self._wakeup[0]
        ready, _, _ = select.select([r], [], [], max(0.0, seconds))
        if ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(r, 512):
                    pass

    def _signalled(self) -> bool:
        return self.stopping is not None or self.reload or self.wake

    # -- lifecycle ------------------------------------------------------------

    def open(self) -> None:
        self._lock = lock_state_dir(self.cfg.state_dir)
        self._store = Store(self.cfg.state_dir)
        retry.reset_interrupt()
        retry.on_progress(self.notifier.kick)

    def close(self) -> None:
        retry.on_progress(None)
        if self._ports is not None:
            _close(self._ports)
            self._ports = None
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.notifier.close()

    def run(self) -> int:
        self._install_signals()
        self.notifier.status("starting")
        try:
            self.open()  # a held lock or a newer schema: the CLI says so, exit 1/2
        except BaseException:
            self.close()
            self._restore_signals()
            raise
        log.info("starting", config=str(self.cfg.path), state_dir=str(self.cfg.state_dir),
                 poll_interval=self.cfg.poll_interval.seconds(), pid=os.getpid())
        code = 0
        try:
            while self.stopping is None:
                self.cycle_once()
                if self.cycles == 1:
                    self.notifier.send(READY=1)
                self._idle()
                if self.reload and self.stopping is None:
                    self.reload = False
                    self._do_reload()
            log.info("stopping", signal=self.stopping)
        except StopRequested:
            log.info("stopping", signal=self.stopping, at="step boundary")
        except KeyboardInterrupt:
            log.warning("stopped at once (second signal)")
            code = 130
        except Exception as e:
            # A bug: say so once, exit non-zero (systemd restarts us; every
            # step replays safely). Tracebacks are plain, without locals.
            log.critical("daemon crashed", error=f"{type(e).__name__}: {e}", exc_info=True)
            self.notifier.status(f"crashed: {type(e).__name__}")
            code = 1
        finally:
            self.notifier.stopping()
            self.close()
            self._restore_signals()
        took = (None if self._stop_signalled_at is None
                else round(time.monotonic() - self._stop_signalled_at, 3))
        log.info("stopped", cycles=self.cycles, stop_took=took)
        return code

    # -- one cycle ------------------------------------------------------------

    def _step(self, step: str) -> None:
        self.counter(step)
        self.notifier.kick()
        if self.stopping is not None and _safe_to_stop_after(step):
            raise StopRequested

    def cycle_once(self) -> CycleResult | None:
        """One cycle over the sources that are due; None when the connectors
        could not be set up (logged; tried again next time)."""
        store = self._store
        if store is None:
            raise RuntimeError("Daemon.open() first")
        if self._ports is None:
            self._ports = self._connect()
        self.cycles += 1
        if self._ports is None:
            self.notifier.kick(force=True)
            return None
        sources, calendar = self._ports
        now = datetime.now(UTC)
        backoffs = retry.load(store.db)
        # A source is due a little early rather than a whole interval late.
        slack = timedelta(seconds=self.cfg.poll_interval.seconds() / 10)
        # A file costs nothing to look at again: only remote sources back off.
        due = [s for s in sources if s.kind == "file"
               or retry.due(backoffs, retry.key_for_source(s.name), now, slack)]
        waiting = {s.name: backoffs[retry.key_for_source(s.name)].next_try.isoformat()
                   for s in sources if s not in due}
        if waiting:
            log.info("sources backing off", next_try=waiting)
        cycle = Cycle(self.cfg, store, due, calendar, now=self.now, step_hook=self._step)
        if retry.due(backoffs, retry.KEY_CALENDAR, now, slack):
            res = cycle.run()
        else:
            res = CycleResult()
            t0 = time.monotonic()
            for src in due:
                cycle.import_source(src, res)
            res.duration = time.monotonic() - t0
            log.info("cycle", contacts=res.contacts_seen, changed=res.contacts_changed,
                     calendar="backing off",
                     next_try=backoffs[retry.KEY_CALENDAR].next_try.isoformat(),
                     failed_sources=res.failed_sources, duration=round(res.duration, 3))
        memory.release()  # an idle daemon should not hold the cycle's peak
        self.notifier.send(STATUS=summary(res, waiting), WATCHDOG=1)
        self.after_cycle(res)
        return res

    def _idle(self) -> None:
        """Wait out the interval (a signal ends it early), feeding the watchdog."""
        deadline = time.monotonic() + self.cfg.poll_interval.seconds()
        while not self._signalled():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            every = self.notifier.kick_interval()
            self._sleep(min(left, every) if every else left)
            self.notifier.kick()
        self.wake = False

    def _connect(self) -> tuple[list[ContactSource], Calendar] | None:
        """Connectors are built once and reused (discovery costs requests);
        rebuilt only after a config reload."""
        try:
            return make_all(self.cfg)
        except SyncdError as e:
            log.error("cannot set up connectors; retrying next cycle", error=e.message,
                      hint=e.hint)
            self.notifier.status(f"cannot set up connectors: {e.message}")
            return None

    # -- reload ---------------------------------------------------------------

    def _do_reload(self) -> None:
        self.notifier.reloading()
        if self._reload():
            if self._ports is not None:
                _close(self._ports)
                self._ports = None
            if self._store is not None:
                # The new config may have fixed what a source was failing on.
                with self._store.tx() as db:
                    retry.clear_waits(db)
        self.notifier.send(READY=1, STATUS="config reloaded; next cycle now")

    def _reload(self) -> bool:
        path: Path = self.cfg.path
        try:
            new = config_mod.load(path)
        except ConfigError as e:
            log.error("config reload failed; keeping the running config",
                      path=str(path), problems=e.problems)
            return False
        except SyncdError as e:
            log.error("config reload failed; keeping the running config",
                      path=str(path), problems=[e.message])
            return False
        if new.state_dir != self.cfg.state_dir:
            log.error("state_dir cannot change on reload; restart syncd",
                      old=str(self.cfg.state_dir), new=str(new.state_dir))
            return False
        self.cfg = new
        log.info("config reloaded", path=str(path))
        return True


def summary(res: CycleResult, waiting: dict[str, str] | None = None) -> str:
    """The one-line STATUS= systemd shows (`systemctl status syncd`)."""
    at = datetime.now().astimezone().strftime("%H:%M:%S")
    parts = [f"last cycle {at}: {res.contacts_seen} contacts",
             f"{res.attempts_read} attempts read", f"{res.writes} events written"]
    if res.failed_sources:
        parts.append("failing: " + ", ".join(res.failed_sources))
    if waiting:
        parts.append("backing off: " + ", ".join(sorted(waiting)))
    if res.calendar_error:
        parts.append("calendar error")
    parts.append(f"{res.requests} requests, {res.duration:.1f}s")
    return ", ".join(parts)


def _close(ports: tuple[list[ContactSource], Calendar]) -> None:
    for s in ports[0]:
        s.close()
    ports[1].close()
