"""`controlplane bench ingest`: sustained OTLP/gRPC ingest throughput, Export latency and memory.

The control plane runs in a child process pinned to one CPU. Sender processes, pinned to the other CPU(s),
serialize a pool of generated requests once and re-send them over loopback gRPC with fresh trace ids
(`with_fresh_traces`), so every span is new to the model and the load generator costs next to nothing.
The parent samples the server's `spans_accepted` through the API and its RSS and CPU time from /proc, and
reports sustained spans/s (after a 10 % warm-up), Export latency percentiles and RSS at 2M and 10M spans.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import os
import queue
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn

from bench.percentiles import percentile
from bench.tracegen import TraceGenerator, layered_topology, marker_of, with_fresh_traces
from controlplane.serve.render import print_figures
from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc
from telemetry.otlp_status import EXPORT_METHOD

TARGET_SPANS_PER_SECOND = 200_000
POOL_SIZE = 32  # distinct pre-serialized requests per sender
IN_FLIGHT = 2  # Exports each sender keeps outstanding
SAMPLE_SECONDS = 0.5
WARMUP_SHARE = 0.1
RETRY_SLEEP_SECONDS = 0.05
_parse_response = ExportTraceServiceResponse.FromString
_GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


@dataclass(frozen=True, slots=True)
class IngestBenchConfig:
    """What to send: `total_spans` in all, from `senders` processes, about `spans_per_request` per Export."""

    total_spans: int = 10_000_000
    senders: int = 2
    spans_per_request: int = 1000
    seed: int = 1

    def __post_init__(self) -> None:
        if min(self.total_spans, self.senders, self.spans_per_request) < 1:
            raise ValueError("--spans, --senders and --spans-per-request must be positive")


def _serve(conn: Connection, cpus: set[int] | None) -> None:
    """Server process: the control plane with default settings on loopback ports, until SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates its children
    if cpus:
        os.sched_setaffinity(0, cpus)  # before gRPC starts its threads, so that they inherit it
    from controlplane.serve.config import Config
    from controlplane.serve.server import ControlPlaneServer

    async def serve() -> None:
        address = "127.0.0.1:0"
        store = os.path.join(tempfile.mkdtemp(prefix="controlplane-bench-"), "decisions.db")
        config = Config().with_server(otlp_grpc=address, otlp_http=address, api=address, decision_store=store)
        server = ControlPlaneServer(config)
        ports = await server.start()
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        conn.send(ports.otlp_grpc)  # the API shares this port
        await stopping.wait()
        await server.stop(0)

    asyncio.run(serve())


def _send(index: int, config: IngestBenchConfig, target: str, claimed: Any, go: Any, results: Any) -> None:
    """Sender process: build the request pool, report ready, wait for `go`, send until `claimed` is full."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    topology = layered_topology(service_count=24, depth=6, seed=config.seed)
    generator = TraceGenerator(topology, seed=config.seed * 1000 + index)
    pool = []
    for _ in range(POOL_SIZE):
        request = generator.request(min_spans=config.spans_per_request)
        spans = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        pool.append((request.SerializeToString(), marker_of(request), spans))
    results.put(("ready", index))
    go.wait()
    results.put(("done", asyncio.run(_send_pool(index, target, pool, claimed, config.total_spans))))


async def _send_pool(
    index: int, target: str, pool: list[tuple[bytes, bytes, int]], claimed: Any, total: int
) -> dict[str, Any]:
    report: dict[str, Any] = {"latencies_ms": [], "retries": 0, "sent": 0}
    cpu_started = time.process_time()
    async with grpc.aio.insecure_channel(target, options=_GRPC_OPTIONS) as channel:
        export = channel.unary_unary(EXPORT_METHOD, response_deserializer=_parse_response)

        async def worker(first: int) -> None:
            for number in itertools.count(first, IN_FLIGHT):
                body, marker, spans = pool[number % len(pool)]
                with claimed.get_lock():  # the shared budget: stop once total_spans are claimed
                    if claimed.value >= total:
                        return
                    claimed.value += spans
                # A marker unique per send (sender, number) makes every trace id new to the model.
                body = with_fresh_traces(body, marker, ((index + 1) << 56 | number).to_bytes(8, "big"))
                while True:
                    sent_at = time.perf_counter()
                    try:
                        await export(body, timeout=60)
                        break
                    except grpc.aio.AioRpcError as error:
                        if error.code() != grpc.StatusCode.UNAVAILABLE:
                            raise
                        report["retries"] += 1
                        await asyncio.sleep(RETRY_SLEEP_SECONDS)
                report["latencies_ms"].append((time.perf_counter() - sent_at) * 1000)
                report["sent"] += spans

        await asyncio.gather(*(worker(first) for first in range(IN_FLIGHT)))
    report.update(cpu_seconds=time.process_time() - cpu_started, ended=time.monotonic())
    return report


def _proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        kb = next(line.split()[1] for line in status if line.startswith("VmRSS:"))
    return round(int(kb) / 1024, 1)


def _proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _label(spans: int) -> str:
    for unit, size in (("m", 1_000_000), ("k", 1_000)):
        if spans >= size and spans % size == 0:
            return f"{spans // size}{unit}"
    return str(spans)


def _next_message(results: Any, processes: list[BaseProcess]) -> tuple[str, Any] | None:
    """A sender's message, or None after SAMPLE_SECONDS; raises RuntimeError if a child process failed."""
    try:
        return results.get(timeout=SAMPLE_SECONDS)
    except queue.Empty:
        for process in processes:  # the server (first) must live; senders may only end well
            if process.exitcode not in (None, 0) or (process is processes[0] and not process.is_alive()):
                raise RuntimeError(f"{process.name} exited with code {process.exitcode}") from None
        return None


