"""The search app's HTTP API on loopback: every route, every error status, unsafe paths, uploads.

The app runs on real uvicorn (tests/app/conftest.py) over the demo catalogue indexed with the test
model; answers are checked against the search library and the catalogue file, not against the app.
"""
import base64
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.app.conftest import DEMO, UPLOAD_LIMIT, random_unit, raw_get

HIT_KEYS = {"id", "score", "title", "image_url"}


def get(app_url, path, **params):
    return requests.get(app_url + path, params=params, timeout=60, allow_redirects=False)


def assert_error(response, status, *words):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "status"} and body["status"] == status
    assert "Traceback" not in body["error"] and 'File "' not in body["error"]
    for word in words:
        assert word.lower() in body["error"].lower(), body["error"]
    return body


# --- GET /api/search ----------------------------------------------------------------------------
def test_text_search_answers_the_wire_format_and_agrees_with_the_library(app_url, library_client, demo_index):
    response = get(app_url, "/api/search", q="green apple", k=5)
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"hits", "took_ms", "model", "index"}
    assert answer["model"] == "clip-search-tiny/random" and answer["index"] == str(demo_index)
    assert set(answer["took_ms"]) == {"encode", "search"} and all(v >= 0 for v in answer["took_ms"].values())
    hits = answer["hits"]
    expected = library_client.search_text("green apple", k=5)
    assert [hit["id"] for hit in hits] == [hit.id for hit in expected]
    assert [hit["score"] for hit in hits] == pytest.approx([hit.score for hit in expected], abs=1e-5)
    catalogue = {row["id"]: row for row in map(json.loads, (DEMO / "products.jsonl").read_text().splitlines())}
    for hit in hits:
        assert HIT_KEYS <= set(hit)
        row = catalogue[hit["id"]]
        assert hit["title"] == row["title"]
        assert hit["image_url"] == f"/api/products/{hit['id']}/image"
        assert (hit["department"], hit["category"]) == (row["department"], row["category"])  # metadata rides along
        assert "image" not in hit  # the stored location (a local path) stays private


@pytest.mark.parametrize("k, expected", [(1, 1), (7, 7), (100, 81)])
def test_k_bounds_the_hits(app_url, k, expected):
    assert len(get(app_url, "/api/search", q="milk", k=k).json()["hits"]) == expected


@pytest.mark.parametrize("k, status", [("0", 422), ("101", 422), ("-3", 422), ("ten", 400), ("1.5", 400)])
def test_bad_k_is_a_clear_error(app_url, k, status):
    assert_error(get(app_url, "/api/search", q="milk", k=k), status, "k")


def test_filters_restrict_hits_and_combine_like_the_cli(app_url, demo_products):
    fruit = get(app_url, "/api/search", q="sweet", k=100, filter="department:Fruit").json()["hits"]
    assert len(fruit) == sum(p["department"] == "Fruit" for p in demo_products) == 28
    assert {hit["department"] for hit in fruit} == {"Fruit"}
    either = requests.get(app_url + "/api/search", timeout=30, params=[
        ("q", "sweet"), ("k", 100), ("filter", "category:Apple"), ("filter", "category:Pear")]).json()["hits"]
    assert Counter(hit["category"] for hit in either) == Counter(
        p["category"] for p in demo_products if p["category"] in ("Apple", "Pear"))
    both = requests.get(app_url + "/api/search", timeout=30, params=[
        ("q", "sweet"), ("k", 100), ("filter", "department:Packages"), ("filter", "category:Juice")]).json()["hits"]
    assert len(both) == 10 and {(h["department"], h["category"]) for h in both} == {("Packages", "Juice")}
    assert get(app_url, "/api/search", q="sweet", filter="department:Bakery").json()["hits"] == []
    value_with_colon = get(app_url, "/api/search", q="sweet", filter="category:Juice:Orange").json()["hits"]
    assert value_with_colon == []  # the first colon splits field from value
    # One grammar with the CLI: its field=value means the same, in a query string and in JSON.
    assert get(app_url, "/api/search", q="sweet", k=100, filter="department=Fruit").json()["hits"] == fruit
    posted = requests.post(app_url + "/api/search", json={"text": "sweet", "k": 100, "filter": ["department=Fruit"]},
                           timeout=30).json()["hits"]
    assert [hit["id"] for hit in posted] == [hit["id"] for hit in fruit]


