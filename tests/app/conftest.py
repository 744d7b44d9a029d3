"""Search app fixtures: the demo catalogue indexed with the test model, served on loopback.

The app runs on real uvicorn in a background thread (`AppServer`), and tests talk to it over HTTP
like any client would. Catalogue photos are the demo catalogue's (Grocery Store Dataset, MIT).
"""
import http.client
import json
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from clip_search.demo_data import GROCERY as DEMO_DATA
from tests.session_cache import built_once

REPO = Path(__file__).resolve().parents[2]
DEMO = DEMO_DATA
UPLOAD_LIMIT = 1024 * 1024  # the test apps accept bodies up to 1 MiB


@pytest.fixture(scope="session")
def demo_products() -> list[dict]:
    return [json.loads(line) for line in (DEMO / "products.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory, test_model_dir) -> Path:
    """The 81-product demo catalogue, images and titles encoded in process by the test model (the
    index records that encoder, so the app finds it without --model). Built once per session and
    read by every xdist worker (the tests only search it); the model it records is a copy beside it,
    which lives as long as the index (a worker's own extracted model goes when that worker exits)."""
    from clip_search.search.client import SearchClient
    from clip_search.search.embeddings import LocalEmbedder

    def build(folder):
        model = shutil.copytree(test_model_dir, folder / "model")
        with SearchClient(folder / "demo", LocalEmbedder.from_artifact(model)) as client:
            report = client.index_catalogue(DEMO / "products.jsonl", progress=False)
        assert report.indexed == 81 and not report.errors

    return built_once(tmp_path_factory, "app-demo-index", build) / "demo"


@pytest.fixture(scope="session")
def demo_service(demo_index):
    from clip_search.app.build import open_service

    service = open_service(str(demo_index))
    yield service
    service.close()


@pytest.fixture(scope="session")
def app_url(demo_service):
    from clip_search.app.server import AppServer, create_app

    with AppServer(create_app(demo_service, max_upload_bytes=UPLOAD_LIMIT)) as server:
        yield server.url


@pytest.fixture(scope="session")
def library_client(demo_index, test_model_dir):
    """The search library itself, for answers the app must agree with."""
    from clip_search.search.client import SearchClient
    from clip_search.search.embeddings import LocalEmbedder

    with SearchClient(demo_index, LocalEmbedder.from_artifact(test_model_dir)) as client:
        yield client


def raw_get(base_url: str, raw_path: str) -> tuple[int, dict, bytes]:
    """GET a path exactly as written: no client-side normalisation of `..` or percent escapes."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", raw_path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def random_unit(rng, dim: int) -> np.ndarray:
    vector = rng.standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)
