"""Fuzz tier: Hypothesis throws random input at the decoder, the real server and the catalogue readers.

Example counts and deadlines are fixed here (profile "clip-search-fuzz") so the tier takes minutes;
the database is off so every run is the same size and nothing is written to the checkout.
"""
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "clip-search-fuzz", max_examples=200, deadline=timedelta(seconds=5), database=None,
    derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("clip-search-fuzz")


@pytest.fixture(scope="session")
def fuzz_server(test_model_tar):
    from clip_search.serving.server import ModelServer

    with ModelServer(test_model_tar, env={"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1"}) as server:
        yield server
