"""Issue 26: the running app sees writes made by other processes, within 1 s of the command returning.

The app (real uvicorn over HTTP, tests/app/conftest.py's way) serves an index while another process
runs `clip-search index` and `clip-search delete` on it (tests/writer_process.py: one process per
test runs the CLI's commands one after another, each opening, writing and closing the index): new
products, a changed title and deleted products must show in search hits, the product route and the photo route, on the embedded
index in a local folder and under s3:// (moto's server) and on OpenSearch (the stand-in, held to the
OpenSearch API specification). Expected answers come from the catalogues the test writes.
"""
import json
import shutil
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.app.conftest import DEMO
from tests.search.conftest import standin  # noqa: F401 - the OpenSearch stand-in fixture
from tests.writer_process import Writer

BUCKET = "clip-search-fresh"
BASE = 12  # demo products in the served index at the start
VISIBLE_WITHIN = 1.0  # seconds after a write command returns (issue 26)


def cli_writer(location: str) -> Writer:
    """The writer process of a test: imports what `clip-search index --model` and `delete` need
    for `location`'s backend while the test sets up."""
    backend = "opensearch" if location.startswith("http") else "embedded"
    return Writer(preload=["clip_search.cli", "clip_search.search.cli", "clip_search.search.embeddings",
                           "clip_search.search.client", f"clip_search.search.index.{backend}"])


