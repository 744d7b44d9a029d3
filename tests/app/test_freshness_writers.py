"""Issue 26: readers keep answering while other processes write, two at once, and one is killed with -9.

The app (real uvicorn over HTTP) serves an index; a client thread sends queries without pause and
records when each was sent and what it answered. Meanwhile real `clip-search index` processes write
(two at once, one of them killed with SIGKILL while it commits batch after batch) and `clip-search
delete` deletes products (run one after another by a third process, tests/writer_process.py).
Then: every query answered 200; no answer holds a product whose delete had returned before the
query was sent; every product any answer showed, and every product of the writer that finished, is
still there (nothing committed is lost); and on the embedded index the killed writer left whole
batches only (LanceDB commits are atomic). OpenSearch (the stand-in) is atomic per document, not
per batch (docs/search.md, Freshness), so that last check is for the embedded index alone.
"""
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests

from tests.app.test_freshness_app import cli_writer, demo_rows, write_catalogue
from tests.search.conftest import standin  # noqa: F401 - the OpenSearch stand-in fixture
from tests.writer_process import environment

BASE = 30
BATCH = 16  # products per commit of the writers (--batch-size; CLIP_SEARCH_FLUSH_ROWS below it)


@pytest.fixture(params=["folder", "opensearch-standin"])
def location(request, tmp_path) -> str:
    if request.param == "folder":
        return str(tmp_path / "index")
    return f"{request.getfixturevalue('standin').url}/writers-{uuid.uuid4().hex[:8]}"


class Client(threading.Thread):
    """Queries the app without pause: searches (k=100; half of them filtered to a department of the
    base catalogue, so that every base product of it is in the answer) and the photo route of the
    products being deleted; records (sent, answered, kind, status, ids)."""

    def __init__(self, url: str, rows: list[dict], watched: list[str]):
        super().__init__(daemon=True)
        self.url, self.rows, self.watched = url, rows, watched
        self.records: list[tuple] = []
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def run(self):
        session = requests.Session()
        rng = random.Random(7)
        try:
            while not self.stop.is_set():
                if rng.random() < 0.7:
                    row = rng.choice(self.rows)
                    params = {"q": row["title"], "k": 100}
                    if rng.random() < 0.5:
                        params["filter"] = f"department:{row['department']}"
                    sent = time.monotonic()
                    response = session.get(self.url + "/api/search", params=params, timeout=60)
                    ids = [hit["id"] for hit in response.json()["hits"]] if response.status_code == 200 else []
                    self.records.append((sent, time.monotonic(), "search", response.status_code, ids))
                else:
                    product_id = rng.choice(self.watched)
                    sent = time.monotonic()
                    response = session.get(f"{self.url}/api/products/{product_id}/image", timeout=60)
                    self.records.append((sent, time.monotonic(), "photo", response.status_code, [product_id]))
        except BaseException as error:  # noqa: BLE001 - a connection refused or reset is a failed reader
            self.failure = error


def catalogue(tmp_path, prefix: str, n: int):
    words = ["oat", "milk", "apple", "pear", "juice"]
    rows = [{"id": f"{prefix}{i:04d}", "title": f"{prefix} product {i} {words[i % 5]}", "department": prefix}
            for i in range(n)]
    return write_catalogue(tmp_path / f"{prefix}.jsonl", rows), [row["id"] for row in rows]


def ids_in_index(location: str) -> list[str]:
    if location.startswith("http"):
        body = {"size": 10000, "_source": ["product_id"], "query": {"match_all": {}}}
        requests.post(location + "/_refresh", timeout=30).raise_for_status()
        found = requests.post(location + "/_search", json=body, timeout=30).json()["hits"]["hits"]
        return [hit["_source"]["product_id"] for hit in found]
    import lancedb

    return lancedb.connect(location).open_table("products").to_arrow().column("id").to_pylist()


