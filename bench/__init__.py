"""Every benchmark harness: scenarios x controller sets in the simulator and live, ingest, the control loop,
the decision store, the simulator's speed, node agents over MQTT, and the generated-trace demo.

`cli` registers `controlplane bench ...` and `controlplane demo` (entry point group
`controlplane.commands`). PipeLive's engine benchmarks live beside the engine, in `services.pipelive.bench`.
Benchmarks print figures; they are not tests.
"""
