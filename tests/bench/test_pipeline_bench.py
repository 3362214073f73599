"""`controlplane bench --scenario pipeline-devices`: the scenario's own controller sets, TTFT/TPOT and drops
in results.json, and a report with the pipeline columns."""

import json
import subprocess
import sys

from tests.support import REPO


def test_bench_compares_static_live_and_redeploy_on_the_pipeline_scenario(tmp_path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "controlplane.serve", "bench", "--scenario", "pipeline-devices"]
    command += ["--out", str(out), "--jobs", "2", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    runs = {run["controllers"]: run for run in json.loads(result.stdout)["runs"]}
    assert list(runs) == ["static", "pipeline-live", "pipeline-redeploy"]
    for run in runs.values():
        assert {
            "slo_violation_fraction",
            "p99_ms",
            "tpot_p99_ms",
            "dropped",
            "preempted",
            "unavailable_s",
        } <= set(run)
        assert run["scenario"] == "pipeline-devices" and run["slo_p99_ms"] == 2000
    static, live, redeploy = runs["static"], runs["pipeline-live"], runs["pipeline-redeploy"]
    assert (
        static["reconfigurations"] == 0
        and live["reconfigurations"] >= 2
        and redeploy["reconfigurations"] >= 2
    )
    assert live["slo_violation_fraction"] < static["slo_violation_fraction"]
    assert live["slo_violation_fraction"] < redeploy["slo_violation_fraction"]
    # Live pauses for milliseconds per change; stop-and-redeploy is out for seconds each time.
    assert live["unavailable_s"] < 0.1 < 10 < redeploy["unavailable_s"]
    report = (out / "report.md").read_text()
    assert (
        "## pipeline-devices" in report and "TTFT SLO violation" in report and "| pipeline-live |" in report
    )
    assert "`pipeline-live` beats `static`" in report
    assert (out / "pipeline-devices.png").exists()
