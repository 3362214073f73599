"""controlplane: an adaptive control plane for microservices, driven by OpenTelemetry traces.

The public API for plugin authors: everything a built-in controller or actuator uses is importable from
here, and a plugin imports nothing else of this project. The vocabulary: the taxonomy, typed actions, the
view controllers read, `Controller`, `Actuator` and `Outcome`, decisions, and the plugin registries. The
machinery that runs plugins lives in `controlplane.engine` and `controlplane.serve`, which plugins never need.
"""

from controlplane.actions import (
    ACTION_TYPES,
    LAYER_ORDER,
    RECONFIGURE_METHODS,
    Action,
    ActionEvidence,
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
from controlplane.actuator import Actuator, ActuatorContext, Outcome
from controlplane.controller import Controller, Mode
from controlplane.decisions import Decision, DecisionStatus
from controlplane.net import free_port
from controlplane.registry import (
    ActuatorRegistry,
    ControllerRegistry,
    actuator,
    controller,
    default_actuator_registry,
    default_registry,
)
from controlplane.tables import settings_from_table
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
    DEFAULT_BLOCK_SIZE,
    DeviceInventory,
    Inventory,
    NodeInventory,
    PipelineInventory,
    ServiceInventory,
    StageInventory,
    TelemetryView,
)
from telemetry import EdgeSnapshot, GraphSnapshot, NodeSnapshot, OperationSnapshot, WindowSummary

__version__ = "0.1.0"

__all__ = [
    "ACTION_TYPES",
    "DEFAULT_BLOCK_SIZE",
    "LAYER_ORDER",
    "RECONFIGURE_METHODS",
    "Action",
    "ActionEvidence",
    "ActionKind",
    "Actuator",
    "ActuatorContext",
    "ActuatorRegistry",
    "ControlLocus",
    "Controller",
    "ControllerRegistry",
    "Decision",
    "DecisionStatus",
    "DeviceInventory",
    "Dynamics",
    "EdgeSnapshot",
    "Evidence",
    "GraphSnapshot",
    "Inventory",
    "Isolate",
    "IsolationMechanism",
    "Layer",
    "Mode",
    "NodeInventory",
    "NodeSnapshot",
    "Objective",
    "OperationSnapshot",
    "Outcome",
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
    "WindowSummary",
    "actuator",
    "controller",
    "default_actuator_registry",
    "default_registry",
    "free_port",
    "settings_from_table",
]
