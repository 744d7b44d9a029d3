"""The HTTP contract suite, run against any server that speaks it.

Test modules import everything from here and provide a `server_url` fixture: tests/server/ runs it
against the native `clip-search serve` stack, tests/container/ against the Docker image.
"""
import base64
import io
import json
import threading
import time

import numpy as np
import pytest
import requests

DIM = 64  # the test model's embedding dimension


def post(server_url, body, content_type, accept=None, timeout=120):
    headers = {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    return requests.post(server_url + "/invocations", data=body, headers=headers, timeout=timeout)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def photo_bytes(catalogue_photos):
    return [path.read_bytes() for path in catalogue_photos[:40]]


def test_ping(server_url):
    assert requests.get(server_url + "/ping", timeout=10).status_code == 200


@pytest.mark.parametrize("body", [{"text": "oat milk"}, {"texts": ["oat milk", "red apple"]},
                                  {"inputs": ["oat milk"]}])
def test_json_text_requests(server_url, body):
    response = post(server_url, json.dumps(body), "application/json")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    answer = response.json()
    count = len(body.get("texts") or body.get("inputs") or [1])
    assert answer["dim"] == DIM and answer["model"] == "clip-search-tiny/random"
    vectors = np.array(answer["embeddings"])
    assert vectors.shape == (count, DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)


def test_json_image_requests(server_url, photo_bytes):
    one = post(server_url, json.dumps({"image": b64(photo_bytes[0])}), "application/json")
    many = post(server_url, json.dumps({"images": [b64(p) for p in photo_bytes[:3]]}), "application/json")
    assert one.status_code == 200 and many.status_code == 200, (one.text, many.text)
    assert np.allclose(one.json()["embeddings"][0], many.json()["embeddings"][0], atol=1e-5)


def test_text_plain(server_url):
    plain = post(server_url, "oat milk".encode(), "text/plain")
    as_json = post(server_url, json.dumps({"text": "oat milk"}), "application/json")
    assert plain.status_code == 200
    assert np.allclose(plain.json()["embeddings"], as_json.json()["embeddings"], atol=1e-6)


@pytest.mark.parametrize("content_type, fmt", [("image/jpeg", None), ("application/x-image", None),
                                               ("image/png", "PNG"), ("image/webp", "WEBP")])
def test_raw_images(server_url, photo_bytes, content_type, fmt):
    data = photo_bytes[1]
    if fmt:
        from PIL import Image

        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).save(buffer, fmt)
        data = buffer.getvalue()
    response = post(server_url, data, content_type)
    assert response.status_code == 200, response.text
    assert len(response.json()["embeddings"][0]) == DIM


@pytest.mark.parametrize("count", [1, 32, 500])
def test_jsonlines_batches(server_url, photo_bytes, count):
    records = []
    for i in range(count):
        if i % 2:
            records.append({"id": f"img-{i}", "image": b64(photo_bytes[i % len(photo_bytes)])})
        else:
            records.append({"id": f"txt-{i}", "text": f"product number {i}"})
    body = "\n".join(json.dumps(r) for r in records)
    if count == 500:
        # 500 mixed records would pass the 6 MB payload limit with photos: use texts and ids.
        records = [{"id": i, "text": f"product number {i}"} for i in range(count)]
        body = "\n".join(json.dumps(r) for r in records) + "\n"
    response = post(server_url, body, "application/jsonlines", "application/jsonlines")
    assert response.status_code == 200, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/jsonlines")
    assert not response.text.endswith("\n")
    lines = [json.loads(line) for line in response.text.split("\n")]
    assert [line["id"] for line in lines] == [r["id"] for r in records]
    assert all(len(line["embedding"]) == DIM for line in lines)


def test_jsonlines_record_errors_do_not_fail_the_batch(server_url, photo_bytes):
    body = "\n".join([json.dumps({"id": 1, "text": "milk"}), "{oops",
                      json.dumps({"id": 3, "image": b64(b"junk")}),
                      json.dumps({"id": 4, "image": b64(photo_bytes[0])})])
    response = post(server_url, body, "application/jsonlines", "application/jsonlines")
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.split("\n")]
    assert "embedding" in lines[0] and "embedding" in lines[3]
    assert "error" in lines[1] and "not a decodable image" in lines[2]["error"]


def test_npy_answer(server_url):
    response = post(server_url, json.dumps({"texts": ["a", "b"]}), "application/json", "application/x-npy")
    assert response.status_code == 200
    array = np.load(io.BytesIO(response.content), allow_pickle=False)
    assert array.shape == (2, DIM) and array.dtype == np.float32


def assert_error(response, status, words):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status and words in body["error"], body
    assert "Traceback" not in response.text


