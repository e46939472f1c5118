"""Files and secrets (issue 7): secrets never appear in any output, at any
log level, in any format; the state directory is 0700 and every file in it
0600; TLS is always verified (a CA can be added, verification cannot be
turned off); password_env, password_file and password_command work end to
end against a server that checks them.
"""

from __future__ import annotations

import base64
import json
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.daemon_helpers import (
    Proc,
    Setup,
    base_env,
    cycle_lines,
    raw_events,
    syncd,
    vcards,
)
from tests.faultproxy import Proxy
from tests.servers import DavServer, free_port, wait_listening

PASSWORD = "pw-Zq8.Kc2!calendar-3141"
TOKEN = "ya29.a0AfH6SMBxTOKEN-5926535897-qwerty"


# ---------------------------------------------------------------------------
# Radicale variants: with password checks, with TLS


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start(data: Path, extra: str, scheme: str = "http") -> Server:
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = data / "radicale.conf"
    conf.write_text(f"[server]\nhosts = 127.0.0.1:{port}\n{extra}"
                    f"[storage]\nfilesystem_folder = {data / 'collections'}\n"
                    "[rights]\ntype = owner_only\n[logging]\nlevel = warning\n")
    log = open(data / "server.log", "ab")  # noqa: SIM115 - kept open for the process
    proc = subprocess.Popen([sys.executable, "-m", "radicale", "--config", str(conf)],
                            stdout=log, stderr=subprocess.STDOUT)
    wait_listening(port, proc)
    return Server(proc, f"{scheme}://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Radicale that checks passwords (htpasswd, plain)."""
    d = tmp_path_factory.mktemp("radicale-auth")
    (d / "users").write_text(f"alice:{PASSWORD}\n")
    srv = start(d, f"[auth]\ntype = htpasswd\nhtpasswd_filename = {d / 'users'}\n"
                   "htpasswd_encryption = plain\ndelay = 0\n")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """Radicale over TLS with a certificate from a throwaway CA."""
    import trustme

    d = tmp_path_factory.mktemp("radicale-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    srv = start(d, f"ssl = True\ncertificate = {d / 'cert.pem'}\nkey = {d / 'key.pem'}\n"
                   "[auth]\ntype = none\n", scheme="https")
    yield srv, d / "ca.pem"
    srv.stop()


# ---------------------------------------------------------------------------
# Secrets never in any output


def test_no_secret_in_any_output_at_any_level(
        tmp_path: Path, radicale: DavServer) -> None:
    proxy = Proxy(radicale.base)
    try:
        book = f"/alice/book-{uuid.uuid4().hex[:8]}/"
        r = requests.request("MKCOL", radicale.base + book, auth=("alice", "x"), data=(
            '<?xml version="1.0"?><D:mkcol xmlns:D="DAV:" '
            'xmlns:C="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype>'
            "<D:collection/><C:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>"))
        assert r.status_code == 201
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        setup = Setup(tmp_path, proxy.base)
        # The CardDAV source's token from a file; a second one that is refused
        # (401), so error paths are logged too.
        setup.contacts = (
            f"  - {{name: book, type: carddav, url: \"{proxy.base}{book}\", "
            f"username: alice, password_file: {token_file}}}\n"
            f"  - {{name: refused, type: carddav, url: \"{proxy.base}/alice/refused/\", "
            f"username: alice, password_env: SYNCD_TOKEN}}\n")
        setup.write(vcards(2))
        proxy.script({"path": "^/alice/refused/", "action": "status", "status": 401,
                      "times": -1, "headers": {"WWW-Authenticate": 'Basic realm="x"'}})
        env = base_env(CAL_PASSWORD=PASSWORD, SYNCD_TOKEN=TOKEN)
        outputs = []
        for fmt in ("json", "console"):
            done = subprocess.run(
                [sys.executable, "-m", "syncd", "--config", str(setup.config), "-v",
                 "--log-format", fmt, "sync"],
                capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
            assert done.returncode == 1  # the refused source
            outputs += [done.stdout, done.stderr]
        assert "source refused failed" in outputs[1]
        assert "rejected the credentials" in outputs[1]
        for cmd in (("status",), ("status", "--json"), ("attempts", "--json"),
                    ("config", "check")):
            done = syncd(setup, *cmd, env=env, verbose=True)
            outputs += [done.stdout, done.stderr]
        proc = Proc(setup, env=env, verbose=True)
        try:
            proc.wait_event("cycle")
            proc.send(signal.SIGHUP)
            proc.wait_event("config reloaded")
            proc.wait_event("cycle")
            proc.send(signal.SIGTERM)
            assert proc.wait() == 0
        finally:
            proc.stop()
        outputs += [proc.text(), proc.stdout]
        # Not vacuous: both secrets really went over the wire.
        sent = {base64.b64decode(e["authorization"].split()[1]).decode()
                for e in proxy.log() if e.get("authorization")}
        assert f"alice:{PASSWORD}" in sent and f"alice:{TOKEN}" in sent
    finally:
        proxy.stop()
    everything = "\n".join(outputs)
    assert '"level": "debug"' in everything  # -v really logged at debug level
    for secret in (PASSWORD, TOKEN):
        assert secret not in everything
        assert base64.b64encode(f"alice:{secret}".encode()).decode() not in everything
    # Nor in any file syncd wrote (the state directory: database, WAL, lock).
    for f in setup.state.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert PASSWORD.encode() not in data and TOKEN.encode() not in data, f


def test_a_secret_that_reaches_a_log_call_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    """The guards behind the rule: key names that look secret, and every
    secret value read at run time, in structlog and in stdlib logging."""
    import logging

    import structlog

    from syncd import log

    log.setup("json", verbose=True)
    log.register_secret(PASSWORD)
    structlog.get_logger("t").info("oops", detail=f"url http://alice:{PASSWORD}@h/",
                                   password="plain", nested={"x": [PASSWORD]})
    logging.getLogger("urllib3").warning("header Authorization: %s", PASSWORD)
    err = capsys.readouterr().err
    assert PASSWORD not in err
    rec = json.loads(err.splitlines()[0])
    assert rec["detail"] == "url http://alice:***@h/"
    assert rec["password"] == "***" and rec["nested"] == {"x": ["***"]}
    assert "header Authorization: ***" in err


# ---------------------------------------------------------------------------
# Files


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_state_dir_is_0700_and_every_file_in_it_0600(
        tmp_path: Path, radicale: DavServer) -> None:
    setup = Setup(tmp_path, radicale.base)
    setup.write(vcards(2))
    # Left loose by an older version or a careless umask: tightened.
    setup.state.mkdir(mode=0o755)
    setup.state.chmod(0o755)
    (setup.state / "state.db").touch(mode=0o644)
    (setup.state / "state.db").chmod(0o644)
    done = syncd(setup, "sync", env=base_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    # While a daemon runs, the WAL and shared-memory files exist too.
    proc = Proc(setup)
    try:
        proc.wait_event("cycle")
        names = sorted(p.name for p in setup.state.iterdir())
        assert {"state.db", "state.db-wal", "state.db-shm", "lock"} <= set(names)
        assert _mode(setup.state) == 0o700
        for f in setup.state.iterdir():
            assert _mode(f) == 0o600, f"{f.name}: {oct(_mode(f))}"
        proc.send(signal.SIGTERM)
        assert proc.wait() == 0
    finally:
        proc.stop()


def test_token_files_are_written_0600(tmp_path: Path) -> None:
    from connectors.google_common import write_private as google_write
    from connectors.msal_auth import write_private as msal_write

    for i, write in enumerate((google_write, msal_write)):
        target = tmp_path / f"state{i}" / "token.json"
        write(target, json.dumps({"refresh_token": TOKEN}))
        assert _mode(target) == 0o600 and _mode(target.parent) == 0o700
        target.chmod(0o644)
        write(target, "{}")  # rewritten: tight again
        assert _mode(target) == 0o600


# ---------------------------------------------------------------------------
# TLS


@pytest.mark.parametrize("key", ["verify: false", "insecure: true", "ssl_verify: false",
                                 "verify_ssl: false", "tls_verify: false"])
def test_no_config_key_turns_tls_verification_off(key: str, tmp_path: Path) -> None:
    setup = Setup(tmp_path, "https://127.0.0.1:1", calendar_extra=f"  {key}\n")
    setup.write(vcards(1))
    done = syncd(setup, "config", "check")
    assert done.returncode == 2
    name = key.split(":")[0]
    assert f"{setup.config}:12: calendar.{name}: unknown key" in done.stderr
    assert "Traceback" not in done.stderr


def test_tls_is_verified_and_ca_bundle_adds_a_ca(
        tmp_path: Path, tls: tuple[Server, Path]) -> None:
    server, ca = tls
    setup = Setup(tmp_path, server.base)
    setup.write(vcards(1))
    # The environment cannot switch verification off either.
    env = base_env(REQUESTS_CA_BUNDLE="", CURL_CA_BUNDLE="", PYTHONHTTPSVERIFY="0")
    refused = syncd(setup, "sync", env=env)
    assert refused.returncode == 1
    assert (f"syncd: calendar: CalDAV server {server.base}/: TLS certificate verification "
            "failed (hint: if the server uses a private CA, set calendar.ca_bundle to its "
            "certificate (PEM))") in refused.stderr
    assert '"retrying request"' not in refused.stderr  # a bad certificate stays bad
    setup.calendar_extra = f"  ca_bundle: {ca}\n"
    setup.write()
    ok = syncd(setup, "sync", env=env)
    assert ok.returncode == 0, ok.stderr
    assert cycle_lines(ok.stderr)[-1]["created"] == 1


# ---------------------------------------------------------------------------
# Password sources, end to end against a server that checks them


@pytest.mark.parametrize("how", ["env", "file", "command"])
def test_password_sources_end_to_end(how: str, tmp_path: Path, checked: Server) -> None:
    secret = tmp_path / "secret"
    script = tmp_path / "pw.sh"
    key = {"env": "password_env: CAL_PASSWORD",
           "file": f"password_file: {secret}",
           "command": f"password_command: {script} --for alice"}[how]
    setup = Setup(tmp_path, checked.base, password_key=key)
    setup.write(vcards(2))
    for password, ok in (("wrong-" + PASSWORD, False), (PASSWORD, True)):
        secret.write_text(password + "\n")
        script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{password}'\n")
        script.chmod(0o700)
        done = syncd(setup, "sync", env=base_env(CAL_PASSWORD=password), verbose=True)
        assert password not in done.stdout + done.stderr
        if ok:
            assert done.returncode == 0, done.stderr
            assert cycle_lines(done.stderr)[-1]["created"] == 2
        else:
            assert done.returncode == 1
            assert (f"syncd: calendar: CalDAV server {checked.base}/ rejected the credentials "
                    "of alice") in done.stderr
    got = requests.request("PROPFIND", f"{checked.base}/alice/", auth=("alice", PASSWORD),
                           headers={"Depth": "1"}, timeout=30)
    assert got.status_code == 207 and setup.calendar in got.text


def test_a_missing_secret_is_a_clear_error(tmp_path: Path, radicale: DavServer) -> None:
    setup = Setup(tmp_path, radicale.base, password_key="password_env: NOT_SET_ANYWHERE")
    setup.write(vcards(1))
    done = syncd(setup, "sync")
    assert done.returncode == 2
    assert ("calendar.password_env: environment variable NOT_SET_ANYWHERE is not set"
            in done.stderr)
    assert "Traceback" not in done.stderr
    assert raw_events(radicale, setup.calendar) == []
