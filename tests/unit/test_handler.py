"""Every row of the handler contract, through model_fn / input_fn / predict_fn / output_fn."""
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from sagemaker_inference.errors import GenericInferenceToolkitError

from clip_search.errors import RequestError
from clip_search.serving.handler import input_fn, model_fn, output_fn, predict_fn


@pytest.fixture(scope="module")
def model(test_model_dir):
    return model_fn(str(test_model_dir))


@pytest.fixture(scope="module")
def photos(catalogue_photos):
    return [path.read_bytes() for path in catalogue_photos[:4]]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def run(model, body, content_type, accept="application/json"):
    payload, media = output_fn(predict_fn(input_fn(body, content_type), model), accept)
    return payload, media


def embeddings(model, body, content_type):
    payload, media = run(model, body, content_type)
    assert media == "application/json"
    answer = json.loads(payload)
    assert answer["dim"] == 64 and answer["model"] == "clip-search-tiny/random"
    return np.array(answer["embeddings"], dtype=np.float32)


def test_json_text_texts_and_inputs(model):
    one = embeddings(model, json.dumps({"text": "red apple"}), "application/json")
    many = embeddings(model, json.dumps({"texts": ["red apple", "green pear"]}), "application/json")
    reference = embeddings(model, json.dumps({"inputs": ["red apple", "green pear"]}), "application/json")
    assert one.shape == (1, 64) and many.shape == (2, 64)
    assert np.allclose(many, reference) and np.allclose(one[0], many[0], atol=1e-5)
    assert np.allclose(one, model.encode_texts(["red apple"]), atol=1e-6)


def test_json_image_and_images(model, photos):
    one = embeddings(model, json.dumps({"image": b64(photos[0])}), "application/json")
    many = embeddings(model, json.dumps({"images": [b64(p) for p in photos]}), "application/json")
    assert one.shape == (1, 64) and many.shape == (4, 64)
    assert np.abs(one[0] - many[0]).max() < 1e-5
    assert np.allclose(np.linalg.norm(many, axis=1), 1, atol=1e-5)


def test_text_plain_equals_json_text(model):
    plain = embeddings(model, "red apple".encode(), "text/plain; charset=utf-8")
    assert np.allclose(plain, embeddings(model, json.dumps({"text": "red apple"}), "application/json"))


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "image/webp", "application/x-image"])
def test_raw_image_content_types(model, photos, content_type):
    image = Image.open(io.BytesIO(photos[0]))
    buffer = io.BytesIO()
    image.save(buffer, {"image/png": "PNG", "image/webp": "WEBP"}.get(content_type, "JPEG"))
    vectors = embeddings(model, buffer.getvalue(), content_type)
    assert vectors.shape == (1, 64)


def jsonlines(*records) -> bytes:
    return "\n".join(json.dumps(record) for record in records).encode()


def test_jsonlines_keeps_order_and_ids_one_batch_per_modality(model, photos):
    body = jsonlines({"id": "p1", "text": "red apple"}, {"id": 7, "image": b64(photos[0])},
                     {"text": "no id"}, {"id": "p4", "image": b64(photos[1])})
    payload, media = run(model, body, "application/jsonlines", "application/jsonlines")
    assert media == "application/jsonlines"
    assert not payload.endswith(b"\n")
    lines = [json.loads(line) for line in payload.split(b"\n")]
    assert [line["id"] for line in lines] == ["p1", 7, None, "p4"]
    assert np.allclose(lines[0]["embedding"], model.encode_texts(["red apple"])[0], atol=1e-5)
    assert np.allclose(lines[3]["embedding"], model.encode_image_bytes([photos[1]])[0], atol=1e-5)


def test_jsonlines_per_record_errors_leave_the_rest_encoded(model, photos):
    body = b"\n".join([
        json.dumps({"id": "ok", "text": "milk"}).encode(),
        b"{not json",
        json.dumps({"id": "both", "text": "a", "image": b64(photos[0])}).encode(),
        json.dumps({"id": "b64", "image": "%%%"}).encode(),
        json.dumps({"id": "corrupt", "image": b64(b"not an image")}).encode(),
        json.dumps({"id": "img", "image": b64(photos[0])}).encode(),
        b"",  # a trailing newline is not a record
    ])
    payload, _ = run(model, body, "application/jsonlines", "application/jsonlines")
    lines = [json.loads(line) for line in payload.split(b"\n")]
    assert [line.get("id") for line in lines] == ["ok", None, "both", "b64", "corrupt", "img"]
    assert "embedding" in lines[0] and "embedding" in lines[5]
    assert "not valid JSON" in lines[1]["error"]
    assert "exactly one of 'text' or 'image'" in lines[2]["error"]
    assert "not valid base64" in lines[3]["error"]
    assert "not a decodable image" in lines[4]["error"]


