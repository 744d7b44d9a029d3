"""EndpointClient against answers the real server never gives: a server on loopback that answers
each POST with a scripted status and body, so every way an endpoint can fail reaches the client
over real HTTP. (What the real server answers is in tests/publish/test_endpoint_client.py.)"""
import json

import numpy as np
import pytest

from clip_search.endpoint_client import EndpointClient, EndpointError, embedding_lines
from tests.scripted_endpoint import echo_ids as _echo_ids
from tests.scripted_endpoint import json_lines as _lines


@pytest.fixture
def endpoint(scripted_endpoint):
    """The scripted endpoint (a plugin of tests/conftest.py) as (url, server)."""
    return scripted_endpoint.url, scripted_endpoint


def test_the_url_gets_invocations_once_and_records_go_as_json_lines(endpoint):
    url, script = endpoint
    script.answers.append((200, _echo_ids([0.6, 0.8])))
    vectors = EndpointClient(url + "/").encode_texts(["apple", "pear"])
    np.testing.assert_array_equal(vectors, np.array([[0.6, 0.8], [0.6, 0.8]], dtype=np.float32))
    [request] = script.received
    assert request["path"] == "/invocations"
    assert request["content_type"] == "application/jsonlines" and request["accept"] == "application/jsonlines"
    assert [json.loads(line) for line in request["body"].splitlines()] == [{"id": "0", "text": "apple"},
                                                                         {"id": "1", "text": "pear"}]
    assert EndpointClient(url + "/invocations").url == url + "/invocations"


def test_an_http_error_names_the_url_the_status_and_the_body(endpoint):
    url, script = endpoint
    script.answers.append((503, b'{"error": "worker restarting", "status": 503}'))
    with pytest.raises(EndpointError) as error:
        EndpointClient(url).encode_texts(["apple"])
    assert str(error.value) == f'{url}/invocations answered HTTP 503: {{"error": "worker restarting", "status": 503}}'


def test_answers_out_of_order_land_on_their_records(endpoint):
    url, script = endpoint
    script.answers.append((200, _lines({"id": "2", "embedding": [0, 1]}, {"id": "0", "embedding": [1, 0]},
                                       {"id": "1", "embedding": [0.6, 0.8]})))
    vectors = EndpointClient(url).encode_texts(["a", "b", "c"])
    np.testing.assert_array_equal(vectors, np.array([[1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32))


def test_a_record_the_endpoint_left_out_is_an_error_naming_it(endpoint):
    url, script = endpoint
    script.answers.append((200, _lines({"id": "0", "embedding": [1, 0]}, {"id": "2", "embedding": [1, 0]})))
    with pytest.raises(EndpointError, match=r"^the endpoint returned no answer for text #1 \(1 missing\)$"):
        EndpointClient(url).encode_texts(["a", "b", "c"])


def test_a_failed_record_is_its_error_and_the_others_still_encode(endpoint):
    url, script = endpoint
    script.answers.append((200, _lines({"id": "0", "embedding": [1, 0]}, {"id": "1", "error": "not a decodable image"},
                                       {"id": "2"})))
    rows = EndpointClient(url).encode_records("image", ["AAAA", "BBBB", "CCCC"])
    np.testing.assert_array_equal(rows[0], np.array([1, 0], dtype=np.float32))
    assert rows[1:] == ["not a decodable image", "no embedding in the answer"]


def test_an_answer_that_is_not_json_lines_names_the_line(endpoint):
    url, script = endpoint
    script.answers.append((200, b'{"id": "0", "embedding": [1, 0]}\n\n<html>oops</html>\n'))
    with pytest.raises(EndpointError, match=r"^the endpoint's answer line 3 is not JSON: "):
        EndpointClient(url).encode_texts(["a", "b"])


def test_nothing_to_encode_sends_nothing(endpoint):
    url, script = endpoint
    assert EndpointClient(url).encode_texts([]).shape == (0, 0)
    assert script.received == []


def test_model_id_and_dim_come_from_one_probe(endpoint):
    url, script = endpoint
    script.answers.append((200, json.dumps({"model": "ViT-B-32/laion2b", "dim": 512, "embeddings": [[0.0]]}).encode()))
    client = EndpointClient(url)
    assert (client.model_id, client.dim) == ("ViT-B-32/laion2b", 512)
    assert (client.model_id, client.dim) == ("ViT-B-32/laion2b", 512)
    [probe] = script.received
    assert probe["content_type"] == "application/json" and json.loads(probe["body"]) == {"text": "model probe"}


def test_embedding_lines_of_a_batch_transform_output():
    rows = list(embedding_lines(b'{"id": 7, "embedding": [0.5, 0.5]}\r\n\n{"id": "x", "error": "bad"}\n',
                                where="out/part-0.out"))
    assert [row[0] for row in rows] == ["7", "x"]
    np.testing.assert_array_equal(rows[0][1], np.array([0.5, 0.5], dtype=np.float32))
    assert rows[0][1].dtype == np.float32 and rows[1][1] == "bad"
    with pytest.raises(EndpointError, match=r"^out/part-0.out line 2: record without an id$"):
        list(embedding_lines('{"id": "a", "embedding": [1]}\n{"embedding": [1]}\n', where="out/part-0.out"))
    with pytest.raises(EndpointError, match=r"^answer line 1: record without an id$"):
        list(embedding_lines(b"[1, 2]"))


def _runtime(url):
    import boto3
    from botocore.config import Config

    return boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=url, aws_access_key_id="testing",
                        aws_secret_access_key="testing", config=Config(retries={"max_attempts": 0}, connect_timeout=2))


def test_an_endpoint_name_goes_to_invoke_endpoint_and_its_refusal_names_the_endpoint(endpoint):
    url, script = endpoint
    script.answers.append((200, _echo_ids([1.0, 0.0])))
    client = EndpointClient("clip-search-query", runtime_client=_runtime(url))
    np.testing.assert_array_equal(client.encode_texts(["apple"]), np.array([[1, 0]], dtype=np.float32))
    assert script.received[0]["path"] == "/endpoints/clip-search-query/invocations"
    # What SageMaker answers for an endpoint that does not exist (a botocore ClientError).
    script.answers.append((400, b'{"__type": "ValidationError", "message": '
                                b'"Endpoint clip-search-query of account 123456789012 not found."}'))
    with pytest.raises(EndpointError, match=r"^SageMaker endpoint clip-search-query: .*ValidationError.*not found"):
        client.encode_texts(["apple"])


def test_by_name_without_a_client_uses_boto3_with_the_region_and_aws_endpoint_url(endpoint, monkeypatch):
    url, script = endpoint
    for key, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    script.answers.append((200, _echo_ids([0.0, 1.0])))
    vectors = EndpointClient("clip-search-query", region="eu-west-1").encode_images([b"\xff\xd8 jpeg bytes"])
    np.testing.assert_array_equal(vectors, np.array([[0, 1]], dtype=np.float32))
    [request] = script.received
    assert request["path"] == "/endpoints/clip-search-query/invocations"
    assert "/eu-west-1/sagemaker/aws4_request" in request["authorization"]  # signed for the region asked
    assert json.loads(request["body"]) == {"id": "0", "image": "/9gganBlZyBieXRlcw=="}  # base64 of the bytes


def test_an_unreachable_sagemaker_runtime_names_the_endpoint():
    client = EndpointClient("clip-search-query", runtime_client=_runtime("http://127.0.0.1:9"))
    with pytest.raises(EndpointError, match=r"^SageMaker endpoint clip-search-query: Could not connect"):
        client.encode_texts(["apple"])
