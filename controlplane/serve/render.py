"""How the CLI shows API answers: JSON documents, Graphviz DOT, and rich tables for people."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from rich.console import Console
from rich.table import Column, Table

from protos.controlplane.v1 import controlplane_pb2 as pb

_KIND_NAMES = {pb.NODE_KIND_SERVICE: "service", pb.NODE_KIND_EXTERNAL: "external"}


def stats_dict(stats: pb.WindowStats) -> dict[str, Any]:
    return {
        "window_seconds": round(stats.window_seconds, 3),
        "requests": stats.requests,
        "errors": stats.errors,
        "rate": round(stats.request_rate, 3),
        "error_rate": round(stats.error_rate, 4),
        "p50_ms": round(stats.p50_ms, 3),
        "p95_ms": round(stats.p95_ms, 3),
        "p99_ms": round(stats.p99_ms, 3),
        "mean_ms": round(stats.mean_ms, 3),
        "concurrency": round(stats.concurrency, 3),
    }


def graph_dict(graph: pb.GetGraphResponse) -> dict[str, Any]:
    """`{"nodes": [{name, kind, ...stats}], "edges": [{source, target, calls, errors, p50_ms, ...}]}`."""
    nodes = []
    for node in graph.nodes:
        entry = {"name": node.name, "kind": _KIND_NAMES.get(node.kind, "unknown")}
        if node.system:
            entry["system"] = node.system
        entry.update(stats_dict(node.stats))
        entry.update(requests_total=node.requests_total, errors_total=node.errors_total)
        nodes.append(entry)
    edges = []
    for edge in graph.edges:
        entry = {"source": edge.source, "target": edge.target}
        stats = stats_dict(edge.stats)
        entry["calls"] = stats.pop("requests")
        entry.update(stats)
        entry.update(calls_total=edge.calls_total, errors_total=edge.errors_total)
        edges.append(entry)
    return {
        "nodes": nodes,
        "edges": edges,
        "spans_accepted": graph.spans_accepted,
        "spans_rejected": graph.spans_rejected,
    }


def stats_list(response: pb.GetServiceStatsResponse) -> list[dict[str, Any]]:
    services = []
    for service in response.services:
        entry: dict[str, Any] = {"service": service.service, **stats_dict(service.stats)}
        entry.update(requests_total=service.requests_total, errors_total=service.errors_total)
        entry["operations"] = [
            {
                "operation": op.operation,
                **stats_dict(op.stats),
                "requests_total": op.requests_total,
                "errors_total": op.errors_total,
            }
            for op in service.operations
        ]
        services.append(entry)
    return services


def to_json(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=False)


def graph_dot(graph: pb.GetGraphResponse) -> str:
    """Graphviz DOT: services as boxes, external peers as cylinders, edges labelled with rate and p95."""
    lines = ["digraph services {", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for node in graph.nodes:
        shape = "cylinder" if node.kind == pb.NODE_KIND_EXTERNAL else "box"
        label = f"{node.name}\\n{node.stats.request_rate:.1f} req/s"
        lines.append(f"  {json.dumps(node.name)} [shape={shape}, label={json.dumps(label)}];")
    for edge in graph.edges:
        label = f"{edge.stats.request_rate:.1f}/s p95 {edge.stats.p95_ms:.1f}ms"
        if edge.stats.errors:
            label += f" err {edge.stats.error_rate:.1%}"
        lines.append(f"  {json.dumps(edge.source)} -> {json.dumps(edge.target)} [label={json.dumps(label)}];")
    lines.append("}")
    return "\n".join(lines)


def make_console() -> Console:
    """A console for tables; when piped, wide enough that service names are not cut."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=160)


def _stat_columns(table: Table) -> None:
    for column in ("req/s", "err %", "p50 ms", "p95 ms", "p99 ms", "in flight"):
        table.add_column(column, justify="right")


def _stat_cells(stats: pb.WindowStats) -> list[str]:
    return [
        f"{stats.request_rate:.1f}",
        f"{stats.error_rate * 100:.1f}",
        f"{stats.p50_ms:.2f}",
        f"{stats.p95_ms:.2f}",
        f"{stats.p99_ms:.2f}",
        f"{stats.concurrency:.2f}",
    ]


