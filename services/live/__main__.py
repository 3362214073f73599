"""`python -m services.live`: one live run from the command line, its score and its cost as JSON.

    python -m services.live --scenario demo-short --seconds 60 --controllers hpa [--scale 0.05]

`controlplane bench --live` is the way to compare runs; this is for trying one and measuring its cost.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence

from services.live.costs import LiveCosts
from services.live.runner import run_live
from services.sim.scenario import load_scenario


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.live", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="demo-short", help="bundled scenario name or a TOML file")
    parser.add_argument("--controllers", nargs="*", default=[], help="controller names (none: static)")
    parser.add_argument("--seconds", type=float, default=None, help="cut the scenario short")
    parser.add_argument("--scale", type=float, default=0.05, help="request-rate factor")
    parser.add_argument("--time-scale", type=float, default=None, help="service-time factor (1/scale)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="keep process logs and decisions here")
    parser.add_argument("-v", "--verbose", action="store_true")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if arguments.verbose else logging.WARNING)
    costs: list[LiveCosts] = []
    result, recorder = asyncio.run(
        run_live(
            load_scenario(arguments.scenario),
            {name: {"mode": "active"} for name in arguments.controllers},
            arguments.seed,
            scale=arguments.scale,
            duration_seconds=arguments.seconds,
            time_scale=arguments.time_scale,
            workdir=arguments.workdir,
            on_costs=costs.append,
        )
    )
    report = {"score": result.as_dict(), "costs": dataclasses.asdict(costs[0]) if costs else None}
    if costs:
        report["costs"]["cpu_cores_used"] = round(costs[0].cpu_cores_used, 3)
    report["replicas_per_second"] = [second.replicas for second in recorder.seconds]
    json.dump(report, sys.stdout, indent=2, default=str)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
