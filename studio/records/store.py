"""Run history: every Playground, Compare and Batch run kept in an embedded SQLite database.

A run is written when it starts and its text is saved as it streams, so a closed tab, a Stop,
a backend error or a killed app loses at most the last progress interval; a run left
``running`` by a dead process is reported ``interrupted`` with its partial text. Each running
row names the process that owns it (host, pid and the pid's start time, so a reused pid is not
mistaken for the owner): a row whose owner is gone reads ``interrupted`` at once; the heartbeat
(``STALE_AFTER_S``) decides only where the owner cannot be checked (another host).

One ``RunStore`` is shared by all threads and sessions of the app. Each thread gets its own
connection (sqlite3 connections must not be shared between threads); WAL mode lets readers
run beside the one writer, ``busy_timeout`` makes concurrent writers wait instead of failing
with ``database is locked``, and every write is one short transaction.

The schema is versioned with ``PRAGMA user_version``: ``MIGRATIONS[n]`` takes a database from
version ``n`` to ``n + 1``, so a newer app upgrades an older database in place. No API key is
ever stored, and credentials embedded in a host URL are stripped before it is written.

A run's columns are named once, in ``studio.records.columns``: its rows, the JSON export and the
CSV export derive from that one serializer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backends.base import DELIVERY_ONE_PIECE
from backends.status import Status
from backends.stream import GenerationStats
from studio.pv.checks import BLANK_CHECK, CHECK_COLUMNS, check_dict, check_run
from studio.pv.location import Location
from studio.pv.structured import Verdict, valid_share
from studio.pv.structured import check as check_structured
from studio.pv.structured import counted as counted_structured
from studio.records.columns import (
    columns_of,
    json_of,
    record_of,
    request_columns,
    structured_columns,
)
from studio.records.spreadsheet import csv_lines
from studio.runs.request import ANSWERED, FINAL_STATUSES, HoldsOutcome, Outcome, RunRequest
from studio.votes.ballot import Ballot, Vote, contenders_from_json

DEFAULT_DB_PATH = Path(__file__).resolve().parents[2] / "data" / "history.sqlite3"

PAGES = ("playground", "compare", "batch", "evaluate")
FILTER_COLUMNS = ("backend", "model", "preset", "status", "page")

# A running row not updated for this long is reported interrupted: the worker saves progress
# every second or so, also while waiting for a one-piece answer, so silence means it is dead.
STALE_AFTER_S = 30.0
BLIND_HOLD_S = 3600.0  # how long a blind comparison without a vote keeps its runs hidden
BUSY_TIMEOUT_MS = 5000

# The first schema, exactly as it shipped: kept so migrations (and the upgrade test) start here.
SCHEMA_V1: tuple[str, ...] = (
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        page TEXT NOT NULL,
        backend TEXT NOT NULL,
        host TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        system_prompt TEXT NOT NULL DEFAULT '',
        user_prompt TEXT NOT NULL DEFAULT '',
        preset TEXT NOT NULL DEFAULT '',
        max_tokens INTEGER,
        temperature REAL,
        answer TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        error TEXT
    )""",
    "CREATE INDEX runs_created ON runs (created_at)",
)

# v2: progress heartbeat (updated_at), statistics, and groups for Compare panes / Batch rows.
SCHEMA_V2_STEPS: tuple[str, ...] = (
    """CREATE TABLE groups (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    )""",
    "ALTER TABLE runs ADD COLUMN updated_at TEXT NOT NULL DEFAULT ''",
    "UPDATE runs SET updated_at = created_at",  # v1 rows: last touched when created
    "ALTER TABLE runs ADD COLUMN stats_json TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE runs ADD COLUMN group_id INTEGER REFERENCES groups (id) ON DELETE SET NULL",
    "ALTER TABLE runs ADD COLUMN position INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX runs_group ON runs (group_id, position)",
    "CREATE INDEX runs_status ON runs (status, updated_at)",
)

# v3: the repeat penalty asked for; the process that owns a running row, and a running group
# (a Batch at work), so that no second worker picks either up while the owner lives.
SCHEMA_V3_STEPS: tuple[str, ...] = (
    "ALTER TABLE runs ADD COLUMN repeat_penalty REAL",
    "ALTER TABLE runs ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE groups ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE groups ADD COLUMN running INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE groups ADD COLUMN claimed_at TEXT NOT NULL DEFAULT ''",
    # How the answer arrived ('stream', 'stream (SSE)', 'one piece'); '' before v3.
    "ALTER TABLE runs ADD COLUMN delivery TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE runs ADD COLUMN sse INTEGER NOT NULL DEFAULT 0",
)

# v4: a reasoning model's thinking, kept apart from the answer, and the Think setting asked.
SCHEMA_V4_STEPS: tuple[str, ...] = (
    "ALTER TABLE runs ADD COLUMN thinking TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE runs ADD COLUMN think TEXT NOT NULL DEFAULT ''",
)

