"""Issue 26 at the library: a long-lived reader (`SearchClient`, an index object) follows writes made
by other processes, on every backend; deletes of any size remove every id and count them right.

Writers are real separate processes (tests/writer_process.py: one per test, which opens the index
with `open_index`, writes and closes it for every write it is sent);
expected answers come from the vectors and ids the test wrote, never from the code under test.
"""
import time
import uuid

import numpy as np
import pytest

from clip_search.search.client import SearchClient
from clip_search.search.index.embedded import EmbeddedIndex
from clip_search.search.records import EmbeddedProduct, Product
from tests.search.conftest import unit
from tests.writer_process import Writer

DIM = 8
VISIBLE_WITHIN = 1.0  # seconds after a write returns (issue 26)


@pytest.fixture
def write(request):
    """write(location, "upsert" | "delete", payload, **env) by one writer process for the test,
    driven write by write (tests/writer_process.py): every write is made by another process, which
    opens, writes and closes the index, without a new interpreter (numpy, LanceDB, the backends'
    clients) starting for each. The process imports its backend while the test sets up."""
    backend = "embedded"
    if "location" in request.fixturenames:  # first: its environment (moto's, for s3://) is the writer's
        location = request.getfixturevalue("location")
        backend = ("opensearch" if location.startswith("http") else
                   "pgvector" if location.startswith("postgres") else "embedded")
    with Writer(preload=["numpy", f"clip_search.search.index.{backend}", "clip_search.search.records"]) as process:
        yield process.write


def products(prefix: str, vectors, field: str = "image") -> list[dict]:
    key = "image" if field == "image" else "title_vector"
    return [{"id": f"{prefix}{i}", "title": f"{prefix} {i}", key: vector.tolist()} for i, vector in enumerate(vectors)]


@pytest.fixture(params=["folder", "s3", "opensearch-standin", "pgvector"])
def location(request, tmp_path, monkeypatch) -> str:
    name = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "folder":
        return str(tmp_path / name)
    if request.param == "s3":
        from tests.moto_s3 import use_moto_s3

        use_moto_s3(request.getfixturevalue("moto_url"), monkeypatch, "clip-search-fresh-lib")
        return f"s3://clip-search-fresh-lib/{name}"
    if request.param == "opensearch-standin":
        return f"{request.getfixturevalue('standin').url}/{name}"
    return f"{request.getfixturevalue('pg_dsn')}?table={name}&index_method={request.getfixturevalue('pg_index_method')}"


def until(check, returned: float, limit: float = 5.0) -> float:
    """Seconds from `returned` to the first call of check() that held."""
    while True:
        asked = time.monotonic()
        if check():
            return asked - returned
        assert asked - returned < limit, f"not visible {limit} s after the write returned"
        time.sleep(0.02)


def test_a_long_lived_search_client_sees_other_processes_writes(location, write):
    rng = np.random.default_rng(5)
    base, added = unit(rng.standard_normal((6, DIM))), unit(rng.standard_normal((3, DIM)))
    write(location, "upsert", products("p", base))
    options = {"initial_backoff": 0.01} if location.startswith("http") else {}
    with SearchClient(location, **options) as reader:  # opened once, kept open like the app's
        assert reader.search_vector(added[0], k=1, fields=("image",))[0].id != "n0"
        write(location, "upsert", products("n", added))
        lag = until(lambda: [h.id for h in reader.search_vector(added[0], k=1, fields=("image",))] == ["n0"],
                    time.monotonic())
        assert reader.index.count() == 9
        renamed = [{"id": "p2", "title": "renamed", "image": base[2].tolist()}]
        write(location, "upsert", renamed)
        lags = [lag, until(lambda: reader.search_vector(base[2], k=1, fields=("image",))[0].title == "renamed",
                           time.monotonic())]
        assert write(location, "delete", ["p1", "n2", "never-indexed"]).strip() == "2"
        returned = time.monotonic()
        lags.append(until(lambda: not {"p1", "n2"} & {h.id for h in reader.search_vector(base[1], k=10)}, returned))
        assert {h.id for h in reader.search_vector(base[1], k=10)} == {"p0", "p2", "p3", "p4", "p5", "n0", "n1"}
        assert reader.index.count() == 7
    assert max(lags) <= VISIBLE_WITHIN, lags
    if not location.startswith("s3://"):  # read-after-write: the first search after the write sees it
        assert max(lags) < 0.01, lags


