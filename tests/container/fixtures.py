"""Fixtures for the container and local-mode suites (a plugin of tests/conftest.py, so both see
them): the built image serving a packaged test model, run the way SageMaker Serverless runs it
(arbitrary uid, read-only root, only /tmp writable).

The slim image (the default, container/build.sh --variant slim) serves torch-free artifacts, so it
gets the test model packaged for onnx-int8; the full image gets the torch test model.
"""
import pytest

from tests.container.docker_helpers import ServingContainer, image_variant, problem
from tests.session_cache import built_once


@pytest.fixture(scope="session")
def docker_ready():
    reason = problem()
    if reason:
        pytest.fail(reason)


@pytest.fixture(scope="session")
def variant(docker_ready) -> str:
    return image_variant()


@pytest.fixture(scope="session")
def onnx_test_model_tar(tmp_path_factory):
    """The tiny test model exported for onnx-int8 (no safetensors: what the slim image serves)."""
    from clip_search.packaging.build import package_model

    def build(folder):
        package_model(folder / "model.tar.gz", test_model=True, runtime="onnx-int8")

    return built_once(tmp_path_factory, "test-model-onnx-int8", build) / "model.tar.gz"


@pytest.fixture(scope="session")
def onnx_test_model_dir(onnx_test_model_tar):
    from clip_search.artifact import extract_artifact

    return extract_artifact(onnx_test_model_tar)


@pytest.fixture(scope="session")
def serving_model_tar(variant, request):
    """The model.tar.gz the image under test serves: onnx-int8 for slim, torch for full."""
    return request.getfixturevalue("onnx_test_model_tar" if variant == "slim" else "test_model_tar")


@pytest.fixture(scope="session")
def serving_model_dir(variant, request):
    return request.getfixturevalue("onnx_test_model_dir" if variant == "slim" else "test_model_dir")


@pytest.fixture(scope="session")
def serving_container(docker_ready, serving_model_dir):
    """The image serving the test model as SageMaker runs it; ready = a real embedding answered."""
    container = ServingContainer(serving_model_dir).start()
    try:
        container.cold_start_s = container.wait_ready()
        yield container
    finally:
        container.remove()


@pytest.fixture(scope="session")
def server_url(serving_container) -> str:
    """The base URL tests/http_suite.py runs its contract tests against."""
    return serving_container.url
