"""The benchmark's outputs: one PNG per scenario, `report.md`, and the comparison table in the terminal."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Column, Table

COLUMNS = (
    ("controllers", "controllers"),
    ("slo_violation_fraction", "SLO violation"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("error_fraction", "errors"),
    ("cost_replica_seconds", "replica-s"),
    ("actions", "actions"),
    ("time_to_mitigate_s", "mitigate s"),
)
BASELINE = "hpa"
# A serving-pipeline scenario (services/sim/pipeline.py): the latency is the time to first token, and what
# matters besides is TPOT, requests dropped or preempted, and what the reconfigurations cost.
PIPELINE_COLUMNS = (
    ("controllers", "controllers"),
    ("slo_violation_fraction", "TTFT SLO violation"),
    ("p50_ms", "TTFT p50 ms"),
    ("p99_ms", "TTFT p99 ms"),
    ("tpot_p99_ms", "TPOT p99 ms"),
    ("dropped", "dropped"),
    ("preempted", "preempted"),
    ("reconfigurations", "reconfigs"),
    ("unavailable_s", "paused s"),
)
PIPELINE_BASELINE = "static"


def _columns(runs: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    return PIPELINE_COLUMNS if "tpot_p99_ms" in runs[0] else COLUMNS


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _by_scenario(document: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in document["runs"]:
        grouped[run["scenario"]].append(run)
    return grouped


def print_table(document: dict[str, Any], console: Console) -> None:
    if document.get("live"):
        table = Table(*(Column(title) for _, title in LIVE_COLUMNS), title="simulator vs live processes")
        for entry in document["live"]:
            table.add_row(*(_cell(entry.get(key)) for key, _ in LIVE_COLUMNS))
        console.print(table)
        console.print(_agreement(document["live"]))
    for scenario, runs in _by_scenario(document).items():
        columns = _columns(runs)
        table = Table(
            *(Column(title, justify="left" if key == "controllers" else "right") for key, title in columns),
            title=f"{scenario} (SLO p99 {_cell(runs[0].get('slo_p99_ms'))} ms)",
        )
        for run in runs:
            table.add_row(*(_cell(run.get(key)) for key, _ in columns))
        console.print(table)


def write_plots(outcomes: Sequence[dict[str, Any]], out: Path) -> dict[str, str]:
    """One PNG per scenario: end-to-end p99 against the SLO, replicas, and decisions, per controller set."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for outcome in outcomes:
        grouped[outcome["run"]["scenario"]].append(outcome)
    written = {}
    for scenario, runs in grouped.items():
        figure, (latency, replicas, decisions) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
        slo = runs[0]["run"]["slo_p99_ms"]
        for outcome in runs:
            label = outcome["run"]["controllers"]
            series = outcome["series"]
            seconds = range(len(series["p99_ms"]))
            # Seconds whose p99 is a failure (infinite) are drawn at the top of the axis.
            ceiling = slo * 20
            latency.plot(seconds, [min(value, ceiling) for value in series["p99_ms"]], label=label, lw=1)
            replicas.plot(seconds, series["replicas"], label=label, lw=1)
            cumulative, total = [], 0
            for count in series["decisions"]:
                total += count
                cumulative.append(total)
            decisions.plot(seconds, cumulative, label=label, lw=1)
        latency.axhline(slo, color="black", ls="--", lw=1, label=f"SLO {slo:g} ms")
        for event in runs[0]["run"].get("events", ()):
            for axis in (latency, replicas, decisions):
                axis.axvline(event["at"], color="grey", ls=":", lw=1)
        latency.set_yscale("log")
        pipeline = "tpot_p99_ms" in runs[0]["run"]
        latency.set_ylabel("TTFT p99 (ms)" if pipeline else "end-to-end p99 (ms)")
        replicas.set_ylabel("pipeline stages" if pipeline else "replicas")
        decisions.set_ylabel("applied actions (cumulative)")
        decisions.set_xlabel("simulated seconds (dotted: injected events)")
        latency.legend(loc="upper left", fontsize=8)
        latency.set_title(scenario)
        figure.tight_layout()
        path = out / f"{scenario}.png"
        figure.savefig(path, dpi=80)
        plt.close(figure)
        written[scenario] = path.name
    return written


