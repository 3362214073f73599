"""The `controlplane` command: serve, query the graph and statistics, run the demo and the benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

import grpc

from controlplane.config import Config
from controlplane.render import graph_dict, graph_dot, print_graph, print_stats, stats_list, to_json
from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:4317"


def _serve(args: argparse.Namespace) -> int:
    from controlplane.server import ControlPlaneServer

    config = Config.load(args.config).with_server(
        otlp_grpc=args.otlp_grpc, otlp_http=args.otlp_http, api=args.api
    )
    server = ControlPlaneServer(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(server.serve_forever())
    return 0


def _stub(target: str) -> pb_grpc.ControlPlaneStub:
    return pb_grpc.ControlPlaneStub(grpc.insecure_channel(target))


def _graph(args: argparse.Namespace) -> int:
    graph = _stub(args.target).GetGraph(pb.GetGraphRequest(window_seconds=args.window), timeout=args.timeout)
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
    response = _stub(args.target).GetServiceStats(request, timeout=args.timeout)
    if args.json:
        print(to_json(stats_list(response)))
    else:
        print_stats(response)
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
    serve.set_defaults(run=_serve)

    for name, run, text in (
        ("graph", _graph, "print the service dependency graph"),
        ("stats", _stats, "print per-service and per-operation statistics"),
    ):
        query = commands.add_parser(name, help=text)
        query.add_argument("--target", default=DEFAULT_TARGET, help="control plane API address")
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

    demo = commands.add_parser("demo", help="serve, drive generated traces at it, and show the live graph")
    demo.add_argument("--seconds", type=float, default=20.0)
    demo.add_argument("--rate", type=float, default=100.0, help="traces per second")
    demo.add_argument("--seed", type=int, default=1)
    demo.set_defaults(run=_demo)

    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True)
    ingest = benches.add_parser("ingest", help="OTLP/gRPC ingest throughput, Export latency and memory")
    ingest.add_argument("--spans", type=int, default=10_000_000, help="spans to send in all")
    ingest.add_argument("--senders", type=int, default=2, help="load-generator processes")
    ingest.add_argument("--spans-per-request", type=int, default=1000)
    ingest.add_argument("--seed", type=int, default=1)
    ingest.add_argument("--json", action="store_true", help="print one JSON object")
    ingest.set_defaults(run=_bench_ingest)
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
