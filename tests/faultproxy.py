"""A fault-injecting HTTP proxy, run as a real separate process between syncd
and a DAV server:

    python -m tests.faultproxy --upstream http://127.0.0.1:5232

It prints `READY <port>` on stdout once it listens. Requests are forwarded to
the upstream unchanged, except where a scripted rule says otherwise. Rules
and the request log are driven over HTTP on the same port, under `/_fault/`
(never forwarded):

    POST /_fault/rules   [rule, ...]   replace the script
    GET  /_fault/log                   every request so far, in order
    POST /_fault/reset                 clear rules and log

A rule matches on `method`, a `path` regex and a request `header` that must be
present (each optional), lets `skip`
matching requests through first, then applies its action to the next
`times` matching requests (-1: all of them). Actions:

    status     answer `status` with `headers` and `body`, not forwarded
    reset      read the request, then reset the connection (RST), not forwarded
    lost       forward (the write lands upstream), then reset: the answer is lost
    hang       hold the request for `seconds` without answering, then close
    truncate   forward, then send the headers (full Content-Length) and half
               the body, then close
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "content-length", "host"}
METHODS = ("GET", "HEAD", "PUT", "DELETE", "POST", "OPTIONS", "PROPFIND", "PROPPATCH",
           "REPORT", "MKCOL", "MKCALENDAR", "MOVE", "COPY")


class _Closed(Exception):
    """The connection was closed on purpose (a fault)."""


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        self.t0 = time.monotonic()

    def pick(self, method: str, path: str, headers: Any = None) -> dict[str, Any] | None:
        with self.lock:
            for rule in self.rules:
                if rule.get("method") and rule["method"] != method:
                    continue
                if rule.get("header") and (headers is None or rule["header"] not in headers):
                    continue
                if rule.get("path") and not re.search(rule["path"], path):
                    continue
                if rule.get("skip", 0) > 0:
                    rule["skip"] -= 1
                    return None
                times = rule.get("times", 1)
                if times == 0:
                    continue
                if times > 0:
                    rule["times"] = times - 1
                return dict(rule)
            return None

    def record(self, **entry: Any) -> None:
        with self.lock:
            entry["n"] = len(self.log) + 1
            entry["t"] = round(time.monotonic() - self.t0, 3)
            self.log.append(entry)


def make_handler(state: State, upstream: str) -> type[BaseHTTPRequestHandler]:
    up = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def handle(self) -> None:
            with contextlib.suppress(_Closed, OSError, ValueError):
                super().handle()

        def finish(self) -> None:
            with contextlib.suppress(OSError, ValueError):
                super().finish()

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _send(self, status: int, headers: dict[str, str], body: bytes,
                  close: bool = False) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _rst(self) -> None:
            # SO_LINGER 0: close() sends RST instead of FIN (a "connection reset").
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            raise _Closed

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(up.hostname or "127.0.0.1", up.port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in HOP_BY_HOP}
                headers["Host"] = up.netloc
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, [(k, v) for k, v in resp.getheaders()
                                     if k.lower() not in HOP_BY_HOP], data
            finally:
                conn.close()

        def _control(self, body: bytes) -> None:
            if self.command == "POST" and self.path == "/_fault/rules":
                with state.lock:
                    state.rules = json.loads(body or b"[]")
                self._send(204, {}, b"")
            elif self.command == "POST" and self.path == "/_fault/reset":
                with state.lock:
                    state.rules, state.log = [], []
                self._send(204, {}, b"")
            elif self.command == "GET" and self.path == "/_fault/log":
                with state.lock:
                    data = json.dumps(state.log).encode()
                self._send(200, {"Content-Type": "application/json"}, data)
            else:
                self._send(404, {}, b"")

        def _any(self) -> None:
            body = self._body()
            if self.path.startswith("/_fault/"):
                self._control(body)
                return
            rule = state.pick(self.command, self.path, self.headers)
            action = rule["action"] if rule else "forward"
            entry: dict[str, Any] = {
                "method": self.command, "path": self.path, "action": action,
                "authorization": self.headers.get("Authorization"),
                "if_match": self.headers.get("If-Match"),
                "if_none_match": self.headers.get("If-None-Match"),
            }
            if rule is None:
                status, headers, data = self._forward(body)
                entry["status"] = status
                state.record(**entry)
                self._send(status, dict(headers), data)
                return
            if action == "status":
                entry["status"] = rule["status"]
                state.record(**entry)
                self._send(int(rule["status"]), rule.get("headers", {}),
                           rule.get("body", "").encode(), close=rule.get("close", False))
            elif action == "reset":
                state.record(**entry)
                self._rst()
            elif action == "lost":
                status, _h, _d = self._forward(body)
                entry["status"] = status
                state.record(**entry)
                self._rst()
            elif action == "hang":
                state.record(**entry)
                time.sleep(float(rule.get("seconds", 5)))
                self.close_connection = True
                self.connection.close()
                raise _Closed
            elif action == "truncate":
                status, headers, data = self._forward(body)
                entry["status"] = status
                state.record(**entry)
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.close()
                raise _Closed
            else:
                raise ValueError(f"unknown action {action!r}")

    for m in METHODS:
        setattr(Handler, f"do_{m}", Handler._any)
    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(State(), args.upstream))
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------------------
# The test side: start the proxy process and script it


class Proxy:
    """A running `python -m tests.faultproxy` and its control API."""

    def __init__(self, upstream: str) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faultproxy", "--upstream", upstream],
            stdout=subprocess.PIPE, text=True,
            cwd=str(__import__("pathlib").Path(__file__).parent.parent))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # readiness: it prints once it listens
        if not line.startswith("READY "):
            raise RuntimeError(f"fault proxy did not start: {line!r}")
        self.port = int(line.split()[1])
        self.base = f"http://127.0.0.1:{self.port}"

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data)
            resp = conn.getresponse()
            raw = resp.read()
            return json.loads(raw) if raw else None
        finally:
            conn.close()

    def script(self, *rules: dict[str, Any]) -> None:
        self._control("POST", "/_fault/rules", list(rules))

    def reset(self) -> None:
        self._control("POST", "/_fault/reset")

    def log(self) -> list[dict[str, Any]]:
        return list(self._control("GET", "/_fault/log"))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
