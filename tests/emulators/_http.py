"""A small threaded HTTP/1.1 server the Google emulators run on.

It is a real server on a loopback port (optionally TLS), so the client
libraries under test speak real HTTP to it: httplib2 with keep-alive,
google-auth's token refresh, requests for the "other client" calls. Each
request is logged with its arrival time (tests count requests and measure
the gaps a client left between retries), and faults can be queued to answer
the next matching requests instead of the emulated API.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str  # percent-encoded, as sent
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    @property
    def segments(self) -> list[str]:
        """The path split on "/" and percent-decoded segment by segment."""
        return [unquote(s) for s in self.path.split("/") if s]

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body.decode("utf-8"))

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else str(value)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> Response:
        body = json.dumps(payload, ensure_ascii=False, indent=2).encode("utf-8")
        h = {"Content-Type": "application/json; charset=UTF-8", **(headers or {})}
        return cls(status, body, h)


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival
    status: int  # what the emulator answered
    batched: bool = False  # one part of a batch request, not an HTTP request


App = Callable[[Request], Response]


class Server:
    """Serves `app` on 127.0.0.1:<free port> from a daemon thread."""

    def __init__(self, app: App, tls: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.log: list[Logged] = []
        self.bugs: list[str] = []  # tracebacks of exceptions inside the emulator
        self._lock = threading.Lock()
        handler = _handler_for(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = int(self._httpd.server_address[1])
        # The socket is bound and listening once the constructor returns, so
        # clients can connect before the thread even runs: no readiness wait.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def record(self, req: Request, at: float, status: int, batched: bool = False) -> None:
        entry = Logged(
            req.method, req.path, req.query, {k.lower(): v for k, v in req.headers.items()},
            at, status, batched,
        )
        with self._lock:
            self.log.append(entry)

    def requests(self, prefix: str = "") -> list[Logged]:
        with self._lock:
            return [r for r in self.log if r.path.startswith(prefix)]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


def _handler_for(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One buffered write per response (flushed by handle_one_request), and
        # no Nagle: split header/body writes would stall on delayed ACKs.
        wbufsize = -1
        disable_nagle_algorithm = True
        server_version = "ESF"  # Google front ends announce themselves as ESF
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read `server.log` instead

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            req = Request(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers=self.headers,
                body=body,
            )
            at = time.monotonic()
            try:
                resp = server.app(req)
            except Exception as exc:  # an emulator bug: fixtures fail the test on it
                server.bugs.append(traceback.format_exc())
                resp = Response.json(
                    500, {"error": {"code": 500, "message": f"emulator bug: {exc!r}"}}
                )
            server.record(req, at, resp.status)
            self.send_response(resp.status)
            for k, v in resp.headers.items():
                self.send_header(k, v)
            if resp.status not in (204, 304):
                self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if resp.status not in (204, 304) and self.command != "HEAD":
                self.wfile.write(resp.body)

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve
        do_PATCH = _serve
        do_DELETE = _serve
        do_HEAD = _serve

    return Handler


@dataclass
class Fault:
    """Answer the next `times` requests matching method/path with this reply."""

    status: int
    reason: str = ""
    message: str = ""
    method: str | None = None
    path_contains: str = ""
    retry_after: str | None = None
    times: int = 1

    def matches(self, req: Request) -> bool:
        if self.method is not None and req.method != self.method:
            return False
        return self.path_contains in req.path


class Faults:
    """A queue of faults; the first matching one answers and counts down."""

    def __init__(self) -> None:
        self._items: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._items.append(fault)

    def take(self, req: Request) -> Fault | None:
        with self._lock:
            for f in self._items:
                if f.matches(req):
                    f.times -= 1
                    if f.times <= 0:
                        self._items.remove(f)
                    return f
        return None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Clock:
    """The emulators' clock: real time plus an offset tests can advance."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta
