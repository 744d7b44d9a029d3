"""Every request the OpenSearch backend can send is held to the official API specification, and the
stand-in refuses what OpenSearch refuses (unit tier; the spec is ../shared/opensearch-api-specification).
"""
import json

import numpy as np
import pytest
import requests

from clip_search.search.index.opensearch import BULK_HEADERS, HYBRID_PIPELINE, OpenSearchIndex, hybrid_pipeline
from clip_search.search.records import EmbeddedProduct, Product
from tests.search.conftest import unit
from tests.standins.opensearch_spec import SpecViolation, load

DIM = 4


@pytest.fixture(scope="module")
def spec():
    return load()


def _mapping(**options):
    return OpenSearchIndex(None, "products", "http://x/products", **options).mapping(DIM, "m", {"model": "a"})


def _send(spec, method, path, body=None, query="", content_type="application/json"):
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    return spec.check_request(method, path, query, raw, content_type)


def test_the_clients_mapping_is_valid_and_bad_ones_are_not(spec):
    assert _send(spec, "PUT", "/products", _mapping()).id == "indices.create.0"
    assert _send(spec, "PUT", "/products", _mapping(serverless=True)).id == "indices.create.0"
    bad = _mapping()
    bad["mappings"]["properties"]["title"]["type"] = "banana"
    bad["mappings"]["properties"]["image_embedding"]["dimension"] = "512"
    bad["settings"]["index"]["number_of_shards"] = "lots"
    with pytest.raises(SpecViolation) as found:
        _send(spec, "PUT", "/products", bad)
    message = str(found.value)
    assert "title/type: 'banana' is not one of" in message
    assert "image_embedding/dimension: '512' is not of type 'integer'" in message
    assert "number_of_shards" in message


@pytest.mark.parametrize("body,problem", [
    ({"query": {"knn": {"v": {"vector": [1, 2, 3, 4], "k": True}}}}, "k: True is not of type 'integer'"),
    ({"query": {"knn": {"v": {"vector": [True, False, True, True], "k": 2}}}}, "vector"),
    ({"query": {"term": {"brand": ["a", "b"]}}}, "query/term/brand"),
    ({"size": True, "query": {"match_all": {}}}, "size: True is not of type 'integer'"),
    ({"query": {"knn": {"v": {"k": 3}}}}, "'vector' is a required property"),
    ({"query": {"hybrid": {"queries": {"match": {"title": "x"}}}}}, "hybrid/queries"),
])
def test_search_bodies_the_spec_refuses(spec, body, problem):
    with pytest.raises(SpecViolation, match="search") as found:
        _send(spec, "POST", "/products/_search", body)
    assert problem in str(found.value)


def test_bulk_lines_are_checked_one_by_one(spec):
    good = (b'{"index": {"_index": "p", "_id": "1"}}\n{"title": "a"}\n{"delete": {"_index": "p", "_id": "2"}}\n'
            b'{"update": {"_id": "1"}}\n{"doc": {"title": "b"}}\n')
    assert _send(spec, "POST", "/_bulk", good, "refresh=true", "application/x-ndjson").id == "bulk.0"
    for body, problem in [
        (b'{"update": {"_index": "p", "_id": "1"}}\n{"title": "x"}\n', "an update needs [doc], [script] or [upsert]"),
        (b'{"index": {"_index": "p"}, "delete": {"_index": "p"}}\n{}\n', "line 1"),
        (b'{"index": {"_index": "p"}}\n', "has no data line"),
        (b'{"index": {"_index": "p"}}\n{}', "must end with a newline"),
        (b'{"index": {"_index": "p", "_id": {"x": 1}}}\n{}\n', "line 1 index/_id"),
    ]:
        with pytest.raises(SpecViolation) as found:
            _send(spec, "POST", "/_bulk", body, content_type="application/x-ndjson")
        assert problem in str(found.value)