def print_graph(graph: pb.GetGraphResponse, console: Console | None = None) -> None:
    """The graph as two tables: nodes, then edges."""
    console = console or make_console()
    nodes = Table(title=f"Services ({len(graph.nodes)})")
    nodes.add_column("service")
    nodes.add_column("kind")
    _stat_columns(nodes)
    nodes.add_column("total", justify="right")
    for node in graph.nodes:
        kind = _KIND_NAMES.get(node.kind, "?") + (f" ({node.system})" if node.system else "")
        nodes.add_row(node.name, kind, *_stat_cells(node.stats), str(node.requests_total))
    edges = Table(title=f"Calls ({len(graph.edges)})")
    edges.add_column("caller")
    edges.add_column("callee")
    _stat_columns(edges)
    edges.add_column("total", justify="right")
    for edge in graph.edges:
        edges.add_row(edge.source, edge.target, *_stat_cells(edge.stats), str(edge.calls_total))
    console.print(nodes)
    console.print(edges)
    console.print(f"spans accepted {graph.spans_accepted:,}, rejected {graph.spans_rejected:,}")


def print_stats(response: pb.GetServiceStatsResponse, console: Console | None = None) -> None:
    console = console or make_console()
    table = Table(title="Service statistics")
    table.add_column("service / operation")
    _stat_columns(table)
    table.add_column("total", justify="right")
    for service in response.services:
        table.add_row(
            f"[bold]{service.service}[/bold]", *_stat_cells(service.stats), str(service.requests_total)
        )
        for op in service.operations:
            table.add_row(f"  {op.operation}", *_stat_cells(op.stats), str(op.requests_total))
    console.print(table)


TAXONOMY_COLUMNS = ("locus", "strategy", "dynamics", "actions", "objectives", "telemetry", "evidence")


def controller_dicts(response: pb.ListControllersResponse) -> list[dict[str, Any]]:
    """Controllers as plain dicts (the `--json` form); enum names shortened to their last word."""
    return [
        json_format.MessageToDict(
            info, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        | {"mode": pb.ControllerMode.Name(info.mode).removeprefix("CONTROLLER_MODE_").lower()}
        for info in response.controllers
    ]


def print_controllers(rows: list[dict[str, Any]], console: Console | None = None, title: str = "") -> None:
    """A table of controllers: taxonomy, and (when read from a server) mode and health."""
    console = console or make_console()
    table = Table(title=title or f"Controllers ({len(rows)})")
    table.add_column("name")
    with_state = any("mode" in row for row in rows)
    if with_state:
        table.add_column("mode")
        table.add_column("health")
    for column in TAXONOMY_COLUMNS:
        table.add_column(column)
    for row in rows:
        taxonomy = row.get("taxonomy", {})
        cells = [row["name"]]
        if with_state:
            health = "quarantined" if row.get("quarantined") else ("ok" if row.get("healthy") else "faulty")
            faults = int(row.get("faults_total", 0))
            cells += [row.get("mode", ""), f"{health} ({faults} faults)" if faults else health]
        for column in TAXONOMY_COLUMNS:
            value = taxonomy.get(column, "")
            cells.append(", ".join(value) if isinstance(value, list) else str(value))
        table.add_row(*cells)
    console.print(table)


def decision_dict(info: pb.DecisionInfo) -> dict[str, Any]:
    document = json_format.MessageToDict(info, preserving_proto_field_name=True)
    document["status"] = pb.DecisionStatus.Name(info.status).removeprefix("DECISION_STATUS_").lower()
    document["id"] = info.id
    document["tick"] = info.tick
    return document


def decision_line(info: pb.DecisionInfo) -> str:
    """One line per decision for people: id, time, status, controller, action, why."""
    status = pb.DecisionStatus.Name(info.status).removeprefix("DECISION_STATUS_").lower()
    settings = {
        key: value
        for key, value in json_format.MessageToDict(info.action).items()
        if key not in ("action", "target", "reason", "evidence")
    }
    # Struct numbers are doubles: show whole ones (replicas, limits) as integers.
    described = "".join(
        f", {key}={int(value) if isinstance(value, float) and value.is_integer() else value}"
        for key, value in settings.items()
    )
    action = f"{info.action_kind}({info.target}{described})"
    reason_value = info.action.fields.get("reason")
    reason = reason_value.string_value if reason_value is not None else ""
    return f"#{info.id} {status:<10} {info.controller}: {action} — {info.why}" + (
        f" ({reason})" if reason else ""
    )


def print_figures(title: str, figures: dict[str, Any], as_json: bool = False) -> None:
    """A benchmark's figures: one JSON object with `as_json`, else a two-column table."""
    if as_json:
        print(json.dumps(figures))
        return
    table = Table("metric", Column("value", justify="right"), title=title)
    for key, value in figures.items():
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        table.add_row(key, f"{value:,}" if is_number else str(value))
    Console().print(table)
