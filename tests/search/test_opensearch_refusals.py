"""The OpenSearch backend refuses, with the index and the reason named, what it cannot use: a URL
without an index name, credentials in the URL, an index another program made, a mapping the
cluster rejects; and reads a missing index as empty. Against the stand-in (every request checked
against the OpenSearch API specification by the `standin` fixture)."""
import numpy as np
import pytest

from clip_search.search.errors import IndexNotFoundError, SearchError
from clip_search.search.index.opensearch import OpenSearchIndex, build_client

DIM = 4


def test_a_url_without_exactly_one_index_name_is_refused(standin):
    for url in (standin.url, standin.url + "/", standin.url + "/a/b"):
        with pytest.raises(SearchError, match=f"^OpenSearch location {url} must end in the index name"):
            OpenSearchIndex.from_url(url)


def test_credentials_in_the_url_are_refused_not_sent():
    with pytest.raises(SearchError, match="^put OpenSearch credentials in OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD"):
        build_client("https://admin:secret@search.example.test:9200/products")


def test_turning_tls_verification_off_is_said_loudly(monkeypatch, caplog):
    monkeypatch.setenv("OPENSEARCH_VERIFY_CERTS", "false")
    with caplog.at_level("WARNING"):
        build_client("https://search.example.test:9200/products")
    assert any("TLS CERTIFICATE VERIFICATION IS OFF for search.example.test" in r.getMessage() for r in caplog.records)


def test_a_missing_index_reads_as_empty_and_search_names_it(standin):
    index = OpenSearchIndex.from_url(f"{standin.url}/nothing-here", initial_backoff=0.01)
    assert index.info() is None and index.count() == 0
    with pytest.raises(IndexNotFoundError, match=f"^no OpenSearch index nothing-here at {standin.url}/nothing-here$"):
        index.search(np.ones(DIM, np.float32) / 2, k=3)


def test_an_index_made_by_another_program_is_refused(standin):
    index = OpenSearchIndex.from_url(f"{standin.url}/theirs", initial_backoff=0.01)
    index.client.indices.create(index="theirs", body={"mappings": {"properties": {"name": {"type": "text"}}}})
    with pytest.raises(SearchError, match="^OpenSearch index theirs was not made by clip-search"):
        index.info()
    with pytest.raises(SearchError, match="was not made by clip-search"):
        index.ensure(DIM, "m")


def test_a_mapping_the_cluster_refuses_is_named(standin):
    index = OpenSearchIndex.from_url(f"{standin.url}/products", initial_backoff=0.01, shards=0)
    with pytest.raises(SearchError, match="^creating OpenSearch index products: "):
        index.ensure(DIM, "m")
    assert index.info() is None  # nothing half-made
