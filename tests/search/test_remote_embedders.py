"""Embedding through an endpoint (search/embeddings.py RemoteEmbedder), over real HTTP to a scripted
endpoint on loopback: an endpoint failure is an EncodingError (the search CLI's one Error: line);
a photo the endpoint refuses is that product's error only; by name it goes through sagemaker-runtime.
(The real model server behind the same classes: tests/publish/test_endpoint_client.py.)"""
import base64
import json

import boto3
import numpy as np
import pytest
from botocore.config import Config

from clip_search.search.embeddings import EndpointEmbedder, SageMakerEmbedder, embedder_for
from clip_search.search.errors import EncodingError
from tests.scripted_endpoint import echo_ids, json_lines


@pytest.fixture
def endpoint(scripted_endpoint):
    return scripted_endpoint


def test_the_endpoint_names_its_model_and_encodes(endpoint):
    endpoint.answers += [(200, json.dumps({"model": "ViT-B-32/laion2b", "dim": 2, "embeddings": [[1, 0]]}).encode()),
                         (200, echo_ids([0.6, 0.8]))]
    embedder = embedder_for(endpoint=endpoint.url)
    assert isinstance(embedder, EndpointEmbedder) and embedder.spec == {"endpoint": endpoint.url}
    assert (embedder.model_id, embedder.dim) == ("ViT-B-32/laion2b", 2)
    np.testing.assert_array_equal(embedder.encode_texts(["apple"]), np.array([[0.6, 0.8]], dtype=np.float32))


def test_an_endpoint_failure_is_an_encoding_error(endpoint):
    endpoint.answers += [(503, b'{"error": "no worker", "status": 503}'), (500, b"boom")]
    embedder = EndpointEmbedder(endpoint.url)
    with pytest.raises(EncodingError, match=r"answered HTTP 503: .*no worker"):
        embedder.encode_images([b"\xff\xd8 jpeg"])
    with pytest.raises(EncodingError, match="answered HTTP 500: boom"):
        _ = embedder.model_id  # the property asks the endpoint


def test_a_photo_the_endpoint_refuses_is_that_products_error_only(endpoint):
    endpoint.answers.append((200, json_lines({"id": "0", "embedding": [1, 0]},
                                             {"id": "1", "error": "not a decodable image"})))
    rows = EndpointEmbedder(endpoint.url).encode_image_records([("p1", b"good"), ("p2", b"bad")])
    np.testing.assert_array_equal(rows["p1"], np.array([1, 0], dtype=np.float32))
    assert rows["p2"] == "not a decodable image"
    sent = [json.loads(line) for line in endpoint.received[0]["body"].splitlines()]
    assert sent == [{"id": "0", "image": base64.b64encode(b"good").decode()},
                    {"id": "1", "image": base64.b64encode(b"bad").decode()}]


def test_by_name_through_sagemaker_runtime(endpoint):
    endpoint.answers.append((200, echo_ids([0.0, 1.0])))
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=endpoint.url,
                           aws_access_key_id="testing", aws_secret_access_key="testing",
                           config=Config(retries={"max_attempts": 0}))
    embedder = SageMakerEmbedder("clip-search-query", client=runtime)
    assert embedder.spec == {"endpoint": "clip-search-query"}
    np.testing.assert_array_equal(embedder.encode_texts(["kiwi"]), np.array([[0, 1]], dtype=np.float32))
    assert endpoint.received[0]["path"] == "/endpoints/clip-search-query/invocations"


def test_a_name_without_a_scheme_is_a_sagemaker_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert isinstance(embedder_for(endpoint="clip-search-query"), SageMakerEmbedder)
    for model, url in ((None, None), ("model.tar.gz", "http://x")):
        with pytest.raises(EncodingError, match="^give exactly one of --model"):
            embedder_for(model, url)
