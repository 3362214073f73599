"""The `controlplane` command: serve, query the graph and statistics, run the demo and the benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from controlplane.config import Config
from controlplane.mqtt import cli as mqtt_cli
from controlplane.render import (
    controller_dicts,
    decision_dict,
    decision_line,
    graph_dict,
    graph_dot,
    print_controllers,
    print_graph,
    print_stats,
    stats_list,
    to_json,
)
from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:4317"


def _serve(args: argparse.Namespace) -> int:
    from controlplane.server import ControlPlaneServer

    config = Config.load(args.config).with_server(
        otlp_grpc=args.otlp_grpc, otlp_http=args.otlp_http, api=args.api
    )
    config = mqtt_cli.serve_config(config, args)
    server = ControlPlaneServer(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(server.serve_forever())
    return 0


def _channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to `--target`; TLS when `--tls-ca` names the CA (PEM) that signed the server certificate."""
    if getattr(args, "tls_ca", None):
        with open(args.tls_ca, "rb") as handle:
            credentials = grpc.ssl_channel_credentials(root_certificates=handle.read())
        return grpc.secure_channel(args.target, credentials)
    return grpc.insecure_channel(args.target)


def _stub(args: argparse.Namespace) -> pb_grpc.ControlPlaneStub:
    return pb_grpc.ControlPlaneStub(_channel(args))


def _graph(args: argparse.Namespace) -> int:
    graph = _stub(args).GetGraph(pb.GetGraphRequest(window_seconds=args.window), timeout=args.timeout)
    if args.json:
        print(to_json(graph_dict(graph)))
    elif args.dot:
        print(graph_dot(graph))
    else:
        print_graph(graph)
    return 0


def _stats(args: argparse.Namespace) -> int:
    request = pb.GetServiceStatsRequest(
        services=args.service, include_operations=True, window_seconds=args.window
    )
    response = _stub(args).GetServiceStats(request, timeout=args.timeout)
    if args.json:
        print(to_json(stats_list(response)))
    else:
        print_stats(response)
    return 0


def _controllers(args: argparse.Namespace) -> int:
    if args.target:
        rows = controller_dicts(
            _stub(args).ListControllers(pb.ListControllersRequest(), timeout=args.timeout)
        )
        title = f"Controllers at {args.target}"
    else:
        from controlplane.registry import default_registry

        default_registry.discover()
        rows = [
            {"name": name, "origin": default_registry.origin(name), **_class_row(default_registry.get(name))}
            for name in default_registry.names()
        ]
        for name, error in sorted(default_registry.load_errors.items()):
            print(f"controlplane: plugin {name} failed to load: {error}", file=sys.stderr)
        title = "Installed controllers"
    if args.json:
        print(to_json(rows))
    else:
        print_controllers(rows, title=title)
    return 0


def _class_row(cls: type) -> dict:
    return {
        "taxonomy": cls.taxonomy.as_dict(),
        "period_seconds": cls.period_seconds,
        "parameters": cls.parameter_defaults(),
        "description": cls.description,
    }


def _decisions(args: argparse.Namespace) -> int:
    stub = _stub(args)
    if args.watch:
        request = pb.WatchDecisionsRequest(
            after_id=args.after,
            from_start=args.after == 0 and args.from_start,
            service=args.service or "",
            controller=args.controller or "",
        )
        for info in stub.WatchDecisions(request):
            print(json.dumps(decision_dict(info)) if args.json else decision_line(info), flush=True)
        return 0
    status = pb.DecisionStatus.Value(f"DECISION_STATUS_{args.status.upper()}") if args.status else 0
    request = pb.ListDecisionsRequest(
        service=args.service or "",
        controller=args.controller or "",
        action_kind=args.action or "",
        status=status,
        since_unix=args.since or 0.0,
        until_unix=args.until or 0.0,
        page_size=args.limit,
        page_token=args.page_token or "",
    )
    response = stub.ListDecisions(request, timeout=args.timeout)
    if args.json:
        print(
            to_json(
                {
                    "decisions": [decision_dict(info) for info in response.decisions],
                    "next_page_token": response.next_page_token,
                }
            )
        )
    else:
        for info in response.decisions:
            print(decision_line(info))
        if response.next_page_token:
            print(f"(more: --page-token {response.next_page_token})")
    return 0


