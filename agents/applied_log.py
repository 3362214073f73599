"""The agent's durable memory (SQLite): which decision keys it has applied, and what the plane has stored.

Exactly-once application on top of at-least-once delivery (QoS 1, and the plane re-sending what is still
unanswered): before applying an action the agent records its key as `applying`, after it the outcome.
A repeated key is answered from the record and never applied again, including one whose application was
interrupted by a crash (`applying` with no outcome): it is reported failed rather than risked twice, and
the next control tick converges.

WAL with `synchronous=NORMAL`: a record survives the agent being killed (kill -9; the WAL is in the OS page
cache) but the last commits may roll back if the machine loses power. That is safe here because every
action carries a deadline (the plane's timeout, seconds): a node that lost power comes back long after it,
and refuses a redelivered action whose record was lost instead of applying it again. FULL would fsync
twice per action, and on this machine's disk that fsync was what limited the round trip under load
(`controlplane bench mqtt --concurrency 20`: p50 160 ms with FULL, 60-90 ms with NORMAL).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass

# Keys older than this are forgotten: the plane gives up on an action after its timeout (seconds) and
# the agent refuses any action past its deadline, so a redelivery this late is refused either way.
RETENTION_SECONDS = 7 * 86_400.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS applied (
        decision_key TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        ok INTEGER NOT NULL DEFAULT 0,
        detail TEXT NOT NULL DEFAULT '',
        received_at REAL NOT NULL,
        finished_at REAL
    )""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)


@dataclass(frozen=True, slots=True)
class AppliedRecord:
    decision_key: str
    finished: bool
    ok: bool
    detail: str


class AppliedLog:
    """Decision keys an agent has taken on, with their outcomes; one SQLite file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        for statement in _SCHEMA:
            self._conn.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def get(self, decision_key: str) -> AppliedRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT state, ok, detail FROM applied WHERE decision_key = ?", (decision_key,)
            ).fetchone()
        if row is None:
            return None
        return AppliedRecord(decision_key, row[0] == "done", bool(row[1]), row[2])

    def begin(self, decision_key: str, now: float) -> bool:
        """Record that applying `decision_key` starts; False if the key was already known."""
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO applied (decision_key, state, received_at) VALUES (?, 'applying', ?)",
                (decision_key, now),
            )
            return cursor.rowcount == 1

    def finish(self, decision_key: str, ok: bool, detail: str, now: float) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO applied (decision_key, state, ok, detail, received_at, finished_at) "
                "VALUES (?, 'done', ?, ?, ?, ?) ON CONFLICT (decision_key) DO UPDATE SET state = 'done', "
                "ok = excluded.ok, detail = excluded.detail, finished_at = excluded.finished_at",
                (decision_key, int(ok), detail, now, now),
            )

    def applied_count(self) -> int:
        """Keys applied successfully (the benchmark compares it with what the plane sent)."""
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM applied WHERE ok = 1").fetchone()[0])

    def forget_before(self, cutoff: float) -> int:
        with self._lock:
            return self._conn.execute(
                "DELETE FROM applied WHERE state = 'done' AND received_at < ?", (cutoff,)
            ).rowcount

    def acked_decisions(self) -> int:
        """The highest local decision id the plane has confirmed storing."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'decisions_acked'").fetchone()
        return int(row[0]) if row else 0

    def set_acked_decisions(self, local_id: int) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('decisions_acked', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                (local_id,),
            )
