"""The MQTT topic layout: one subtree per node, one topic per kind of message, and what each side owns.

controlplane/v1/nodes/<node>/state          agent -> plane, retained: birth (online) and last will
controlplane/v1/nodes/<node>/telemetry      agent -> plane, QoS 0: aggregates since the last report
controlplane/v1/nodes/<node>/outcomes       agent -> plane, QoS 1: outcome of each action
controlplane/v1/nodes/<node>/decisions      agent -> plane, QoS 1: decisions of local controllers
controlplane/v1/nodes/<node>/actions        plane -> agent, QoS 1: actions to apply
controlplane/v1/nodes/<node>/bounds         plane -> agent, retained: limits of local controllers
controlplane/v1/nodes/<node>/decisions/ack  plane -> agent, retained: local decisions stored centrally
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

ROOT = "controlplane/v1/nodes"
# Node names become topic levels and client ids: no wildcards, separators or control characters.
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class Kind(StrEnum):
    """The kinds of message under a node's subtree."""

    STATE = "state"
    TELEMETRY = "telemetry"
    OUTCOMES = "outcomes"
    DECISIONS = "decisions"
    ACTIONS = "actions"
    BOUNDS = "bounds"
    DECISIONS_ACK = "decisions/ack"


# What an agent publishes (the plane subscribes to these for every node) and what it receives.
AGENT_PUBLISHES = (Kind.STATE, Kind.TELEMETRY, Kind.OUTCOMES, Kind.DECISIONS)
AGENT_RECEIVES = (Kind.ACTIONS, Kind.BOUNDS, Kind.DECISIONS_ACK)


def check_node_name(node: str) -> str:
    """`node` if it can be a topic level and part of a client id; ValueError saying why otherwise."""
    if not _NODE_NAME.match(node or ""):
        raise ValueError(
            f"node name {node!r} must be 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return node


def topic(node: str, kind: Kind) -> str:
    return f"{ROOT}/{node}/{kind.value}"


def wildcard(kind: Kind) -> str:
    """The subscription matching `kind` for every node."""
    return f"{ROOT}/+/{kind.value}"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    node: str
    kind: Kind


def parse(name: str) -> ParsedTopic | None:
    """The node and kind of a topic of this layout, or None for any other topic."""
    prefix = ROOT + "/"
    if not name.startswith(prefix):
        return None
    node, _, rest = name[len(prefix) :].partition("/")
    try:
        kind = Kind(rest)
    except ValueError:
        return None
    if not _NODE_NAME.match(node):
        return None
    return ParsedTopic(node, kind)
