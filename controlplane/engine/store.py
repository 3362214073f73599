"""The decision store: a durable, queryable log of every decision the coordinator made, in SQLite.

One `DecisionStore` owns one `sqlite3` connection to one file (":memory:" works for tests that do not
need durability). Every method is synchronous and short, and holds a `threading.Lock` for its duration,
so the asyncio loop thread and a worker thread (`asyncio.to_thread`) may share a store.

Durability. The file is in WAL mode with `synchronous=FULL`: every commit (one `append` batch, one
`set_outcome`) fsyncs the write-ahead log before the call returns, so a decision reported applied survives
the process being killed (`kill -9`) *and* the machine losing power. With `synchronous=NORMAL` a WAL
commit survives a killed process (the WAL is in the OS page cache) but the last commits before a power
loss or kernel crash may be rolled back; the file itself is never corrupted either way. Measured with
`python -m bench.store` (`measure_commit_latency`) on this machine's virtual disk: one
`set_outcome` commit costs 0.43-0.49 ms mean (p99 0.6-1.0 ms, about 2 000 commits/s) with FULL against
0.13-0.16 ms (about 6 000-7 600 commits/s) with NORMAL, while an `append` of 1000 decisions runs at the
same 26-32k decisions/s in both modes (one fsync per batch is noise). The coordinator commits once per
tick batch and once per outcome, far below 2 000/s, so FULL is the default; `DecisionStore(path,
synchronous="NORMAL")` exists for benchmarks and throwaway stores.

Scale. With 1M decisions over 1000 services (525 MB file) bulk `append` in batches of 1000 runs at about
9k decisions/s: each batch dirties about one leaf page of the (service, id) index per decision, and that
write amplification dominates (without that index: about 40k/s). `list(service=...)` for a page of 100 takes
about 2.4 ms median and 3.4-5.8 ms p99, mostly decoding rows into `Decision`s.

Schema. `PRAGMA user_version` is the schema version; `MIGRATIONS` is the ordered list of functions that
bring a file from version i to i + 1. Opening an older file migrates it in one transaction; opening a file
written by a newer controlplane raises `SchemaVersionError` rather than guessing.

Ids. `decisions.id` is `INTEGER PRIMARY KEY AUTOINCREMENT`: ids strictly increase in commit order and are
never reused, even after retention deleted the newest rows. They are assigned under SQLite's write lock, so
a reader that has seen id N never later sees a new decision with an id below N.

Watching. `after(id)` returns decisions appended after `id`, in id order; `WatchDecisions` streams new
decisions by id with it and resumes from the last id a client saw. A later `set_outcome` does not produce
a new event: outcome and status updates are read with `get` / `list` (GetDecision / ListDecisions).

Listing. `list` returns newest first and pages by keyset: the page token is an opaque encoding of the last
id returned, so pages never skip or repeat a decision while new ones are appended. Each filter has an
index ending in `id`, so "the newest decisions of service X" is an index range search, not a scan.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import lru_cache
from types import TracebackType
from typing import Any, Literal

from controlplane.actions import ACTION_TYPES
from controlplane.decisions import Decision, DecisionStatus
from controlplane.taxonomy import Taxonomy

MAX_PAGE_SIZE = 1000
MAX_AFTER_LIMIT = 10_000
RETENTION_CHUNK = 5000  # rows deleted per transaction, so retention never holds the lock for long
BUSY_TIMEOUT_SECONDS = 10.0
_TOKEN_PREFIX = "d1:"

Synchronous = Literal["FULL", "NORMAL"]


class StoreError(Exception):
    """The decision store file cannot be used."""


class SchemaVersionError(StoreError):
    """The file was written by a newer controlplane whose schema this one does not know."""


# --- schema -------------------------------------------------------------------------------------------


def _v1_create_decisions(conn: sqlite3.Connection) -> None:
    """Version 1: the decisions table, service and time indexes (no action kind column yet)."""
    conn.execute(
        """
        CREATE TABLE decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            tick INTEGER NOT NULL,
            created_at REAL NOT NULL,
            controller TEXT NOT NULL,
            service TEXT NOT NULL,
            status TEXT NOT NULL,
            why TEXT NOT NULL,
            outcome TEXT NOT NULL DEFAULT '',
            taxonomy TEXT NOT NULL,
            action TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX decisions_service ON decisions (service, id)")
    conn.execute("CREATE INDEX decisions_created_at ON decisions (created_at)")