# v5: the user a run and a group belong to, on a shared server ('' before: only admins see
# those, and everyone where no login is configured).
SCHEMA_V5_STEPS: tuple[str, ...] = (
    "ALTER TABLE runs ADD COLUMN user TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE groups ADD COLUMN user TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX runs_user ON runs (user, created_at)",
)

# v6: a group's label held three formats by kind; each has its own column now: a Batch's
# definition (spec, JSON), an import's summary (JSON) and a Compare's preset. The kinds as
# they were named when v6 shipped. The label goes; an SQLite before 3.35 cannot drop a column
# (rebuilding the table would cascade through the runs' foreign key): there it stays, empty.
SCHEMA_V6_STEPS: tuple[str, ...] = (
    "ALTER TABLE groups ADD COLUMN spec TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE groups ADD COLUMN summary TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE groups ADD COLUMN preset TEXT NOT NULL DEFAULT ''",
    "UPDATE groups SET spec = label WHERE kind = 'batch'",
    "UPDATE groups SET summary = label WHERE kind = 'batch-import'",
    "UPDATE groups SET preset = label WHERE kind = 'compare'",
    "ALTER TABLE groups DROP COLUMN label" if sqlite3.sqlite_version_info >= (3, 35)
    else "UPDATE groups SET label = ''",
)

# v7: the location row a run's prompt was built from (JSON; '' for none and before v7): what
# the figure check grades its answer against; and a run's answer format (markdown for the
# runs before it existed).
SCHEMA_V7_STEPS: tuple[str, ...] = (
    "ALTER TABLE runs ADD COLUMN location_json TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE runs ADD COLUMN answer_format TEXT NOT NULL DEFAULT 'markdown'",
)

