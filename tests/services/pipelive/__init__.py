"""Tests of the PipeLive serving engine."""
