"""The first-run experience, through the real CLI against Radicale:
`syncd init` (from flags and interactively), `syncd doctor`, `syncd status`
on a terminal (a pseudo-terminal) and the progress of `syncd sync`."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import yaml

from syncd.config import load
from tests.cli_env import CONTACTS, Env, cycles, make_env, user_edit
from tests.servers import DavServer, free_port

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


@dataclass
class Run:
    code: int
    out: str
    err: str


def cli(*args: str, env: dict[str, str] | None = None, stdin: str = "",
        cwd: Path | None = None) -> Run:
    proc = subprocess.run([sys.executable, "-m", "syncd", "--log-format", "json", *args],
                          input=stdin, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def cli_on_tty(*args: str, stream: str, env: dict[str, str]) -> Run:
    """Run the CLI with `stream` (stdout or stderr) on a pseudo-terminal of
    160 columns; the other one is a pipe. `out`/`err` are what each got."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS",
                                                                 "LINES", "FORCE_COLOR")}
    full_env.update({"TERM": "xterm-256color", **env})
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--log-format", "json", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave if stream == "stdout" else subprocess.PIPE,
        stderr=slave if stream == "stderr" else subprocess.PIPE,
        env=full_env,
    )
    os.close(slave)
    chunks = []
    while True:  # until the child closes the terminal (EIO), not a timed wait
        try:
            data = os.read(master, 65536)
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    piped_out, piped_err = proc.communicate(timeout=120)
    tty = b"".join(chunks).decode("utf-8", "replace")
    pipe = (piped_err if stream == "stdout" else piped_out).decode("utf-8", "replace")
    code = proc.returncode
    return Run(code, tty, pipe) if stream == "stdout" else Run(code, pipe, tty)


def plain(text: str) -> str:
    return ANSI.sub("", text)


@pytest.fixture
def renv(tmp_path: Path, radicale: DavServer) -> Env:
    return make_env(tmp_path, radicale)


# --------------------------------------------------------------------------
# status


def test_status_on_a_terminal_puts_overdue_then_today_first(renv: Env) -> None:
    renv.run("sync")
    events = {str(e.icalendar_component["SUMMARY"]).split()[1]: e.icalendar_component
              for e in renv.events()}
    jane, bob = events["Jane"], events["Bob"]
    odd = "<img src=x onerror=alert(2)> [bold]not markup[/bold]"
    url = next(e.url for e in renv.events() if "Bob" in str(e.icalendar_component["SUMMARY"]))
    user_edit(url, lambda d: d + odd + "\n")
    renv.run("sync", now="2026-11-25T15:05:00+00:00")  # reads the line in Bob's notes
    # Bob's call comes after Jane's: between them (and before the next sync,
    # which would move Jane's), Jane's follow-up is overdue, Bob's due today.
    at = jane.decoded("DTEND") + timedelta(minutes=1)
    assert at < bob.decoded("DTSTART")
    now = {"SYNCD_NOW": at.isoformat()}

    shown = cli_on_tty("--config", str(renv.config), "status", stream="stdout", env=now)
    assert shown.code == 0, shown.err
    assert "\x1b[" in shown.out  # a terminal gets colour
    text = plain(shown.out)
    lines = text.splitlines()
    row = {name: next(i for i, ln in enumerate(lines) if name in ln and "call" in ln)
           for name in ("Jane Roe", "Bob Li")}
    assert "OVERDUE" in lines[row["Jane Roe"]] and "TODAY" in lines[row["Bob Li"]]
    assert row["Jane Roe"] < row["Bob Li"]
    assert "1 overdue" in text and "1 due today" in text
    # Unparsed note lines are listed as typed (rich markup is not interpreted).
    assert "Unparsed note lines" in text
    assert odd in text
    # Sources with their last sync and problems; the calendar too.
    src = next(ln for ln in lines if ln.strip().startswith("cards"))
    assert "file" in src and "ok" in src and "never" not in src
    assert re.search(r"calendar\s+caldav\s+-\s+ok", text)

    # Not a terminal: plain text, no escape codes; --json keeps its shape.
    piped = renv.run("status", now=at.isoformat())
    assert "\x1b[" not in piped.stdout and "OVERDUE Jane Roe" in piped.stdout
    data = renv.json("status")
    assert set(data) >= {"contacts", "sources"}
    for c in data["contacts"]:
        assert set(c) >= {"id", "name", "source", "cadence", "state", "timezone", "attempts",
                          "last_attempt", "next_followup"}
        assert set(c["next_followup"]) >= {"start", "channel", "event_uid"}
    assert set(data["sources"][0]) >= {"name", "kind", "last_sync", "last_error"}


