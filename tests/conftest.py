"""Shared test set-up. Fixtures live in tests/plugins/, one module per area."""

pytest_plugins = [
    "tests.plugins.services",
    "tests.plugins.sandbox",
]
