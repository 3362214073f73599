"""The control loop's machinery: what runs the controllers a plugin author writes against `controlplane`.

`runtime` (the loop: view, controllers, coordinator, actuator, store, each tick), `runner` (one controller
isolated on a worker thread with a time budget), `coordinator` (conflicts, cross-layer order, guardrails),
`guardrails`, `controllers_config` (the `[controllers]` tables), `store` (the SQLite decision store) and
`metrics` (Prometheus). Controllers and actuators never import this package; `controlplane.serve`, the
benchmarks and node agents (which run a loop of their own) build it.
"""