def test_bad_filter_and_hybrid_flag(app_url):
    assert_error(get(app_url, "/api/search", q="milk", filter="department"), 400, "'department'", "field=value", "field:value")
    assert_error(get(app_url, "/api/search", q="milk", filter=":Fruit"), 400, "field:value")
    assert_error(get(app_url, "/api/search", q="milk", filter="=Fruit"), 400, "field=value")
    assert_error(get(app_url, "/api/search", q="milk", hybrid="maybe"), 400, "hybrid")
    assert get(app_url, "/api/search", q="milk", hybrid="0").status_code == 200


def test_hybrid_on_the_embedded_index_ranks_the_keyword_match_first(app_url):
    # The test model's vectors are random; the full-text half of the fusion finds the title.
    hits = get(app_url, "/api/search", q="Granny Smith", hybrid="1").json()["hits"]
    assert hits and hits[0]["id"] == "Granny-Smith"


def test_missing_or_empty_query(app_url):
    assert_error(get(app_url, "/api/search"), 400, "q=")
    assert_error(get(app_url, "/api/search", q="   "), 400, "empty")
    assert_error(get(app_url, "/api/search", q="milk", like="Banana"), 400, "exactly one")


# --- POST /api/search ---------------------------------------------------------------------------
def test_json_text_matches_get(app_url):
    posted = requests.post(app_url + "/api/search", json={"text": "oat milk", "k": 4, "filter": ["department:Packages"]},
                           timeout=30).json()
    fetched = get(app_url, "/api/search", q="oat milk", k=4, filter="department:Packages").json()
    assert [h["id"] for h in posted["hits"]] == [h["id"] for h in fetched["hits"]]
    dict_filter = requests.post(app_url + "/api/search", json={"text": "oat milk", "k": 4,
                                                               "filter": {"department": ["Packages"]}}, timeout=30).json()
    assert [h["id"] for h in dict_filter["hits"]] == [h["id"] for h in fetched["hits"]]


