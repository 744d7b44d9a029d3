"""OpenSearch-only behaviour, over HTTP against the stand-in (which enforces the documented API)."""
import base64

import numpy as np
import pytest

from clip_search.search.index.opensearch import OpenSearchIndex
from clip_search.search.records import EmbeddedProduct, Product
from tests.search.conftest import unit

DIM = 4


def _index(url, **options):
    return OpenSearchIndex.from_url(url, initial_backoff=0.01, **options)


def _items(n=6):
    vectors = unit(np.random.default_rng(3).standard_normal((n, DIM)))
    return vectors, [EmbeddedProduct(Product(f"p{i}", f"title {i}" + (" red" if i == 2 else ""), None, {"brand": f"b{i % 2}"}),
                                     vectors[i], None) for i in range(n)]


def _filled_index(standin):
    """An OpenSearch index on the stand-in holding _items(), refreshed: (index, vectors)."""
    index = _index(standin.url + "/products")
    index.ensure(DIM, "m")
    vectors, items = _items()
    index.upsert(items)
    index.refresh()
    return index, vectors


def test_mapping_names_engine_space_and_hnsw_parameters(standin):
    index = _index(standin.url + "/products")
    index.ensure(DIM, "m", {"endpoint": "http://x"})
    put = next(r for r in standin.requests if r["method"] == "PUT")
    assert put["path"] == "/products"
    vector = standin.indices["products"].mappings["properties"]["image_embedding"]
    assert vector["method"]["engine"] == "faiss" and vector["method"]["space_type"] == "innerproduct"
    assert vector["method"]["parameters"] == {"m": 16, "ef_construction": 128}
    assert standin.indices["products"].knn is True


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


def test_retries_give_up_and_report(standin):
    index = _index(standin.url + "/products", max_retries=1)
    index.ensure(DIM, "m")
    _, items = _items(2)
    standin.faults["item_429"] = {"p1": 5}
    report = index.upsert(items)
    assert report.indexed == 1 and report.errors[0][0] == "p1" and "429" in report.errors[0][1]


def test_knn_query_shape_with_filter(standin):
    index, vectors = _filled_index(standin)
    hits = index.search(vectors[1], k=3, filters={"brand": "b1"}, fields=("image",))
    assert [h.id for h in hits][0] == "p1" and all(h.metadata["brand"] == "b1" for h in hits)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_hybrid_keyword_plus_knn_keeps_cosine_scores(standin):
    index, vectors = _filled_index(standin)
    plain = index.search(vectors[0], k=6, fields=("image",))
    hybrid = index.search(vectors[0], k=6, fields=("image",), keywords="red")
    assert plain[0].id == "p0"
    rank = lambda hits: [h.id for h in hits].index("p2")
    assert rank(hybrid) < rank(plain)  # the keyword match on "red" lifts p2
    p2 = next(h for h in hybrid if h.id == "p2")
    assert p2.score == pytest.approx(float(vectors[0] @ vectors[2]), abs=1e-5)


def test_basic_auth_from_environment(monkeypatch):
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
