"""`controlplane agent`: a node agent that takes actions from the plane over MQTT.

Registered under the `controlplane.commands` entry points (`add_commands`), as every subcommand beyond
`serve` and the queries is; `controlplane serve --mqtt` only switches the plane's `[mqtt]` table on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import signal
import socket
import tomllib
from pathlib import Path
from typing import Any

from agents.settings import PASSWORD_VARIABLE

EMBEDDED_PORT = 1883


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `controlplane agent`."""
    agent = commands.add_parser("agent", help="run a node agent that takes actions from the plane over MQTT")
    agent.add_argument("--node", required=True, help="this node's name (also its MQTT user name)")
    agent.add_argument(
        "--broker",
        metavar="URL",
        help=f"MQTT broker; default: the embedded broker on 127.0.0.1:{EMBEDDED_PORT} (started if none runs)",
    )
    agent.add_argument("--username", help="MQTT user name (default: the node name)")
    agent.add_argument("--password", help=f"MQTT password (default: ${PASSWORD_VARIABLE})")
    agent.add_argument("--tls-ca", default="", help="CA (PEM) of the broker's certificate; turns TLS on")
    agent.add_argument("--tls-cert", default="", help="client certificate (PEM)")
    agent.add_argument("--tls-key", default="", help="client key (PEM)")
    agent.add_argument("--state-dir", default=".", help="where the agent keeps its SQLite files")
    agent.add_argument("--config", help="TOML with [controllers], [guardrails] and [model] for local control")
    agent.add_argument(
        "--replicas", action="append", default=[], metavar="SERVICE=N", help="replicas to start (repeatable)"
    )
    agent.add_argument("--command", help="replica command ({service}, {replica}, {version} filled in)")
    agent.add_argument("--cpu", type=float, default=4.0, help="CPU cores the node offers")
    agent.add_argument("--memory-mb", type=float, default=8192.0, help="memory the node offers")
    agent.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="node label")
    agent.add_argument("--telemetry-seconds", type=float, default=1.0)
    agent.add_argument(
        "--keepalive", type=int, default=5, help="MQTT keepalive (s): how soon a dead agent is seen"
    )
    agent.set_defaults(run=run_agent)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} must be KEY=VALUE, got {value!r}")
        pairs[key] = item
    return pairs


def _agent_config_tables(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    with open(path, "rb") as handle:
        document = tomllib.load(handle)
    unknown = set(document) - {"controllers", "guardrails", "model"}
    if unknown:
        raise ValueError(
            f"{path}: unknown section(s) {sorted(unknown)}; an agent reads controllers, guardrails, model"
        )
    return document


def _port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def run_agent(args: argparse.Namespace) -> int:
    from agents.connection import BrokerSettings
    from agents.embedded import EmbeddedBroker
    from agents.local_actuator import IDLE_REPLICA, NodeSpec, ProcessActuator
    from agents.node import AgentConfig, NodeAgent
    from controlplane import Scale, settings_from_table
    from controlplane.engine.guardrails import GuardrailConfig
    from telemetry import ModelConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    replicas = {service: int(count) for service, count in _pairs(args.replicas, "--replicas").items()}
    tables = _agent_config_tables(args.config)
    where = args.config or ""
    password = args.password if args.password is not None else os.environ.get(PASSWORD_VARIABLE, "")
    broker_url = args.broker or f"mqtt://127.0.0.1:{EMBEDDED_PORT}"
    settings = BrokerSettings(
        broker_url, args.username or args.node, password, args.tls_ca, args.tls_cert, args.tls_key
    )
    config = AgentConfig(
        node=args.node,
        broker=settings,
        state_dir=Path(args.state_dir),
        telemetry_seconds=args.telemetry_seconds,
        controllers=tables.get("controllers", {}),
        guardrails=settings_from_table(
            GuardrailConfig, tables.get("guardrails", {}), f"{where} [guardrails]"
        ),
        model=settings_from_table(ModelConfig, tables.get("model", {}), f"{where} [model]"),
        keepalive_seconds=args.keepalive,
    )
    node = NodeSpec(args.node, args.cpu, args.memory_mb, _pairs(args.label, "--label"))
    command = shlex.split(args.command) if args.command else IDLE_REPLICA

    async def main() -> None:
        embedded = None
        if not args.broker and not _port_in_use(EMBEDDED_PORT):
            embedded = EmbeddedBroker(EMBEDDED_PORT)
            await embedded.start()
        actuator = ProcessActuator(node, command)
        for service, count in replicas.items():
            await actuator.apply(Scale(target=service, replicas=count))
        agent = NodeAgent(config, actuator)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stopping.set)
        await agent.start()
        try:
            await stopping.wait()
        finally:
            await agent.stop()
            await actuator.stop()
            if embedded is not None:
                await embedded.stop()

    asyncio.run(main())
    return 0