def test_jsonlines_errors_in_a_json_answer_are_listed(model):
    body = jsonlines({"id": "a", "text": "milk"}, {"id": "b"})
    answer = json.loads(run(model, body, "application/jsonlines", "application/json")[0])
    assert answer["embeddings"][1] is None and len(answer["embeddings"][0]) == 64
    assert answer["errors"][0]["id"] == "b" and answer["errors"][0]["index"] == 1


def test_npy_answer(model):
    payload, media = run(model, json.dumps({"texts": ["a", "b", "c"]}), "application/json", "application/x-npy")
    assert media == "application/x-npy"
    array = np.load(io.BytesIO(payload), allow_pickle=False)
    assert array.dtype == np.float32 and array.shape == (3, 64)


@pytest.mark.parametrize("accept, media", [
    (None, "application/json"), ("*/*", "application/json"),
    ("text/html, application/jsonlines;q=0.9", "application/jsonlines"),
    ("application/json;q=0.1, application/x-npy", "application/x-npy"),
])
def test_accept_negotiation(model, accept, media):
    assert run(model, "milk".encode(), "text/plain", accept)[1] == media


def test_default_accept_follows_sagemaker_variable(model, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "application/jsonlines")
    assert run(model, b"milk", "text/plain", None)[1] == "application/jsonlines"


def status_of(model, body, content_type, accept="application/json"):
    # A stock SageMaker image's toolkit only knows its own error class: the handler converts ours.
    with pytest.raises(GenericInferenceToolkitError) as caught:
        run(model, body, content_type, accept)
    cause = caught.value.__cause__
    assert isinstance(cause, RequestError) and cause.status_code == caught.value.status_code
    return caught.value.status_code, caught.value.message


@pytest.mark.parametrize("body, content_type, words", [
    (b"{not json", "application/json", "not valid JSON"),
    (b"\xff\xfe\x00", "application/json", "not valid JSON"),
    (b"\xff\xfe\x00", "text/plain", "not valid UTF-8"),
    (json.dumps({"image": "%%%not base64"}), "application/json", "not valid base64"),
    (json.dumps({"image": b64(b"not an image")}), "application/json", "not a decodable image"),
    (json.dumps({"texts": []}), "application/json", "empty input"),
    (json.dumps({"text": "  "}), "application/json", "text is empty"),
    (json.dumps({"text": 5}), "application/json", "must be a string"),
    (json.dumps({"text": "a", "image": "b"}), "application/json", "exactly one of"),
    (json.dumps(["a"]), "application/json", "must be an object"),
    (b"", "image/jpeg", "empty request body"),
    (b"", "application/jsonlines", "empty input"),
    (b"", "text/plain", "is empty"),
])
def test_bad_requests_are_400(model, body, content_type, words):
    status, message = status_of(model, body, content_type)
    assert status == 400 and words in message


def test_a_bad_image_in_a_json_list_names_the_item(model, photos):
    body = json.dumps({"images": [b64(photos[0]), b64(b"junk")]})
    status, message = status_of(model, body, "application/json")
    assert status == 400 and message.startswith("item 1:")


def test_too_many_items_is_413(model, monkeypatch):
    monkeypatch.setenv("CLIP_SEARCH_MAX_BATCH_ITEMS", "3")
    status, message = status_of(model, json.dumps({"texts": ["a"] * 4}), "application/json")
    assert status == 413 and "4 items" in message


def test_pixel_bomb_is_413(model):
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, "PNG")
    status, _ = status_of(model, buffer.getvalue(), "image/png")
    assert status == 413


def test_unsupported_content_type_is_415(model):
    assert status_of(model, b"x", "video/mp4")[0] == 415
    assert status_of(model, b"x", None)[0] == 415


def test_unsupported_accept_is_406(model):
    assert status_of(model, b"milk", "text/plain", "text/html")[0] == 406


def test_npy_cannot_carry_record_errors_and_says_so(model):
    status, message = status_of(model, jsonlines({"id": 1}), "application/jsonlines", "application/x-npy")
    assert status == 400 and "application/jsonlines" in message


def test_script_mode_entry_point_exposes_the_four_functions(test_model_tar, tmp_path):
    import subprocess
    import sys
    import tarfile

    tarfile.open(test_model_tar).extractall(tmp_path, filter="data")
    # Import inference.py from the artifact's code/ as a stock SageMaker image would.
    code = ("import inference, json;"
            "m = inference.model_fn(%r);"
            "p = inference.predict_fn(inference.input_fn(b'milk', 'text/plain'), m);"
            "body, media = inference.output_fn(p, 'application/json');"
            "print(media, json.loads(body)['dim'])") % str(tmp_path)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "code", capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["application/json", "64"]
