"""OpenSearch-only behaviour. Tests taking `opensearch` run on the stand-in (unit tier, every request
checked against the API specification) and, marked `live`, on the real cluster of OPENSEARCH_URL
(`make test-live`); tests taking `standin` need what only the stand-in can do (fault injection,
inspecting what was sent)."""
import base64
import os

import numpy as np
import pytest

from clip_search.search.index.opensearch import HYBRID_PIPELINE, OpenSearchIndex, hybrid_pipeline
from clip_search.search.records import EmbeddedProduct, Product
from tests.search.conftest import unit

DIM = 4


def _index(url, **options):
    return OpenSearchIndex.from_url(url, initial_backoff=0.01, **options)


def _items(n=6):
    vectors = unit(np.random.default_rng(3).standard_normal((n, DIM)))
    return vectors, [EmbeddedProduct(Product(f"p{i}", f"title {i}" + (" red" if i == 2 else ""), None, {"brand": f"b{i % 2}"}),
                                     vectors[i], None) for i in range(n)]


def _filled(target, n=6):
    """An OpenSearch index holding _items(n), refreshed: (index, vectors)."""
    index = target.index()
    index.ensure(DIM, "m")
    vectors, items = _items(n)
    assert index.upsert(items).indexed == n
    index.refresh()
    return index, vectors


def test_mapping_names_engine_space_and_hnsw_parameters(opensearch):
    index = opensearch.index()
    index.ensure(DIM, "m", {"endpoint": "http://x"})
    mapping = next(iter(index.client.indices.get_mapping(index=index.name).values()))["mappings"]
    vector = mapping["properties"]["image_embedding"]
    assert vector["type"] == "knn_vector" and vector["dimension"] == DIM
    assert vector["method"]["engine"] == "faiss" and vector["method"]["space_type"] == "innerproduct"
    assert vector["method"]["parameters"] == {"m": 16, "ef_construction": 128}
    assert mapping["properties"]["title"]["fields"]["raw"]["type"] == "keyword"
    assert mapping["_meta"]["clip_search"]["model_id"] == "m"
    settings = next(iter(index.client.indices.get_settings(index=index.name).values()))["settings"] \
        if opensearch.live else None
    if settings is not None:
        assert str(settings["index"]["knn"]).lower() == "true"
    else:
        assert opensearch.standin.indices[index.name].knn is True


def test_bulk_retries_429_and_reports_item_errors(standin):
    index = _index(standin.url + "/products")
    index.ensure(DIM, "m")
    vectors, items = _items()
    standin.faults["bulk_429_requests"] = 2           # whole bulk requests rejected twice
    standin.faults["item_429"] = {"p3": 2}            # one document rejected twice on its own
    bad = EmbeddedProduct(Product("bad", "x"), np.ones(DIM + 1, np.float32), None)
    report = index.upsert(items + [bad])
    assert report.indexed == 6
    assert len(report.errors) == 1 and report.errors[0][0] == "bad"
    assert "mapper_parsing_exception" in report.errors[0][1] and "dimension" in report.errors[0][1]
    bulk_calls = [r for r in standin.requests if r["path"] == "/_bulk"]
    assert len(bulk_calls) >= 4  # 2 rejected + the accepted one + the retry of p3
    assert index.count() == 6


def test_a_bad_product_is_reported_by_id_and_the_rest_indexed(opensearch):
    index = opensearch.index()
    index.ensure(DIM, "m")
    _, items = _items(3)
    bad = EmbeddedProduct(Product("bad", "x"), np.ones(DIM + 1, np.float32), None)
    report = index.upsert(items[:1] + [bad] + items[1:])
    assert report.indexed == 3 and [product for product, _ in report.errors] == ["bad"]
    assert "mapper_parsing_exception" in report.errors[0][1]
    assert index.count() == 3


def test_retries_give_up_and_report(standin):
    index = _index(standin.url + "/products", max_retries=1)
    index.ensure(DIM, "m")
    _, items = _items(2)
    standin.faults["item_429"] = {"p1": 5}
    report = index.upsert(items)
    assert report.indexed == 1 and report.errors[0][0] == "p1" and "429" in report.errors[0][1]


