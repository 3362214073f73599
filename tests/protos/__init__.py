"""Tests of the `protos` package."""