# --------------------------------------------------------------------------
# progress


def test_sync_logs_one_line_per_stage_when_not_on_a_terminal(renv: Env) -> None:
    proc = renv.run("sync")
    stages = [json.loads(ln) for ln in proc.stderr.splitlines()
              if ln.startswith("{") and json.loads(ln).get("event") == "stage"]
    assert [(s["stage"], s["total"]) for s in stages] == [
        ("contacts", 1), ("calendar", 1), ("plan", 1), ("write", 2)]
    assert cycles(proc.stderr)[-1]["created"] == 2


def test_sync_shows_a_progress_bar_on_a_terminal(renv: Env) -> None:
    shown = cli_on_tty("--config", str(renv.config), "sync", stream="stderr",
                       env={"SYNCD_NOW": "2026-11-25T15:00:00+00:00",
                            "E2E_PASSWORD": "x"})
    assert shown.code == 0, shown.err
    text = plain(shown.err)
    for stage in ("contacts", "calendar", "plan"):
        assert re.search(rf"✓ {stage}\s.*1/1", text), text
    assert re.search(r"✓ write\s.*2/2", text), text
    assert '"event": "stage"' not in text  # the bar replaces the stage log lines


# --------------------------------------------------------------------------
# doctor


def test_doctor_all_ok_on_radicale(renv: Env, radicale: DavServer) -> None:
    # Also a CardDAV source on the same server.
    book = f"{radicale.base}/alice/book-{uuid.uuid4().hex[:8]}/"
    http = requests.Session()
    http.auth = ("alice", "x")
    r = http.request("MKCOL", book, headers={"Content-Type": "application/xml"}, data=(
        '<?xml version="1.0" encoding="utf-8"?><D:mkcol xmlns:D="DAV:" '
        'xmlns:C="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype>'
        "<D:collection/><C:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>"))
    assert r.status_code == 201, r.text
    card = CONTACTS.split("END:VCARD")[0] + "END:VCARD\r\n"
    assert http.put(book + "jane.vcf", data=card.encode(),
                    headers={"Content-Type": "text/vcard"}).status_code == 201
    renv.config.write_text(renv.config.read_text().replace(
        "contacts:\n", f"contacts:\n  - {{name: dav, type: carddav, url: {book}, "
        "username: alice, password_env: E2E_PASSWORD}\n"))

    proc = renv.run("doctor")
    lines = proc.stdout.splitlines()
    assert all(ln.startswith("ok") for ln in lines), proc.stdout
    text = proc.stdout
    assert "config:" in text and "is valid (2 contact source(s)" in text
    assert re.search(r"contacts 'dav': \(carddav at .*\) reachable, 1 contact\(s\)", text)
    assert "contacts 'dav': (carddav" in text and "incremental sync works" in text
    assert "contacts 'cards': (file" in text and "2 contact(s) read" in text
    assert f"'{renv.calendar_name}' found at {radicale.base}/alice/" in text
    assert "sync token works" in text
    assert not (renv.config.parent / "state" / "state.db").exists()  # doctor writes no state


def test_doctor_names_the_url_when_the_calendar_is_unreachable(renv: Env,
                                                               radicale: DavServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}/"
    renv.config.write_text(renv.config.read_text().replace(f"{radicale.base}/", dead))
    proc = renv.run("doctor", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fails = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL")]
    assert len(fails) == 1, proc.stdout
    assert fails[0].startswith(f"FAIL   calendar: (caldav at {dead}) cannot reach the calendar:")
    assert "unreachable" in fails[0] and "→ check calendar.url" in fails[0]
    assert "ok     contacts 'cards'" in proc.stdout  # the rest is still checked
    assert "Traceback" not in proc.stderr


def test_doctor_missing_contacts_file_fails_with_the_path(renv: Env) -> None:
    (renv.config.parent / "contacts.vcf").unlink()
    proc = renv.run("doctor", check=False)
    assert proc.returncode == 1
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL"))
    assert str(renv.config.parent / "contacts.vcf") in line and "does not exist" in line


def test_doctor_config_errors_exit_2(renv: Env) -> None:
    renv.config.write_text(renv.config.read_text().replace("horizon: 14d", "horizn: 14d"))
    proc = renv.run("doctor", check=False)
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        f"CONFIG config: {renv.config}:2: horizn: unknown key (did you mean 'horizon'?)"]
    # A password variable that is not set is the user's to fix: also exit 2.
    renv.config.write_text(renv.config.read_text().replace("horizn", "horizon")
                           .replace("E2E_PASSWORD", "SYNCD_TEST_UNSET_VAR"))
    proc = renv.run("doctor", check=False)
    assert proc.returncode == 2, proc.stdout
    assert re.search(r"^CONFIG calendar: .*SYNCD_TEST_UNSET_VAR", proc.stdout, re.M)
    missing = cli("--config", str(renv.config.parent / "nope.yaml"), "doctor")
    assert missing.code == 2 and "no config file at" in missing.out
    assert "syncd init" in missing.out