# v8: blind votes (who voted, on which prompt and location, the pairing as shown: a letter
# per choice, and the winner: a letter, 'tie' or 'bothbad'), and read-only share links
# (an unguessable token to one run or one group; revoked, never deleted, so a revoked link
# says so rather than look made up).
SCHEMA_V8_STEPS: tuple[str, ...] = (
    """CREATE TABLE votes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        user TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL,
        group_id INTEGER REFERENCES groups (id) ON DELETE SET NULL,
        preset TEXT NOT NULL DEFAULT '',
        location TEXT NOT NULL DEFAULT '',
        system_prompt TEXT NOT NULL DEFAULT '',
        user_prompt TEXT NOT NULL DEFAULT '',
        pairing_json TEXT NOT NULL,
        winner TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX votes_user ON votes (user, created_at)",
    """CREATE TABLE shares (
        token TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL,
        target_id INTEGER NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        revoked_at TEXT NOT NULL DEFAULT '',
        revoked_by TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX shares_owner ON shares (owner, created_at)",
    # A blind comparison's runs stay out of History until its vote (or this time passes).
    "ALTER TABLE groups ADD COLUMN blind_until TEXT NOT NULL DEFAULT ''",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (SCHEMA_V1, SCHEMA_V2_STEPS, SCHEMA_V3_STEPS,
                                           SCHEMA_V4_STEPS, SCHEMA_V5_STEPS, SCHEMA_V6_STEPS,
                                           SCHEMA_V7_STEPS, SCHEMA_V8_STEPS)
SCHEMA_VERSION = len(MIGRATIONS)
STATS_COLUMN = "stats_json"  # the statistics' column: their JSON text
LOCATION_COLUMN = "location_json"  # the location row's column: its JSON text


def _sql(*statuses: Status) -> str:
    """Statuses as SQL text literals (fixed names, never input): "'running', 'error'"."""
    return ", ".join(f"'{status.value}'" for status in statuses)


# Reported status: a running row whose owner is dead, or that is stale, reads as interrupted
# before anyone marks it so. owner_alive() is only asked about running rows.
_DEAD_SQL = "(updated_at <= :stale OR NOT owner_alive(owner))"
_STATUS_SQL = (f"CASE WHEN status = {_sql(Status.RUNNING)} AND {_DEAD_SQL} "
               f"THEN {_sql(Status.INTERRUPTED)} ELSE status END")
_SELECT = f"SELECT runs.*, {_STATUS_SQL} AS shown_status FROM runs"
# A group (a Batch) is being worked on while its owner lives. An owner on another host cannot
# be checked from here: there its heartbeat decides (a claim or a run saved lately).
_LIVE_GROUP_SQL = ("(groups.running AND owner_alive(groups.owner) AND ("
                   "owner_here(groups.owner) OR groups.claimed_at > :stale OR EXISTS ("
                   "SELECT 1 FROM runs WHERE runs.group_id = groups.id "
                   "AND runs.updated_at > :stale)))")


class StoreError(RuntimeError):
    """The database cannot be used by this version of the app."""


@dataclass(frozen=True, kw_only=True)
class StoredRun(RunRequest, HoldsOutcome):
    """One run as recorded: its request (the fields of ``RunRequest``), where and when it ran,
    and what came of it (its ``Outcome``)."""

    id: int
    created_at: str
    updated_at: str
    page: str
    outcome: Outcome = field(default_factory=Outcome)
    group_id: int | None = None
    position: int = 0
    delivered: str = ""  # how the answer arrived; '' for runs recorded before v3
    user: str = ""  # who ran it on a shared server; '' without a login (or before v5)

    @property
    def status(self) -> Status:
        return self.outcome.status

    @property
    def error(self) -> str | None:
        return self.outcome.error

    @property
    def stats(self) -> dict[str, Any]:
        """The statistics as recorded (``outcome.stats``: as the live run had them)."""
        return self.outcome.statistics

    @property
    def streamed(self) -> bool:
        """Whether the answer arrived in pieces (recorded, or for older runs inferred)."""
        return (self.delivered or self.delivery) != DELIVERY_ONE_PIECE

    @property
    def output_tokens(self) -> int | None:
        return self.outcome.stats.output_tokens

    @property
    def total_time_s(self) -> float | None:
        return self.outcome.stats.total_time_s

    def to_request(self) -> RunRequest:
        """The settings of this run, to run it again ("open in Playground")."""
        return RunRequest(**{f.name: getattr(self, f.name) for f in fields(RunRequest)})

    def columns(self) -> dict[str, Any]:
        """Everything recorded, by column, as the exports show it: the delivery (inferred
        for runs recorded before v3) and the notes beside the status."""
        check = check_run(self.text, self, self.stats)
        return {**columns_of(self), "started_at": self.created_at,
                "delivery": self.delivered or self.delivery, "notes": self.outcome.notes,
                **(check.columns() if check else BLANK_CHECK), **check_dict(check),
                **structured_columns(self, self.outcome)}

    def to_dict(self) -> dict[str, Any]:
        """Everything recorded; the keys of ``Run.to_dict()`` plus the history fields."""
        return json_of(self.columns())


def _now() -> str:
    # Fixed-width UTC ISO text, so string order is time order in SQL comparisons.
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), None when there is
    no such process. Where /proc is missing, "?" for any live pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces and ")", so count after the last.
    return stat.rpartition(")")[2].split()[19]


def process_owner() -> str:
    """This process, as a running row's owner: ``host:pid:start``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def owner_alive(owner: str | None) -> bool:
    """False when the owner was a process of this host that no longer runs (or whose pid now
    belongs to another process); True when it runs, or cannot be checked from here."""
    parts = (owner or "").rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return True  # rows from before owners were recorded: the heartbeat decides
    host, pid, start = parts
    if host != socket.gethostname():
        return True
    return _process_start(int(pid)) == start


def owner_here(owner: str | None) -> bool:
    """Whether the owner is a process of this host (so ``owner_alive`` really checked it)."""
    return (owner or "").rsplit(":", 2)[0] == socket.gethostname()


def _casefold(value: str | None) -> str:
    return value.casefold() if value else ""


def _to_sql(columns: Mapping[str, Any]) -> dict[str, Any]:
    """A run's columns as the table holds them: the statistics as JSON text."""
    values = dict(columns)
    if "statistics" in values:
        values[STATS_COLUMN] = json.dumps(values.pop("statistics"), default=str)
    if "location" in values:
        location = values.pop("location")
        values[LOCATION_COLUMN] = json.dumps(asdict(location)) if location else ""
    return values


def _from_row(row: sqlite3.Row) -> StoredRun:
    columns = {**dict(row), "status": row["shown_status"]}
    try:
        stats = json.loads(columns.pop(STATS_COLUMN) or "{}")
    except ValueError:  # a hand-edited or damaged cell must not hide the run
        stats = {}
    columns["statistics"] = stats if isinstance(stats, dict) else {}
    columns["location"] = _location(columns.pop(LOCATION_COLUMN, ""))
    return record_of(StoredRun, columns)


def _location(text: str | None) -> Location | None:
    """A stored location row; None for none, or for a cell that no longer reads as one (a
    damaged cell must not hide the run: its figures are then not graded)."""
    try:
        row = json.loads(text) if text else None
        return Location(**row) if isinstance(row, dict) else None
    except (ValueError, TypeError):
        return None


def _check_final(status: str) -> None:
    if status not in FINAL_STATUSES:
        raise ValueError(f"status must be one of {', '.join(FINAL_STATUSES)}, not "
                         f"{str(status)!r}")


def _set(values: Mapping[str, Any]) -> str:
    """'a = :a, b = :b': an UPDATE's assignments (the names are columns, never input)."""
    return ", ".join(f"{name} = :{name}" for name in values)


@dataclass(frozen=True)
class Group:
    """The panes of one Compare or the rows of one Batch (or of an imported batch), with
    what its kind keeps: a Batch its definition (``spec``, JSON, to resume it), an import its
    summary (JSON: the files, their digest, the runners), a Compare its preset."""

    id: int
    kind: str
    created_at: str
    spec: str = ""
    summary: str = ""
    preset: str = ""


_GROUP_COLUMNS = ", ".join(f.name for f in fields(Group))


def _group(row: sqlite3.Row) -> Group:
    return Group(**{f.name: row[f.name] for f in fields(Group)})


@dataclass(frozen=True)
class GroupSummary:
    """A group and how far its rows got, for the list of batches to resume or watch."""

    group: Group
    done: int  # rows (positions) with an answer
    failed: int  # rows whose every attempt failed
    running: bool  # a live worker owns it now: watch or stop it, do not resume it
    owner: str  # the worker's process (host:pid:start), while it runs
    interrupted: bool = False  # its worker's process ended while it ran (killed, crashed)


SHARE_RUN, SHARE_GROUP = "run", "group"  # what a share link opens: one run, or one group
SHARE_KINDS = (SHARE_RUN, SHARE_GROUP)
# What secrets.token_urlsafe makes; anything else is no token (and is not looked up).
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,128}")


