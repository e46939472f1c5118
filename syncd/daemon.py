"""The long-running loop behind `syncd run`: a cycle every `poll_interval`,
SIGTERM/SIGINT finish the cycle in flight and exit, SIGHUP reloads the config
(an invalid new config keeps the old one running)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import structlog

from syncd import config as config_mod
from syncd.cycle import Cycle, CycleResult
from syncd.errors import ConfigError, SyncdError
from syncd.ports import Calendar, ContactSource
from syncd.settings import Config
from syncd.store import Store, lock_state_dir
from syncd.wiring import make_all

log = structlog.get_logger("syncd")


class Daemon:
    def __init__(self, cfg: Config, after_cycle: Callable[[CycleResult], None] | None = None):
        self.cfg = cfg
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.after_cycle = after_cycle or (lambda _r: None)

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        self.stop.set()
        self.wake.set()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self.reload.set()
        self.wake.set()

    def run(self) -> int:
        self.wake = threading.Event()
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        lock = lock_state_dir(self.cfg.state_dir)
        store = Store(self.cfg.state_dir)
        ports: tuple[list[ContactSource], Calendar] | None = None
        try:
            while not self.stop.is_set():
                if ports is None:
                    ports = self._connect()
                if ports is not None:
                    res = Cycle(self.cfg, store, *ports).run()
                    self.after_cycle(res)
                # A signal wakes us early; otherwise wait out the interval.
                self.wake.wait(self.cfg.poll_interval.seconds())
                self.wake.clear()
                if self.reload.is_set():
                    self.reload.clear()
                    if self._reload() and ports is not None:
                        _close(ports)
                        ports = None
        finally:
            if ports is not None:
                _close(ports)
            store.close()
            lock.release()
        log.info("stopped")
        return 0

    def _connect(self) -> tuple[list[ContactSource], Calendar] | None:
        """Connectors are built once and reused (discovery costs requests);
        rebuilt only after a config reload."""
        try:
            return make_all(self.cfg)
        except SyncdError as e:
            log.error("cannot set up connectors; retrying next cycle", error=e.message,
                      hint=e.hint)
            return None

    def _reload(self) -> bool:
        path: Path = self.cfg.path
        try:
            new = config_mod.load(path)
        except ConfigError as e:
            log.error("config reload failed; keeping the running config",
                      problems=e.problems)
            return False
        if new.state_dir != self.cfg.state_dir:
            log.error("state_dir cannot change on reload; restart syncd",
                      old=str(self.cfg.state_dir), new=str(new.state_dir))
            return False
        self.cfg = new
        log.info("config reloaded", path=str(path))
        return True


def _close(ports: tuple[list[ContactSource], Calendar]) -> None:
    for s in ports[0]:
        s.close()
    ports[1].close()
