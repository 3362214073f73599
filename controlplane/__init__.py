"""controlplane: an adaptive control plane for microservices, driven by OpenTelemetry traces.

The public API for controller authors: everything a built-in controller uses is importable from here.
"""

from controlplane.actions import (
    Action,
    Isolate,
    IsolationMechanism,
    Layer,
    Place,
    Proposal,
    ReconfigurePipeline,
    Remediate,
    RemediationOperation,
    Route,
    Scale,
)
from controlplane.controller import Controller, Mode
from controlplane.decisions import Decision, DecisionStatus
from controlplane.registry import ControllerRegistry, controller, default_registry
from controlplane.taxonomy import (
    ActionKind,
    ControlLocus,
    Dynamics,
    Evidence,
    Objective,
    Strategy,
    Taxonomy,
    Telemetry,
)
from controlplane.view import (
    DeviceInventory,
    Inventory,
    NodeInventory,
    PipelineInventory,
    ServiceInventory,
    StageInventory,
    TelemetryView,
)

__version__ = "0.1.0"

__all__ = [
    "Action",
    "ActionKind",
    "ControlLocus",
    "Controller",
    "ControllerRegistry",
    "Decision",
    "DecisionStatus",
    "DeviceInventory",
    "Dynamics",
    "Evidence",
    "Inventory",
    "Isolate",
    "IsolationMechanism",
    "Layer",
    "Mode",
    "NodeInventory",
    "Objective",
    "PipelineInventory",
    "Place",
    "Proposal",
    "ReconfigurePipeline",
    "Remediate",
    "RemediationOperation",
    "Route",
    "Scale",
    "ServiceInventory",
    "StageInventory",
    "Strategy",
    "Taxonomy",
    "Telemetry",
    "TelemetryView",
    "controller",
    "default_registry",
]
