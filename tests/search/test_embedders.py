"""Remote embedders speak the handler's wire format; SageMaker through sagemaker-runtime."""
import io
import json

import boto3
import numpy as np
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from clip_search.search.embeddings import SageMakerEmbedder


def _body(payload: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(payload), len(payload))


def test_sagemaker_endpoint_invocations():
    client = boto3.client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    stub = Stubber(client)
    answer = b'{"id": "0", "embedding": [0.6, 0.8]}'
    stub.add_response("invoke_endpoint", {"Body": _body(answer), "ContentType": "application/jsonlines"},
                      {"EndpointName": "clip-query", "Body": json.dumps({"id": "0", "text": "red shoe"}).encode(),
                       "ContentType": "application/jsonlines", "Accept": "application/jsonlines"})
    probe = json.dumps({"embeddings": [[0.6, 0.8]], "dim": 2, "model": "ViT-B-32/laion2b_s34b_b79k"}).encode()
    stub.add_response("invoke_endpoint", {"Body": _body(probe), "ContentType": "application/json"},
                      {"EndpointName": "clip-query", "Body": json.dumps({"text": "model probe"}).encode(),
                       "ContentType": "application/json", "Accept": "application/json"})
    lines = b'{"id": "0", "embedding": [1.0, 0.0]}\n{"id": "1", "error": "cannot decode image"}'
    stub.add_response("invoke_endpoint", {"Body": _body(lines), "ContentType": "application/jsonlines"},
                      {"EndpointName": "clip-query", "Body": ANY, "ContentType": "application/jsonlines",
                       "Accept": "application/jsonlines"})
    with stub:
        embedder = SageMakerEmbedder("clip-query", client=client)
        vectors = embedder.encode_texts(["red shoe"])
        assert np.allclose(vectors, [[0.6, 0.8]]) and embedder.model_id == "ViT-B-32/laion2b_s34b_b79k" and embedder.dim == 2
        out = embedder.encode_image_records([("a", b"\xff\xd8"), ("b", b"junk")])
        assert np.allclose(out["a"], [1, 0]) and out["b"] == "cannot decode image"
    assert embedder.spec == {"endpoint": "clip-query"}
