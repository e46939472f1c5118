"""Real CalDAV/CardDAV servers for the tests: Radicale and Xandikos, each a
separate process on a free loopback port, with its data in a temp directory;
and a request counter for any connector's session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Poll until the server accepts a TCP connection (readiness, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start in {timeout}s")


@dataclass
class DavServer:
    kind: str
    port: int
    proc: subprocess.Popen[bytes]
    data: Path
    # Where a calendar and an address book live for the test user.
    principal_url: str
    calendar_home: str
    addressbook_url: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_radicale(data: Path, user: str = "alice") -> DavServer:
    """Radicale with `[auth] type = none`: any password works, and the user
    is the Basic-auth username, so clients must send `alice` (rights are
    owner_only, as on a real deployment)."""
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = data / "radicale.conf"
    # Radicale 3.9 defaults to [auth] type = denyall: tests run with none.
    cfg.write_text(
        f"[server]\nhosts = 127.0.0.1:{port}\n"
        "[auth]\ntype = none\n"
        f"[storage]\nfilesystem_folder = {data / 'collections'}\n"
        "[rights]\ntype = owner_only\n"
        "[logging]\nlevel = warning\n"
    )
    log = open(data / "server.log", "ab")  # noqa: SIM115 - kept open for the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "radicale", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_listening(port, proc)
    base = f"http://127.0.0.1:{port}"
    return DavServer(
        kind="radicale",
        port=port,
        proc=proc,
        data=data,
        principal_url=f"{base}/{user}/",
        calendar_home=f"{base}/{user}/",
        addressbook_url=f"{base}/{user}/contacts/",
    )


def start_xandikos(data: Path) -> DavServer:
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(data / "server.log", "ab")  # noqa: SIM115 - kept open for the process
    exe = Path(sys.executable).parent / "xandikos"
    proc = subprocess.Popen(
        [
            str(exe), "serve", "-d", str(data / "store"), "--defaults",
            "-l", "127.0.0.1", "-p", str(port), "--no-detect-systemd",
            "--state-dir", str(data / "state"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "XDG_DATA_HOME": str(data / "xdg")},
    )
    wait_listening(port, proc)
    base = f"http://127.0.0.1:{port}"
    return DavServer(
        kind="xandikos",
        port=port,
        proc=proc,
        data=data,
        principal_url=f"{base}/user/",
        calendar_home=f"{base}/user/calendars/",
        addressbook_url=f"{base}/user/contacts/addressbook/",
    )


def count_requests(session: Any) -> Callable[[], int]:
    """Count the requests a connector's `requests` session sends from now on
    (the real session to the real peer, only counted); returns the reader."""
    inner = session.request
    calls: list[str] = []

    def counting(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(f"{method} {url}")
        return inner(method, url, *args, **kwargs)

    session.request = counting
    return lambda: len(calls)