def _v2_action_kind_and_filter_indexes(conn: sqlite3.Connection) -> None:
    """Version 2: an `action_kind` column (backfilled from the action JSON) and an index per filter."""
    conn.execute("ALTER TABLE decisions ADD COLUMN action_kind TEXT NOT NULL DEFAULT ''")
    conn.execute(
        "UPDATE decisions SET action_kind = coalesce(json_extract(action, '$.action'), '') "
        "WHERE json_valid(action)"
    )
    # Python's JSON (which the store writes) allows NaN and Infinity in evidence; SQLite's does not.
    for row_id, action in conn.execute(
        "SELECT id, action FROM decisions WHERE NOT json_valid(action)"
    ).fetchall():
        conn.execute(
            "UPDATE decisions SET action_kind = ? WHERE id = ?", (json.loads(action)["action"], row_id)
        )
    conn.execute("CREATE INDEX decisions_controller ON decisions (controller, id)")
    conn.execute("CREATE INDEX decisions_action_kind ON decisions (action_kind, id)")
    conn.execute("CREATE INDEX decisions_status ON decisions (status, id)")


Migration = Callable[[sqlite3.Connection], None]

# MIGRATIONS[i] brings a file from schema version i to i + 1. Append only; never edit a released step.
MIGRATIONS: tuple[Migration, ...] = (_v1_create_decisions, _v2_action_kind_and_filter_indexes)
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = "id, tick, created_at, controller, status, why, outcome, taxonomy, action"
_INSERT = (
    "INSERT INTO decisions (tick, created_at, controller, service, action_kind, status, why, outcome, "
    "taxonomy, action) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_WITH_ID = (
    "INSERT INTO decisions (id, tick, created_at, controller, service, action_kind, status, why, outcome, "
    "taxonomy, action) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# --- encoding -----------------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@lru_cache(maxsize=1024)
def _taxonomy_json(taxonomy: Taxonomy) -> str:
    return _dumps(taxonomy.as_dict())


@lru_cache(maxsize=1024)
def _taxonomy_dict(text: str) -> dict[str, Any]:
    return json.loads(text)


def _row(decision: Decision) -> tuple[Any, ...]:
    action = decision.action
    return (
        int(decision.tick),
        float(decision.created_at),
        decision.controller,
        action.target,
        action.name,
        DecisionStatus(decision.status).value,
        decision.why,
        decision.outcome,
        _taxonomy_json(decision.taxonomy),
        _dumps(action.to_dict()),
    )


def _decision(row: Sequence[Any]) -> Decision:
    id_, tick, created_at, controller, status, why, outcome, taxonomy, action = row
    return Decision.from_dict(
        {
            "id": id_,
            "tick": tick,
            "created_at": created_at,
            "controller": controller,
            "taxonomy": _taxonomy_dict(taxonomy),
            "action": json.loads(action),
            "status": status,
            "why": why,
            "outcome": outcome,
        }
    )


def encode_page_token(last_id: int) -> str:
    """The opaque page token meaning "continue below `last_id`"."""
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The last id a page token stands for; ValueError naming `page_token` if it is not one of ours."""
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode()
        if not raw.startswith(_TOKEN_PREFIX):
            raise ValueError(raw)
        last_id = int(raw[len(_TOKEN_PREFIX) :])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        last_id = 0
    if last_id < 1:
        raise ValueError(f"invalid page_token {token!r}: pass back the next_page_token of a previous page")
    return last_id


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
        bounds = f"between {low} and {high}" if high else f">= {low}"
        raise ValueError(f"{name} must be a whole number {bounds}, got {value!r}")
    return value


def _check_time(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds since the epoch, got {value!r}")
    return float(value)


# --- the store ----------------------------------------------------------------------------------------


class DecisionStore:
    """A durable log of decisions in one SQLite file: append, record outcomes, query, watch, retain."""

    def __init__(self, path: str | os.PathLike[str], *, synchronous: Synchronous = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        # Ids reserved by `reserve_ids` and not yet stored: first id -> count (see `after`).
        self._reserved: dict[int, int] = {}
        self._reserved_lock = threading.Lock()
        # isolation_level=None: no implicit transactions; every write below says BEGIN IMMEDIATE itself.
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as error:
            raise StoreError(f"decision store {self.path}: {error}") from error
        try:
            self._check_version(conn, int(conn.execute("PRAGMA user_version").fetchone()[0]))
            conn.execute("PRAGMA foreign_keys = ON")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal" and self.path != ":memory:" and self.path:
                raise StoreError(f"decision store {self.path}: cannot use WAL journal mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            self._migrate(conn)
        except sqlite3.DatabaseError as error:
            conn.close()
            raise StoreError(f"decision store {self.path}: {error}") from error
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    # lifecycle

    def close(self) -> None:
        """Close the connection (idempotent); committed decisions are already on disk."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> DecisionStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The file's schema version (always `SCHEMA_VERSION` once open)."""
        with self._read() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    # writes

    def reserve_ids(self, count: int) -> int:
        """Reserve `count` consecutive ids for decisions about to be carried out; returns the first.

        The control loop numbers a tick's decisions before it applies them, so the id can travel with the
        action as its idempotency key. The reservation is committed (and fsynced) before this returns: after
        a crash the ids are never handed out again, so no later decision can reuse a key an agent recorded.
        Until `append` stores them (or `release_reservation` gives them up), readers of `after` and
        `last_id` stop below the first reserved id, so a watcher never skips them.
        """
        _check_int("count", count, 1)
        with self._write() as conn:
            first = self._sequence(conn) + 1
            if (
                conn.execute(
                    "UPDATE sqlite_sequence SET seq = ? WHERE name = 'decisions'", (first + count - 1,)
                ).rowcount
                == 0
            ):
                conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('decisions', ?)", (first + count - 1,)
                )
        with self._reserved_lock:
            self._reserved[first] = count
        return first

    def release_reservation(self, first: int) -> None:
        """Give up reserved ids that will not be stored (the tick failed); they stay unused for good."""
        with self._reserved_lock:
            self._reserved.pop(first, None)

    def append(self, decisions: Sequence[Decision]) -> builtins.list[Decision]:
        """Store decisions in one transaction; returns copies with their ids (increasing, in order).

        Either all are new (id 0; ids are assigned here) or all carry the ids of one `reserve_ids` call.
        """
        if not decisions:
            return []
        if any(decision.id for decision in decisions):
            return self._append_reserved(decisions)
        rows = [_row(decision) for decision in decisions]
        with self._write() as conn:
            before = self._sequence(conn)
            conn.executemany(_INSERT, rows)
            after = self._sequence(conn)
            if after - before != len(rows):
                raise StoreError(f"expected {len(rows)} new ids after {before}, the sequence is at {after}")
        return [replace(decision, id=before + 1 + i) for i, decision in enumerate(decisions)]

    def _append_reserved(self, decisions: Sequence[Decision]) -> builtins.list[Decision]:
        first = decisions[0].id
        ids = [decision.id for decision in decisions]
        with self._reserved_lock:
            reserved = self._reserved.get(first)
        if reserved != len(ids) or ids != list(range(first, first + len(ids))):
            raise ValueError(
                f"append takes new decisions (id 0) or exactly the ids of one reservation, got {ids[:5]}"
            )
        with self._write() as conn:
            conn.executemany(_INSERT_WITH_ID, [(decision.id, *_row(decision)) for decision in decisions])
        self.release_reservation(first)
        return list(decisions)

    def set_outcome(self, decision_id: int, status: DecisionStatus | str, outcome: str) -> Decision:
        """Record what became of a decision; committed (and fsynced) before it returns."""
        status = DecisionStatus(status)
        with self._write() as conn:
            rows = conn.execute(
                f"UPDATE decisions SET status = ?, outcome = ? WHERE id = ? RETURNING {_COLUMNS}",
                (status.value, str(outcome), int(decision_id)),
            ).fetchall()
        if not rows:
            raise KeyError(f"no decision with id {decision_id}")
        return _decision(rows[0])

    def apply_retention(self, max_age_seconds: float | None, max_count: int | None, now: float) -> int:
        """Delete decisions older than `max_age_seconds` before `now`, then all but the newest `max_count`.

        Deletes in chunks of `RETENTION_CHUNK` rows, one short transaction each. Returns how many were
        deleted. Ids of deleted decisions are never handed out again.
        """
        max_age = _check_time("max_age_seconds", max_age_seconds)
        if max_age is not None and max_age < 0:
            raise ValueError(f"max_age_seconds must be >= 0, got {max_age_seconds!r}")
        if max_count is not None:
            _check_int("max_count", max_count, 0)
        now_value = _check_time("now", now)
        deleted = 0
        if max_age is not None:
            deleted += self._delete_chunked(
                "SELECT id FROM decisions WHERE created_at < ? LIMIT ?", (now_value - max_age,)
            )
        if max_count is not None:
            with self._read() as conn:
                row = conn.execute(
                    "SELECT id FROM decisions ORDER BY id DESC LIMIT 1 OFFSET ?", (max_count,)
                ).fetchone()
            if row is not None:
                deleted += self._delete_chunked(
                    "SELECT id FROM decisions WHERE id <= ? ORDER BY id LIMIT ?", (row[0],)
                )
        return deleted

    # reads

    def get(self, decision_id: int) -> Decision | None:
        """One decision by id, or None."""
        with self._read() as conn:
            cursor = conn.execute(f"SELECT {_COLUMNS} FROM decisions WHERE id = ?", (int(decision_id),))
            row = cursor.fetchone()
        return None if row is None else _decision(row)

    def list(
        self,
        *,
        service: str | None = None,
        controller: str | None = None,
        action_kind: str | None = None,
        status: DecisionStatus | str | None = None,
        since: float | None = None,
        until: float | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[builtins.list[Decision], str]:
        """Decisions matching every given filter, newest first, one page at a time.

        `since <= created_at < until`. Returns the page and the token of the next page ("" after the
        last). Raises ValueError naming the offending field (`page_size`, `page_token`, `status`, ...).
        """
        sql, params = self._list_query(
            service, controller, action_kind, status, since, until, page_size, page_token
        )
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        page = [_decision(row) for row in rows[:page_size]]
        next_token = encode_page_token(page[-1].id) if len(rows) > page_size else ""
        return page, next_token

    def explain_list(self, **filters: Any) -> builtins.list[str]:
        """SQLite's plan (EXPLAIN QUERY PLAN detail lines) for `list(**filters)`; for operators and tests."""
        arguments: dict[str, Any] = {
            "service": None,
            "controller": None,
            "action_kind": None,
            "status": None,
            "since": None,
            "until": None,
            "page_size": 100,
            "page_token": "",
        }
        unknown = set(filters) - set(arguments)
        if unknown:
            raise TypeError(f"unknown list filters: {sorted(unknown)}")
        arguments.update(filters)
        sql, params = self._list_query(**arguments)
        with self._read() as conn:
            return [str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]

    def after(self, decision_id: int, limit: int = 1000) -> builtins.list[Decision]:
        """Up to `limit` decisions with id > `decision_id`, oldest first (for resumable watch streams)."""
        _check_int("limit", limit, 1, MAX_AFTER_LIMIT)
        ceiling = self._ceiling()
        with self._read() as conn:
            sql = f"SELECT {_COLUMNS} FROM decisions WHERE id > ? AND id <= ? ORDER BY id LIMIT ?"
            rows = conn.execute(sql, (int(decision_id), ceiling, limit)).fetchall()
        return [_decision(row) for row in rows]

    def last_id(self) -> int:
        """The highest id assigned (0 if none), even if retention has since deleted that decision; while ids
        are reserved and not yet stored, the id just below the first of them (see `reserve_ids`)."""
        ceiling = self._ceiling()
        with self._read() as conn:
            return min(self._sequence(conn), ceiling)

    def _ceiling(self) -> int:
        """The highest id a reader may go up to: below every reservation not yet stored."""
        with self._reserved_lock:
            return min(self._reserved, default=2**62) - 1

    def count(self) -> int:
        """How many decisions the store holds."""
        with self._read() as conn:
            return int(conn.execute("SELECT count(*) FROM decisions").fetchone()[0])

    # internals

    @staticmethod
    def _check_version(conn: sqlite3.Connection, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"decision store schema version {version} is newer than this controlplane knows "
                f"({SCHEMA_VERSION}); open it with a newer controlplane or use another file"
            )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if int(conn.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])  # another process may have won
            self._check_version(conn, version)
            for target, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(conn)
                conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _sequence(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'decisions'").fetchone()
        return 0 if row is None else int(row[0])

    def _list_query(
        self,
        service: str | None,
        controller: str | None,
        action_kind: str | None,
        status: DecisionStatus | str | None,
        since: float | None,
        until: float | None,
        page_size: int,
        page_token: str,
    ) -> tuple[str, builtins.list[Any]]:
        _check_int("page_size", page_size, 1, MAX_PAGE_SIZE)
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        for column, value in (("service", service), ("controller", controller)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(str(value))
        if action_kind is not None:
            if action_kind not in ACTION_TYPES:
                raise ValueError(f"action_kind must be one of {sorted(ACTION_TYPES)}, got {action_kind!r}")
            clauses.append("action_kind = ?")
            params.append(action_kind)
        if status is not None:
            try:
                status_value = DecisionStatus(status).value
            except ValueError:
                known = [item.value for item in DecisionStatus]
                raise ValueError(f"status must be one of {known}, got {status!r}") from None
            clauses.append("status = ?")
            params.append(status_value)
        since_value, until_value = _check_time("since", since), _check_time("until", until)
        if since_value is not None and until_value is not None and since_value > until_value:
            raise ValueError(f"since ({since_value}) must not be after until ({until_value})")
        if since_value is not None:
            clauses.append("created_at >= ?")
            params.append(since_value)
        if until_value is not None:
            clauses.append("created_at < ?")
            params.append(until_value)
        if page_token:
            clauses.append("id < ?")
            params.append(decode_page_token(page_token))
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        params.append(page_size + 1)  # one more than a page tells whether there is a next page
        return f"SELECT {_COLUMNS} FROM decisions {where}ORDER BY id DESC LIMIT ?", params

    def _delete_chunked(self, select_ids: str, params: tuple[Any, ...]) -> int:
        deleted = 0
        while True:
            with self._write() as conn:
                cursor = conn.execute(
                    f"DELETE FROM decisions WHERE id IN ({select_ids})", (*params, RETENTION_CHUNK)
                )
                deleted += cursor.rowcount
            if cursor.rowcount < RETENTION_CHUNK:
                return deleted

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise StoreError(f"decision store {self.path} is closed")
            yield self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._read() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