def _start(context: Any, name: str, target: Any, *args: Any) -> BaseProcess:
    process = context.Process(target=target, name=name, args=args, daemon=True)
    process.start()
    return process


def _stop(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


def measure(config: IngestBenchConfig) -> dict[str, Any]:
    """Run the benchmark in child processes and return its results (the `--json` object)."""
    context = mp.get_context("spawn")
    original_affinity = os.sched_getaffinity(0)
    cpus = sorted(original_affinity)
    server_cpus, sender_cpus = ({cpus[0]}, set(cpus[1:])) if len(cpus) > 1 else (None, set(cpus))
    processes: list[BaseProcess] = []
    try:
        os.sched_setaffinity(0, sender_cpus)  # this process and the senders it starts (they inherit it)
        receive, send = context.Pipe(duplex=False)
        processes.append(_start(context, "bench-server", _serve, send, server_cpus))
        if not receive.poll(60):
            raise RuntimeError("the control plane did not start within 60 s")
        target = f"127.0.0.1:{receive.recv()}"
        claimed, go, results = context.Value("q", 0), context.Event(), context.Queue()
        for index in range(config.senders):
            args = (index, config, target, claimed, go, results)
            processes.append(_start(context, f"bench-sender-{index}", _send, *args))
        with grpc.insecure_channel(target) as channel:  # closed before the server goes away
            return _drive(config, pb_grpc.ControlPlaneStub(channel), processes, go, results)
    finally:
        _stop(processes)
        os.sched_setaffinity(0, original_affinity)


def _drive(config: IngestBenchConfig, stub: Any, processes: list[BaseProcess], go: Any, results: Any) -> dict:
    """Start the senders together, sample the server until they are done, and sum up."""
    server, samples, rss, reports = processes[0], [], {}, []
    checkpoints = (min(2_000_000, config.total_spans // 5), min(10_000_000, config.total_spans))
    columns = (*Progress.get_default_columns(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("preparing requests", total=config.total_spans)
        for _ in range(config.senders):  # "ready" once its request pool is serialized
            while _next_message(results, processes) is None:
                pass
        cpu_started, go_at = _proc_cpu_seconds(server.pid), time.monotonic()
        go.set()
        while len(reports) < config.senders:
            message = _next_message(results, processes)
            if message is not None:
                reports.append(message[1])
            accepted = stub.GetGraph(pb.GetGraphRequest(), timeout=30).spans_accepted
            samples.append((time.monotonic(), accepted))
            for checkpoint in checkpoints:
                if accepted >= checkpoint and checkpoint not in rss:
                    rss[checkpoint] = _proc_rss_mb(server.pid)
            rate = accepted / (samples[-1][0] - go_at)
            progress.update(task, completed=accepted, description=f"ingesting {rate:,.0f} spans/s")
        server_cpu = _proc_cpu_seconds(server.pid) - cpu_started
    ended = max(report["ended"] for report in reports)  # when the last Export was answered
    seconds, total = ended - go_at, samples[-1][1]
    warm_at, warm = next(sample for sample in samples if sample[1] >= WARMUP_SHARE * total)
    sustained = (total - warm) / (ended - warm_at) if ended > warm_at else total / seconds
    latencies = [latency for report in reports for latency in report["latencies_ms"]]
    sender_cpu = sum(report["cpu_seconds"] for report in reports)
    sender_cpu_count = len(os.sched_getaffinity(0))  # this process runs on the senders' CPUs
    early, late = (rss.get(checkpoint) for checkpoint in checkpoints)
    growth = 100 * (late - early) / early if early and late else None
    return {
        "spans_per_second": round(sustained),
        "spans_per_second_overall": round(total / seconds),
        "export_p50_ms": round(percentile(latencies, 0.50), 2) if latencies else None,
        "export_p99_ms": round(percentile(latencies, 0.99), 2) if latencies else None,
        f"rss_mb_{_label(checkpoints[0])}": early,
        f"rss_mb_{_label(checkpoints[1])}": late,
        "rss_growth_pct": None if growth is None else round(growth, 1),
        "spans_total": total,
        "spans_sent": sum(report["sent"] for report in reports),
        "seconds": round(seconds, 2),
        "server_cpu_seconds": round(server_cpu, 2),
        "spans_per_cpu_second": round(total / server_cpu) if server_cpu else None,
        "sender_cpu_seconds": round(sender_cpu, 2),
        "sender_cpu_share": round(sender_cpu / (seconds * sender_cpu_count), 3),  # of the CPUs left to them
        "retries_unavailable": sum(report["retries"] for report in reports),
        "senders": config.senders,
        "spans_per_request": config.spans_per_request,
        "target_spans_per_second": TARGET_SPANS_PER_SECOND,
        "meets_target": sustained >= TARGET_SPANS_PER_SECOND,
        "rss_within_10pct": growth is not None and abs(growth) <= 10,
    }


def run_ingest_bench(config: IngestBenchConfig, as_json: bool = False) -> int:
    """Run the benchmark and print a table (or one JSON object); the exit code is 0 unless it failed."""
    try:
        result = measure(config)
    except RuntimeError as error:
        print(f"controlplane bench ingest: {error}", file=sys.stderr)
        return 1
    print_figures("controlplane bench ingest", result, as_json)
    return 0
