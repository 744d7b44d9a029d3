"""EndpointClient against the real model server, by URL and by SageMaker endpoint name."""
import base64

import boto3
import numpy as np
import pytest

from clip_search.endpoint_client import EndpointClient, EndpointError, pack_lines

from .recording_proxy import RecordingProxy


def test_pack_lines_keeps_every_batch_under_the_limit_and_the_order():
    lines = [b"x" * n for n in (10, 20, 30, 5, 40, 1)]
    batches = list(pack_lines(lines, max_bytes=41))
    assert [line for batch in batches for line in batch] == lines
    assert all(len(b"\n".join(batch)) <= 41 for batch in batches)
    assert len(batches) == 4  # [10,20] [30,5] [40] [1]


def test_pack_lines_refuses_a_record_over_the_limit_by_size():
    with pytest.raises(EndpointError, match="50 bytes, over the 49-byte"):
        list(pack_lines([b"a", b"b" * 50], max_bytes=49))


def test_unreachable_url_is_a_clear_error():
    with pytest.raises(EndpointError, match="unreachable"):
        EndpointClient("http://127.0.0.1:9/", timeout=2).encode_texts(["x"])


@pytest.fixture(scope="module")
def photos(catalogue_photos):
    return [path.read_bytes() for path in catalogue_photos[:6]]


@pytest.mark.server
def test_url_client_matches_the_in_process_encoder(model_server, test_encoder, photos):
    client = EndpointClient(model_server.url)
    texts = ["red apple", "oat milk", "a carton of orange juice"]
    np.testing.assert_allclose(client.encode_texts(texts), test_encoder.encode_texts(texts), atol=1e-5)
    expected = test_encoder.encode_image_bytes(photos)
    np.testing.assert_allclose(client.encode_images(photos), expected, atol=1e-4)
    assert client.model_id == test_encoder.model_id


@pytest.mark.server
def test_batches_stay_under_the_payload_limit_and_keep_order(model_server, test_encoder, photos):
    limit = max(len(base64.b64encode(p)) for p in photos) * 2 + 200  # about two images per request
    with RecordingProxy(model_server.url) as proxy:
        vectors = EndpointClient(proxy.url, max_payload_bytes=limit).encode_images(photos)
    assert len(proxy.requests) >= 3
    assert all(r["size"] <= limit and r["content_type"] == "application/jsonlines" for r in proxy.requests)
    np.testing.assert_allclose(vectors, EndpointClient(model_server.url).encode_images(photos), atol=1e-5)


@pytest.mark.server
def test_endpoint_name_goes_through_sagemaker_runtime_invoke_endpoint(model_server, test_encoder):
    with RecordingProxy(model_server.url) as proxy:
        runtime = boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=proxy.url,
                               aws_access_key_id="testing", aws_secret_access_key="testing")
        client = EndpointClient("clip-search-query", runtime_client=runtime)
        vectors = client.encode_texts(["bananas", "yoghurt"])
    assert [r["path"] for r in proxy.requests] == ["/endpoints/clip-search-query/invocations"]
    assert proxy.requests[0]["accept"] == "application/jsonlines"
    np.testing.assert_allclose(vectors, test_encoder.encode_texts(["bananas", "yoghurt"]), atol=1e-5)


@pytest.mark.server
def test_a_bad_record_names_its_position(model_server, photos):
    with pytest.raises(EndpointError, match=r"image #1: .*not a decodable image"):
        EndpointClient(model_server.url).encode_images([photos[0], b"not an image", photos[1]])


@pytest.mark.server
def test_encode_command_with_endpoint_url(model_server, test_encoder, catalogue_photos):
    import json as jsonlib

    from click.testing import CliRunner

    from clip_search.encode_cli import encode

    result = CliRunner().invoke(encode, ["--endpoint", model_server.url, "red apple", "--image", str(catalogue_photos[0])])
    assert result.exit_code == 0, result.output
    answer = jsonlib.loads(result.output)
    expected = np.concatenate([test_encoder.encode_texts(["red apple"]),
                               test_encoder.encode_image_bytes([catalogue_photos[0].read_bytes()])])
    np.testing.assert_allclose(np.asarray(answer["embeddings"], dtype=np.float32), expected, atol=1e-4)
    assert answer["model"] == test_encoder.model_id and answer["dim"] == test_encoder.dim