def test_the_embedded_read_caches_follow_other_processes_writes(tmp_path, write):
    """The reader caches per version which fields have vectors and whether an ANN index exists: a
    reader that kept them from the version it opened would skip title search forever and search a
    grown index exactly."""
    rng = np.random.default_rng(6)
    location = str(tmp_path / "index")
    write(location, "upsert", products("img", unit(rng.standard_normal((10, DIM)))))
    reader = EmbeddedIndex(location, exact_max_rows_=40)
    titled = unit(rng.standard_normal((60, DIM)))
    assert reader.search(titled[7], k=3, fields=("title",)) == [] and not reader.is_approximate
    write(location, "upsert", products("txt", titled, field="title"), CLIP_SEARCH_EXACT_MAX_ROWS=40)  # builds ANN
    hits = reader.search(titled[7], k=3, fields=("title",))
    assert hits[0].id == "txt7" and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert reader.is_approximate and reader.count() == 70


def test_freshness_off_keeps_a_reader_at_the_version_it_opened(tmp_path, write):
    """CLIP_SEARCH_FRESHNESS_MS=-1 is the behaviour before issue 26 (the benchmark's "off")."""
    rng = np.random.default_rng(7)
    location = str(tmp_path / "index")
    vectors = unit(rng.standard_normal((4, DIM)))
    write(location, "upsert", products("p", vectors[:2]))
    frozen, following = EmbeddedIndex(location, freshness_ms=-1), EmbeddedIndex(location)
    write(location, "upsert", products("q", vectors[2:]))
    assert frozen.count() == 2 and following.count() == 4
    assert frozen.search(vectors[2], k=1)[0].id != "q0" and following.search(vectors[2], k=1)[0].id == "q0"


def test_a_reader_opened_before_the_index_existed_finds_it(tmp_path, write):
    location = str(tmp_path / "index")
    reader = EmbeddedIndex(location)
    assert reader.info() is None and reader.count() == 0
    vectors = unit(np.random.default_rng(8).standard_normal((3, DIM)))
    write(location, "upsert", products("p", vectors))
    assert reader.count() == 3 and reader.search(vectors[1], k=1)[0].id == "p1"


# --- deletes of any size ------------------------------------------------------------------------
N = 2500  # more than any internal batch: OpenSearch's bulk requests of 200, LanceDB's former 1000-id commits


def test_deleting_thousands_of_ids_at_once_removes_every_one_and_counts_them(index_at):
    rng = np.random.default_rng(9)
    vectors = unit(rng.standard_normal((N + 40, DIM)))
    index = index_at()
    index.ensure(DIM, "m")
    index.upsert([EmbeddedProduct(Product(f"p{i}", f"item {i}", None, {}), v) for i, v in enumerate(vectors)])
    index.refresh()
    doomed = [f"p{i}" for i in range(N)] + [f"never-{i}" for i in range(300)] + ["p7", "p8"]  # repeats count once
    np.random.default_rng(1).shuffle(doomed)
    assert index.delete(doomed) == N
    assert index.count() == 40
    survivors = {f"p{i}" for i in range(N, N + 40)}
    assert {hit.id for hit in index.search(vectors[3], k=100)} == survivors  # a deleted product's own vector
    assert index.delete(doomed) == 0


def test_clip_search_delete_of_thousands_of_ids_reports_the_count(tmp_path):
    from click.testing import CliRunner

    from clip_search.cli import main

    location = str(tmp_path / "index")
    vectors = unit(np.random.default_rng(10).standard_normal((N + 5, DIM)))
    with EmbeddedIndex(location) as index:
        index.ensure(DIM, "m")
        index.upsert([EmbeddedProduct(Product(f"p{i}", f"item {i}", None, {}), v) for i, v in enumerate(vectors)])
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"p{i}\n" for i in range(N)) + "gone-1\ngone-2\n")
    result = CliRunner().invoke(main, ["delete", "--index", location, "--ids", str(ids)])
    assert result.exit_code == 0, result.output
    assert f"deleted {N} of {N + 2} ids from {location} (5 in the index)" in result.output


def test_the_freshness_setting_defaults_to_500_ms_and_refuses_nonsense():
    from clip_search import settings

    assert settings.parse({}).freshness_ms == 500 and settings.parse({"CLIP_SEARCH_FRESHNESS_MS": "-1"}).freshness_ms == -1
    for raw, expected in (("-2", "a whole number >= -1"), ("soon", "a whole number")):
        with pytest.raises(settings.SettingsError) as error:
            settings.parse({"CLIP_SEARCH_FRESHNESS_MS": raw})
        assert str(error.value) == f"CLIP_SEARCH_FRESHNESS_MS={raw!r} is not valid: expected {expected}"
