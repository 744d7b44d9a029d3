import pytest

from clip_search.serving.server import ModelServer


@pytest.fixture(scope="session")
def native_server(test_model_tar):
    with ModelServer(test_model_tar) as server:
        yield server


@pytest.fixture(scope="session")
def server_url(native_server):
    return native_server.url
