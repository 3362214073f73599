"""controlplane: an adaptive control plane for microservices, driven by OpenTelemetry traces.

The framework lives here (server, API, CLI, benchmark harness); the live model is in `telemetry`.
"""

__version__ = "0.1.0"
