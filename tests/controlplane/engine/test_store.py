"""The decision store on real SQLite files: round trips, queries, pages, retention, migration, kill -9."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from controlplane.actions import (
    Isolate,
    IsolationMechanism,
    Place,
    ReconfigurePipeline,
    Remediate,
    RemediationOperation,
    Route,
    Scale,
)
from controlplane.decisions import Decision, DecisionStatus
from controlplane.engine import store as store_module
from controlplane.engine.store import (
    SCHEMA_VERSION,
    DecisionStore,
    SchemaVersionError,
    StoreError,
    encode_page_token,
)
from controlplane.taxonomy import Taxonomy

WRITER = Path(__file__).with_name("store_writer.py")
REPO = Path(__file__).resolve().parents[3]

RULE = Taxonomy.of(
    "centralized", "rule", ["workload"], ["emulation"], ["latency_slo"], ["metrics"], ["autoscaling"]
)
LEARNING = Taxonomy.of(
    "hierarchical",
    "learning",
    ["workload", "interference", "network"],
    ["simulation", "production_trace"],
    ["latency_slo", "cost"],
    ["traces", "metrics", "events"],
    ["placement", "routing", "reconfiguration"],
)


def _decision(
    service: str = "api",
    controller: str = "hpa",
    status: DecisionStatus = DecisionStatus.APPLIED,
    created_at: float = 1000.0,
    tick: int = 1,
    replicas: int = 2,
) -> Decision:
    return Decision(
        controller=controller,
        taxonomy=RULE,
        action=Scale(target=service, replicas=replicas, reason="p99 above SLO", evidence={"p99_ms": 312.5}),
        status=status,
        why="within step limit",
        tick=tick,
        created_at=created_at,
    )


def _every_action() -> list[Decision]:
    actions = [
        Scale(target="cart", replicas=4, reason="load", evidence={"rps": 1200.5, "replicas": 2, "hot": True}),
        Place(target="cart", node="node-b", replica="cart-1", evidence={"node_cpu": 0.93, "zone": "eu-1"}),
        Route(target="checkout", weights={"v1": 0.9, "v2": 0.1}, reason="canary", evidence={"err_v2": 0.0}),
        Isolate(target="search", mechanism=IsolationMechanism.CIRCUIT_BREAKER, limit=0.0, enabled=False),
        Isolate(target="search", mechanism=IsolationMechanism.RATE_LIMIT, limit=250.5, evidence={"rps": 900}),
        Remediate(
            target="auth", operation=RemediationOperation.ROLLBACK, version="v41", evidence={"errors": 17}
        ),
        Remediate(target="auth", operation=RemediationOperation.RESTART, replica="auth-0"),
        ReconfigurePipeline(
            target="llm",
            layers_per_stage=(10, 12, 10),
            devices=("gpu0", "gpu1", "gpu2"),
            reason="stage 1 is the bottleneck",
            evidence={"stage_ms_0": 4.25, "stage_ms_1": 9.5, "model": "tiny"},
        ),
    ]
    statuses = list(DecisionStatus)
    return [
        Decision(
            controller=f"ctl-{i % 3}",
            taxonomy=LEARNING if i % 2 else RULE,
            action=action,
            status=statuses[i % len(statuses)],
            why=f"because {i} — ünïcode ok",
            tick=i,
            created_at=1_700_000_000.123456 + i / 7,
            outcome="done" if i % 2 else "",
        )
        for i, action in enumerate(actions)
    ]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "decisions.db"


@pytest.fixture
def store(db: Path):
    with DecisionStore(db) as opened:
        yield opened


def _all_pages(store: DecisionStore, **filters) -> list[Decision]:
    out: list[Decision] = []
    token = ""
    while True:
        page, token = store.list(page_token=token, **filters)
        out.extend(page)
        if not token:
            return out


# --- round trip and basic API ------------------------------------------------------------------------


def test_every_action_type_round_trips_exactly_through_a_reopened_file(db: Path) -> None:
    originals = _every_action()
    with DecisionStore(db) as store:
        stored = store.append(originals)
    assert [d.id for d in stored] == list(range(1, len(originals) + 1))
    assert [d.with_outcome(d.status, d.outcome) for d in stored] == stored
    with DecisionStore(db) as store:
        for original, saved in zip(originals, stored, strict=True):
            loaded = store.get(saved.id)
            assert loaded == saved
            assert loaded is not None
            assert loaded.to_dict() == {**original.to_dict(), "id": saved.id}
            assert type(loaded.action) is type(original.action)
        page, token = store.list(page_size=100)
        assert page == stored[::-1] and token == ""


def test_append_assigns_increasing_ids_in_one_transaction(store: DecisionStore) -> None:
    assert store.append([]) == []
    assert store.last_id() == 0
    first = store.append([_decision(), _decision(service="web")])
    second = store.append([_decision(service="db")])
    assert [d.id for d in first + second] == [1, 2, 3]
    assert [d.service for d in first + second] == ["api", "web", "db"]
    assert store.last_id() == 3 and store.count() == 3
    with pytest.raises(ValueError, match="id 0"):
        store.append([first[0]])
    assert store.count() == 3


def test_set_outcome_updates_status_and_outcome_durably(db: Path) -> None:
    with DecisionStore(db) as store:
        (stored,) = store.append([_decision(status=DecisionStatus.SHADOW)])
        updated = store.set_outcome(stored.id, DecisionStatus.FAILED, "actuator timed out")
        assert updated == stored.with_outcome(DecisionStatus.FAILED, "actuator timed out")
        with pytest.raises(KeyError, match="999"):
            store.set_outcome(999, DecisionStatus.APPLIED, "")
        with pytest.raises(ValueError):
            store.set_outcome(stored.id, "bogus", "")  # type: ignore[arg-type]
    with DecisionStore(db) as store:
        assert store.get(stored.id) == updated
        assert store.get(12345) is None


def test_pragmas_wal_full_synchronous_foreign_keys(db: Path) -> None:
    with DecisionStore(db) as store:
        conn = store._conn
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert store.schema_version == SCHEMA_VERSION
    with DecisionStore(db, synchronous="NORMAL") as store:
        assert store._conn is not None and store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    with pytest.raises(ValueError, match="synchronous"):
        DecisionStore(db, synchronous="OFF")  # type: ignore[arg-type]


def test_closed_store_raises_and_close_is_idempotent(db: Path) -> None:
    store = DecisionStore(db)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get(1)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "not.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not.db"):
        DecisionStore(bogus)


# --- queries -----------------------------------------------------------------------------------------


@pytest.fixture
def populated(store: DecisionStore) -> tuple[DecisionStore, list[Decision]]:
    decisions = []
    statuses = [DecisionStatus.APPLIED, DecisionStatus.REJECTED, DecisionStatus.SHADOW]
    for i in range(60):
        base = _decision(
            service=["api", "web", "db"][i % 3],
            controller=["hpa", "mpc"][i % 2],
            status=statuses[i % 3 if i % 5 else 0],
            created_at=1000.0 + i,
            tick=i,
        )
        if i % 4 == 0:
            base = Decision(
                base.controller,
                LEARNING,
                Route(target=base.service, weights={"a": 1.0}),
                base.status,
                base.why,
                tick=base.tick,
                created_at=base.created_at,
            )
        decisions.append(base)
    return store, store.append(decisions)


@pytest.mark.parametrize(
    "filters",
    [
        {"service": "api"},
        {"controller": "mpc"},
        {"action_kind": "route"},
        {"action_kind": "scale"},
        {"status": DecisionStatus.REJECTED},
        {"status": "applied"},
        {"service": "web", "controller": "hpa"},
        {"service": "db", "action_kind": "route", "status": "applied"},
        {"service": "api", "controller": "mpc", "action_kind": "scale", "status": "shadow"},
        {"service": "nobody"},
    ],
)
def test_filters_each_and_combined(populated, filters) -> None:
    store, stored = populated

    def matches(d: Decision) -> bool:
        return (
            filters.get("service", d.service) == d.service
            and filters.get("controller", d.controller) == d.controller
            and filters.get("action_kind", d.action.name) == d.action.name
            and filters.get("status", d.status) == d.status
        )

    expected = [d for d in reversed(stored) if matches(d)]
    page, token = store.list(page_size=1000, **filters)
    assert page == expected and token == ""
    assert _all_pages(store, page_size=3, **filters) == expected


def test_time_range_is_since_inclusive_until_exclusive(populated) -> None:
    store, stored = populated
    page, _ = store.list(since=1010.0, until=1020.0, page_size=1000)
    assert [d.created_at for d in page] == [1000.0 + i for i in range(19, 9, -1)]
    page, _ = store.list(since=1055.0, page_size=1000)
    assert [d.tick for d in page] == [59, 58, 57, 56, 55]
    page, _ = store.list(until=1002.0, page_size=1000)
    assert [d.tick for d in page] == [1, 0]
    page, _ = store.list(service="api", since=1010.0, until=1020.0, page_size=1000)
    assert [d.tick for d in page] == [18, 15, 12]
    assert store.list(since=5000.0)[0] == []
    with pytest.raises(ValueError, match="since"):
        store.list(since=20.0, until=10.0)
    with pytest.raises(ValueError, match="until"):
        store.list(until=float("nan"))


def test_pagination_has_no_gaps_or_duplicates_even_while_appending(populated) -> None:
    store, stored = populated
    seen: list[Decision] = []
    page, token = store.list(page_size=7)
    seen.extend(page)
    store.append([_decision(created_at=2000.0)])  # newer than the cursor: must not shift later pages
    while token:
        page, token = store.list(page_size=7, page_token=token)
        assert 1 <= len(page) <= 7
        seen.extend(page)
    assert seen == stored[::-1]
    ids = [d.id for d in seen]
    assert len(set(ids)) == len(ids) and ids == sorted(ids, reverse=True)
    # an exact multiple of the page size ends without an empty trailing page
    page, token = store.list(page_size=61)
    assert len(page) == 61 and token == ""
    page, token = store.list(page_size=1, page_token=encode_page_token(1))
    assert page == [] and token == ""


@pytest.mark.parametrize("token", ["garbage!", "MTIz", encode_page_token(0), "ZDE6LTU", "ZDE6eA", "%%%"])
def test_bad_page_token_is_a_value_error_naming_the_field(store: DecisionStore, token: str) -> None:
    with pytest.raises(ValueError, match="page_token"):
        store.list(page_token=token)


@pytest.mark.parametrize("size", [0, -1, 1001, True, 2.5, "10"])
def test_bad_page_size_is_a_value_error_naming_the_field(store: DecisionStore, size) -> None:
    with pytest.raises(ValueError, match="page_size"):
        store.list(page_size=size)


def test_bad_filters_name_the_field(store: DecisionStore) -> None:
    with pytest.raises(ValueError, match="status"):
        store.list(status="done")
    with pytest.raises(ValueError, match="action_kind"):
        store.list(action_kind="autoscaling")  # the taxonomy kind, not the action name
    assert store.list(page_size=1)[0] == [] and store.list(page_size=1000) == ([], "")


def test_explain_query_plan_uses_the_filter_indexes(populated) -> None:
    store, _ = populated
    for column, value in [("service", "api"), ("controller", "hpa"), ("action_kind", "scale")]:
        plan = " | ".join(store.explain_list(**{column: value}))
        assert f"SEARCH decisions USING INDEX decisions_{column} ({column}=?)" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    plan = " | ".join(store.explain_list(service="api", page_token=encode_page_token(30)))
    assert "USING INDEX decisions_service (service=? AND id<?)" in plan, plan
    with pytest.raises(TypeError):
        store.explain_list(colour="red")


def test_after_and_last_id_support_resumable_watching(populated) -> None:
    store, stored = populated
    assert store.after(0, limit=5) == stored[:5]
    assert store.after(55) == stored[55:]
    assert store.after(60) == []
    assert store.last_id() == 60
    with pytest.raises(ValueError, match="limit"):
        store.after(0, limit=0)


# --- retention and ids -------------------------------------------------------------------------------


def test_retention_by_count_keeps_the_newest_and_ids_are_never_reused(store: DecisionStore) -> None:
    stored = store.append([_decision(tick=i) for i in range(10)])
    assert store.apply_retention(None, 4, now=0.0) == 6
    assert [d.id for d in _all_pages(store)] == [10, 9, 8, 7]
    assert store.apply_retention(None, 4, now=0.0) == 0
    assert store.apply_retention(None, 0, now=0.0) == 4
    assert store.count() == 0 and store.last_id() == 10
    (again,) = store.append([_decision()])
    assert again.id == 11 > stored[-1].id
    assert store.after(0) == [again]


def test_retention_by_age_and_count_together(store: DecisionStore) -> None:
    store.append([_decision(created_at=100.0 + i, tick=i) for i in range(20)])
    # older than 10 s before now=125 means created_at < 115: ticks 0..14
    assert store.apply_retention(10.0, None, now=125.0) == 15
    assert [d.tick for d in _all_pages(store)] == [19, 18, 17, 16, 15]
    assert store.apply_retention(10.0, 2, now=125.0) == 3
    assert [d.tick for d in _all_pages(store)] == [19, 18]
    assert store.apply_retention(None, None, now=125.0) == 0
    with pytest.raises(ValueError, match="max_count"):
        store.apply_retention(None, -1, now=0.0)
    with pytest.raises(ValueError, match="max_age_seconds"):
        store.apply_retention(-1.0, None, now=0.0)


def test_retention_deletes_in_chunks(store: DecisionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "RETENTION_CHUNK", 7)
    store.append([_decision(created_at=float(i)) for i in range(50)])
    assert store.apply_retention(None, 8, now=0.0) == 42
    assert store.apply_retention(0.0, None, now=45.0) == 3
    assert [d.created_at for d in _all_pages(store)] == [49.0, 48.0, 47.0, 46.0, 45.0]


def test_ids_increase_across_threads_and_connections(db: Path) -> None:
    with DecisionStore(db) as first, DecisionStore(db) as second:
        results: list[list[Decision]] = []
        lock = threading.Lock()

        def work(store: DecisionStore, n: int) -> None:
            for i in range(25):
                got = store.append([_decision(tick=n * 100 + i), _decision(tick=n * 100 + i)])
                with lock:
                    results.append(got)

        threads = [threading.Thread(target=work, args=(s, n)) for n, s in enumerate([first, second, first])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ids = sorted(d.id for batch in results for d in batch)
        assert ids == list(range(1, 151))
        for batch in results:  # a batch's ids are consecutive
            assert batch[1].id == batch[0].id + 1 and batch[0].tick == batch[1].tick
        assert second.count() == 150 and first.get(150) == second.get(150)


# --- schema versions ---------------------------------------------------------------------------------

V1_SCHEMA = [
    """CREATE TABLE decisions (
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
    )""",
    "CREATE INDEX decisions_service ON decisions (service, id)",
    "CREATE INDEX decisions_created_at ON decisions (created_at)",
    "PRAGMA user_version = 1",
]


def test_a_v1_file_is_migrated_and_readable(db: Path) -> None:
    route = _every_action()[2]
    inf = Decision(
        "hpa",
        RULE,
        Scale(target="web", replicas=3, evidence={"slack": float("inf")}),
        DecisionStatus.APPLIED,
        "ok",
    )
    conn = sqlite3.connect(db)
    for statement in V1_SCHEMA:
        conn.execute(statement)
    # ids 2..4 and 6 were deleted by the old version's retention; Python's JSON may hold Infinity
    for row_id, old in ((1, route), (5, route), (7, inf)):
        conn.execute(
            "INSERT INTO decisions (id, tick, created_at, controller, service, status, why, outcome, "
            "taxonomy, action) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row_id,
                old.tick,
                old.created_at,
                old.controller,
                old.service,
                old.status.value,
                old.why,
                old.outcome,
                json.dumps(old.taxonomy.as_dict()),
                json.dumps(old.action.to_dict()),
            ),
        )
    conn.commit()
    conn.close()

    with DecisionStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        assert store.get(5) == Decision.from_dict({**route.to_dict(), "id": 5})
        assert store.get(7) == Decision.from_dict({**inf.to_dict(), "id": 7})
        assert [d.id for d in store.list(action_kind="route")[0]] == [5, 1]
        assert [d.id for d in store.list(action_kind="scale")[0]] == [7]
        (new,) = store.append([_decision()])
        assert new.id == 8
        assert "decisions_status" in " ".join(store.explain_list(status="applied"))
    with DecisionStore(db) as store:  # reopening a current file migrates nothing
        assert store.count() == 4
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
    assert raw.execute("SELECT id, action_kind FROM decisions ORDER BY id").fetchall() == [
        (1, "route"),
        (5, "route"),
        (7, "scale"),
        (8, "scale"),
    ]
    raw.close()


def test_a_newer_file_is_refused_and_left_alone(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE decisions (id INTEGER PRIMARY KEY, future TEXT)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    conn.commit()
    conn.close()
    with pytest.raises(
        SchemaVersionError, match=rf"version {SCHEMA_VERSION + 7} is newer.*\({SCHEMA_VERSION}\)"
    ):
        DecisionStore(db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 7
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_failed_migration_rolls_back(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, broken))
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="migration bug"):
        DecisionStore(db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    conn.close()


# --- durability --------------------------------------------------------------------------------------


def _read_ids(proc: subprocess.Popen, want: int, timeout: float) -> list[int]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    while buffer.count(b"\n") < want:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
    complete = buffer[: buffer.rfind(b"\n") + 1]
    return [int(line) for line in complete.split()]


def test_kill_9_loses_no_decision_reported_applied(db: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), "100000", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    try:
        ids = _read_ids(proc, want=200, timeout=20.0)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # anything printed between our last read and the kill counts too
        assert proc.stdout is not None
        tail = proc.stdout.read()
        ids += [int(line) for line in tail[: tail.rfind(b"\n") + 1].split()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert proc.returncode == -signal.SIGKILL
    assert len(ids) >= 200 and ids == sorted(ids) and len(set(ids)) == len(ids)

    with DecisionStore(db) as store:
        for decision_id in ids:
            decision = store.get(decision_id)
            assert decision is not None, f"decision {decision_id} was reported applied but is lost"
            assert decision.status is DecisionStatus.APPLIED
            assert decision.outcome == f"applied {decision_id}"
        assert store.last_id() >= ids[-1]
        assert store._conn is not None
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_reserved_ids_are_never_reused_after_a_restart_and_watchers_wait_below_them(db: Path) -> None:
    store = DecisionStore(db)
    (first_stored,) = store.append([_decision()])
    first = store.reserve_ids(3)
    assert first == first_stored.id + 1
    # A decision stored meanwhile (an agent's report) gets an id after the reservation, but readers stop
    # below the reservation until it is stored: a watcher never skips the reserved ones.
    (later,) = store.append([_decision(service="other")])
    assert later.id == first + 3
    assert [d.id for d in store.after(0)] == [first_stored.id]
    assert store.last_id() == first_stored.id
    reserved = [replace(_decision(tick=2), id=first + index) for index in range(3)]
    with pytest.raises(ValueError, match="one reservation"):
        store.append(reserved[1:])  # not the whole reservation
    assert store.append(reserved) == reserved
    assert [d.id for d in store.after(0)] == [first_stored.id, first, first + 1, first + 2, later.id]
    assert store.last_id() == later.id
    # A reservation given up (the tick failed) is never handed out again, even by a new process.
    abandoned = store.reserve_ids(2)
    store.release_reservation(abandoned)
    store.close()
    reopened = DecisionStore(db)
    assert reopened.reserve_ids(1) == abandoned + 2
    reopened.close()
