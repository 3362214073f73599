"""Node agents over MQTT: decentralized and hierarchical control (see docs/agents.md).

Plane side: `plane.MqttActuator`, the `Actuator` that delivers decisions to agents and keeps the inventory
from their retained state; it hands their telemetry to the plane's Ingestor and their local decisions to the
control loop, never writing either itself. Node side: `node.NodeAgent` announces the node (retained state,
last will), applies the plane's actions exactly once, reports telemetry as mergeable aggregates and runs
local controllers within the bounds the plane sets; `local_actuator` starts and stops replica processes.
Wire format: `topics` (topic names) and `wire` (protobuf payloads). `mosquitto` and `embedded` start brokers.
"""