def test_knn_query_carries_its_filter(standin):
    """Efficient filtering: the filter goes inside the knn clause (not an outer bool.filter, which
    post-filters the k nearest and returns fewer than k)."""
    index, vectors = _filled(_StandinTarget(standin))
    hits = index.search(vectors[1], k=3, filters={"brand": "b1"}, fields=("image",))
    assert [h.id for h in hits][0] == "p1" and all(h.metadata["brand"] == "b1" for h in hits)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    body = standin.bodies("POST", "/_search")[-1]
    knn = body["query"]["knn"]["image_embedding"]
    assert knn["k"] == 3 and knn["filter"] == {"bool": {"filter": [{"terms": {"metadata.brand": ["b1"]}}]}}
    assert body["size"] == 3 and set(body) == {"size", "query", "_source"}


def test_k_hits_under_a_selective_filter_whose_matches_are_not_the_top_k(opensearch):
    index = opensearch.index()
    index.ensure(DIM, "m")
    vectors = unit(np.random.default_rng(11).standard_normal((40, DIM)))
    query = vectors[0]
    order = [int(i) for i in np.argsort(-(vectors @ query))]
    rare = set(order[-4:])  # the four products farthest from the query are the only matches
    items = [EmbeddedProduct(Product(f"p{i}", f"item {i}", None, {"tier": "rare" if i in rare else "common"}),
                             vectors[i], None) for i in range(40)]
    assert index.upsert(items).indexed == 40
    index.refresh()
    hits = index.search(query, k=3, filters={"tier": "rare"}, fields=("image",))
    assert [hit.id for hit in hits] == [f"p{i}" for i in order if i in rare][:3]


def test_hybrid_ranks_through_the_normalization_pipeline_and_keeps_cosine_scores(opensearch):
    index, vectors = _filled(opensearch)
    plain = index.search(vectors[0], k=6, fields=("image",))
    hybrid = index.search(vectors[0], k=6, fields=("image",), keywords="red")
    assert plain[0].id == "p0"
    rank = lambda hits: [h.id for h in hits].index("p2")
    assert rank(hybrid) < rank(plain)  # the keyword match on "red" lifts p2
    p2 = next(h for h in hybrid if h.id == "p2")
    assert p2.score == pytest.approx(float(vectors[0] @ vectors[2]), abs=1e-5)
    pipeline = index.client.search_pipeline.get(id=HYBRID_PIPELINE)[HYBRID_PIPELINE]
    processor = pipeline["phase_results_processors"][0]["normalization-processor"]
    assert processor["normalization"]["technique"] == "min_max"
    assert processor["combination"]["technique"] == "arithmetic_mean"


def test_hybrid_query_shape_and_pipeline_created_once(standin):
    index, vectors = _filled(_StandinTarget(standin))
    index.search(vectors[0], k=4, fields=("image",), keywords="red", filters={"brand": "b0"})
    index.search(vectors[0], k=4, fields=("image",), keywords="red")
    again = _index(standin.url + "/products")  # another client: the pipeline is there and as wanted
    again.search(vectors[0], k=4, fields=("image",), keywords="red")
    puts = [r for r in standin.requests if r["method"] == "PUT" and r["path"] == f"/_search/pipeline/{HYBRID_PIPELINE}"]
    assert len(puts) == 1
    assert standin.pipelines[HYBRID_PIPELINE] == hybrid_pipeline()
    searches = [r for r in standin.requests if r["path"].endswith("/_search") and "search_pipeline" in r["query"]]
    assert len(searches) == 3 and all(f"search_pipeline={HYBRID_PIPELINE}" in r["query"] for r in searches)
    body = standin.bodies("POST", "/_search")[-3]
    match, knn = body["query"]["hybrid"]["queries"]
    assert match == {"bool": {"must": [{"match": {"title": "red"}}],
                              "filter": [{"bool": {"filter": [{"terms": {"metadata.brand": ["b0"]}}]}}]}}
    assert knn["knn"]["image_embedding"]["filter"] == {"bool": {"filter": [{"terms": {"metadata.brand": ["b0"]}}]}}
    # a pipeline someone changed is put back
    standin.pipelines[HYBRID_PIPELINE] = {"phase_results_processors": []}
    _index(standin.url + "/products").search(vectors[0], k=2, fields=("image",), keywords="red")
    assert standin.pipelines[HYBRID_PIPELINE] == hybrid_pipeline()


