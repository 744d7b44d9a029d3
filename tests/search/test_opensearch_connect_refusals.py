"""Connected mode without a model server: every request `connect` / `disconnect` sends is within
the OpenSearch API specification, and the stand-in's ml-commons / neural-search half refuses what
the plugins refuse (messages as in ml-commons and neural-search)."""
import json

import pytest
import requests

from clip_search.search.index.opensearch import OpenSearchIndex
from clip_search.search.opensearch_connect import connect, connector_body, disconnect, pipeline_body
from tests.standins.opensearch_spec import SpecViolation, load

DIM, ROLE = 4, "arn:aws:iam::123456789012:role/os-sagemaker"


def _index(standin, name="products"):
    index = OpenSearchIndex.from_url(f"{standin.url}/{name}")
    index.ensure(DIM, "m", {"endpoint": "clip-test"})
    return index


def test_connect_and_disconnect_send_only_what_the_spec_allows(standin):
    index = _index(standin)
    record = connect(index.location, "clip-test", role_arn=ROLE, region="eu-west-1", echo=lambda line: None)
    disconnect(index.location, echo=lambda line: None)
    sent = [(r["method"], r["path"]) for r in standin.requests]
    assert ("POST", "/_plugins/_ml/connectors/_create") in sent
    assert ("DELETE", f"/_plugins/_ml/connectors/{record['connector_id']}") in sent
    assert ("POST", f"/_plugins/_ml/models/{record['model_id']}/_undeploy") in sent
    # (the standin fixture fails the test on any request or answer outside the spec)


def test_the_spec_refuses_a_connector_without_its_required_fields():
    spec = load()
    body = connector_body("clip-test", "eu-west-1", ROLE)
    spec.check_request("POST", "/_plugins/_ml/connectors/_create", "", json.dumps(body).encode(), "application/json")
    del body["credential"]
    with pytest.raises(SpecViolation, match="'credential' is a required property"):
        spec.check_request("POST", "/_plugins/_ml/connectors/_create", "", json.dumps(body).encode(), "application/json")
    with pytest.raises(SpecViolation, match="field_map"):
        bad = pipeline_body("m")
        del bad["processors"][0]["text_image_embedding"]["field_map"]
        spec.check_request("PUT", "/_ingest/pipeline/p", "", json.dumps(bad).encode(), "application/json")


def _post(standin, path, body, method="POST"):
    return requests.request(method, standin.url + path, json=body)


@pytest.mark.parametrize("path,body,kind,message", [
    ("/_plugins/_ml/connectors/_create", {**connector_body("e", "eu-west-1", ROLE), "credential": {}},
     "illegal_argument_exception", "Missing credential"),
    ("/_plugins/_ml/connectors/_create", {**connector_body("e", "eu-west-1", ROLE), "protocol": "ftp"},
     "illegal_argument_exception", "Unsupported connector protocol"),
    ("/_plugins/_ml/models/_register", {"name": "m", "function_name": "remote", "connector_id": "nope"},
     "status_exception", "Failed to find connector"),
])
def test_standin_refuses_bad_ml_requests(standin, path, body, kind, message):
    answer = _post(standin, path, body)
    assert answer.status_code in (400, 404) and answer.json()["error"]["type"] == kind
    assert message in answer.json()["error"]["reason"]
    standin.take_violations()  # some are spec violations too; the point is the refusal


@pytest.mark.parametrize("change,message", [
    (lambda p: p["processors"][0]["text_image_embedding"].pop("embedding"), "[embedding] required property is missing"),
    (lambda p: p["processors"][0]["text_image_embedding"].update(field_map={"caption": "title"}),
     "Following names are supported [text,image]"),
    (lambda p: p["processors"].append({"text_embedding_please": {}}), "No processor type exists with name"),
])
def test_standin_refuses_bad_ingest_pipelines(standin, change, message):
    body = pipeline_body("m")
    change(body)
    answer = _post(standin, "/_ingest/pipeline/p", body, "PUT")
    assert answer.status_code == 400 and message in answer.json()["error"]["reason"]
    standin.take_violations()


def test_standin_refuses_what_ml_commons_and_neural_search_refuse_on_a_connected_index(standin):
    index = _index(standin)
    record = connect(index.location, "clip-test", role_arn=ROLE, region="eu-west-1", echo=lambda line: None)
    model = record["model_id"]
    # a deployed model cannot be deleted; a connector a model uses cannot be deleted; nor a group with models
    assert _post(standin, f"/_plugins/_ml/models/{model}", None, "DELETE").status_code == 400
    assert _post(standin, f"/_plugins/_ml/connectors/{record['connector_id']}", None, "DELETE").status_code == 409
    assert _post(standin, f"/_plugins/_ml/model_groups/{record['model_group_id']}", None, "DELETE").status_code == 400
    searches = [
        ({"neural": {"image_embedding": {"model_id": model, "k": 3}}}, "Either query text or image text"),
        ({"neural": {"image_embedding": {"query_text": "x", "k": 3}}}, "model_id must be provided"),
        ({"neural": {"image_embedding": {"query_text": "x", "model_id": "nope", "k": 3}}}, "Failed to find model"),
        ({"neural": {"image_embedding": {"query_text": "x", "model_id": model, "colour": 1}}}, "unknown token [colour]"),
    ]
    for query, message in searches:
        answer = _post(standin, "/products/_search", {"query": query})
        assert answer.status_code in (400, 404) and message in answer.json()["error"]["reason"], (query, answer.text)
    # the endpoint is not one the stand-in can reach: the model call fails, and says so
    answer = _post(standin, "/products/_search", {"query": {"neural": {"image_embedding": {
        "query_text": "x", "model_id": model, "k": 3}}}})
    assert answer.status_code == 400 and "runtime.sagemaker.eu-west-1.amazonaws.com" in answer.json()["error"]["reason"]
    disconnect(index.location, echo=lambda line: None)
    answer = _post(standin, "/products/_search", {"query": {"neural": {"image_embedding": {
        "query_text": "x", "model_id": model, "k": 3}}}})
    assert answer.status_code == 404 and "Failed to find model" in answer.json()["error"]["reason"]
    standin.take_violations()


def test_connect_refuses_a_connected_index_and_disconnect_an_unconnected_one(standin):
    from clip_search.search.errors import SearchError

    index = _index(standin)
    with pytest.raises(SearchError, match="is not connected"):
        disconnect(index.location, echo=lambda line: None)
    connect(index.location, "clip-test", role_arn=ROLE, region="eu-west-1", echo=lambda line: None)
    with pytest.raises(SearchError, match="already connected"):
        connect(index.location, "clip-test", role_arn=ROLE, region="eu-west-1", echo=lambda line: None)
    plain = OpenSearchIndex.from_url(f"{standin.url}/plain")
    plain.client.indices.create(index="plain", body={})
    with pytest.raises(SearchError, match="not made by clip-search"):
        connect(plain.location, "clip-test", role_arn=ROLE, region="eu-west-1", echo=lambda line: None)


def test_dry_run_redacts_keys_and_sends_no_write(standin, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-key")
    index = _index(standin)
    before = len(standin.requests)
    lines = []
    connect(index.location, "clip-test", region="eu-west-1", dry_run=True, echo=lines.append)
    printed = "\n".join(lines)
    assert "very-secret-key" not in printed and "AKIDEXAMPLE" not in printed and '"secret_key": "***"' in printed
    assert all(r["method"] == "GET" for r in standin.requests[before:])
    assert not standin.ml.connectors
