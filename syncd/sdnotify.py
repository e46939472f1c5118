"""The systemd notification protocol (sd_notify(3)), without libsystemd.

A `Type=notify` service tells the service manager its state by sending
newline-separated `KEY=VALUE` assignments as one datagram to the AF_UNIX
socket named in `$NOTIFY_SOCKET`; a name starting with `@` is in the Linux
abstract namespace (the `@` stands for a leading NUL byte). Without the
variable every call is a no-op, so `syncd run` behaves the same outside
systemd.

The watchdog (`WatchdogSec=`) is enabled when `$WATCHDOG_USEC` is set and
`$WATCHDOG_PID` is unset or our pid (sd_watchdog_enabled(3)); `WATCHDOG=1`
must then arrive at least that often, and we send it at half the interval.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address: str | bytes | None = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog: float | None = _watchdog(env)
        self._sock: socket.socket | None = None
        self._last_kick = 0.0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one message: `notify(READY=1, STATUS="…")`. Returns whether it went out."""
        if self.address is None or not fields:
            return False
        text = "\n".join(f"{k}={_one_line(str(v))}" for k, v in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(text.encode("utf-8", errors="replace"), self.address)
        except OSError:
            # The manager went away (or never listened): nothing to tell.
            return False
        if "WATCHDOG" in fields:
            self._last_kick = time.monotonic()
        return True

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def kick(self, force: bool = False) -> None:
        """WATCHDOG=1: always when `force` (after each cycle), otherwise only
        when half the watchdog interval has passed since the last one."""
        if self.address is None:
            return
        if force or (self.watchdog is not None
                     and time.monotonic() - self._last_kick >= self.watchdog / 2):
            self.send(WATCHDOG=1)

    def kick_interval(self) -> float | None:
        """How often the daemon must wake up to keep the watchdog fed."""
        return None if self.watchdog is None else self.watchdog / 2

    def reloading(self) -> None:
        # systemd ≥ 253 wants MONOTONIC_USEC with RELOADING=1 (CLOCK_MONOTONIC, µs).
        self.send(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def stopping(self) -> None:
        self.send(STOPPING=1, STATUS="stopping")

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # the abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock (`vsock:…`) and other forms are not used by service units


def _watchdog(env: dict[str, str] | os._Environ[str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. a wrapper that exec'd us)
    return int(usec) / 1_000_000


def _one_line(value: str) -> str:
    """A value cannot span lines: the protocol separates assignments by newlines."""
    return " ".join(value.splitlines())
