"""Fixtures for the container suite: the built image serving the packaged test model."""
import pytest

from tests.container.docker_helpers import ServingContainer, problem


@pytest.fixture(scope="session")
def docker_ready():
    reason = problem()
    if reason:
        pytest.fail(reason)


@pytest.fixture(scope="session")
def serving_container(docker_ready, test_model_dir):
    """The image serving the test model as SageMaker runs it; ready = a real embedding answered."""
    container = ServingContainer(test_model_dir).start()
    try:
        container.cold_start_s = container.wait_ready()
        yield container
    finally:
        container.remove()


@pytest.fixture(scope="session")
def server_url(serving_container) -> str:
    """The base URL tests/http_suite.py runs its contract tests against."""
    return serving_container.url