def test_readers_answer_while_writers_run_collide_and_die(location, tmp_path, test_model_dir):
    from clip_search.app.build import open_service
    from clip_search.app.server import AppServer, create_app
    from clip_search.search.client import SearchClient
    from clip_search.search.embeddings import LocalEmbedder

    rows = demo_rows()[:BASE]
    options = {"initial_backoff": 0.01} if location.startswith("http") else {}
    with SearchClient(location, LocalEmbedder.from_artifact(test_model_dir), **options) as client:
        assert client.index_catalogue(write_catalogue(tmp_path / "base.jsonl", rows), progress=False).indexed == BASE
    killed_catalogue, killed_ids = catalogue(tmp_path, "k", 250 * BATCH)  # killed long before its end
    finished_catalogue, finished_ids = catalogue(tmp_path, "f", 40 * BATCH)
    doomed = [row["id"] for row in rows[:9]]
    env = {"CLIP_SEARCH_FLUSH_ROWS": BATCH // 2}
    writer_args = ["--index", location, "--model", test_model_dir, "--batch-size", BATCH]
    deleter = None
    service = open_service(location)
    deleted_at: dict[str, tuple[float, float]] = {}  # id -> (delete started, delete returned)
    try:
        with AppServer(create_app(service)) as server:
            reader = Client(server.url, rows, doomed)
            reader.start()

            def writer(path):
                return subprocess.Popen([sys.executable, "-m", "clip_search.cli", "index", "--catalogue", str(path),
                                         *map(str, writer_args)], env=environment(**env),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

            killed, finished = writer(killed_catalogue), writer(finished_catalogue)
            deadline = time.monotonic() + 120
            while requests.get(f"{server.url}/api/products/{killed_ids[0]}", timeout=30).status_code != 200:
                assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()  # its first commit
                time.sleep(0.05)
            # Started only now, so that it does not compete with the writers' start-up for the CPU
            # while the first commit is awaited; it imports while the killed writer goes on.
            deleter = cli_writer(location)
            time.sleep(random.Random(3).uniform(0, 0.5))  # somewhere in its stream of commits
            assert killed.poll() is None, "the writer to kill finished first: give it a longer catalogue"
            killed.send_signal(signal.SIGKILL)
            killed.wait(30)
            for start in range(0, len(doomed), 3):  # while the other writer goes on
                chunk = doomed[start:start + 3]
                started = time.monotonic()
                deleter.cli("delete", "--index", location, *chunk)
                deleted_at.update(dict.fromkeys(chunk, (started, time.monotonic())))
            out, err = finished.communicate(timeout=300)
            assert finished.returncode == 0, err
            assert f"indexed {len(finished_ids)} of {len(finished_ids)} products" in out
            time.sleep(0.3)  # the reader keeps querying the final state a moment
            reader.stop.set()
            reader.join(60)
    finally:
        service.close()
        if deleter is not None:
            deleter.close()
    assert reader.failure is None, repr(reader.failure)
    records = reader.records
    assert len(records) > 50
    assert [r for r in records if not (r[3] == 200 or (r[2] == "photo" and r[3] == 404))] == []
    for sent, answered, kind, status, ids in records:
        stale = [i for i in ids if i in deleted_at and deleted_at[i][1] < sent and (kind == "search" or status == 200)]
        assert not stale, f"{kind} sent {sent:.3f} answered {stale}, deleted before it was sent"
        if kind == "photo" and status == 404:  # gone only once its delete had started
            assert ids[0] in deleted_at and deleted_at[ids[0]][0] < answered, (ids, sent)
    final = ids_in_index(location)
    assert len(final) == len(set(final))
    final = set(final)
    seen = {i for record in records for i in record[4] if record[2] == "search"}
    assert not final & set(doomed)
    assert (seen | set(finished_ids) | {row["id"] for row in rows}) - set(doomed) <= final  # nothing committed lost
    kept = [i for i in killed_ids if i in final]
    if not location.startswith("http"):  # whole commits, in catalogue order
        assert len(kept) % BATCH == 0 and kept == killed_ids[:len(kept)], len(kept)
    assert 0 < len(kept) < len(killed_ids)
