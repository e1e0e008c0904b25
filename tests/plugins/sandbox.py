"""Fixtures: sandbox."""