def demo_rows() -> list[dict]:
    rows = [json.loads(line) for line in (DEMO / "products.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        row["image"] = str(DEMO / row["image"])
    return rows


def write_catalogue(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(params=["folder", "s3", "opensearch-standin"])
def location(request, tmp_path, monkeypatch) -> str:
    """Where the served index lives, one of each kind (nothing in it yet)."""
    if request.param == "folder":
        return str(tmp_path / "index")
    if request.param == "s3":
        from tests.moto_s3 import use_moto_s3

        use_moto_s3(request.getfixturevalue("moto_url"), monkeypatch, BUCKET)
        return f"s3://{BUCKET}/fresh-{uuid.uuid4().hex[:8]}"
    return f"{request.getfixturevalue('standin').url}/fresh-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def writer(location):
    """The other process that writes (started before the app's set-up, to import meanwhile)."""
    with cli_writer(location) as process:
        yield process


@pytest.fixture
def served(location, writer, tmp_path, test_model_dir):
    """The first BASE demo products indexed with the test model (in this process), served by the app
    on loopback; -> (app URL, index location)."""
    from clip_search.app.build import open_service
    from clip_search.app.server import AppServer, create_app
    from clip_search.search.client import SearchClient
    from clip_search.search.embeddings import LocalEmbedder

    catalogue = write_catalogue(tmp_path / "base.jsonl", demo_rows()[:BASE])
    options = {"initial_backoff": 0.01} if location.startswith("http") else {}
    with SearchClient(location, LocalEmbedder.from_artifact(test_model_dir), **options) as client:
        assert client.index_catalogue(catalogue, progress=False).indexed == BASE
    service = open_service(location)
    try:
        with AppServer(create_app(service)) as server:
            yield server.url, location
    finally:
        service.close()
        if location.startswith("http"):
            requests.delete(location, timeout=10)


def search_ids(url: str, text: str, k: int = 100) -> list[str]:
    response = requests.get(url + "/api/search", params={"q": text, "k": k}, timeout=30)
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["hits"]]


def first_seen(check, returned: float, limit: float = 5.0) -> tuple[float, int]:
    """(seconds from `returned`, the write command's return, to the sending of the first request
    for which check() held; how many tries that took): asked again until `limit` seconds have passed."""
    tries = 0
    while True:
        sent = time.monotonic()
        tries += 1
        if check():
            return sent - returned, tries
        if sent - returned > limit:
            pytest.fail(f"still not visible {limit} s after the write command returned")
        time.sleep(0.02)


def test_writes_by_other_processes_show_in_the_running_app(served, writer, tmp_path, test_model_dir):
    url, location = served
    cli = writer.cli
    rows = demo_rows()
    # New products whose photos are in a folder no indexed product used before (the photo route
    # must serve them: the app's image folders follow the index too).
    photos = tmp_path / "new-photos"
    photos.mkdir()
    added = [dict(row, id=f"new-{row['id']}", title=f"{row['title']} special edition") for row in rows[BASE:BASE + 3]]
    for row in added:
        row["image"] = str(shutil.copy(row["image"], photos / Path(row["image"]).name))
    assert search_ids(url, added[0]["title"])[:1] != [added[0]["id"]]

    cli("index", "--catalogue", write_catalogue(tmp_path / "added.jsonl", added), "--index", location,
        "--model", test_model_dir)
    returned = time.monotonic()

    def added_visible():
        found = search_ids(url, added[0]["title"], k=BASE + 3)
        return added[0]["id"] in found and {row["id"] for row in added} <= set(found)

    lag = first_seen(added_visible, returned)
    # A text query equal to a title matches that product's title embedding exactly: it ranks first.
    assert search_ids(url, added[1]["title"])[0] == added[1]["id"]
    product = requests.get(f"{url}/api/products/{added[2]['id']}", timeout=30).json()
    assert product["title"] == added[2]["title"] and product["category"] == added[2]["category"]
    photo = requests.get(url + product["image_url"], timeout=30)
    assert photo.status_code == 200 and photo.content == Path(added[2]["image"]).read_bytes()
    lags = {"add": lag}

    # A changed title (same id): the product route and the hits carry the new one.
    renamed = dict(rows[0], title="Golden Delicious Apple, organic, from the orchard next door")
    cli("index", "--catalogue", write_catalogue(tmp_path / "renamed.jsonl", [renamed]), "--index", location,
        "--model", test_model_dir)
    returned = time.monotonic()
    lags["update"] = first_seen(lambda: requests.get(f"{url}/api/products/{rows[0]['id']}", timeout=30)
                                .json()["title"] == renamed["title"], returned)
    hits = requests.get(url + "/api/search", params={"q": renamed["title"], "k": 3}, timeout=30).json()["hits"]
    assert hits[0]["id"] == rows[0]["id"] and hits[0]["title"] == renamed["title"]

    # Deleted products: gone from hits, the product route, the photo route and "more like this".
    gone = [rows[1]["id"], added[0]["id"]]
    done = cli("delete", "--index", location, *gone)
    returned = time.monotonic()
    assert done.stdout.startswith(f"deleted 2 of 2 ids from {location} ({BASE + 3 - 2} in the index)")
    lags["delete"] = first_seen(lambda: not set(gone) & set(search_ids(url, "apple")), returned)
    for product_id in gone:
        for path in (f"/api/products/{product_id}", f"/api/products/{product_id}/image"):
            response = requests.get(url + path, timeout=30, allow_redirects=False)
            assert response.status_code == 404 and response.json()["status"] == 404, (path, response.text)
        assert requests.get(url + "/api/search", params={"like": product_id}, timeout=30).status_code == 404
    like = requests.get(url + "/api/search", params={"like": rows[2]["id"], "k": 100}, timeout=30).json()["hits"]
    assert {hit["id"] for hit in like} == {row["id"] for row in rows[:BASE] + added} - set(gone) - {rows[2]["id"]}
    assert requests.get(url + "/healthz", timeout=30).json()["products"] == BASE + 3 - 2
    assert all(seconds <= VISIBLE_WITHIN for seconds, _ in lags.values()), lags
    if not location.startswith("s3://"):  # a local folder and OpenSearch: the very next query sees a write
        assert all(tries == 1 for _, tries in lags.values()), lags


def test_a_warm_lambda_handler_sees_other_processes_writes(request, tmp_path, test_model_dir, monkeypatch):
    """The Lambda handler keeps its app for the container's life: a warm one must not answer from
    the index as it was at the first event (OpenSearch, the stand-in; queries encoded in process
    with the encoder the index recorded)."""
    import clip_search.app as app_package
    from clip_search.app import aws
    from clip_search.search.client import SearchClient
    from clip_search.search.embeddings import LocalEmbedder
    from tests.app.test_lambda import LambdaContext, json_of, v2_event

    rows = demo_rows()
    location = f"{request.getfixturevalue('standin').url}/lambda-{uuid.uuid4().hex[:8]}"
    writer = cli_writer(location)
    request.addfinalizer(writer.close)
    cli = writer.cli
    with SearchClient(location, LocalEmbedder.from_artifact(test_model_dir), initial_backoff=0.01) as client:
        assert client.index_catalogue(write_catalogue(tmp_path / "base.jsonl", rows[:BASE]), progress=False).indexed == BASE
    monkeypatch.setenv("CLIP_SEARCH_INDEX", location)
    monkeypatch.delenv("CLIP_SEARCH_ENDPOINT", raising=False)
    aws.reset()
    try:
        def get(path, query=()):
            return app_package.lambda_handler(v2_event("GET", path, query), LambdaContext())

        assert get(f"/api/products/{rows[3]['id']}")["statusCode"] == 200  # the first event builds the app
        cli("delete", "--index", location, rows[3]["id"])
        assert json_of(get(f"/api/products/{rows[3]['id']}"))["status"] == 404
        assert rows[3]["id"] not in [hit["id"] for hit in json_of(get("/api/search", [("q", "apple"), ("k", 100)]))["hits"]]
        cli("index", "--catalogue", write_catalogue(tmp_path / "new.jsonl", [rows[BASE]]), "--index", location,
            "--model", test_model_dir)
        assert json_of(get(f"/api/products/{rows[BASE]['id']}"))["title"] == rows[BASE]["title"]
    finally:
        aws.reset()
