"""Telemetry: OTLP receivers, span linking, the dependency graph and its sliding-window statistics."""

from telemetry.model import IngestResult, ModelConfig, TelemetryModel
from telemetry.snapshot import EdgeSnapshot, GraphSnapshot, NodeSnapshot, OperationSnapshot
from telemetry.windows import WindowSummary

__all__ = [
    "EdgeSnapshot",
    "GraphSnapshot",
    "IngestResult",
    "ModelConfig",
    "NodeSnapshot",
    "OperationSnapshot",
    "TelemetryModel",
    "WindowSummary",
]
