"""`controlplane bench ...` and `controlplane demo`: the benchmark commands (entry point group
`controlplane.commands`, as every subcommand beyond `serve` and the queries).

Each command imports its harness only when it runs, so `controlplane --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `controlplane demo` and `controlplane bench` with its sub-benchmarks."""
    demo = commands.add_parser("demo", help="serve, drive generated traces at it, and show the live graph")
    demo.add_argument("--seconds", type=float, default=20.0)
    demo.add_argument("--rate", type=float, default=100.0, help="traces per second")
    demo.add_argument("--seed", type=int, default=1)
    demo.set_defaults(run=_demo)

    bench = commands.add_parser(
        "bench",
        help="benchmarks; without a sub-benchmark: scenarios x controller sets in the simulator",
        description="Without a sub-benchmark: run every scenario with every controller set in the simulator"
        " and write results.json, one PNG per scenario and report.md to --out.",
    )
    bench.add_argument(
        "--scenario", action="append", default=[], help="bundled scenario name or TOML file (repeatable)"
    )
    bench.add_argument(
        "--controllers",
        action="append",
        default=[],
        metavar="SET",
        help="controller set: static, hpa, builtin, pipeline-live, pipeline-redeploy, or installed"
        " controllers"
        " joined by + (repeatable; default: the scenario's own sets, else static, hpa, builtin)",
    )
    bench.add_argument("--seed", type=int, default=1)
    bench.add_argument("--out", default="bench-results", help="output directory")
    bench.add_argument("--jobs", type=int, default=0, help="runs at once (default: cores, at most 4)")
    bench.add_argument("--json", action="store_true", help="print results.json to stdout")
    bench.add_argument(
        "--live",
        action="store_true",
        help="also run the first scenario as real processes on 127.0.0.1, next to the simulator",
    )
    bench.add_argument("--live-scale", type=float, default=0.05, help="share of the request rate run live")
    bench.add_argument("--live-seconds", type=float, default=120.0, help="seconds of the scenario run live")
    bench.set_defaults(run=_bench_scenarios)
    benches = bench.add_subparsers(
        dest="bench", required=False, metavar="{ingest,loop,sim-speed,mqtt,sim-checksum}"
    )
    speed = benches.add_parser("sim-speed", help="simulated requests per wall second, on one core")
    speed.add_argument("--duration", type=float, default=600.0, help="simulated seconds")
    speed.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    speed.add_argument("--seed", type=int, default=1)
    speed.add_argument(
        "--trace-sampling",
        type=float,
        help="share of traces exported (default: two runs, 0.1 as in production at this rate, and 1)",
    )
    speed.add_argument("--json", action="store_true", help="print one JSON object")
    speed.set_defaults(run=_bench_sim_speed)
    ingest = benches.add_parser("ingest", help="OTLP/gRPC ingest throughput, Export latency and memory")
    ingest.add_argument("--spans", type=int, default=10_000_000, help="spans to send in all")
    ingest.add_argument("--senders", type=int, default=2, help="load-generator processes")
    ingest.add_argument("--spans-per-request", type=int, default=1000)
    ingest.add_argument("--seed", type=int, default=1)
    ingest.add_argument("--json", action="store_true", help="print one JSON object")
    ingest.set_defaults(run=_bench_ingest)
    loop = benches.add_parser("loop", help="control-loop tick time at 1,000 services; decision store at 1M")
    loop.add_argument("--ticks", type=int, default=60)
    loop.add_argument("--decisions", type=int, default=1_000_000, help="decisions to fill the store with")
    loop.add_argument("--seed", type=int, default=1)
    loop.add_argument("--json", action="store_true", help="print one JSON object")
    loop.set_defaults(run=_bench_loop)
    _add_mqtt_bench(benches)
    checksum = benches.add_parser(
        "sim-checksum", help="fingerprints of seeded simulated runs (spans, per-second results, scores)"
    )
    checksum.add_argument("--scenario", action="append", default=[], help="scenario (default: every bundled)")
    checksum.add_argument("--seed", type=int, default=1)
    checksum.add_argument("--seconds", type=float, help="cut every scenario to this many seconds")
    checksum.add_argument("--jobs", type=int, default=0, help="runs at once (default: cores, at most 4)")
    checksum.add_argument("--json", action="store_true", help="print one JSON object")
    checksum.set_defaults(run=_bench_sim_checksum)


def _demo(args: argparse.Namespace) -> int:
    from bench.demo import run_demo

    return run_demo(seconds=args.seconds, traces_per_second=args.rate, seed=args.seed)


def _bench_ingest(args: argparse.Namespace) -> int:
    from bench.ingest import IngestBenchConfig, run_ingest_bench

    config = IngestBenchConfig(
        total_spans=args.spans,
        senders=args.senders,
        spans_per_request=args.spans_per_request,
        seed=args.seed,
    )
    return run_ingest_bench(config, as_json=args.json)


def _bench_loop(args: argparse.Namespace) -> int:
    from bench.loop import LoopBenchConfig, run_loop_bench

    config = LoopBenchConfig(ticks=args.ticks, decisions=args.decisions, seed=args.seed)
    return run_loop_bench(config, as_json=args.json)


def _bench_scenarios(args: argparse.Namespace) -> int:
    from bench.scenarios import (
        LiveSettings,
        default_jobs,
        resolve_scenarios,
        run_bench,
    )

    try:
        run_bench(
            resolve_scenarios(args.scenario),
            args.controllers,  # empty: each scenario's own sets, else static, hpa, builtin
            args.seed,
            Path(args.out),
            args.jobs or default_jobs(),
            as_json=args.json,
            live=LiveSettings(args.live_scale, args.live_seconds) if args.live else None,
        )
    except ValueError as error:
        print(f"controlplane bench: {error}", file=sys.stderr)
        return 2
    return 0


def _bench_sim_speed(args: argparse.Namespace) -> int:
    from bench.sim_speed import run_sim_speed

    return run_sim_speed(
        args.duration, args.rate, args.seed, as_json=args.json, trace_sampling=args.trace_sampling
    )


def _add_mqtt_bench(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bench = benches.add_parser("mqtt", help="node agents: action round trip, telemetry rate, broker restart")
    bench.add_argument("--agents", type=int, default=100)
    bench.add_argument("--actions", type=int, default=2000, help="actions in the round-trip phase")
    bench.add_argument(
        "--concurrency", type=int, default=1, help="actions in flight at once (the control loop: 1)"
    )
    bench.add_argument(
        "--restart-actions", type=int, default=500, help="actions in flight across the restart"
    )
    bench.add_argument("--telemetry-seconds", type=float, default=5.0, help="length of the telemetry phase")
    bench.add_argument("--broker", choices=["mosquitto", "embedded"], default="mosquitto")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(run=_bench_mqtt)


def _bench_mqtt(args: argparse.Namespace) -> int:
    from bench.mqtt import MqttBenchConfig, run_mqtt_bench

    config = MqttBenchConfig(
        agents=args.agents,
        actions=args.actions,
        concurrency=args.concurrency,
        restart_actions=args.restart_actions,
        telemetry_seconds=args.telemetry_seconds,
        broker=args.broker,
    )
    return run_mqtt_bench(config, as_json=args.json)


def _bench_sim_checksum(args: argparse.Namespace) -> int:
    from bench.scenarios import default_jobs
    from bench.sim_checksum import run_sim_checksum

    return run_sim_checksum(args.scenario, args.seed, args.seconds, args.jobs or default_jobs(), args.json)
