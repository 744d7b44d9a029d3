"""Random bodies, content types, accept headers, JSON shapes and image headers at the handler stages:
every outcome is an answer or a RequestError (a 4xx that says why), never another exception."""
import pytest
from hypothesis import given

from clip_search.errors import RequestError
from clip_search.serving.batch import encode_request
from clip_search.serving.decoder import decode_request
from clip_search.serving.serializer import serialize
from tests.fuzz.strategies import accepts, bodies, content_types, image_headers, images

pytestmark = pytest.mark.fuzz


@given(body=bodies, content_type=content_types, accept=accepts)
def test_any_request_is_answered_or_refused_with_a_4xx(test_encoder, body, content_type, accept):
    try:
        result = encode_request(test_encoder, decode_request(body, content_type))
        payload, media = serialize(result, accept, "application/json")
    except RequestError as error:
        assert 400 <= error.status_code < 500 and error.message
        assert "Traceback" not in error.message
        return
    assert isinstance(payload, bytes) and media


@given(data=images)
def test_any_image_bytes_decode_or_are_refused(test_encoder, data):
    try:
        image = test_encoder.decode(data)
    except RequestError as error:
        assert error.status_code in (400, 413)
        return
    assert image.mode == "RGB"


@given(data=image_headers)
def test_an_image_header_claiming_any_size_costs_nothing_to_refuse(test_encoder, data):
    try:
        test_encoder.decode(data)
    except RequestError as error:
        assert error.status_code in (400, 413)
