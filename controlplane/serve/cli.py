"""The `controlplane` command: `serve`, and the queries of a running plane (graph, stats, controllers,
decisions, mode).

Every other subcommand (`bench`, `demo`, `agent`, `pipelive`, or a plugin's) registers through the
`controlplane.commands` entry points: each names a function `add_commands(subparsers)` that adds its
parsers, with `run` set to a function of the parsed arguments returning the exit status. So this module
imports no benchmark, agent or service, and a plugin's command works exactly as a built-in one.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

import grpc

from controlplane.serve.config import Config, checked_actuator_table
from controlplane.serve.render import (
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
COMMANDS_ENTRY_POINT_GROUP = "controlplane.commands"
log = logging.getLogger(__name__)


def _serve(args: argparse.Namespace) -> int:
    from controlplane.serve.server import ControlPlaneServer

    config = Config.load(args.config).with_server(
        otlp_grpc=args.otlp_grpc, otlp_http=args.otlp_http, api=args.api
    )
    if args.mqtt or args.mqtt_broker:
        mqtt = {**config.mqtt, "enabled": True, **({"broker": args.mqtt_broker} if args.mqtt_broker else {})}
        config = dataclasses.replace(config, mqtt=checked_actuator_table("mqtt", mqtt, "--mqtt"))
    server = ControlPlaneServer(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(server.serve_forever())
    return 0


# Pages of GetGraph and GetServiceStats stay near 1 MiB; a server configured otherwise still gets through.
CHANNEL_OPTIONS = (("grpc.max_receive_message_length", 64 * 1024 * 1024),)


def _channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to `--target`; TLS when `--tls-ca` names the CA (PEM) that signed the server certificate."""
    if getattr(args, "tls_ca", None):
        with open(args.tls_ca, "rb") as handle:
            credentials = grpc.ssl_channel_credentials(root_certificates=handle.read())
        return grpc.secure_channel(args.target, credentials, options=CHANNEL_OPTIONS)
    return grpc.insecure_channel(args.target, options=CHANNEL_OPTIONS)


def _stub(args: argparse.Namespace) -> pb_grpc.ControlPlaneStub:
    return pb_grpc.ControlPlaneStub(_channel(args))


def fetch_graph(stub: pb_grpc.ControlPlaneStub, window: float, timeout: float) -> pb.GetGraphResponse:
    """The whole graph, page by page (each page within `timeout`), as one response."""
    nodes: list[pb.Node] = []
    edges: list[pb.Edge] = []
    token = ""
    while True:
        page = stub.GetGraph(pb.GetGraphRequest(window_seconds=window, page_token=token), timeout=timeout)
        nodes.extend(page.nodes)
        edges.extend(page.edges)
        token = page.next_page_token
        if not token:
            graph = pb.GetGraphResponse()
            graph.CopyFrom(page)
            del graph.nodes[:], graph.edges[:]
            graph.nodes.extend(nodes)
            graph.edges.extend(edges)
            return graph


def fetch_stats(
    stub: pb_grpc.ControlPlaneStub, request: pb.GetServiceStatsRequest, timeout: float
) -> pb.GetServiceStatsResponse:
    """Every page of a GetServiceStats listing (each within `timeout`), as one response."""
    stats = pb.GetServiceStatsResponse()
    while True:
        page = stub.GetServiceStats(request, timeout=timeout)
        stats.services.extend(page.services)
        stats.total_services = page.total_services
        if not page.next_page_token:
            return stats
        request.page_token = page.next_page_token


def _graph(args: argparse.Namespace) -> int:
    graph = fetch_graph(_stub(args), args.window, args.timeout)
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
    response = fetch_stats(_stub(args), request, args.timeout)
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
        from controlplane import default_registry

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="controlplane",
        description="An adaptive control plane for microservices, driven by OpenTelemetry traces.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the control plane (OTLP receivers and the gRPC API)")
    serve.add_argument("--config", help="TOML file ([server], [model], [guardrails], [controllers], [mqtt])")
    serve.add_argument(
        "--otlp-grpc", metavar="ADDR", help="OTLP/gRPC listen address (default 127.0.0.1:4317)"
    )
    serve.add_argument(
        "--otlp-http", metavar="ADDR", help="OTLP/HTTP listen address (default 127.0.0.1:4318)"
    )
    serve.add_argument("--api", metavar="ADDR", help="gRPC API address; may equal --otlp-grpc (the default)")
    serve.add_argument("--mqtt", action="store_true", help="enable node agents over MQTT ([mqtt] enabled)")
    serve.add_argument(
        "--mqtt-broker", metavar="URL", help="MQTT broker (mqtt:// or mqtts://); default: embedded, 127.0.0.1"
    )
    serve.set_defaults(run=_serve)

    def add_target(command: argparse.ArgumentParser, default: str | None = DEFAULT_TARGET) -> None:
        command.add_argument(
            "--target", default=default, help=f"control plane API address (default {DEFAULT_TARGET})"
        )
        command.add_argument("--tls-ca", help="CA certificate (PEM) to verify a TLS server")
        command.add_argument("--timeout", type=float, default=10.0, help="RPC deadline in seconds")

    for name, run, text in (
        ("graph", _graph, "print the service dependency graph"),
        ("stats", _stats, "print per-service and per-operation statistics"),
    ):
        query = commands.add_parser(name, help=text)
        add_target(query)
        query.add_argument("--window", type=float, default=0.0, help="window in seconds (0: the server's)")
        # (--timeout, from add_target, bounds each page; a large graph is fetched in several.)
        query.add_argument("--json", action="store_true", help="print JSON")
        if name == "graph":
            query.add_argument("--dot", action="store_true", help="print Graphviz DOT")
        else:
            query.add_argument(
                "--service", action="append", default=[], help="only this service (repeatable)"
            )
        query.set_defaults(run=run)

    controllers = commands.add_parser("controllers", help="the controllers and their taxonomy")
    # Without --target: the installed plugins, no server needed.
    controllers.add_argument("--target", help="control plane API address (default: list installed plugins)")
    controllers.add_argument("--tls-ca", help="CA certificate (PEM) to verify a TLS server")
    controllers.add_argument("--timeout", type=float, default=10.0, help="RPC deadline in seconds")
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

    add_plugin_commands(commands)
    return parser


def add_plugin_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Let every `controlplane.commands` entry point add its subcommands; a broken one is reported."""
    for entry in sorted(entry_points(group=COMMANDS_ENTRY_POINT_GROUP), key=lambda item: item.name):
        try:
            entry.load()(commands)
        except Exception as error:  # one broken plugin must not take the command line down
            print(f"controlplane: command plugin {entry.name} failed to load: {error}", file=sys.stderr)


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
