"""Which folders the app serves product photos from (app/build.py open_service): the
CLIP_SEARCH_IMAGE_ROOTS folders when set, else the folders the indexed products' images are in;
and the encoder it opens: the one given, else the one the index recorded, else a clear refusal.
The real app on uvicorn (loopback), a real embedded index."""
import os

import numpy as np
import pytest
import requests

from clip_search.app.build import open_service
from clip_search.app.server import AppServer, create_app
from clip_search.search.errors import IndexNotFoundError, SearchError
from clip_search.search.index import open_index
from clip_search.search.records import EmbeddedProduct, Product


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory, catalogue_photos, test_encoder, test_model_dir):
    """An index of two products whose photos are in two different folders."""
    root = tmp_path_factory.mktemp("roots")
    photos = {}
    for name, source in (("fruit", catalogue_photos[0]), ("dairy", catalogue_photos[1])):
        (root / name).mkdir()
        photos[name] = (root / name / "photo.jpg")
        photos[name].write_bytes(source.read_bytes())
    index = open_index(str(root / "index"))
    index.create(test_encoder.dim, test_encoder.model_id, {"model": str(test_model_dir)})
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2, test_encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.upsert([EmbeddedProduct(Product(name, name, str(path)), vector)
                  for (name, path), vector in zip(photos.items(), vectors, strict=True)])
    index.close()
    return root, photos


def test_the_variable_limits_photos_to_its_folders(two_folders, monkeypatch):
    root, photos = two_folders
    monkeypatch.setenv("CLIP_SEARCH_IMAGE_ROOTS", os.pathsep.join(["", str(root / "fruit"), "  "]))
    service = open_service(str(root / "index"))
    try:
        with AppServer(create_app(service)) as server:
            fruit = requests.get(f"{server.url}/api/products/fruit/image", timeout=30)
            dairy = requests.get(f"{server.url}/api/products/dairy/image", timeout=30)
    finally:
        service.close()
    assert fruit.status_code == 200 and fruit.content == photos["fruit"].read_bytes()
    assert dairy.status_code == 404 and dairy.json()["status"] == 404
    assert photos["dairy"].read_bytes() not in dairy.content


def test_without_the_variable_every_indexed_products_folder_is_served(two_folders, monkeypatch):
    root, photos = two_folders
    monkeypatch.delenv("CLIP_SEARCH_IMAGE_ROOTS", raising=False)
    service = open_service(str(root / "index"))
    try:
        with AppServer(create_app(service)) as server:
            for name, path in photos.items():
                response = requests.get(f"{server.url}/api/products/{name}/image", timeout=30)
                assert response.status_code == 200 and response.content == path.read_bytes(), name
    finally:
        service.close()


def test_an_explicit_root_wins_over_the_variable(two_folders, monkeypatch):
    root, photos = two_folders
    monkeypatch.setenv("CLIP_SEARCH_IMAGE_ROOTS", str(root / "fruit"))
    service = open_service(str(root / "index"), image_roots=[str(root / "dairy")])
    try:
        with AppServer(create_app(service)) as server:
            assert requests.get(f"{server.url}/api/products/dairy/image", timeout=30).status_code == 200
            assert requests.get(f"{server.url}/api/products/fruit/image", timeout=30).status_code == 404
    finally:
        service.close()


def test_the_encoder_given_is_used_and_a_missing_one_is_refused(two_folders, tmp_path, test_encoder):
    from clip_search.search.embeddings import LocalEmbedder

    root, _ = two_folders
    embedder = LocalEmbedder(test_encoder)
    service = open_service(str(root / "index"), embedder=embedder)
    try:
        assert service.client.embedder is embedder
    finally:
        service.close()
    with pytest.raises(IndexNotFoundError, match=f"^no index at {tmp_path / 'none'}: build it with `clip-search index`$"):
        open_service(str(tmp_path / "none"))
    bare = open_index(str(tmp_path / "bare"))
    bare.create(test_encoder.dim, test_encoder.model_id)  # no encoder recorded
    bare.close()
    with pytest.raises(SearchError, match=f"^no encoder recorded for {tmp_path / 'bare'}: pass --model or --endpoint$"):
        open_service(str(tmp_path / "bare"))
