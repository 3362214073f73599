"""Drivers of real substrates, each an `Actuator` plugin registered under `controlplane.actuators`.

`memory` (an inventory kept in memory: tests, dry runs and `serve` with nothing to drive) and `pipelive`
(the PipeLive serving service over its gRPC API and `/metrics`). A driver imports `controlplane` (the public
API) and its substrate's client only.
"""