@dataclass(frozen=True)
class Share:
    """A read-only link to one run or one group: its unguessable token, who made it, what it
    opens (``kind``: ``run`` or ``group``, ``target_id``) and its title; revoked links are
    kept (``revoked_at``, ``revoked_by``), so that they say so rather than look made up."""

    token: str
    created_at: str
    owner: str
    kind: str
    target_id: int
    title: str = ""
    revoked_at: str = ""
    revoked_by: str = ""

    @property
    def revoked(self) -> bool:
        return bool(self.revoked_at)


_SHARE_COLUMNS = ", ".join(f.name for f in fields(Share))


def _share(row: sqlite3.Row) -> Share:
    return Share(**{f.name: row[f.name] for f in fields(Share)})


class RunStore:
    """The run history in one SQLite file. Share one instance across threads and sessions."""

    def __init__(self, path: str | Path = DEFAULT_DB_PATH) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        conn = self._conn()
        # WAL is a property of the file: set once here, every later connection uses it.
        conn.execute("PRAGMA journal_mode=WAL")
        self._migrate(conn)

    # -- connections ------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        # A forked child inherits the parent's thread-locals; its copy of the handle is unsafe.
        if conn is not None and self._local.pid == os.getpid():
            return conn
        # isolation_level=None: no implicit transactions; writes open their own, briefly.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
        # NORMAL in WAL mode survives a killed process; only a power cut may lose the last
        # commits, which is the trade that keeps a progress save cheap.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.create_function("casefold", 1, _casefold, deterministic=True)
        conn.create_function("owner_alive", 1, owner_alive)
        conn.create_function("owner_here", 1, owner_here)
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction. IMMEDIATE takes the write lock up front, so a
        concurrent writer waits in busy_timeout instead of failing on a lock upgrade."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self._write():
            # Read inside the lock: two processes opening an old file upgrade it once.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has history schema v{version}; this app knows up to "
                    f"v{SCHEMA_VERSION}. Update the app or point it at another database.")
            for steps in MIGRATIONS[version:]:
                for statement in steps:
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def schema_version(self) -> int:
        return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    # -- writing ----------------------------------------------------------------------------
    def create_group(self, kind: str, *, spec: str = "", summary: str = "", preset: str = "",
                     user: str = "") -> int:
        """A group for the panes of one Compare or the rows of one Batch, with what its kind
        keeps (``Group``); returns its id."""
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO groups (kind, spec, summary, preset, created_at, user) "
                "VALUES (?, ?, ?, ?, ?, ?)", (kind, spec, summary, preset, _now(), user))
        return int(cursor.lastrowid or 0)

    def list_groups(self, kind: str) -> list[Group]:
        """The Compare or Batch groups of one kind, newest first."""
        rows = self._conn().execute(
            f"SELECT {_GROUP_COLUMNS} FROM groups WHERE kind = ? ORDER BY id DESC", (kind,))
        return [_group(row) for row in rows]

    def claim_group(self, group_id: int) -> bool:
        """Mark the group as worked on by this process; False (and nothing changed) when a
        live process already works on it. Two sessions resuming at once: one wins."""
        with self._write() as conn:
            row = conn.execute(f"SELECT {_LIVE_GROUP_SQL} AS live FROM groups WHERE id = :id",
                               {"id": group_id, "stale": _ago(STALE_AFTER_S)}).fetchone()
            if row is None:
                raise ValueError(f"no group {group_id}")
            if row["live"]:
                return False
            conn.execute("UPDATE groups SET running = 1, owner = ?, claimed_at = ? WHERE id = ?",
                         (process_owner(), _now(), group_id))
        return True

    def set_group_spec(self, group_id: int, spec: str) -> None:
        """Rewrite a Batch group's definition (a resumed batch's, with its new flags)."""
        with self._write() as conn:
            conn.execute("UPDATE groups SET spec = ? WHERE id = ?", (spec, group_id))

    def release_group(self, group_id: int) -> None:
        """The group's worker has ended (finished, stopped or failed)."""
        with self._write() as conn:
            conn.execute("UPDATE groups SET running = 0 WHERE id = ?", (group_id,))

    def group_summaries(self, kind: str, limit: int = 20,
                        user: str | None = None) -> list[GroupSummary]:
        """The newest groups of one kind with their done and failed row counts, in one query
        (a row counts once, however many attempts it took); ``user``: only theirs."""
        rows = self._conn().execute(f"""
            WITH chosen AS (SELECT *, {_LIVE_GROUP_SQL} AS live FROM groups
                            WHERE kind = :kind AND (:user IS NULL OR user = :user)
                            ORDER BY id DESC LIMIT :limit),
                 per_row AS (SELECT group_id, position,
                                    max(status IN ({_sql(*ANSWERED)})) AS answered,
                                    max(status = {_sql(Status.ERROR)}) AS errored
                             FROM runs WHERE group_id IN (SELECT id FROM chosen)
                             GROUP BY group_id, position)
            SELECT chosen.*, chosen.running AND NOT chosen.live AS interrupted,
                   coalesce(sum(per_row.answered), 0) AS done,
                   coalesce(sum(per_row.errored AND NOT per_row.answered), 0) AS failed
            FROM chosen LEFT JOIN per_row ON per_row.group_id = chosen.id
            GROUP BY chosen.id ORDER BY chosen.id DESC""",
            {"kind": kind, "limit": limit, "user": user, "stale": _ago(STALE_AFTER_S)})
        return [GroupSummary(_group(row), int(row["done"]), int(row["failed"]), bool(row["live"]),
                             row["owner"] if row["live"] else "", bool(row["interrupted"]))
                for row in rows]

    def get_group(self, group_id: int) -> Group | None:
        row = self._conn().execute(f"SELECT {_GROUP_COLUMNS} FROM groups WHERE id = ?",
                                   (group_id,)).fetchone()
        return _group(row) if row else None

    def start_run(self, request: RunRequest, page: str, group_id: int | None = None,
                  position: int = 0, user: str = "") -> int:
        """Record a run as it starts (status ``running``, no text yet); returns its id."""
        if page not in PAGES:
            raise ValueError(f"page must be one of {PAGES}, not {page!r}")
        now = _now()
        values = _to_sql({
            "created_at": now, "updated_at": now, "page": page, **request_columns(request),
            "delivery": request.delivery, **columns_of(Outcome()), "group_id": group_id,
            "position": position, "owner": process_owner(), "user": user})
        with self._write() as conn:
            cursor = conn.execute(f"INSERT INTO runs ({', '.join(values)}) "
                                  f"VALUES ({', '.join(':' + name for name in values)})",
                                  values)
        return int(cursor.lastrowid or 0)

    def save_progress(self, run_id: int, text: str, thinking: str = "") -> None:
        """Save the text so far. Also the heartbeat: call it even when the text has not
        changed, or the run reads as interrupted after ``STALE_AFTER_S``."""
        with self._write() as conn:
            # Only a live run takes progress, so a late save never reverts a final answer; an
            # interrupted one that still saves was alive after all and runs again (owned by
            # the process that saves).
            conn.execute(f"UPDATE runs SET answer = ?, thinking = ?, updated_at = ?, "
                         f"status = {_sql(Status.RUNNING)}, owner = ? WHERE id = ? AND "
                         f"status IN ({_sql(Status.RUNNING, Status.INTERRUPTED)})",
                         (text, thinking, _now(), process_owner(), run_id))

    def finish(self, run_id: int, outcome: Outcome) -> None:
        """Record the end: the whole (or partial) text, final status, error and statistics."""
        _check_final(outcome.status)
        values = _to_sql(columns_of(outcome))
        with self._write() as conn:
            conn.execute(f"UPDATE runs SET {_set(values)}, updated_at = :now WHERE id = :id",
                         {**values, "now": _now(), "id": run_id})

    def finish_run(self, run_id: int, text: str, status: str, error: str | None = None,
                   stats: Mapping[str, Any] | GenerationStats | None = None,
                   thinking: str = "") -> None:
        """``finish`` for a caller that holds the outcome's parts, not an ``Outcome`` (the
        tests' seeding); ``stats`` a dict as recorded or the live figures."""
        _check_final(status)
        statistics = stats.to_dict() if isinstance(stats, GenerationStats) else dict(stats or {})
        self.finish(run_id, Outcome(Status(status), text, thinking, error, statistics))

    def mark_interrupted(self, older_than_s: float = STALE_AFTER_S) -> int:
        """Turn runs still ``running`` whose owner process is gone, or that were silent for
        ``older_than_s``, into ``interrupted`` (their partial text stays). Called at app
        start; returns how many were marked."""
        with self._write() as conn:
            cursor = conn.execute(f"UPDATE runs SET status = {_sql(Status.INTERRUPTED)} "
                                  f"WHERE status = {_sql(Status.RUNNING)} AND {_DEAD_SQL}",
                                  {"stale": _ago(older_than_s)})
        return cursor.rowcount

    def delete(self, run_id: int, user: str | None = None) -> bool:
        """Delete one run (``user``: only theirs); True when it existed."""
        return self._delete_row("runs", run_id, user)

    def _delete_row(self, table: str, row_id: int, user: str | None) -> bool:
        """Delete row ``row_id`` of ``table`` (``user``: only if theirs); whether it existed."""
        if table not in ("runs", "votes"):  # a name formatted into SQL: never the caller's
            raise ValueError(f"no deleting from {table!r}")
        with self._write() as conn:
            cursor = conn.execute(f"DELETE FROM {table} WHERE id = :id AND "
                                  "(:user IS NULL OR user = :user)", {"id": row_id, "user": user})
        return cursor.rowcount > 0

    # -- reading ----------------------------------------------------------------------------
    def get(self, run_id: int, user: str | None = None) -> StoredRun | None:
        """One run by id (``user``: only if it is theirs)."""
        row = self._conn().execute(f"{_SELECT} WHERE id = :id AND "
                                   "(:user IS NULL OR user = :user)",
                                   {"id": run_id, "user": user,
                                    "stale": _ago(STALE_AFTER_S)}).fetchone()
        return _from_row(row) if row is not None else None

    def group_runs(self, group_id: int) -> list[StoredRun]:
        """The runs of one Compare or Batch, in pane/row order."""
        rows = self._conn().execute(f"{_SELECT} WHERE group_id = :group ORDER BY position, id",
                                    {"group": group_id, "stale": _ago(STALE_AFTER_S)})
        return [_from_row(row) for row in rows]

    def list_runs(self, *, backend: str | None = None, model: str | None = None,
                  preset: str | None = None, status: str | None = None,
                  search: str | None = None, page: str | None = None,
                  user: str | None = None, limit: int | None = 200,
                  offset: int = 0, hidden_groups: Collection[int] = ()) -> list[StoredRun]:
        """Runs newest first. Each filter given must match exactly (``preset=""``: runs
        without a preset); ``search`` is a case-insensitive substring of the system prompt,
        user prompt or answer; ``user``: only that user's runs (None: everyone's);
        ``hidden_groups``: not those groups' runs (blind votes still to cast).
        ``limit=None`` returns all (for export)."""
        return list(self.iter_runs(backend=backend, model=model, preset=preset, status=status,
                                   search=search, page=page, user=user, limit=limit,
                                   offset=offset, hidden_groups=hidden_groups))

    def iter_runs(self, *, backend: str | None = None, model: str | None = None,
                  preset: str | None = None, status: str | None = None,
                  search: str | None = None, page: str | None = None,
                  user: str | None = None, limit: int | None = None,
                  offset: int = 0, answer_format: str | None = None,
                  hidden_groups: Collection[int] = ()) -> Iterator[StoredRun]:
        """``list_runs`` one run at a time, read as it goes (exports of every run);
        ``answer_format``: only the runs asked for in that format."""
        where, params = self._where(backend=backend, model=model, preset=preset, status=status,
                                    search=search, page=page, user=user,
                                    answer_format=answer_format, hidden_groups=hidden_groups)
        params.update(limit=-1 if limit is None else limit, offset=offset)
        rows = self._conn().execute(
            f"{_SELECT}{where} ORDER BY created_at DESC, id DESC LIMIT :limit OFFSET :offset",
            params)
        for row in rows:
            yield _from_row(row)

    def count_runs(self, *, backend: str | None = None, model: str | None = None,
                   preset: str | None = None, status: str | None = None,
                   search: str | None = None, page: str | None = None,
                   user: str | None = None, hidden_groups: Collection[int] = ()) -> int:
        """How many runs ``list_runs`` with the same filters would return without a limit."""
        where, params = self._where(backend=backend, model=model, preset=preset, status=status,
                                    search=search, page=page, user=user,
                                    hidden_groups=hidden_groups)
        return int(self._conn().execute(f"SELECT count(*) FROM runs{where}", params)
                   .fetchone()[0])

    def distinct_values(self, column: str, user: str | None = None) -> list[str]:
        """The sorted non-empty values of one filter column (backend, model, preset, status,
        page) for the filter dropdowns (``user``: among their runs)."""
        if column not in FILTER_COLUMNS:
            raise ValueError(f"column must be one of {FILTER_COLUMNS}, not {column!r}")
        # The name is from the whitelist above, never from the caller, so it is safe to format.
        expression = _STATUS_SQL if column == "status" else column
        rows = self._conn().execute(
            f"SELECT DISTINCT {expression} AS value FROM runs WHERE value != '' "
            "AND (:user IS NULL OR user = :user) ORDER BY value",
            {"stale": _ago(STALE_AFTER_S), "user": user})
        return [row["value"] for row in rows]

    # -- shares -----------------------------------------------------------------------------
    def item_owner(self, kind: str, target_id: int) -> str | None:
        """The user a run or group belongs to ('' for none); None when there is no such
        item."""
        if kind not in SHARE_KINDS:
            raise ValueError(f"kind must be one of {SHARE_KINDS}, not {kind!r}")
        table = "runs" if kind == SHARE_RUN else "groups"  # fixed names, never the caller's
        row = self._conn().execute(f"SELECT user FROM {table} WHERE id = ?",
                                   (target_id,)).fetchone()
        return str(row["user"]) if row is not None else None

    def create_share(self, kind: str, target_id: int, *, user: str, title: str = "",
                     only: str | None = None) -> Share | None:
        """A new read-only link to a run or a group, made by ``user`` (its owner from then
        on); ``only``: the item must be theirs (None: anyone's, an admin or a local app).
        None, and nothing made, when there is no such item of theirs."""
        owner = self.item_owner(kind, target_id)
        if owner is None or (only is not None and owner != only):
            return None
        share = Share(secrets.token_urlsafe(32), _now(), user, kind, target_id, title)
        with self._write() as conn:
            conn.execute(f"INSERT INTO shares ({_SHARE_COLUMNS}) VALUES "
                         f"({', '.join('?' * len(fields(Share)))})",
                         tuple(getattr(share, f.name) for f in fields(Share)))
        return share

    def get_share(self, token: str) -> Share | None:
        """The share of this token, revoked or not; None for a token never made here."""
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return None
        row = self._conn().execute(f"SELECT {_SHARE_COLUMNS} FROM shares WHERE token = ?",
                                   (token,)).fetchone()
        return _share(row) if row is not None else None

    def list_shares(self, only: str | None = None) -> list[Share]:
        """Shares newest first, revoked ones too; ``only``: those that user made (None:
        everyone's, for an admin)."""
        rows = self._conn().execute(
            f"SELECT {_SHARE_COLUMNS} FROM shares WHERE (:only IS NULL OR owner = :only) "
            "ORDER BY created_at DESC, rowid DESC", {"only": only})
        return [_share(row) for row in rows]

    def revoke_share(self, token: str, *, user: str, only: str | None = None) -> bool:
        """Revoke a live share (kept, marked revoked by ``user``); ``only``: it must be one
        they made (None: anyone's). True when it was live and is revoked now."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE shares SET revoked_at = :now, revoked_by = :user WHERE token = :token "
                "AND revoked_at = '' AND (:only IS NULL OR owner = :only)",
                {"now": _now(), "user": user, "token": token, "only": only})
        return cursor.rowcount > 0

    def shared_runs(self, share: Share) -> list[StoredRun]:
        """The runs a share opens, and only those: its run, or its group's runs in order;
        none when they were deleted since."""
        if share.kind == SHARE_RUN:
            run = self.get(share.target_id)
            return [run] if run is not None else []
        return self.group_runs(share.target_id) if share.kind == SHARE_GROUP else []

    @staticmethod
    def _where(hidden_groups: Collection[int] = (),
               **filters: str | None) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {"stale": _ago(STALE_AFTER_S)}
        for name in FILTER_COLUMNS:
            value = filters.get(name)
            if value is not None:
                column = f"({_STATUS_SQL})" if name == "status" else name
                clauses.append(f"{column} = :{name}")
                params[name] = value
        for name in ("user", "answer_format"):  # fixed names, never the caller's
            if filters.get(name) is not None:
                clauses.append(f"{name} = :{name}")
                params[name] = filters[name]
        if hidden_groups:
            hidden = {f"hidden{i}": int(group) for i, group in enumerate(hidden_groups)}
            clauses.append("(group_id IS NULL OR group_id NOT IN ("
                           + ", ".join(f":{name}" for name in hidden) + "))")
            params.update(hidden)
        search = filters.get("search")
        if search:
            # instr() on casefolded text: a literal substring (no LIKE wildcards to escape)
            # and case-insensitive beyond ASCII, which SQLite's LIKE is not.
            clauses.append("(instr(casefold(system_prompt), :search) > 0 "
                           "OR instr(casefold(user_prompt), :search) > 0 "
                           "OR instr(casefold(answer), :search) > 0 "
                           "OR instr(casefold(thinking), :search) > 0)")
            params["search"] = search.casefold()
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    # -- blind rounds -----------------------------------------------------------------------
    def hold_blind(self, group_id: int, for_s: float = BLIND_HOLD_S) -> None:
        """Keep a blind comparison's runs out of History (in every session: another tab
        would tell the letters) until its vote, or for ``for_s``: a round whose tab went
        away without a vote shows again."""
        with self._write() as conn:
            conn.execute("UPDATE groups SET blind_until = ? WHERE id = ?",
                         (_ago(-for_s), group_id))

    def release_blind(self, group_id: int) -> None:
        """The vote is cast (or the identities revealed): the runs show again."""
        with self._write() as conn:
            conn.execute("UPDATE groups SET blind_until = '' WHERE id = ?", (group_id,))

    def blind_groups(self) -> list[int]:
        """The groups whose runs are held out of History now."""
        rows = self._conn().execute("SELECT id FROM groups WHERE blind_until > ?", (_now(),))
        return [int(row["id"]) for row in rows]

    # -- votes ------------------------------------------------------------------------------
    def add_vote(self, vote: Vote) -> Vote:
        """Keep a blind vote; returns it with its id and time."""
        ballot, created = vote.ballot, _now()
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO votes (created_at, user, source, group_id, preset, location, "
                "system_prompt, user_prompt, pairing_json, winner, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (created, vote.user, ballot.source, ballot.group_id, ballot.preset,
                 ballot.location, ballot.system, ballot.prompt, vote.pairing_json(),
                 vote.winner, vote.reason))
        return replace(vote, id=int(cursor.lastrowid or 0), created_at=created)

    def votes(self, user: str | None = None) -> list[Vote]:
        """The votes, oldest first; ``user``: only theirs."""
        rows = self._conn().execute(
            "SELECT * FROM votes WHERE (:user IS NULL OR user = :user) ORDER BY id",
            {"user": user})
        return [_vote(row) for row in rows]

    def delete_vote(self, vote_id: int, user: str | None = None) -> bool:
        """Delete one vote (``user``: only if theirs); whether there was one."""
        return self._delete_row("votes", vote_id, user)


def _vote(row: sqlite3.Row) -> Vote:
    ballot = Ballot(row["source"], contenders_from_json(row["pairing_json"]),
                    row["system_prompt"], row["user_prompt"], row["preset"], row["location"],
                    row["group_id"])
    return Vote(ballot, row["winner"], row["reason"], row["user"], row["id"], row["created_at"])

# -- export ---------------------------------------------------------------------------------
# One column per meaning: tokens/s as the client measured it (first token to the end, or
# the whole wait for a one-piece answer) and as the server reports it (Ollama's eval rate;
# empty where a server reports none); names as in the JSON's "statistics". ``user`` says
# whose run it is when an admin exports several users' runs ('' without a login).
CSV_COLUMNS = ("id", "created_at", "updated_at", "user", "page", "group_id", "position",
               "backend", "host", "model", "preset", "max_tokens", "temperature",
               "answer_format", "status", "structured_valid", "structured_problem",
               "error", "time_to_first_token_s", "total_time_s", "prompt_tokens",
               "output_tokens", "client_tokens_per_s", "server_tokens_per_s",
               "server_load_s", "context_window", "notes", *CHECK_COLUMNS, "think", "thinking_s",
               "thinking_tokens", "system_prompt", "user_prompt", "thinking", "answer")



def _csv_row(run: StoredRun) -> list[Any]:
    """A run's cells: its columns, else its statistics' figures; notes joined."""
    columns = run.columns()
    cells = [columns[name] if name in columns else run.stats.get(name) for name in CSV_COLUMNS]
    return ["; ".join(cell) if isinstance(cell, list) else cell for cell in cells]


def export_csv_lines(runs: Iterable[StoredRun]) -> Iterator[str]:
    """One row per run (the columns of ``CSV_COLUMNS``), a line at a time, safe to open in a
    spreadsheet (no cell is read as a formula)."""
    return csv_lines(CSV_COLUMNS, (_csv_row(run) for run in runs))


def structured_shares(runs: Iterable[StoredRun]) -> dict[str, str]:
    """For each backend and model ('Ollama · llama3.1:8b') with structured runs that ended,
    the share of valid answers: 'valid structured: 4 of 5'."""
    verdicts: dict[str, list[Verdict]] = {}
    for run in runs:
        if run.structured and run.status in (*FINAL_STATUSES, Status.INTERRUPTED) \
                and counted_structured(run.text, run.status):
            verdicts.setdefault(run.label, []).append(check_structured(run.text, run.status))
    return {label: valid_share(found) for label, found in verdicts.items()}


def export_csv(runs: Iterable[StoredRun]) -> str:
    return "".join(export_csv_lines(runs))


def export_json_lines(runs: Iterable[StoredRun]) -> Iterator[str]:
    """Everything recorded about each run, as a JSON list, a run at a time."""
    yield "["
    for index, run in enumerate(runs):
        yield ("," if index else "") + "\n" + json.dumps(run.to_dict(), indent=2,
                                                          ensure_ascii=False)
    yield "\n]"


def export_json(runs: Iterable[StoredRun]) -> str:
    return "".join(export_json_lines(runs))