# --------------------------------------------------------------------------
# init


def _init_env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_STATE_HOME": str(tmp_path / "xdg-state"), "E2E_PASSWORD": "x",
            "SYNCD_NOW": "2026-11-25T15:00:00+00:00"}


def test_init_from_flags_writes_a_config_that_checks_and_syncs(tmp_path: Path,
                                                              radicale: DavServer) -> None:
    (tmp_path / "people.vcf").write_text(CONTACTS)
    cfg = tmp_path / "conf" / "config.yaml"
    name = f"Follow-ups {uuid.uuid4().hex[:8]}"
    env = _init_env(tmp_path)
    flags = ["--config", str(cfg), "init", "--contacts-file", "people.vcf",
             "--calendar-url", f"{radicale.base}/", "--username", "alice",
             "--password-env", "E2E_PASSWORD", "--calendar-name", name,
             "--timezone", "America/Chicago", "--days", "mon-thu", "--hours", "09:00-17:30"]
    made = cli(*flags, env=env, cwd=tmp_path)
    assert made.code == 0, made.err
    assert "✓ contacts 'people': 2 contact(s) read" in made.out
    assert f"✓ calendar: calendar '{name}' is at {radicale.base}/alice/" in made.out
    assert f"wrote {cfg}" in made.out and "`syncd sync`" in made.out
    text = cfg.read_text()
    assert text.startswith("# syncd configuration")  # commented
    assert "x" not in yaml.safe_load(text)["calendar"].get("password", "")  # no secret
    c = load(cfg)
    assert c.timezone == "America/Chicago"
    assert c.working_hours.days == frozenset({0, 1, 2, 3})
    assert (c.working_hours.start.isoformat(), c.working_hours.end.isoformat()) == (
        "09:00:00", "17:30:00")
    assert c.contacts[0].path == tmp_path / "people.vcf"
    assert cli("--config", str(cfg), "config", "check", env=env).code == 0
    synced = cli("--config", str(cfg), "sync", env=env)
    assert synced.code == 0, synced.err
    assert cycles(synced.err)[-1]["created"] == 2

    # Never overwritten without --force; with it, it is.
    again = cli(*flags, env=env, cwd=tmp_path)
    assert again.code == 2 and "already exists" in again.err and "--force" in again.err
    assert cfg.read_text() == text
    forced = cli(*flags[:-2], "--hours", "08:00-16:00", "--force", env=env, cwd=tmp_path)
    assert forced.code == 0, forced.err
    assert load(cfg).working_hours.end.isoformat() == "16:00:00"


def test_init_from_flags_writes_nothing_when_a_check_fails(tmp_path: Path,
                                                          radicale: DavServer) -> None:
    (tmp_path / "people.vcf").write_text(CONTACTS)
    cfg = tmp_path / "config.yaml"
    dead = f"http://127.0.0.1:{free_port()}/"
    env = _init_env(tmp_path)
    base = ["--config", str(cfg), "init", "--contacts-file", str(tmp_path / "people.vcf"),
            "--username", "alice", "--password-env", "E2E_PASSWORD"]
    bad = cli(*base, "--calendar-url", dead, env=env)
    assert bad.code == 1
    assert "✗ calendar:" in bad.out and "unreachable" in bad.out
    assert "nothing written" in bad.err and "--no-verify" in bad.err
    assert not cfg.exists()
    unset = cli(*base[:-1], "SYNCD_TEST_UNSET_VAR", "--calendar-url", f"{radicale.base}/",
                env=env)
    assert unset.code == 1 and "SYNCD_TEST_UNSET_VAR is not set" in unset.out
    assert not cfg.exists()
    blind = cli(*base, "--calendar-url", dead, "--no-verify", env=env)
    assert blind.code == 0 and "✓" not in blind.out and "✗" not in blind.out
    assert load(cfg).calendar is not None
    wrong = cli("--config", str(tmp_path / "x.yaml"), "init", "--contacts-file",
                str(tmp_path / "people.vcf"), "--calendar-url", dead, "--timezone", "Mars/Base",
                env=env)
    assert wrong.code == 2 and "Mars/Base" in wrong.err
    assert "Traceback" not in bad.err + unset.err + wrong.err