def test_operations_and_query_parameters_must_exist(spec):
    with pytest.raises(SpecViolation, match="no operation PATCH /products"):
        spec.operation("PATCH", "/products")
    with pytest.raises(SpecViolation, match=r"query parameter \[refreshh\]"):
        _send(spec, "POST", "/products/_refresh", query="refreshh=true")
    with pytest.raises(SpecViolation, match=r"refresh=soon"):
        _send(spec, "POST", "/_bulk", b'{"delete": {"_index": "p", "_id": "1"}}\n', "refresh=soon",
              "application/x-ndjson")
    assert _send(spec, "POST", "/products/_search", {"query": {"match_all": {}}}, "search_pipeline=x").id == "search.3"
    assert _send(spec, "PUT", f"/_search/pipeline/{HYBRID_PIPELINE}", hybrid_pipeline()).id == "search_pipeline.put.0"
    assert _send(spec, "POST", "/products/_delete_by_query", {"query": {"terms": {"product_id": ["a"]}}},
                 "refresh=true").id.startswith("delete_by_query")


def test_answers_are_checked_too(spec):
    operation = spec.operation("POST", "/_bulk")
    assert spec.check_response(operation, 200, {"took": 1, "errors": False, "items": []}) == []
    assert spec.check_response(operation, 200, {"took": 1, "errors": "no", "items": []})
    assert spec.check_response(operation, 400, {"error": "x"})  # no status: not OpenSearch's error shape


# --- what a real cluster refuses, the stand-in refuses ----------------------------------------------------
def _put(standin, name, body):
    return requests.put(f"{standin.url}/{name}", json=body)


@pytest.mark.parametrize("change,kind", [
    (lambda m: m["mappings"]["properties"]["title"].update(type="banana"), "mapper_parsing_exception"),
    (lambda m: m["mappings"]["properties"]["image_embedding"].update(colour="red"), "mapper_parsing_exception"),
    (lambda m: m["mappings"]["properties"]["image_embedding"]["method"].update(speed=3), "mapper_parsing_exception"),
    (lambda m: m["mappings"]["properties"]["image_embedding"]["method"]["parameters"].update(m=True),
     "mapper_parsing_exception"),
    (lambda m: m["settings"]["index"].update(number_of_shards="lots"), "illegal_argument_exception"),
    (lambda m: m["settings"]["index"].update(shards_please=2), "illegal_argument_exception"),
])
def test_standin_refuses_bad_mappings_and_settings(standin, change, kind):
    body = _mapping()
    change(body)
    answer = _put(standin, "products", body)
    assert answer.status_code == 400 and answer.json()["error"]["type"] == kind
    standin.take_violations()  # some of these are spec violations too; the point here is the 400


def _strict_index(standin):
    body = _mapping()
    body["mappings"]["dynamic"] = "strict"
    body["mappings"]["properties"]["metadata"] = {"type": "object", "properties": {"brand": {"type": "keyword"},
                                                                                  "size": {"type": "integer"}}}
    assert _put(standin, "products", body).status_code == 200


def _bulk(standin, *lines):
    data = "".join(json.dumps(line) + "\n" for line in lines)
    return requests.post(standin.url + "/_bulk", data=data, headers={"Content-Type": "application/x-ndjson"})


@pytest.mark.parametrize("source,kind", [
    ({"product_id": "p", "colour": "red"}, "strict_dynamic_mapping_exception"),
    ({"product_id": {"nested": "object"}}, "mapper_parsing_exception"),
    ({"product_id": "p", "metadata": {"size": "large"}}, "mapper_parsing_exception"),
    ({"product_id": "p", "metadata": "flat"}, "mapper_parsing_exception"),
    ({"product_id": "p", "image_embedding": [True, False, True, False]}, "mapper_parsing_exception"),
])
def test_standin_refuses_documents_that_do_not_fit_the_mapping(standin, source, kind):
    _strict_index(standin)
    answer = _bulk(standin, {"index": {"_index": "products", "_id": "1"}}, source).json()
    assert answer["errors"] is True
    assert answer["items"][0]["index"]["status"] == 400
    assert answer["items"][0]["index"]["error"]["type"] == kind


def test_standin_refuses_an_update_without_doc(standin):
    _strict_index(standin)
    answer = _bulk(standin, {"update": {"_index": "products", "_id": "1"}}, {"product_id": "x"})
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "action_request_validation_exception"
    assert standin.take_violations()  # the spec refuses it as well


