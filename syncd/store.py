"""State: SQLite in WAL mode under the state directory, with versioned
migrations and an exclusive lock on the directory.

Every cycle step runs in one transaction (`with store.tx():`), and a sync
cursor is always written in the same transaction as the rows it covers, so a
crash never leaves a consumed cursor without its changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from syncd.errors import StateLocked, UserError

# Each entry is one migration; the list index + 1 is the schema version.
# Never edit a released entry: append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE sources (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        cursor TEXT,
        last_sync TEXT,
        last_error TEXT,
        problems TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE contacts (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        data TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        removed INTEGER NOT NULL DEFAULT 0,
        first_seen TEXT NOT NULL
    );
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT);
    -- Every event of the target calendar we know of (ours and the user's):
    -- busy times for the planner and ETags for change detection.
    CREATE TABLE events (
        ref TEXT PRIMARY KEY,
        uid TEXT NOT NULL,
        syncd_id TEXT,
        etag TEXT NOT NULL,
        start TEXT NOT NULL,
        end TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_syncd ON events(syncd_id);
    -- One row per follow-up. status: planned (not written yet: beyond the
    -- horizon), creating (intent recorded, remote create may or may not have
    -- happened), live, done (an attempt or skip logged on it), lapsed (time
    -- passed, touched by the user but nothing logged), released (marker
    -- removed by the user), deleted (deleted by the user), cancelled (deleted
    -- by syncd because the contact stopped).
    CREATE TABLE followups (
        id TEXT PRIMARY KEY,
        contact_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        uid TEXT NOT NULL,
        channel TEXT NOT NULL,
        cadence TEXT NOT NULL,
        start TEXT NOT NULL,
        end TEXT NOT NULL,
        summary TEXT NOT NULL,
        basis TEXT NOT NULL,
        status TEXT NOT NULL,
        ref TEXT,
        etag TEXT,
        block TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        user_touched INTEGER NOT NULL DEFAULT 0,
        user_moved INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE INDEX followups_contact ON followups(contact_id, seq);
    CREATE UNIQUE INDEX followups_ref ON followups(ref);
    -- Entries read from notes (and `syncd log`): attempts, commands, news,
    -- unparsed lines. `key` is stable across re-reads of the same line.
    CREATE TABLE entries (
        key TEXT PRIMARY KEY,
        contact_id TEXT NOT NULL,
        followup_id TEXT,
        kind TEXT NOT NULL,
        at TEXT,
        channel TEXT,
        outcome TEXT,
        value TEXT,
        note TEXT NOT NULL DEFAULT '',
        time_inferred INTEGER NOT NULL DEFAULT 0,
        origin TEXT NOT NULL,
        pos INTEGER NOT NULL DEFAULT 0  -- the line's place in the notes
    );
    CREATE INDEX entries_contact ON entries(contact_id, kind);
    CREATE INDEX entries_followup ON entries(followup_id);
    """,
    # 2: interviews (attendees of calendar events) and thank-you follow-ups;
    # the news item a follow-up suggested.
    """
    ALTER TABLE events ADD COLUMN attendees TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE followups ADD COLUMN kind TEXT NOT NULL DEFAULT 'followup';
    ALTER TABLE followups ADD COLUMN news TEXT;
    """,
    # 3: the follow-up's own title, kept apart from the summary last written
    # (which gains the outcome once an attempt is logged: "✓ Call … — vm").
    """
    ALTER TABLE followups ADD COLUMN title TEXT;
    UPDATE followups SET title = summary;
    """,
    # 4: the attempt log as everything reads it. An attempt logged with
    # `syncd log` that the notes also record (same contact and outcome within
    # an hour, or the same half-day when the note line had no time) counts
    # once: the note line wins, the shell entry stays in the table.
    """
    CREATE VIEW attempts AS
    SELECT * FROM entries e WHERE e.kind = 'attempt' AND NOT (
        e.origin = 'cli' AND EXISTS (
            SELECT 1 FROM entries n
            WHERE n.kind = 'attempt' AND n.origin = 'notes'
              AND n.contact_id = e.contact_id AND n.outcome = e.outcome
              AND abs(julianday(n.at) - julianday(e.at))
                  <= CASE WHEN n.time_inferred THEN 0.5 ELSE 1.0 / 24 END));
    """,
    # 5: write-ahead intent for updates and deletes (creates use status
    # 'creating'): what syncd is about to write, so that after a crash between
    # the remote write and its commit the change is recognised as syncd's own.
    """
    ALTER TABLE followups ADD COLUMN pending TEXT;
    """,
    # 6: the zone a contact's phone number pins (libphonenumber), found when
    # the contact is imported: '' for none, NULL until known. Every plan
    # needs it for every contact; parsing 10,000 numbers per cycle (or
    # caching them in the daemon's memory) cost what exists, not what changed.
    """
    ALTER TABLE contacts ADD COLUMN phone_zone TEXT;
    """,
    # 7: a count of the changes to what the planner reads. A cycle in which
    # it did not move (and the plan's expiry has not come) skips planning:
    # at 10,000 contacts that was nearly all of an idle cycle's CPU.
    "INSERT OR IGNORE INTO kv(key, value) VALUES('inputs.generation', 0);\n" + "".join(
        f"CREATE TRIGGER {table}_{op.lower()} AFTER {op} ON {table} BEGIN "
        "UPDATE kv SET value = value + 1 WHERE key = 'inputs.generation'; END;\n"
        for table in ("contacts", "followups", "entries", "events")
        for op in ("INSERT", "UPDATE", "DELETE")),
]
INPUTS_GENERATION = "inputs.generation"  # kv key kept by the triggers of migration 7


