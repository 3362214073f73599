"""Tests of the `controlplane` package."""