@pytest.mark.parametrize("body", [
    {"query": {"knn": {"image_embedding": {"vector": [0.5] * DIM, "k": True}}}},
    {"query": {"knn": {"image_embedding": {"vector": [True] * DIM, "k": 2}}}},
    {"query": {"knn": {"image_embedding": {"vector": [0.5] * DIM}}}},  # none of k, min_score, max_distance
    {"query": {"knn": {"image_embedding": {"vector": [0.5] * DIM, "k": 2, "min_score": 0.5}}}},
    {"query": {"term": {"product_id": ["a", "b"]}}},
    {"query": {"match_all": {}}, "from": -1},
    {"query": {"match_all": {}}, "size": True},
    {"query": {"bool": {"filter": [{"hybrid": {"queries": [{"match_all": {}}]}}]}}},
])
def test_standin_refuses_bad_searches(standin, body):
    assert _put(standin, "products", _mapping()).status_code == 200
    answer = requests.post(standin.url + "/products/_search", json=body)
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) == {"error", "status"}
    standin.take_violations()


def test_standin_models_sub_fields_and_ignore_above(standin):
    assert _put(standin, "products", _mapping()).status_code == 200
    long_title = "x" * 600
    _bulk(standin, {"index": {"_index": "products", "_id": "a"}}, {"product_id": "a", "title": "Red Shoe"},
          {"index": {"_index": "products", "_id": "b"}}, {"product_id": "b", "title": long_title})
    requests.post(standin.url + "/products/_refresh")

    def ids(query):
        answer = requests.post(standin.url + "/products/_search", json={"query": query}).json()
        return [hit["_id"] for hit in answer["hits"]["hits"]]

    assert ids({"term": {"title.raw": "Red Shoe"}}) == ["a"]     # keyword sub-field: the exact title
    assert ids({"term": {"title.raw": "red shoe"}}) == []         # ... case-sensitive
    assert ids({"term": {"title": "red"}}) == ["a"]               # text field: analysed tokens
    assert ids({"term": {"title.raw": long_title}}) == []         # longer than ignore_above: not indexed
    assert ids({"ids": {"values": ["b"]}}) == ["b"]


def test_post_filtering_returns_fewer_than_k_while_efficient_filtering_returns_k(standin):
    """A `bool.filter` around a k-NN query filters the k nearest of *all* documents; a `filter`
    inside the knn clause finds the k nearest among the matching ones."""
    assert _put(standin, "products", _mapping()).status_code == 200
    vectors = unit(np.random.default_rng(5).standard_normal((30, DIM)))
    query = vectors[0]
    order = np.argsort(-(vectors @ query))
    rare = {int(i) for i in order[-5:]}  # the five farthest products are the only "rare" ones
    lines = []
    for i, vector in enumerate(vectors):
        lines += [{"index": {"_index": "products", "_id": f"p{i}"}},
                  {"product_id": f"p{i}", "image_embedding": [float(v) for v in vector],
                   "metadata": {"brand": "rare" if i in rare else "common"}}]
    assert _bulk(standin, *lines).json()["errors"] is False
    requests.post(standin.url + "/products/_refresh")
    brand = {"term": {"metadata.brand": "rare"}}
    knn = {"vector": [float(v) for v in query], "k": 3}
    post = requests.post(standin.url + "/products/_search", json={
        "size": 3, "query": {"bool": {"must": [{"knn": {"image_embedding": knn}}], "filter": [brand]}}}).json()
    efficient = requests.post(standin.url + "/products/_search", json={
        "size": 3, "query": {"knn": {"image_embedding": {**knn, "filter": brand}}}}).json()
    assert post["hits"]["hits"] == []
    assert [hit["_id"] for hit in efficient["hits"]["hits"]] == [f"p{i}" for i in order if int(i) in rare][:3]


def test_standin_scores_are_the_documented_ones(standin):
    """The stand-in's faiss innerproduct score is 1 + cos (cos >= 0), 1 / (1 - cos) below: what
    clip_search.search.scores converts back (tests/search/test_scores.py)."""
    from clip_search.search.scores import cosine_from_opensearch

    assert _put(standin, "products", _mapping()).status_code == 200
    a, b = unit(np.array([[1.0, 0.0, 0.0, 0.0], [-0.6, 0.8, 0.0, 0.0]]))
    _bulk(standin, {"index": {"_index": "products", "_id": "b"}},
          {"product_id": "b", "image_embedding": [float(v) for v in b]})
    requests.post(standin.url + "/products/_refresh")
    hit = requests.post(standin.url + "/products/_search", json={
        "query": {"knn": {"image_embedding": {"vector": [float(v) for v in a], "k": 1}}}}).json()["hits"]["hits"][0]
    assert hit["_score"] == pytest.approx(1 / (1 + 0.6))
    assert cosine_from_opensearch(hit["_score"], "faiss", "innerproduct") == pytest.approx(-0.6)


