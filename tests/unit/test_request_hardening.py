"""The charset parameter is honoured; the handler refuses oversize bodies with the JSON 413."""
import json

import pytest

from clip_search.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from clip_search.serving.decoder import decode_request


def test_text_plain_latin1_is_decoded_as_latin1():
    request = decode_request("Crème brûlée".encode("latin-1"), "text/plain; charset=latin-1")
    assert request.records[0].text == "Crème brûlée"


def test_json_in_utf16_is_decoded():
    body = json.dumps({"texts": ["Crème", "brûlée"]}).encode("utf-16")
    request = decode_request(body, 'application/json; charset="UTF-16"')
    assert [record.text for record in request.records] == ["Crème", "brûlée"]


def test_utf8_is_still_the_default_and_still_checked():
    assert decode_request("Crème".encode(), "text/plain").records[0].text == "Crème"
    with pytest.raises(BadRequest, match="UTF-8"):
        decode_request("Crème".encode("latin-1"), "text/plain")


@pytest.mark.parametrize("charset", ["no-such-charset", "base64", "rot13"])
def test_an_unknown_or_non_text_charset_is_a_415(charset):
    with pytest.raises(UnsupportedMediaType, match="charset"):
        decode_request(b"apple", f"text/plain; charset={charset}")


def test_the_handler_refuses_a_body_over_the_limit_with_its_own_413(monkeypatch):
    from clip_search.serving.handler_service import check_size

    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "1")
    check_size(b"a" * 1024 * 1024)
    with pytest.raises(PayloadTooLarge, match="SAGEMAKER_MAX_PAYLOAD_IN_MB"):
        check_size(b"a" * (1024 * 1024 + 1))
