"""Node agents over MQTT: decentralized and hierarchical control (see docs/agents.md).

`agent.NodeAgent` runs on each node: it announces itself (retained state, last will), applies the plane's
actions exactly once, publishes telemetry as mergeable aggregates and runs local controllers within the
bounds the plane sets. `central.MqttActuator` is the plane's side: an `Actuator` that delivers decisions to
agents and keeps the inventory from their retained state. `mosquitto` and `embedded` start brokers.
"""
