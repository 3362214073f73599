"""`controlplane serve` and the `controlplane` command: receivers, the gRPC API, configuration, rendering.

`server` (one process: OTLP receivers, the ingest worker, the control loop, the gRPC API, `/metrics` and
`/healthz`), `api` (the `controlplane.v1.ControlPlane` service), `config` (the TOML configuration), `render`
(tables, JSON and DOT for the CLI) and `cli` (the command; other packages add subcommands through the
`controlplane.commands` entry points, so this package imports no benchmark, agent or service).
"""