def _versus_baseline(runs: list[dict[str, Any]]) -> str:
    """One sentence per set: SLO violation and cost relative to the baseline."""
    pipeline = "tpot_p99_ms" in runs[0]
    name = PIPELINE_BASELINE if pipeline else BASELINE
    baseline = next((run for run in runs if run["controllers"] == name), None)
    if baseline is None:
        return ""
    parts = []
    for run in runs:
        if run is baseline:
            continue
        delta = run["slo_violation_fraction"] - baseline["slo_violation_fraction"]
        if pipeline:
            verdict = "beats" if delta < -0.005 else "loses to" if delta > 0.005 else "ties with"
            parts.append(
                f"`{run['controllers']}` {verdict} `{name}` on TTFT SLO violation "
                f"({delta * 100:+.1f} points),"
                f" {run['dropped'] - baseline['dropped']:+d} dropped requests"
            )
            continue
        cost = (
            run["cost_replica_seconds"] / baseline["cost_replica_seconds"] - 1
            if baseline["cost_replica_seconds"]
            else 0.0
        )
        verdict = "beats" if delta < -0.005 else "loses to" if delta > 0.005 else "ties with"
        parts.append(
            f"`{run['controllers']}` {verdict} `{name}` on SLO violation ({delta * 100:+.1f} points)"
            f" at {cost * 100:+.0f}% replica-seconds"
        )
    return "; ".join(parts) + "."


LIVE_COLUMNS = (("fidelity", "fidelity"), *COLUMNS)


def _agreement(entries: list[dict[str, Any]]) -> str:
    """How far the two fidelities agree: per set, and on the ranking of the sets."""
    by_set: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for entry in entries:
        by_set[entry["controllers"]][entry["fidelity"]] = entry
    sentences = []
    for name, pair in by_set.items():
        if {"sim", "live"} <= set(pair):
            sim, live = pair["sim"], pair["live"]
            gap = (live["slo_violation_fraction"] - sim["slo_violation_fraction"]) * 100
            ratio = (
                f"live p99 {live['p99_ms'] / sim['p99_ms']:.2f}x the simulator's"
                if live.get("p99_ms") and sim.get("p99_ms")
                else "p99 not comparable"
            )
            sentences.append(f"`{name}`: SLO violation differs by {gap:+.1f} points, {ratio}")
    complete = [pair for pair in by_set.values() if {"sim", "live"} <= set(pair)]

    def ranking(fidelity: str) -> list[str]:
        return [
            pair[fidelity]["controllers"]
            for pair in sorted(complete, key=lambda pair: pair[fidelity]["slo_violation_fraction"])
        ]

    same = ranking("sim") == ranking("live")
    verdict = "rank the sets the same way" if same else "rank the sets differently"
    return "; ".join(sentences) + f". On SLO violation the two fidelities {verdict}."


def _live_lines(entries: list[dict[str, Any]]) -> list[str]:
    first = entries[0]
    lines = [
        f"## Simulator vs live processes: {first['scenario']}",
        "",
        f"The first {first['seconds']:g} s of the scenario, once in the simulator and once as real",
        f"processes on 127.0.0.1 at {first['live_scale']:g} of the request rate, service times stretched",
        "by the inverse so that every replica is as busy as at the full rate, and latencies divided back",
        "(docs/benchmark-live.md).",
        "",
        "| " + " | ".join(title for _, title in LIVE_COLUMNS) + " |",
        "|" + "|".join("---" for _ in LIVE_COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_cell(entry.get(key)) for key, _ in LIVE_COLUMNS) + " |" for entry in entries]
    return [*lines, "", _agreement(entries), ""]


def write_report(document: dict[str, Any], plots: dict[str, str], out: Path, notes: str = "") -> Path:
    """`report.md`: per scenario the comparison table, the verdict against hpa, and the plot."""
    lines = [
        "# controlplane bench report",
        "",
        "Simulated runs of the demo application (services/demo/socialnetwork.toml). SLO violation: share",
        "of seconds (after warm-up) whose end-to-end p99 is above the SLO, failures counting as infinitely",
        "slow.",
        "Cost: replica-seconds. Mitigate: mean seconds from each injected event until the SLO holds for 10 s",
        "in a row (an event never mitigated counts as the rest of the run).",
        "",
    ]
    for scenario, runs in _by_scenario(document).items():
        columns = _columns(runs)
        header = "| " + " | ".join(title for _, title in columns) + " |"
        rule = "|" + "|".join("---" for _ in columns) + "|"
        what = "TTFT p99" if columns is PIPELINE_COLUMNS else "p99"
        lines += [
            f"## {scenario}",
            "",
            f"SLO: {what} {_cell(runs[0].get('slo_p99_ms'))} ms, seed {runs[0]['seed']}.",
            "",
        ]
        if columns is PIPELINE_COLUMNS:
            lines += [
                "A simulated PipeLive serving pipeline (docs/pipeline-controller.md): the latency is the",
                "time to first token, a dropped request counts as infinitely slow; paused s: seconds the",
                "pipeline served nothing because of a reconfiguration.",
                "",
            ]
        lines += [header, rule]
        lines += ["| " + " | ".join(_cell(run.get(key)) for key, _ in columns) + " |" for run in runs]
        verdict = _versus_baseline(runs)
        if verdict:
            lines += ["", verdict]
        if scenario in plots:
            lines += ["", f"![{scenario}]({plots[scenario]})"]
        lines.append("")
    if document.get("live"):
        lines += _live_lines(document["live"])
    if notes:
        lines += [notes, ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