def test_init_interactive_asks_checks_each_connection_and_writes(tmp_path: Path,
                                                                radicale: DavServer) -> None:
    (tmp_path / "people.vcf").write_text(CONTACTS)
    cfg = tmp_path / "config.yaml"
    name = f"Follow-ups {uuid.uuid4().hex[:8]}"
    dead = f"http://127.0.0.1:{free_port()}/"
    answers = [
        "Europe/Berlin",  # time zone
        "mon-thu",  # working days
        "9:00",  # start
        "17:00",  # end
        "",  # first contact source: file (the default)
        str(tmp_path / "missing.vcf"),  # refused: no such file, asked again
        str(tmp_path / "people.vcf"),
        "",  # name: people (from the file name)
        "",  # no more sources
        "caldav",  # calendar type
        dead, "alice", "", name,  # URL, user, password variable (default), calendar
        "",  # the check fails: change the answers? yes
        f"{radicale.base}/", "", "", "",  # URL again; the rest as before
        "",  # write it? yes
    ]
    env = {**_init_env(tmp_path), "CALDAV_PASSWORD": "x"}
    run = cli("--config", str(cfg), "init", "--interactive", stdin="\n".join(answers) + "\n",
              env=env)
    assert run.code == 0, run.out + run.err
    out = run.out
    assert "missing.vcf: no such file" in out
    assert "✓ contacts 'people': 2 contact(s) read" in out
    assert out.index("✗ calendar:") < out.index(f"✓ calendar: calendar '{name}' is at")
    c = load(cfg)
    assert c.timezone == "Europe/Berlin"
    assert c.working_hours.days == frozenset({0, 1, 2, 3})
    assert c.working_hours.start.isoformat() == "09:00:00"
    assert c.calendar is not None and c.calendar.url == f"{radicale.base}/"
    assert c.calendar.password.env == "CALDAV_PASSWORD" and c.calendar.calendar == name
    assert [(s.name, s.type) for s in c.contacts] == [("people", "file")]
    synced = cli("--config", str(cfg), "sync", env=env)
    assert synced.code == 0 and cycles(synced.err)[-1]["created"] == 2

    # An existing config: refused before the first question.
    again = cli("--config", str(cfg), "init", "--interactive", stdin="Europe/Paris\n", env=env)
    assert again.code == 2 and "already exists" in again.err and "time zone" not in again.out
    # Input ends half-way: nothing written.
    other = tmp_path / "other.yaml"
    cut = cli("--config", str(other), "init", "--interactive", stdin="UTC\nmon-fri\n", env=env)
    assert cut.code == 2 and "nothing written" in cut.err and not other.exists()


def test_init_interactive_google_and_outlook_say_sign_in_comes_next(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    answers = ["UTC", "", "", "",
               "google", "Job search, Recruiters", "",  # labels, name google
               "outlook", "11111111-2222-3333-4444-555555555555", "", "",  # id, cats, name
               "",  # done
               "graph", "11111111-2222-3333-4444-555555555555", "",  # client id, name
               ""]
    run = cli("--config", str(cfg), "init", "--interactive",
              stdin="\n".join(answers) + "\n", env=_init_env(tmp_path))
    assert run.code == 0, run.out + run.err
    assert "✓ contacts 'google': sign in after writing the config: syncd auth google" in run.out
    assert "syncd auth outlook" in run.out and "syncd auth calendar" in run.out
    assert ("next: `syncd auth google`; then `syncd auth outlook`; then `syncd auth calendar`;"
            in run.out)
    c = load(cfg)
    assert [(s.name, s.type) for s in c.contacts] == [("google", "google"),
                                                      ("outlook", "outlook")]
    assert c.contacts[0].labels == ("Job search", "Recruiters")
    assert c.calendar is not None and c.calendar.type == "graph"
    assert cli("--config", str(cfg), "config", "check").code == 0


def test_init_without_answers_writes_the_commented_starter(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    run = cli("--config", str(cfg), "init")  # stdin is not a terminal, no flags
    assert run.code == 0
    from syncd.starter import STARTER_CONFIG

    assert cfg.read_text() == STARTER_CONFIG
    assert os.stat(cfg).st_size > 0
