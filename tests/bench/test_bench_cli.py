"""`controlplane bench` end to end: a small scenario, two controller sets, every output written."""

import json
import subprocess
import sys

from tests.support import REPO, TINY_APP, TINY_SCENARIO

SCENARIO = """
name = "tiny"
description = "a short constant load with a noisy neighbour"
dynamics = ["interference"]
duration_seconds = 40
warmup_seconds = 5

[workload]
mean_rps = 150

[cluster]
nodes = 2

[[events]]
at = 15
kind = "interference"
node = "node-0"
slowdown = 6.0
duration = 10
"""


def test_bench_writes_results_plots_and_report_and_prints_json(tmp_path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "controlplane.serve", "bench", "--scenario", str(scenario)]
    command += ["--controllers", "static", "--controllers", "hpa", "--out", str(out), "--jobs", "2", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    written = json.loads((out / "results.json").read_text())
    assert printed == written
    runs = written["runs"]
    assert [(run["scenario"], run["controllers"], run["seed"]) for run in runs] == [
        ("tiny", "static", 1),
        ("tiny", "hpa", 1),
    ]
    keys = {
        "slo_violation_fraction",
        "p50_ms",
        "p99_ms",
        "cost_replica_seconds",
        "actions",
        "time_to_mitigate_s",
    }
    for run in runs:
        assert keys <= set(run)
        assert 0.0 <= run["slo_violation_fraction"] <= 1.0
        assert run["requests"] > 4000
    static = runs[0]
    assert static["actions"] == 0 and static["cost_replica_seconds"] == 35 * 26  # 26 replicas, 35 scored s
    assert (out / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "## tiny" in report and "| static |" in report and "![tiny](tiny.png)" in report
    assert (out / "decisions" / "tiny__hpa.db").exists()


def test_bench_refuses_an_unknown_controller_set_before_running() -> None:
    command = [sys.executable, "-m", "controlplane.serve", "bench", "--scenario", "demo-short"]
    result = subprocess.run(
        [*command, "--controllers", "no-such-controller"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "no-such-controller" in result.stderr and "hpa" in result.stderr


def test_bench_live_puts_real_processes_next_to_the_simulator(tmp_path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY_APP)
    (tmp_path / "scenario.toml").write_text(TINY_SCENARIO)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "controlplane.serve",
        "bench",
        "--scenario",
        str(tmp_path / "scenario.toml"),
    ]
    command += ["--controllers", "static", "--out", str(out), "--jobs", "1", "--json"]
    command += ["--live", "--live-scale", "0.1", "--live-seconds", "6"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    live = document["live"]
    assert [(entry["controllers"], entry["fidelity"]) for entry in live] == [
        ("static", "sim"),
        ("static", "live"),
    ]
    for entry in live:
        assert entry["scenario"] == "tiny-steady" and entry["requests"] > 0 and entry["seconds"] == 6
    # The live run plays a tenth of the rate: about a tenth of the simulator's requests.
    assert 0.03 < live[1]["requests"] / live[0]["requests"] < 0.3
    report = (out / "report.md").read_text()
    assert "## Simulator vs live processes: tiny-steady" in report and "rank the sets" in report


def test_sim_checksum_fingerprints_repeat_on_a_seed_and_tell_seeds_and_sets_apart(tmp_path) -> None:
    from bench.sim_checksum import fingerprint_run

    scenario = tmp_path / "tiny.toml"
    scenario.write_text(SCENARIO)
    _, first = fingerprint_run(str(scenario), "hpa", 3, seconds=20)
    _, again = fingerprint_run(str(scenario), "hpa", 3, seconds=20)
    _, other_seed = fingerprint_run(str(scenario), "hpa", 4, seconds=20)
    assert first == again and first["requests"] > 2000
    assert all(first[key] != other_seed[key] for key in ("spans", "seconds", "score"))


def test_sim_checksum_command_prints_a_fingerprint_per_run(tmp_path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(SCENARIO)
    command = [
        sys.executable,
        "-m",
        "controlplane.serve",
        "bench",
        "sim-checksum",
        "--scenario",
        str(scenario),
    ]
    command += ["--seconds", "10", "--jobs", "2", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert set(runs) == {"tiny/static", "tiny/hpa", "tiny/builtin"}
    assert runs["tiny/static"]["actions"] == 0 and all(values["requests"] > 1000 for values in runs.values())
    assert all(len(values[key]) == 16 for values in runs.values() for key in ("spans", "seconds", "score"))
