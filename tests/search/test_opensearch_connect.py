"""`connect` / `disconnect` on the stand-in and, under the `live` marker with OPENSEARCH_URL, on a
real cluster (`make test-live`). Creating a connector, registering and deploying a remote model does
not call the endpoint, so no SageMaker endpoint is needed: CLIP_SEARCH_LIVE_ENDPOINT names one if
you have it (neural queries are then checked too), CLIP_SEARCH_LIVE_ROLE_ARN the role an Amazon
OpenSearch Service domain assumes (self-managed clusters get the AWS keys of the environment)."""
import os

import pytest

from clip_search.search.opensearch_connect import connect, disconnect

DIM = 4


def _credentials(opensearch, monkeypatch) -> dict:
    role = os.environ.get("CLIP_SEARCH_LIVE_ROLE_ARN")
    if not opensearch.live:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSTANDIN")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "standin-secret")
        return {"role_arn": None, "region": "eu-west-1"}
    return {"role_arn": role, "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")}


def test_connect_creates_a_deployed_model_and_pipeline_and_disconnect_removes_them(opensearch, monkeypatch):
    options = _credentials(opensearch, monkeypatch)
    endpoint = os.environ.get("CLIP_SEARCH_LIVE_ENDPOINT", "clip-search-connect-test")
    index = opensearch.index()
    index.ensure(DIM, "m", {"endpoint": endpoint})
    record = connect(index.location, endpoint, echo=lambda line: None, **options)
    try:
        transport = index.client.transport
        model = transport.perform_request("GET", f"/_plugins/_ml/models/{record['model_id']}")
        assert model["model_state"] == "DEPLOYED" and model["connector_id"] == record["connector_id"]
        pipeline = transport.perform_request("GET", f"/_ingest/pipeline/{record['ingest_pipeline']}")
        processors = pipeline[record["ingest_pipeline"]]["processors"]
        assert [next(iter(p)) for p in processors] == ["text_image_embedding", "text_image_embedding", "remove"]
        index._info = None
        index.info()
        assert index.connected["model_id"] == record["model_id"]
        if opensearch.live and os.environ.get("CLIP_SEARCH_LIVE_ENDPOINT"):
            assert index.search_neural(text="apple", k=3) == []  # the endpoint answered; the index is empty
    finally:
        disconnect(index.location, echo=lambda line: None)
    from opensearchpy.exceptions import NotFoundError

    with pytest.raises(NotFoundError):
        index.client.transport.perform_request("GET", f"/_ingest/pipeline/{record['ingest_pipeline']}")
    index._info = None
    index.info()
    assert index.connected is None