def test_basic_auth_from_environment(monkeypatch):
    from tests.search.conftest import fail_on_spec_violations
    from tests.standins.opensearch_standin import OpenSearchStandIn

    server = OpenSearchStandIn(credentials=("admin", "s3cret")).start()
    try:
        from clip_search.search.errors import SearchError

        with pytest.raises(SearchError, match=r"OpenSearch .*/products: .*401.*security_exception"):
            _index(server.url + "/products").ensure(DIM, "m")
        monkeypatch.setenv("OPENSEARCH_USERNAME", "admin")
        monkeypatch.setenv("OPENSEARCH_PASSWORD", "s3cret")
        _index(server.url + "/products").ensure(DIM, "m")
        assert server.requests[-1]["headers"]["authorization"] == "Basic " + base64.b64encode(b"admin:s3cret").decode()
    finally:
        server.stop()
    fail_on_spec_violations(server)


@pytest.mark.live
def test_live_cluster_refuses_requests_without_credentials(monkeypatch):
    """With OPENSEARCH_USERNAME set, the live cluster must refuse the same request without them."""
    from clip_search.search.errors import SearchError
    from tests.search.conftest import live_url

    url = live_url()
    if not os.environ.get("OPENSEARCH_USERNAME"):
        pytest.skip("OPENSEARCH_USERNAME is not set: the live cluster does not use basic auth")
    monkeypatch.delenv("OPENSEARCH_USERNAME")
    monkeypatch.setenv("OPENSEARCH_AUTH", "none")
    with pytest.raises(SearchError, match="401|403|security"):
        _index(url.rstrip("/") + "/clip-search-test-noauth").info()


def test_sigv4_signs_requests(standin, monkeypatch):
    monkeypatch.setenv("OPENSEARCH_AUTH", "sigv4")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    _index(standin.url + "/products").ensure(DIM, "m")
    authorization = standin.requests[-1]["headers"]["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/es/aws4_request" in authorization


def test_credentials_in_url_are_refused():
    from clip_search.search.errors import SearchError

    with pytest.raises(SearchError, match="OPENSEARCH_USERNAME"):
        OpenSearchIndex.from_url("https://admin:pw@search.example.com/products")


def test_standin_refuses_undocumented_requests(standin):
    import requests

    bad_mapping = {"settings": {"index": {"knn": True}},
                   "mappings": {"properties": {"v": {"type": "knn_vector", "dimension": 4,
                                                     "method": {"name": "hnsw", "engine": "faiss", "space_type": "hamming"}}}}}
    answer = requests.put(standin.url + "/x", json=bad_mapping)
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "mapper_parsing_exception"
    answer = requests.post(standin.url + "/_bulk", data=b'{"index": {"_index": "x", "_id": "1"}}\n{}',
                           headers={"Content-Type": "application/x-ndjson"})
    assert answer.status_code == 400  # a bulk body must end with a newline
    assert standin.take_violations() == ["request: POST /_bulk: bulk.0 (POST /_bulk): an NDJSON body must end with a newline"]


def test_tls_is_verified_and_a_ca_bundle_can_be_given(tmp_path, monkeypatch):
    import subprocess

    from clip_search.search.errors import SearchError
    from tests.standins.opensearch_standin import OpenSearchStandIn

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = OpenSearchStandIn(tls=(str(cert), str(key))).start()
    try:
        with pytest.raises(SearchError, match="(?i)certificate|ssl"):
            _index(server.url + "/products").info()  # self-signed: refused by default
        monkeypatch.setenv("OPENSEARCH_CA_CERTS", str(cert))
        index = _index(server.url + "/products")
        index.ensure(DIM, "m")
        assert index.info().model_id == "m"
    finally:
        server.stop()


@pytest.mark.live
def test_live_tls_is_verified_against_the_given_bundle(tmp_path, monkeypatch):
    """An https OPENSEARCH_URL is verified: with a CA bundle that did not sign it, the client refuses."""
    import subprocess

    from clip_search.search.errors import SearchError
    from tests.search.conftest import live_url

    url = live_url()
    if not url.startswith("https://"):
        pytest.skip("OPENSEARCH_URL is not https")
    cert, key = tmp_path / "other-ca.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    monkeypatch.setenv("OPENSEARCH_CA_CERTS", str(cert))
    monkeypatch.delenv("OPENSEARCH_VERIFY_CERTS", raising=False)
    with pytest.raises(SearchError, match="(?i)certificate|ssl"):
        _index(url.rstrip("/") + "/clip-search-test-tls").info()


class _StandinTarget:
    """The stand-in as an `opensearch` target, for tests that look at what was sent."""

    def __init__(self, standin):
        self.standin, self.live = standin, False

    def index(self, name="products", **options):
        return _index(f"{self.standin.url}/{name}", **options)