def test_error_statuses(server_url):
    assert_error(post(server_url, b"{bad", "application/json"), 400, "not valid JSON")
    assert_error(post(server_url, b"\xff\xfe\xfd", "application/json"), 400, "not valid JSON")
    assert_error(post(server_url, b"\xff\xfe\xfd", "text/plain"), 400, "not valid UTF-8")
    assert_error(post(server_url, json.dumps({"image": "@@@"}), "application/json"), 400, "base64")
    assert_error(post(server_url, b"not an image", "image/jpeg"), 400, "not a decodable image")
    assert_error(post(server_url, json.dumps({"texts": []}), "application/json"), 400, "empty input")
    assert_error(post(server_url, b"x", "video/mp4"), 415, "unsupported Content-Type")
    assert_error(post(server_url, b"milk", "text/plain", "text/html"), 406, "unsupported Accept")
    too_many = json.dumps({"texts": ["a"] * 2000})
    assert_error(post(server_url, too_many, "application/json"), 413, "2000 items")


@pytest.mark.parametrize("method", ["GET", "DELETE", "PROPFIND"])
def test_a_request_without_body_or_content_type_gets_a_json_400_naming_post(server_url, method):
    # MMS hands any method on /invocations to the worker without the method: a GET looks like this
    response = requests.request(method, server_url + "/invocations", timeout=60)
    assert_error(response, 400, "POST the input to /invocations")
    assert "embeddings" not in response.text


def test_head_and_a_query_on_invocations_get_the_same_400_and_the_routes_around_it_still_work(server_url):
    head = requests.head(server_url + "/invocations", timeout=60)
    assert head.status_code == 400 and not head.content
    assert_error(requests.get(server_url + "/invocations?model_name=model", timeout=60), 400, "POST the input")
    # MMS's own answers: its API description, and its 405 for POST /
    assert requests.options(server_url + "/invocations", timeout=60).json()["openapi"].startswith("3.")
    assert requests.get(server_url + "/api-description", timeout=60).json()["openapi"].startswith("3.")
    assert requests.post(server_url + "/", timeout=60).status_code == 405
    assert requests.get(server_url + "/ping", timeout=10).status_code == 200
    good = post(server_url, b"still POST", "text/plain")
    assert good.status_code == 200 and len(good.json()["embeddings"][0]) == DIM


def test_another_method_with_a_body_is_encoded_like_post_as_documented(server_url):
    # docs/hardening.md: MMS drops the method, so a PUT with a body is a POST to the handler. Should an
    # MMS upgrade pass the method on (or refuse it), this fails and the document must change with it.
    as_post = post(server_url, b"oat milk", "text/plain").json()["embeddings"]
    put = requests.put(server_url + "/invocations", data=b"oat milk", timeout=60,
                       headers={"Content-Type": "text/plain"})
    assert put.status_code == 200
    assert np.allclose(put.json()["embeddings"], as_post, atol=1e-6)


def test_pixel_bomb_is_413(server_url):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, "PNG")
    assert_error(post(server_url, buffer.getvalue(), "image/png"), 413, "over the limit")


def _png(width, height, mode="L"):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def test_hostile_pngs_get_the_projects_limits_not_gigabytes(server_url):
    strip = _png(20000, 1)  # ~140 bytes; scaled to the model input it would be 4.5 G pixels
    assert len(strip) < 1000
    assert_error(post(server_url, strip, "image/png"), 400, "CLIP_SEARCH_MAX_ASPECT_RATIO")
    # 400 M pixels: Pillow's own bomb guard fires first, and the message is still ours
    bomb = post(server_url, _png(20000, 20000, "1"), "image/png")
    assert_error(bomb, 413, "CLIP_SEARCH_MAX_IMAGE_PIXELS")
    assert "decompression bomb" not in bomb.text
    good = post(server_url, b"after the strip", "text/plain")
    assert good.status_code == 200 and len(good.json()["embeddings"][0]) == DIM


def test_server_keeps_serving_after_a_burst_of_bad_requests(server_url):
    bad = [(b"{bad", "application/json"), (b"\xff", "text/plain"), (b"junk", "image/png"),
           (b"x", "video/mp4"), (b"", "application/jsonlines")]
    for _ in range(10):
        for body, content_type in bad:
            assert 400 <= post(server_url, body, content_type).status_code < 500
    good = post(server_url, b"still alive", "text/plain")
    assert good.status_code == 200 and len(good.json()["embeddings"][0]) == DIM


def test_20_concurrent_clients_for_20_seconds_get_no_5xx(server_url, photo_bytes):
    deadline = time.monotonic() + 20
    statuses, failures = [], []
    lock = threading.Lock()

    def client(number):
        session = requests.Session()
        while time.monotonic() < deadline:
            if number % 2:
                body, content_type = photo_bytes[number % len(photo_bytes)], "image/jpeg"
            else:
                body, content_type = f"query {number}".encode(), "text/plain"
            try:
                status = session.post(server_url + "/invocations", data=body, timeout=60,
                                      headers={"Content-Type": content_type}).status_code
            except requests.RequestException as error:
                with lock:
                    failures.append(repr(error))
                return
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures[:3]
    assert len(statuses) >= 20
    assert all(status == 200 for status in statuses), sorted(set(statuses))
