"""OpenSearch Serverless vector search collections, against the stand-in in its aoss mode, which
enforces what differs from a cluster (docs/search.md cites AWS's documentation): SigV4 for service
`aoss` with the payload hash header, server-generated document ids, no shard/replica settings."""
import json

import numpy as np
import pytest
import requests

from clip_search.search.index.opensearch import BULK_HEADERS, OpenSearchIndex, is_serverless
from clip_search.search.records import EmbeddedProduct, Product
from tests.search.conftest import fail_on_spec_violations, unit

DIM = 4


@pytest.fixture
def aoss(monkeypatch):
    from tests.standins.opensearch_standin import OpenSearchStandIn

    monkeypatch.setenv("OPENSEARCH_AUTH", "sigv4")
    monkeypatch.setenv("OPENSEARCH_SERVICE", "aoss")  # 127.0.0.1 is no *.aoss.amazonaws.com host
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    server = OpenSearchStandIn(aoss=True).start()
    yield server
    server.stop()
    fail_on_spec_violations(server)


def _products(vectors, suffix=""):
    return [EmbeddedProduct(Product(f"p{i}", f"shoe {i}{suffix}", None, {"colour": ["red", "blue"][i % 2]}), v, None)
            for i, v in enumerate(vectors)]


def test_collection_urls_are_serverless_and_signed_for_aoss(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("OPENSEARCH_SERVICE", raising=False)
    index = OpenSearchIndex.from_url("https://abc123xyz.eu-central-1.aoss.amazonaws.com/products")
    assert index.serverless and index.name == "products"
    auth = index.client.transport.kwargs["http_auth"]
    assert auth.service == "aoss" and auth.signer.region == "eu-central-1"
    assert not is_serverless("https://search-x.eu-central-1.es.amazonaws.com/products")
    assert "number_of_shards" not in json.dumps(index.mapping(DIM, "m", None))


def test_upsert_search_and_reindex_on_a_vector_collection(aoss):
    index = OpenSearchIndex.from_url(aoss.url + "/products", initial_backoff=0.01)
    assert index.serverless
    index.ensure(DIM, "model-a")
    vectors = unit(np.random.default_rng(2).standard_normal((8, DIM)))
    assert index.upsert(_products(vectors)).indexed == 8
    assert index.upsert(_products(vectors, " v2")).indexed == 8  # again: replaces, does not duplicate
    assert index.count() == 8
    hits = index.search(vectors[3], k=3, fields=("image",))
    assert hits[0].id == "p3" and hits[0].title == "shoe 3 v2" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    blue = index.search(vectors[0], k=8, filters={"colour": "blue", "id": ["p1", "p3", "p4"]}, fields=("image",))
    assert sorted(hit.id for hit in blue) == ["p1", "p3"]
    # what was sent: no document ids in index actions, no shard settings, no _refresh calls
    created = aoss.bodies("PUT", "/products")[0]
    assert set(created["settings"]["index"]) == {"knn"}
    for request in aoss.requests:
        assert not request["path"].endswith("/_refresh")
        assert request["headers"]["x-amz-content-sha256"]
        assert "/eu-west-1/aoss/aws4_request" in request["headers"]["authorization"]
        if request["path"] == "/_bulk":
            actions = [json.loads(line) for line in request["body"].splitlines()[::1]]
            assert all("_id" not in a["index"] for a in actions if "index" in a)
    assert len(aoss.indices["products"].docs) == 8


def test_aoss_standin_refuses_what_a_collection_refuses(aoss):
    from opensearchpy import OpenSearch

    body = OpenSearchIndex(None, "x", "x").mapping(DIM, "m", None)  # a cluster's mapping, with shards
    answer = requests.put(aoss.url + "/x", json=body)
    assert answer.status_code == 403  # not signed at all
    index = OpenSearchIndex.from_url(aoss.url + "/products", initial_backoff=0.01)
    with pytest.raises(Exception, match="number_of_shards"):
        index.client.indices.create(index="x", body=body)
    index.ensure(DIM, "m")
    from opensearchpy.exceptions import AuthorizationException, RequestError

    with pytest.raises(RequestError, match="Document ID is not supported"):
        index.client.bulk(body='{"index": {"_index": "products", "_id": "p1"}}\n{"product_id": "p1"}\n',
                          headers=BULK_HEADERS)
    es_signed = OpenSearch(hosts=[aoss.url], http_auth=_signer("es"))
    with pytest.raises(AuthorizationException, match="aoss"):  # signed, but for service es
        es_signed.indices.get_mapping(index="products")


def _signer(service):
    import boto3
    from opensearchpy import Urllib3AWSV4SignerAuth

    return Urllib3AWSV4SignerAuth(boto3.Session().get_credentials(), "eu-west-1", service)
