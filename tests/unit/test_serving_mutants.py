"""The serving core without a model: content negotiation, request decoding, batching, serialising.

Fast (no model, no server) so that `make mutants` can run them on every mutant; each assertion
pins a value a plausible bug would change (a dropped alias, a q-value ignored, a row swapped).
"""
import base64
import io
import json

import numpy as np
import orjson
import pytest
from PIL import Image

from clip_search import content_types as ct
from clip_search.errors import BadRequest, NotAcceptable, PayloadTooLarge, RequestError, UnsupportedMediaType
from clip_search.serving.batch import EncodeResult, encode_request
from clip_search.serving.decoder import EncodeRequest, Record, decode_request
from clip_search.serving.serializer import serialize


def png(color=(255, 0, 0), size=(4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- content_types -------------------------------------------------------------------------------
@pytest.mark.parametrize("header,expected", [
    ("Application/JSON; charset=utf-8", "application/json"),
    ("  text/plain ", "text/plain"),
    ("application/json; charset=utf-8; q=1", "application/json"),
    ("application/jsonl", "application/jsonlines"),
    ("application/x-jsonlines;q=1", "application/jsonlines"),
    ("application/jsonlines", "application/jsonlines"),
    (None, ""),
    ("", ""),
])
def test_media_type(header, expected):
    assert ct.media_type(header) == expected


@pytest.mark.parametrize("accept,expected", [
    (None, "application/json"),
    ("   ", "application/json"),
    ("*/*", "application/json"),
    ("application/*", "application/json"),
    ("application/x-npy", "application/x-npy"),
    ("application/jsonl", "application/jsonlines"),
    ("text/html, application/x-npy", "application/x-npy"),
    ("application/json;q=0.5, application/x-npy;q=0.9", "application/x-npy"),
    ("application/x-npy;q=0.5, application/json;q=0.9", "application/json"),
    ("application/x-npy, application/jsonlines", "application/x-npy"),  # equal q: first wins
    ("application/jsonlines;q=0.8, application/x-npy;q=0.8", "application/jsonlines"),
    ("application/x-npy;q=0, application/json;q=0.1", "application/json"),  # q=0: not acceptable
    ("application/x-npy;q=bogus, application/jsonlines;q=0.2", "application/jsonlines"),
    ("application/x-npy;q=0", None),
    ("application/x-npy;q=1", "application/x-npy"),
    ("application/x-npy;q=1.0, application/json", "application/x-npy"),  # no q means q=1
    ("text/html", None),
    ("image/*", None),
    ("text/html;level=1;q=0.9, */*;q=0.1", "application/json"),
])
def test_negotiate(accept, expected):
    assert ct.negotiate(accept) == expected


def test_negotiate_default_is_the_callers():
    assert ct.negotiate(None, ct.JSONLINES) == ct.JSONLINES
    assert ct.negotiate("*/*", ct.NPY) == ct.NPY
    assert ct.negotiate("application/json", ct.NPY) == ct.JSON


# --- decoder ---------------------------------------------------------------------------------------
def test_json_text_and_texts():
    request = decode_request(b'{"text": "a red apple"}', "application/json")
    assert [(r.text, r.image, r.id, r.error) for r in request.records] == [("a red apple", None, None, None)]
    assert request.per_record_errors is False
    request = decode_request('{"texts": ["a", "b"]}', "application/json; charset=utf-8")  # str body too
    assert [r.text for r in request.records] == ["a", "b"]
    request = decode_request(b'{"inputs": ["x", "y", "z"]}', "application/json")
    assert [r.text for r in request.records] == ["x", "y", "z"]


def test_json_image_images_and_data_uri():
    data = png()
    request = decode_request(json.dumps({"image": b64(data)}).encode(), "application/json")
    assert [r.image for r in request.records] == [data] and request.records[0].text is None
    uri = "data:image/png;base64," + b64(data)
    request = decode_request(json.dumps({"images": [uri, b64(b"xy")]}).encode(), "application/json")
    assert [r.image for r in request.records] == [data, b"xy"]


def test_text_plain_and_raw_images():
    assert decode_request("hello".encode(), "text/plain").records[0].text == "hello"
    for kind in ("image/jpeg", "image/png", "image/webp", "application/x-image"):
        request = decode_request(b"\x89PNG...", kind)
        assert [r.image for r in request.records] == [b"\x89PNG..."]
        assert request.per_record_errors is False


@pytest.mark.parametrize("body,content_type,error,words", [
    (b"{not json", "application/json", BadRequest, "request body is not valid JSON"),
    (b'["a"]', "application/json", BadRequest, "must be an object with one of text, texts, image, images, inputs"),
    (b'{}', "application/json", BadRequest, "exactly one of text, texts, image, images, inputs (found: none)"),
    (b'{"text": "a", "texts": ["b"]}', "application/json", BadRequest, "(found: text, texts)"),
    (b'{"text": 3}', "application/json", BadRequest, "text must be a string, got int"),
    (b'{"text": "   "}', "application/json", BadRequest, "text is empty"),
    (b'{"texts": "a"}', "application/json", BadRequest, "texts must be a list, got str"),
    (b'{"texts": []}', "application/json", BadRequest, "empty input: texts is an empty list"),
    (b'{"texts": ["a", ""]}', "application/json", BadRequest, "texts[1] is empty"),
    (b'{"inputs": ["a", 5]}', "application/json", BadRequest, "inputs[1] must be a string, got int"),
    (b'{"image": 5}', "application/json", BadRequest, "image must be a base64 string, got int"),
    (b'{"image": "***"}', "application/json", BadRequest, "image is not valid base64"),
    (b'{"image": ""}', "application/json", BadRequest, "image is empty"),
    (b'{"images": ["QUJD", "!!"]}', "application/json", BadRequest, "images[1] is not valid base64"),
    (b"\xff\xfe", "text/plain", BadRequest, "request body is not valid UTF-8"),
    (b"  ", "text/plain", BadRequest, "text/plain body is empty"),
    (b"", "image/png", BadRequest, "empty request body: image/png needs the image bytes"),
    (b"\n\n", "application/jsonlines", BadRequest, "empty input: the request holds no text or image to encode"),
    (b'{"image": "QUJD,QUJD"}', "application/json", BadRequest, "image is not valid base64"),
    (b'{"image": "data:image/png;base64,QUJD,QUJD"}', "application/json", BadRequest, "image is not valid base64"),
    (b"abc", "application/xml", UnsupportedMediaType, "unsupported Content-Type 'application/xml'; supported: application/json, text/plain"),
    (b"abc", None, UnsupportedMediaType, "unsupported Content-Type None"),
])
def test_bad_requests_name_what_was_wrong(body, content_type, error, words):
    with pytest.raises(error) as raised:
        decode_request(body, content_type)
    assert words in raised.value.message
    assert type(raised.value) is error


def test_an_empty_jsonlines_body_says_so_exactly():
    with pytest.raises(BadRequest) as raised:
        decode_request(b"\n \n", "application/jsonlines")
    assert raised.value.message == "empty input: the request holds no text or image to encode"


def test_error_statuses():
    assert (BadRequest("x").status_code, PayloadTooLarge("x").status_code,
            UnsupportedMediaType("x").status_code, NotAcceptable("x").status_code) == (400, 413, 415, 406)


def test_item_cap_counts_records(monkeypatch):
    monkeypatch.setenv("CLIP_SEARCH_MAX_BATCH_ITEMS", "3")
    assert len(decode_request(b'{"texts": ["a", "b", "c"]}', "application/json").records) == 3
    with pytest.raises(PayloadTooLarge) as raised:
        decode_request(b'{"texts": ["a", "b", "c", "d"]}', "application/json")
    assert raised.value.message == ("4 items in one request, over the limit of 3 "
                                    "(CLIP_SEARCH_MAX_BATCH_ITEMS); split the batch")
    body = b"\n".join(b'{"text": "t"}' for _ in range(4))
    with pytest.raises(PayloadTooLarge):
        decode_request(body, "application/jsonlines")


def test_jsonlines_records_keep_ids_order_and_per_line_errors():
    data = png()
    body = b"\n".join([
        b'{"id": 1, "text": "apple"}',
        b"",
        json.dumps({"id": "b", "image": b64(data)}).encode(),
        b"{broken",
        b'[1, 2]',
        b'{"id": 7, "text": "x", "image": "QUJD"}',
        b'{"id": 8}',
        b'{"id": 9, "text": ""}',
        b'{"id": 10, "image": "@@"}',
        b'{"text": "last"}',
    ]) + b"\n"
    request = decode_request(body, "application/x-jsonlines")
    assert request.per_record_errors is True
    got = [(r.id, r.text, r.image, r.error) for r in request.records]
    assert got[0] == (1, "apple", None, None)
    assert got[1] == ("b", None, data, None)
    assert got[2][0] is None and got[2][3].startswith("line 4: not valid JSON (UTF-8): ")
    assert got[3] == (None, None, None, "line 5: must be a JSON object with 'text' or 'image'")
    assert got[4] == (7, None, None, "line 6: needs exactly one of 'text' or 'image'")
    assert got[5] == (8, None, None, "line 7: needs exactly one of 'text' or 'image'")
    assert got[6] == (9, None, None, "line 8: text is empty")
    assert got[7][0] == 10 and got[7][3].startswith("line 9: image is not valid base64")
    assert got[8] == (None, "last", None, None)
    assert len(got) == 9


# --- batch -----------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def fresh_decode_pool():
    """The decode pool is per process; a test process forked from one that made it (mutmut's
    workers) would inherit a pool without threads. Start and end each test without one."""
    from clip_search.serving import batch

    batch._pool = None
    yield
    if batch._pool is not None:
        batch._pool.shutdown(wait=True)
    batch._pool = None


class RecordingEncoder:
    """A deterministic encoder: text -> [len, 1, 0...], image -> [0, 0, mean red...]; records calls.

    Stands in for the model so that the routing of rows (which record got which vector, in how many
    batches) can be checked exactly; the real encoder is tested in test_handler.py and test_encoder.py.
    """
    dim = 4
    model_id = "recording/encoder"
    threads = 2

    def __init__(self):
        self.text_batches, self.pixel_batches = [], []

    def decode(self, data):
        from clip_search.images import decode_image

        return decode_image(data)

    def preprocess(self, image):  # the real one returns a (3, H, W) numpy array
        # float64 on purpose: the batch step must hand the runtime float32 whatever preprocess gave
        return np.asarray(image.resize((2, 2)), dtype=np.float64).transpose(2, 0, 1) / 255

    def encode_texts(self, texts):
        self.text_batches.append(list(texts))
        return np.array([[len(t), 1, 0, 0] for t in texts], dtype=np.float32)

    def encode_pixels(self, pixels):
        assert pixels.dtype == np.float32, pixels.dtype
        self.pixel_batches.append(pixels.shape)
        return np.array([[0, 0, p[0].mean(), p[2].mean()] for p in pixels], dtype=np.float32)


def test_batch_routes_rows_texts_and_images_in_one_batch_each():
    encoder = RecordingEncoder()
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    request = EncodeRequest([Record(id="a", text="hello"), Record(id="b", image=red),
                             Record(id="c", text="hi"), Record(id="d", image=blue)])
    result = encode_request(encoder, request)
    assert result.ids == ["a", "b", "c", "d"]
    assert result.errors == [None] * 4 and result.failed == []
    assert (result.model_id, result.dim) == ("recording/encoder", 4)
    assert result.embeddings.dtype == np.float32 and result.embeddings.shape == (4, 4)
    np.testing.assert_allclose(result.embeddings, [[5, 1, 0, 0], [0, 0, 1, 0], [2, 1, 0, 0], [0, 0, 0, 1]])
    assert encoder.text_batches == [["hello", "hi"]]
    assert encoder.pixel_batches == [(2, 3, 2, 2)]


def test_batch_single_image_and_text_only():
    encoder = RecordingEncoder()
    result = encode_request(encoder, EncodeRequest([Record(image=png((0, 0, 255)))]))
    np.testing.assert_allclose(result.embeddings, [[0, 0, 0, 1]])
    assert encoder.text_batches == []
    encoder = RecordingEncoder()
    result = encode_request(encoder, EncodeRequest([Record(text="abc")]))
    np.testing.assert_allclose(result.embeddings, [[3, 1, 0, 0]])
    assert encoder.pixel_batches == []


def test_batch_per_record_errors_leave_zero_rows_and_name_the_record():
    encoder = RecordingEncoder()
    request = EncodeRequest([Record(id="ok", text="hey"), Record(id=5, image=b"not an image"),
                             Record(image=b"still not"), Record(error="line 4: broken"),
                             Record(image=png((0, 0, 255)))], per_record_errors=True)
    result = encode_request(encoder, request)
    assert result.failed == [1, 2, 3]
    assert result.errors[1] == "record 1 (id 5): not a decodable image: the bytes are not in a format PIL can read"
    assert result.errors[2] == "record 2: not a decodable image: the bytes are not in a format PIL can read"
    assert result.errors[3] == "line 4: broken"
    np.testing.assert_allclose(result.embeddings, [[3, 1, 0, 0], [0] * 4, [0] * 4, [0] * 4, [0, 0, 0, 1]])
    assert encoder.text_batches == [["hey"]] and encoder.pixel_batches == [(1, 3, 2, 2)]


def test_batch_without_per_record_errors_fails_naming_the_item():
    request = EncodeRequest([Record(text="a"), Record(image=png()), Record(image=b"junk")])
    with pytest.raises(BadRequest) as raised:
        encode_request(RecordingEncoder(), request)
    assert raised.value.message.startswith("item 2: not a decodable image")
    assert raised.value.phrase == raised.value.message
    with pytest.raises(BadRequest) as raised:
        encode_request(RecordingEncoder(), EncodeRequest([Record(text="a"), Record(image=b"junk")]))
    assert raised.value.message.startswith("item 1: not a decodable image")
    with pytest.raises(BadRequest) as raised:  # a single item needs no index
        encode_request(RecordingEncoder(), EncodeRequest([Record(image=b"junk")]))
    assert raised.value.message.startswith("not a decodable image")


# --- serializer ------------------------------------------------------------------------------------
def result(errors=(None, None), ids=("a", "b")):
    vectors = np.array([[0.5, -0.25, 1.0], [0.125, 2.0, -1.0]], dtype=np.float32)
    return EncodeResult(list(ids), vectors, list(errors), "m/x", 3)


def test_json_answer():
    payload, media = serialize(result(), None)
    assert media == "application/json"
    assert orjson.loads(payload) == {"embeddings": [[0.5, -0.25, 1.0], [0.125, 2.0, -1.0]], "dim": 3, "model": "m/x"}


def test_json_answer_with_errors_lists_them():
    payload, _ = serialize(result(errors=(None, "record 1: bad")), "application/json")
    assert orjson.loads(payload) == {
        "embeddings": [[0.5, -0.25, 1.0], None], "dim": 3, "model": "m/x",
        "errors": [{"index": 1, "id": "b", "error": "record 1: bad"}]}


def test_jsonlines_answer():
    payload, media = serialize(result(errors=("record 0: bad", None)), "application/jsonlines")
    assert media == "application/jsonlines"
    assert not payload.endswith(b"\n")
    assert [orjson.loads(line) for line in payload.split(b"\n")] == [
        {"id": "a", "error": "record 0: bad"}, {"id": "b", "embedding": [0.125, 2.0, -1.0]}]


def test_npy_is_float32_whatever_the_encoder_gave():
    wide = EncodeResult(["a"], np.array([[0.1, 0.2]], dtype=np.float64), [None], "m/x", 2)
    array = np.load(io.BytesIO(serialize(wide, "application/x-npy")[0]), allow_pickle=False)
    assert array.dtype == np.float32 and array.tolist() == [[np.float32(0.1), np.float32(0.2)]]


def test_npy_answer_and_its_refusal():
    payload, media = serialize(result(), "application/x-npy")
    assert media == "application/x-npy"
    array = np.load(io.BytesIO(payload), allow_pickle=False)
    assert array.dtype == np.float32 and array.tolist() == [[0.5, -0.25, 1.0], [0.125, 2.0, -1.0]]
    with pytest.raises(BadRequest) as raised:
        serialize(result(errors=(None, "record 1: bad")), "application/x-npy")
    assert raised.value.message == ("1 record(s) could not be encoded and application/x-npy cannot carry errors "
                                    "(first: record 1: bad); ask for application/jsonlines")


def test_default_and_not_acceptable():
    assert serialize(result(), "*/*", default="application/x-npy")[1] == "application/x-npy"
    with pytest.raises(NotAcceptable) as raised:
        serialize(result(), "text/html")
    assert raised.value.message == ("unsupported Accept 'text/html'; supported: application/json, "
                                    "application/jsonlines, application/x-npy, application/vnd.clip-search.ml-commons+json")
    assert isinstance(raised.value, RequestError) and raised.value.status_code == 406
