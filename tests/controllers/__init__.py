"""Tests of the built-in controllers."""