@dataclass(frozen=True)
class Lock:
    fd: int
    path: Path

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def ensure_state_dir(path: Path) -> None:
    """The state directory, mode 0700 (it holds tokens and the attempt log)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _private_file(path: Path) -> None:
    """Create `path` 0600 if missing (never readable by others, not even for
    an instant), and tighten an existing file to 0600."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def lock_state_dir(path: Path) -> Lock:
    """Take the exclusive lock (flock: released by the kernel if we die).

    The holder's pid is written into the lock file so a second daemon can name
    it in its message.
    """
    ensure_state_dir(path)
    lock_path = path / "lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StateLocked(
            f"another syncd (pid {holder}) holds the state directory {path}",
            hint="stop it first, or give this one its own state_dir",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return Lock(fd, lock_path)


class Store:
    """The state database. One connection, used from one thread."""

    def __init__(self, state_dir: Path) -> None:
        ensure_state_dir(state_dir)
        self.path = state_dir / "state.db"
        # SQLite creates the -wal and -shm files with the database's mode, so
        # a 0600 database keeps them 0600 too; older ones are tightened here.
        for suffix in ("", "-wal", "-shm"):
            f = self.path.with_name(self.path.name + suffix)
            if suffix == "" or f.exists():
                _private_file(f)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (tx()).
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives a power cut (fsync of the WAL on commit).
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise UserError(
                f"{self.path} was written by a newer syncd (schema {version}, "
                f"this one knows {len(MIGRATIONS)})",
                hint="upgrade syncd",
            )
        for n in range(version, len(MIGRATIONS)):
            with self.tx():
                for stmt in _statements(MIGRATIONS[n]):
                    self.db.execute(stmt)
                self.db.execute(f"PRAGMA user_version = {n + 1}")

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction: everything inside commits together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # -- small typed helpers -------------------------------------------------

    def kv_get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def kv_set(self, key: str, value: str | None) -> None:
        self.db.execute(
            "INSERT INTO kv(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would COMMIT for us,
    breaking the one-transaction-per-migration rule)."""
    out, buf = [], ""
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return [s for s in out if s]
