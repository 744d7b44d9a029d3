"""The search app when what it depends on fails (app/service.py UpstreamError): an encoder endpoint
that errors, or a product photo in S3 that cannot be presigned, is a 502 JSON answer naming the
upstream, never a 500 or a traceback, and the app keeps serving. The real app on uvicorn, a real
embedded index, the encoder behind a scripted HTTP endpoint on loopback."""
import base64
import json

import numpy as np
import pytest
import requests

from clip_search.app.build import open_service
from clip_search.app.server import AppServer, create_app
from clip_search.search.index import open_index
from clip_search.search.records import EmbeddedProduct, Product
from tests.scripted_endpoint import ScriptedEndpoint, echo_ids

DIM = 4
PROBE = json.dumps({"model": "scripted/model", "dim": DIM, "embeddings": [[1, 0, 0, 0]]}).encode()


def assert_json_error(response, status, *words):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "status"} and body["status"] == status
    assert "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]


@pytest.fixture
def app(tmp_path, monkeypatch):
    """An index built by the scripted endpoint's "model": p1 (photo on disk), p2 (photo in S3)."""
    with ScriptedEndpoint() as endpoint:
        photo = tmp_path / "photos" / "p1.png"
        photo.parent.mkdir()
        from PIL import Image

        Image.new("RGB", (32, 32), (200, 30, 30)).save(photo)
        index = open_index(str(tmp_path / "index"))
        index.create(DIM, "scripted/model", {"endpoint": endpoint.url})
        index.upsert([EmbeddedProduct(Product("p1", "red square", str(photo)), np.array([1, 0, 0, 0], np.float32)),
                      EmbeddedProduct(Product("p2", "in s3", "s3://clip-search-photos/p2.jpg"),
                                      np.array([0, 1, 0, 0], np.float32))])
        index.close()
        endpoint.answers.append((200, PROBE))  # open_service asks the endpoint for its model and dim
        service = open_service(str(tmp_path / "index"))
        try:
            with AppServer(create_app(service)) as server:
                yield server.url, endpoint, photo
        finally:
            service.close()


def test_an_encoder_failure_is_a_502_and_the_app_keeps_serving(app):
    url, endpoint, _ = app
    endpoint.answers.append((503, b'{"error": "worker restarting", "status": 503}'))
    response = requests.get(url + "/api/search", params={"q": "red"}, timeout=30)
    assert_json_error(response, 502, "encoder failed", "HTTP 503", "worker restarting")
    endpoint.answers.append((200, echo_ids([1, 0, 0, 0])))
    answer = requests.get(url + "/api/search", params={"q": "red", "k": 1}, timeout=30)
    assert answer.status_code == 200 and answer.json()["hits"][0]["id"] == "p1"


def test_a_photo_query_is_checked_here_before_the_endpoint_sees_it(app):
    url, endpoint, photo = app
    response = requests.post(url + "/api/search", json={"image": base64.b64encode(b"not an image").decode()}, timeout=30)
    assert_json_error(response, 400, "not a decodable image")
    assert [r["body"] for r in endpoint.received] == [b'{"text": "model probe"}']  # only open_service's probe
    endpoint.answers.append((500, b"out of memory"))
    response = requests.post(url + "/api/search", files={"image": ("q.png", photo.read_bytes(), "image/png")}, timeout=30)
    assert_json_error(response, 502, "encoder failed", "HTTP 500")
    sent = json.loads(endpoint.received[-1]["body"])
    assert base64.b64decode(sent["image"]) == photo.read_bytes()  # the bytes as uploaded


def test_an_s3_photo_that_cannot_be_presigned_is_a_502(app, monkeypatch):
    url, _, _ = app
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # boto3's default session keeps the credentials it first resolved (an earlier test's moto
    # keys): a fresh one resolves them from the environment above, which has none.
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    response = requests.get(url + "/api/products/p2/image", timeout=60, allow_redirects=False)
    assert_json_error(response, 502, "cannot presign the image of product 'p2'")
    local = requests.get(url + "/api/products/p1/image", timeout=30)
    assert local.status_code == 200 and local.headers["content-type"] == "image/png"