def test_photo_queries_find_the_product_by_upload_and_by_base64(app_url, library_client):
    photo = (DEMO / "images" / "Granny-Smith.jpg").read_bytes()
    expected = library_client.search_image(photo, k=5)
    uploaded = requests.post(app_url + "/api/search", files={"image": ("apple.jpg", photo, "image/jpeg")},
                             data={"k": "5"}, timeout=30)
    assert uploaded.status_code == 200, uploaded.text
    as_json = requests.post(app_url + "/api/search", json={"image": base64.b64encode(photo).decode(), "k": 5}, timeout=30)
    for answer in (uploaded.json(), as_json.json()):
        assert [h["id"] for h in answer["hits"]] == [h.id for h in expected]
        assert answer["hits"][0]["id"] == "Granny-Smith" and answer["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    data_url = "data:image/jpeg;base64," + base64.b64encode(photo).decode()
    assert requests.post(app_url + "/api/search", json={"image": data_url}, timeout=30).json()["hits"][0]["id"] == "Granny-Smith"


def test_upload_with_filters(app_url):
    photo = (DEMO / "images" / "Banana.jpg").read_bytes()
    answer = requests.post(app_url + "/api/search", files={"image": ("b.jpg", photo, "image/jpeg")},
                           data=[("k", "50"), ("filter", "department:Vegetables")], timeout=30).json()
    assert len(answer["hits"]) == 22 and {h["department"] for h in answer["hits"]} == {"Vegetables"}


def test_store_photo_upload(app_url, store_photos):
    response = requests.post(app_url + "/api/search", files={"image": (store_photos[0].name, store_photos[0].read_bytes(),
                                                                       "image/jpeg")}, timeout=30)
    assert response.status_code == 200 and len(response.json()["hits"]) == 10


def test_more_like_this_is_the_products_photo_without_the_product(app_url, library_client):
    answer = requests.post(app_url + "/api/search", json={"like": "Banana", "k": 6}, timeout=30).json()
    ids = [h["id"] for h in answer["hits"]]
    expected = [h.id for h in library_client.search_image((DEMO / "images" / "Banana.jpg").read_bytes(), k=7)
                if h.id != "Banana"][:6]
    assert ids == expected and "Banana" not in ids and len(ids) == 6
    assert get(app_url, "/api/search", like="Banana", k=6).json()["hits"] == answer["hits"]
    assert_error(requests.post(app_url + "/api/search", json={"like": "No-Such-Product"}, timeout=30), 404, "No-Such-Product")


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, ["malformed json"]),
    (b"[1, 2]", 400, ["object"]),
    (b'{"text": 5}', 400, ['"text"']),
    (b'{"text": "a", "image": "aGVsbG8="}', 400, ["exactly one"]),
    (b"{}", 400, ["exactly one"]),
    (b'{"image": "***not base64***"}', 400, ["base64"]),
    (b'{"image": "aGVsbG8gd29ybGQ="}', 400, ["not a decodable image"]),
    (b'{"text": "milk", "k": 500}', 422, ["between 1 and 100"]),
    (b'{"text": "milk", "colour": "red"}', 400, ["unknown field", "colour"]),
    (b'{"text": "milk", "filter": 7}', 400, ["filter"]),
    (b'{"like": "Banana", "hybrid": true}', 422, ["hybrid"]),
])
def test_bad_json_bodies(app_url, body, status, words):
    response = requests.post(app_url + "/api/search", data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert_error(response, status, *words)


def _png(size, mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_uploads(app_url):
    photo = (DEMO / "images" / "Banana.jpg").read_bytes()
    post = lambda **kw: requests.post(app_url + "/api/search", timeout=60, **kw)  # noqa: E731
    assert_error(post(files={"image": ("notes.txt", b"just some text", "text/plain")}), 415, "text/plain", "not an image")
    assert_error(post(files={"image": ("fake.jpg", b"just some text", "image/jpeg")}), 400, "not a decodable image")
    assert_error(post(files={"image": ("cut.jpg", photo[: len(photo) // 2], "image/jpeg")}), 400, "truncated")
    assert_error(post(files={"image": ("empty.jpg", b"", "image/jpeg")}), 400, "empty image")
    assert_error(post(files={"photo": ("b.jpg", photo, "image/jpeg")}), 400, '"image"')
    assert_error(post(files={"image": (None, "not a file")}), 400, '"image"')
    assert_error(post(data={"image": "not a file"}), 415, "x-www-form-urlencoded")
    assert_error(post(data=b"garbage", headers={"Content-Type": "multipart/form-data; boundary=xyz"}), 400, "malformed multipart")
    assert_error(post(data=photo, headers={"Content-Type": "image/jpeg"}), 415, "image/jpeg")
    assert_error(post(data=b"milk"), 415, "without content-type")
    # Over the body limit: refused with 413, whether the size is declared or streamed.
    big = np.random.default_rng(0).integers(0, 255, UPLOAD_LIMIT + 50_000, dtype=np.uint8).tobytes()
    assert_error(post(files={"image": ("big.jpg", big, "image/jpeg")}), 413, "limit")
    assert_error(post(data=iter([big[:600_000], big[600_000:]]), headers={"Content-Type": "application/json"}), 413, "limit")
    # A small file that declares a huge canvas (decompression bomb): the project's 413 before decoding.
    bomb = _png((7200, 7200), mode="1")
    assert len(bomb) < UPLOAD_LIMIT
    assert_error(post(files={"image": ("bomb.png", bomb, "image/png")}), 413, "pixels")


def test_the_app_keeps_serving_after_a_burst_of_bad_requests(app_url):
    for i in range(40):
        requests.post(app_url + "/api/search", data=b"{" * (i + 1), headers={"Content-Type": "application/json"}, timeout=30)
        requests.get(app_url + "/api/search", params={"q": "x", "k": "abc"}, timeout=30)
    assert get(app_url, "/api/search", q="yoghurt", k=3).status_code == 200


# --- products and their images ------------------------------------------------------------------
def test_product_and_its_image(app_url, demo_products):
    row = next(p for p in demo_products if p["id"] == "Oatly-Oat-Milk")
    answer = get(app_url, "/api/products/Oatly-Oat-Milk").json()
    assert answer == {"id": row["id"], "title": row["title"], "image_url": "/api/products/Oatly-Oat-Milk/image",
                      **{k: v for k, v in row.items() if k not in ("id", "title", "image")}}
    image = get(app_url, "/api/products/Oatly-Oat-Milk/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == (DEMO / row["image"]).read_bytes()
    assert_error(get(app_url, "/api/products/No-Such-Product"), 404, "No-Such-Product")
    assert_error(get(app_url, "/api/products/No-Such-Product/image"), 404, "No-Such-Product")


SECRET = b"top secret: not a product photo"


@pytest.mark.parametrize("raw_path", [
    "/api/products/../../../../etc/passwd",
    "/api/products/..%2F..%2F..%2F..%2Fetc%2Fpasswd/image",
    "/api/products/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd/image",
    "/api/products/%2e%2e/image",
    "/api/products/%2Fetc%2Fpasswd/image",
    "/api/products//etc/passwd/image",
    "/api/products/%252e%252e%252fetc%252fpasswd/image",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static//etc/passwd",
    "/static/%2Fetc%2Fpasswd",
])
def test_path_traversal_through_the_url_reaches_no_file(app_url, raw_path):
    status, headers, body = raw_get(app_url, raw_path)
    assert status == 404, (raw_path, status, body[:200])
    assert headers["content-type"].startswith("application/json")
    assert b"root:" not in body and json.loads(body)["status"] == 404


TRICKY_VECTORS: dict = {}  # product id -> the image vector tricky_app stored for it


@pytest.fixture(scope="module")
def tricky_app(tmp_path_factory, test_encoder, test_model_dir):
    """A catalogue whose stored image locations try to leave its folder: a symlink out, an absolute
    path elsewhere, a path with `..`, a folder, a text file named .jpg, plus s3:// and https:// ones."""
    from clip_search.app.build import open_service
    from clip_search.app.server import AppServer, create_app
    from clip_search.search.index import open_index
    from clip_search.search.records import EmbeddedProduct, Product

    root = tmp_path_factory.mktemp("tricky")
    images, outside = root / "catalogue" / "images", root / "outside"
    images.mkdir(parents=True)
    outside.mkdir()
    photo = (DEMO / "images" / "Kiwi.jpg").read_bytes()
    (images / "kiwi.jpg").write_bytes(photo)
    (images / "Ä space.jpg").write_bytes(photo)
    (outside / "secret.jpg").write_bytes(photo)  # a real photo: only the location check can refuse it
    (images / "escape.jpg").symlink_to(outside / "secret.jpg")
    (images / "inner-link.jpg").symlink_to(images / "kiwi.jpg")
    (images / "notes.jpg").write_bytes(SECRET)
    (images / "folder.jpg").mkdir()
    locations = {
        "ok": str(images / "kiwi.jpg"),
        "unicode id ü/ä": str(images / "Ä space.jpg"),
        "inner-link": str(images / "inner-link.jpg"),
        "file-url": "file://" + str(images / "kiwi.jpg"),
        "symlink-out": str(images / "escape.jpg"),
        "absolute-elsewhere": str(outside / "secret.jpg"),
        "dotdot": str(images) + "/../../outside/secret.jpg",
        "relative": "images/kiwi.jpg",
        "not-an-image": str(images / "notes.jpg"),
        "a-folder": str(images / "folder.jpg"),
        "missing": str(images / "gone.jpg"),
        "on-s3": "s3://clip-search-test-bucket/photos/kiwi.jpg",
        "on-web": "https://images.example.com/kiwi.jpg?size=large",
        "no-image": None,
    }
    path = root / "index"
    index = open_index(str(path))
    index.create(test_encoder.dim, test_encoder.model_id, {"model": str(test_model_dir)})
    rng = np.random.default_rng(1)
    TRICKY_VECTORS.clear()
    TRICKY_VECTORS.update({pid: random_unit(rng, test_encoder.dim) for pid in locations})
    index.upsert([EmbeddedProduct(Product(pid, f"product {pid}", location, {"shelf": "A" if i % 2 else "B"}),
                                  TRICKY_VECTORS[pid]) for i, (pid, location) in enumerate(locations.items())])
    index.close()
    service = open_service(str(path), image_roots=[str(images)])
    with AppServer(create_app(service)) as server:
        yield server.url, photo
    service.close()


@pytest.mark.parametrize("product_id", ["symlink-out", "absolute-elsewhere", "dotdot", "relative", "not-an-image",
                                        "a-folder", "missing", "no-image"])
def test_stored_locations_outside_the_catalogue_folders_are_refused(tricky_app, product_id):
    url, _ = tricky_app
    response = requests.get(f"{url}/api/products/{product_id}/image", timeout=30, allow_redirects=False)
    assert_error(response, 404)
    assert SECRET not in response.content and response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("product_id", ["ok", "inner-link", "file-url", "unicode id ü/ä"])
def test_local_images_inside_the_catalogue_folders_are_served(tricky_app, product_id):
    url, photo = tricky_app
    listed = requests.get(f"{url}/api/search", params={"q": "kiwi", "k": 20}, timeout=30).json()["hits"]
    image_url = next(h["image_url"] for h in listed if h["id"] == product_id)  # quoted: / and spaces survive
    response = requests.get(url + image_url, timeout=30)
    assert response.status_code == 200 and response.content == photo
    assert response.headers["content-type"] == "image/jpeg"


def test_web_images_redirect_and_products_without_one_say_so(tricky_app):
    url, _ = tricky_app
    response = requests.get(f"{url}/api/products/on-web/image", timeout=30, allow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "https://images.example.com/kiwi.jpg?size=large"
    product = requests.get(f"{url}/api/products/no-image", timeout=30).json()
    assert product["image_url"] is None
    assert_error(requests.post(f"{url}/api/search", json={"like": "no-image"}, timeout=30), 422, "no image")


def test_more_like_this_searches_with_the_stored_vector_not_the_photo(tricky_app):
    """The stored vectors are random, unlike the photos (a kiwi each, or none that can be read): the
    neighbours are those of the stored vector, which re-encoding any photo would not give."""
    url, _ = tricky_app
    for product_id in ("ok", "missing", "on-web", "symlink-out"):
        response = requests.post(f"{url}/api/search", json={"like": product_id, "k": 5}, timeout=30)
        assert response.status_code == 200, response.text
        mine = TRICKY_VECTORS[product_id]
        others = [other for other in TRICKY_VECTORS if other != product_id]
        expected = sorted(others, key=lambda other: -float(TRICKY_VECTORS[other] @ mine))[:5]
        hits = response.json()["hits"]
        assert [hit["id"] for hit in hits] == expected
        assert hits[0]["score"] == pytest.approx(float(TRICKY_VECTORS[expected[0]] @ mine), abs=1e-4)


def test_a_filter_the_backend_cannot_apply_is_a_422_not_ignored(tricky_app):
    url, _ = tricky_app
    # The embedded index matches metadata as "field=value" tags: a field named "a=b" cannot be told apart.
    response = requests.post(f"{url}/api/search", json={"like": "ok", "filter": {"shelf=A": "x"}}, timeout=30)
    assert_error(response, 422, "cannot filter on 'shelf=A'")
    # The same index applies the filters it can express.
    shelf_a = requests.post(f"{url}/api/search", json={"like": "ok", "k": 20, "filter": "shelf=A"}, timeout=30).json()
    assert shelf_a["hits"] and {hit["shelf"] for hit in shelf_a["hits"]} == {"A"}


@pytest.fixture
def aws_env(monkeypatch, moto_url):
    import boto3
    import requests as http

    http.post(moto_url + "/moto-api/reset", timeout=10).raise_for_status()
    for key, value in {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="clip-search-test-bucket")
    return s3


def test_s3_images_redirect_to_a_presigned_url_that_serves_the_photo(tricky_app, aws_env, moto_url):
    url, photo = tricky_app
    aws_env.put_object(Bucket="clip-search-test-bucket", Key="photos/kiwi.jpg", Body=photo, ContentType="image/jpeg")
    response = requests.get(f"{url}/api/products/on-s3/image", timeout=30, allow_redirects=False)
    assert response.status_code == 307
    location = response.headers["location"]
    assert location.startswith(moto_url) and "photos/kiwi.jpg" in location
    assert "X-Amz-Signature=" in location or "Signature=" in location
    assert "X-Amz-Expires=900" in location or "Expires=" in location
    assert requests.get(location, timeout=30).content == photo
    # more like this searches with the product's stored vector: its photo's place does not matter
    like = requests.post(f"{url}/api/search", json={"like": "on-s3", "k": 3}, timeout=30)
    assert like.status_code == 200 and "on-s3" not in [h["id"] for h in like.json()["hits"]]


# --- facets, health, metrics, the page ------------------------------------------------------------
def test_facets_are_the_grouping_fields_with_their_most_common_values(app_url, demo_products):
    answer = get(app_url, "/api/facets").json()
    assert answer["products"] == 81 and answer["complete"] is True
    facets = {facet["field"]: facet["values"] for facet in answer["facets"]}
    assert set(facets) == {"category", "department"}  # class_id and description are one per product
    departments = Counter(p["department"] for p in demo_products)
    assert facets["department"] == [{"value": v, "count": c} for v, c in departments.most_common()]
    categories = Counter(p["category"] for p in demo_products)
    assert len(facets["category"]) == 20
    assert [entry["count"] for entry in facets["category"]] == sorted(categories.values(), reverse=True)[:20]
    assert all(categories[entry["value"]] == entry["count"] for entry in facets["category"])


def test_healthz(app_url):
    assert get(app_url, "/healthz").json() == {"status": "ok", "model": "clip-search-tiny/random",
                                               "index": get(app_url, "/healthz").json()["index"],
                                               "backend": "embedded", "products": 81}


def _samples(app_url):
    from prometheus_client.parser import text_string_to_metric_families

    response = get(app_url, "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_requests_errors_and_stage_latency(app_url):
    def value(samples, name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    before = _samples(app_url)
    for _ in range(3):
        assert get(app_url, "/api/search", q="pear", k=2).status_code == 200
    assert get(app_url, "/api/search", q="pear", k=0).status_code == 422
    assert get(app_url, "/api/products/No-Such-Product").status_code == 404
    after = _samples(app_url)
    ok = dict(route="/api/search", method="GET", status="200")
    assert value(after, "clip_search_app_requests_total", **ok) - value(before, "clip_search_app_requests_total", **ok) == 3
    assert value(after, "clip_search_app_errors_total", route="/api/search", status="422") - \
        value(before, "clip_search_app_errors_total", route="/api/search", status="422") == 1
    # the product route is labelled by its template, never by the id
    assert value(after, "clip_search_app_errors_total", route="/api/products/{id}", status="404") >= 1
    assert not any("No-Such-Product" in str(key) for key in after)
    for stage in ("encode", "search"):
        assert value(after, "clip_search_app_stage_seconds_count", stage=stage) - \
            value(before, "clip_search_app_stage_seconds_count", stage=stage) == 3
    assert value(after, "clip_search_app_request_seconds_count", route="/api/search") - \
        value(before, "clip_search_app_request_seconds_count", route="/api/search") == 4


def test_the_page_and_its_files_are_served_with_no_outside_references(app_url):
    page = get(app_url, "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert 'src="static/app.js"' in page.text and 'href="static/app.css"' in page.text
    static = Path(__file__).resolve().parents[2] / "code" / "clip_search" / "app" / "static"
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        response = get(app_url, f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert response.content == (static / name).read_bytes()
    for file in static.iterdir():  # works offline: nothing is fetched from anywhere else
        text = file.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, file.name
    assert_error(get(app_url, "/static/nope.js"), 404)


def test_unknown_routes_and_methods(app_url):
    assert_error(get(app_url, "/api/nothing"), 404, "no route")
    response = requests.delete(app_url + "/api/search", timeout=30)
    assert_error(response, 405, "DELETE")
    assert "POST" in response.headers["allow"]
    assert_error(requests.post(app_url + "/api/facets", timeout=30), 405)


def test_an_internal_failure_is_a_500_without_a_traceback(demo_index, caplog):
    """A bug below the app (here: the index raising) answers 500 with no detail; the log has it."""
    from clip_search.app.build import open_service
    from clip_search.app.server import AppServer, create_app

    service = open_service(str(demo_index))

    def broken_search(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    service.index.search = broken_search
    with AppServer(create_app(service)) as server:
        response = requests.get(server.url + "/api/search", params={"q": "milk"}, timeout=30)
        assert_error(response, 500, "internal error")
        assert "secret" not in response.text
        assert requests.get(server.url + "/healthz", timeout=30).status_code == 200  # still serving
    assert "secret internal detail" in caplog.text
    service.close()


def test_passwords_in_index_locations_are_never_shown():
    from clip_search.app.service import public_location

    assert public_location("postgresql://shop:s3cret@db.internal:5432/shop?table=products") == \
        "postgresql://shop:***@db.internal:5432/shop?table=products"
    for location in ("https://search.example.com:9200/products", "postgresql://shop@db/shop", "/data/products-index"):
        assert public_location(location) == location
