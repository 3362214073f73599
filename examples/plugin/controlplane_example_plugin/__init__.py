"""Example controlplane plugin: one controller, found through the `controlplane.controllers` entry points."""

from controlplane_example_plugin.isolator import ErrorBudgetIsolator

__all__ = ["ErrorBudgetIsolator"]
