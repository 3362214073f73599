"""The second fidelity of the benchmark: the application description run as real processes on 127.0.0.1.

One process per replica (`services.live.replica`), a router process in front of every service
(`services.live.router`), a `LocalProcessActuator` that starts, stops and reroutes them, and `run_live`
(`bench.live_run`), which replays a scenario against them with a real control plane watching their
OpenTelemetry spans. `docs/benchmark-live.md` says what it costs and what it reproduces.
"""