def _mode(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("CONTROLPLANE_API_TOKEN", "")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    request = pb.SetControllerModeRequest(
        name=args.controller,
        mode=pb.ControllerMode.Value(f"CONTROLLER_MODE_{args.mode.upper()}"),
        promote=args.promote,
    )
    info = _stub(args).SetControllerMode(request, timeout=args.timeout, metadata=metadata)
    print(
        f"{info.name}: {pb.ControllerMode.Name(info.mode).removeprefix('CONTROLLER_MODE_').lower()}"
        f"{' (promoted)' if info.promoted else ''}"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from controlplane.demo import run_demo

    return run_demo(seconds=args.seconds, traces_per_second=args.rate, seed=args.seed)


def _bench_ingest(args: argparse.Namespace) -> int:
    from controlplane.bench_ingest import IngestBenchConfig, run_ingest_bench

    config = IngestBenchConfig(
        total_spans=args.spans,
        senders=args.senders,
        spans_per_request=args.spans_per_request,
        seed=args.seed,
    )
    return run_ingest_bench(config, as_json=args.json)


def _bench_loop(args: argparse.Namespace) -> int:
    from controlplane.bench_loop import LoopBenchConfig, run_loop_bench

    config = LoopBenchConfig(ticks=args.ticks, decisions=args.decisions, seed=args.seed)
    return run_loop_bench(config, as_json=args.json)


def _bench_scenarios(args: argparse.Namespace) -> int:
    from controlplane.bench_scenarios import (
        LiveSettings,
        default_jobs,
        resolve_scenarios,
        run_bench,
        sets_or_default,
    )

    try:
        run_bench(
            resolve_scenarios(args.scenario),
            sets_or_default(args.controllers),
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
    from controlplane.bench_sim_speed import run_sim_speed

    return run_sim_speed(
        args.duration, args.rate, args.seed, as_json=args.json, trace_sampling=args.trace_sampling
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="controlplane", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the control plane (OTLP receivers and the gRPC API)")
    serve.add_argument("--config", help="TOML file with [server] and [model] settings")
    serve.add_argument(
        "--otlp-grpc", metavar="ADDR", help="OTLP/gRPC listen address (default 127.0.0.1:4317)"
    )
    serve.add_argument(
        "--otlp-http", metavar="ADDR", help="OTLP/HTTP listen address (default 127.0.0.1:4318)"
    )
    serve.add_argument("--api", metavar="ADDR", help="gRPC API address; may equal --otlp-grpc (the default)")
    mqtt_cli.add_serve_arguments(serve)
    serve.set_defaults(run=_serve)
    mqtt_cli.add_agent_command(commands)

    for name, run, text in (
        ("graph", _graph, "print the service dependency graph"),
        ("stats", _stats, "print per-service and per-operation statistics"),
    ):
        query = commands.add_parser(name, help=text)
        query.add_argument("--target", default=DEFAULT_TARGET, help="control plane API address")
        query.add_argument("--tls-ca", help="CA certificate (PEM) to verify a TLS server")
        query.add_argument("--window", type=float, default=0.0, help="window in seconds (0: the server's)")
        query.add_argument("--timeout", type=float, default=10.0, help="RPC deadline in seconds")
        query.add_argument("--json", action="store_true", help="print JSON")
        if name == "graph":
            query.add_argument("--dot", action="store_true", help="print Graphviz DOT")
        else:
            query.add_argument(
                "--service", action="append", default=[], help="only this service (repeatable)"
            )
        query.set_defaults(run=run)

    def add_target(command: argparse.ArgumentParser, required: bool = True) -> None:
        command.add_argument("--target", required=required, help="control plane API address")
        command.add_argument("--tls-ca", help="CA certificate (PEM) to verify a TLS server")
        command.add_argument("--timeout", type=float, default=10.0, help="RPC deadline in seconds")

    controllers = commands.add_parser("controllers", help="the controllers and their taxonomy")
    add_target(controllers, required=False)
    controllers.add_argument("--json", action="store_true", help="print JSON")
    controllers.set_defaults(run=_controllers)

    decisions = commands.add_parser("decisions", help="what was decided, and why")
    add_target(decisions)
    decisions.add_argument("--service")
    decisions.add_argument("--controller")
    decisions.add_argument("--action", help="scale, place, route, isolate, remediate or reconfigure_pipeline")
    decisions.add_argument("--status", choices=["applied", "shadow", "rejected", "superseded", "failed"])
    decisions.add_argument("--since", type=float, help="unix time")
    decisions.add_argument("--until", type=float, help="unix time")
    decisions.add_argument("--limit", type=int, default=50, help="page size (1..1000)")
    decisions.add_argument("--page-token")
    decisions.add_argument("--watch", action="store_true", help="stream new decisions until interrupted")
    decisions.add_argument("--after", type=int, default=0, help="with --watch: resume after this decision id")
    decisions.add_argument("--from-start", action="store_true", help="with --watch: start from the first")
    decisions.add_argument("--json", action="store_true", help="print JSON")
    decisions.set_defaults(run=_decisions)

    mode = commands.add_parser("mode", help="set a controller active, shadow or disabled")
    mode.add_argument("controller")
    mode.add_argument("mode", choices=["active", "shadow", "disabled"])
    mode.add_argument("--promote", action="store_true", help="let a learning controller's decisions apply")
    mode.add_argument("--token", help="bearer token (default: $CONTROLPLANE_API_TOKEN)")
    add_target(mode)
    mode.set_defaults(run=_mode)

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
        help="controller set: static, hpa, builtin, or installed controllers joined by + (repeatable)",
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
    benches = bench.add_subparsers(dest="bench", required=False, metavar="{ingest,loop,sim-speed}")
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
    mqtt_cli.add_bench_command(benches)
    from services.pipelive import cli as pipelive_cli  # torch loads only when a pipelive command runs

    pipelive_cli.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except grpc.RpcError as error:
        print(f"controlplane: {error.code().name}: {error.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1
    except (OSError, ValueError) as error:
        print(f"controlplane: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
