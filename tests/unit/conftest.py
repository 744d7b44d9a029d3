"""Fixtures the unit tier shares."""
from tests.scripted_endpoint import endpoint, scripted  # noqa: F401 - fixtures: a scripted endpoint on loopback