def test_every_request_of_a_session_is_checked(standin):
    """Index, upsert (with a bad product), plain, filtered and hybrid searches, count, drop: all
    within the spec (the fixture fails the test otherwise), and the bodies are recorded."""
    index = OpenSearchIndex.from_url(standin.url + "/products", initial_backoff=0.01)
    index.ensure(DIM, "m")
    vectors = unit(np.random.default_rng(1).standard_normal((5, DIM)))
    items = [EmbeddedProduct(Product(f"p{i}", f"shoe {i}", f"/i/{i}.jpg", {"brand": "b"}), v, v) for i, v in enumerate(vectors)]
    items.append(EmbeddedProduct(Product("bad", "x"), np.ones(DIM + 1, np.float32), None))
    assert index.upsert(items).indexed == 5
    index.refresh()
    index.search(vectors[0], k=2)
    index.search(vectors[0], k=2, filters={"brand": "b", "id": ["p1", "p2"], "title": "shoe 1"})
    index.search(vectors[0], k=2, keywords="shoe", filters={"brand": "b"})
    assert index.count() == 5
    index.drop()
    methods = {(r["method"], r["path"].split("/")[-1] or "/") for r in standin.requests}
    assert {("PUT", "products"), ("POST", "_bulk"), ("POST", "_search"), ("PUT", HYBRID_PIPELINE),
            ("DELETE", "products")} <= methods
    assert "_count" in {path for _, path in methods}
    assert all(r["body"] for r in standin.requests if r["path"] == "/_bulk")


def test_deletes_are_within_the_spec(standin):
    """What a `delete(ids)` sends: `_bulk` `delete` actions (no data line) or `_delete_by_query`
    on `product_id`; both pass the spec and remove the documents."""
    from opensearchpy import helpers

    index = OpenSearchIndex.from_url(standin.url + "/products", initial_backoff=0.01)
    index.ensure(DIM, "m")
    vectors = unit(np.random.default_rng(4).standard_normal((4, DIM)))
    index.upsert([EmbeddedProduct(Product(f"p{i}", f"t{i}"), v, None) for i, v in enumerate(vectors)])
    ok, errors = helpers.bulk(index.client, [{"_op_type": "delete", "_index": "products", "_id": i} for i in ("p0", "nope")],
                              raise_on_error=False, headers=BULK_HEADERS)
    assert ok == 1 and errors[0]["delete"]["status"] == 404
    body = next(r["body"] for r in standin.requests if r["path"] == "/_bulk" and '"delete"' in r["body"])
    assert body.count("\n") == 2  # two action lines, no data lines
    index.refresh()  # delete-by-query deletes what a search finds: refreshed documents
    answer = index.client.delete_by_query(index="products", body={"query": {"terms": {"product_id": ["p1"]}}},
                                          params={"refresh": "true"})
    assert answer["deleted"] == 1
    assert index.count() == 2


def test_bulk_goes_out_as_ndjson_and_json_is_refused_by_the_spec(spec, standin):
    """The spec declares `_bulk` bodies application/x-ndjson only: a client sending application/json
    (opensearch-py's default) is a violation, and the backend's bulk requests say x-ndjson."""
    with pytest.raises(SpecViolation, match="is not application/x-ndjson"):
        _send(spec, "POST", "/_bulk", b'{"delete": {"_index": "p", "_id": "1"}}\n', content_type="application/json")
    index = OpenSearchIndex.from_url(standin.url + "/products", initial_backoff=0.01)
    index.ensure(DIM, "m")
    vectors = unit(np.random.default_rng(2).standard_normal((3, DIM)))
    assert index.upsert([EmbeddedProduct(Product(f"p{i}", f"t{i}"), v, v) for i, v in enumerate(vectors)]).indexed == 3
    index.refresh()
    assert index.delete(["p0"]) == 1
    bulks = [r for r in standin.requests if r["path"].endswith("/_bulk")]
    assert len(bulks) == 2
    assert {r["headers"]["content-type"] for r in bulks} == {"application/x-ndjson"}
