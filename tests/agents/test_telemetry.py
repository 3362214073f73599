"""Agents' telemetry merges into the plane's live model, next to what OTLP brings."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from actuators.memory import InMemoryActuator
from agents.node import AgentConfig, NodeAgent
from agents.plane import CentralConfig, MqttActuator
from telemetry import TelemetryModel
from tests.agents.conftest import agent_settings, central_settings, run, telemetry_context


def _otlp_request(service: str, spans: int) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name").value.string_value = service
    scope = resource.scope_spans.add()
    now = time.time_ns()
    for _ in range(spans):
        scope.spans.add(
            trace_id=os.urandom(16), span_id=os.urandom(8), name="GET /", kind=Span.SPAN_KIND_SERVER,
            start_time_unix_nano=now - 4_000_000, end_time_unix_nano=now,
        )  # fmt: skip
    return request


def test_agent_telemetry_merges_with_otlp_into_one_model(broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        model = TelemetryModel()
        model.ingest(_otlp_request("api", 5))
        plane = MqttActuator(CentralConfig(central_settings(broker)), telemetry_context(model))
        agents = [
            NodeAgent(
                AgentConfig(node, agent_settings(broker, node), tmp_path, telemetry_seconds=0.05),
                InMemoryActuator(),
            )
            for node in ("node-a", "node-b")
        ]
        await plane.start()
        for agent in agents:
            await agent.start()
        try:
            await plane.wait_for_nodes(["node-a", "node-b"], 10)
            agents[0].record("api", "GET /", [10.0] * 7, errors=1)
            agents[1].record("api", "GET /", [20.0] * 3, errors=2)
            agents[1].record("worker", "job", [100.0])
            deadline = time.monotonic() + 10
            while plane.telemetry_reports < 2:
                assert time.monotonic() < deadline, "telemetry did not arrive"
                await asyncio.sleep(0.02)
            stats = {node.name: node.stats for node in model.snapshot().nodes}
            assert stats["api"].requests == 5 + 7 + 3
            assert stats["api"].errors == 3
            assert stats["worker"].requests == 1 and 99 <= stats["worker"].p50_ms <= 101
            # The local model of each agent (what its own controllers see) holds only its own traffic.
            local = {node.name: node.stats.requests for node in agents[0].model.snapshot().nodes}
            assert local == {"api": 7}
            # Deltas: a report carries what was recorded since the previous one, so nothing counts twice.
            await asyncio.sleep(0.2)
            assert {node.name: node.stats.requests for node in model.snapshot().nodes}["api"] == 15
            assert plane.telemetry_gaps == 0
        finally:
            for agent in agents:
                await agent.stop()
            await plane.stop()

    run(scenario())
