"""Connected mode end to end: `connect` builds the ml-commons connector, model and ingest pipeline;
the OpenSearch stand-in executes the connector as ml-commons does, against the real model server
(`clip-search serve`); documents ingested through the pipeline and `neural` queries give the same
products as the client-side path (our query function: encode at the endpoint, then `knn`).
Every request is checked against the OpenSearch API specification (the fixture fails otherwise)."""
import base64
import json
import re

import pytest
import requests
from click.testing import CliRunner

from clip_search.cli import main
from clip_search.demo_data import GROCERY
from clip_search.search.catalogue import read_catalogue
from clip_search.search.client import SearchClient
from clip_search.search.embeddings import EndpointEmbedder
from clip_search.search.index.base import FIELDS, IMAGE
from clip_search.search.index.opensearch import BULK_HEADERS, OpenSearchIndex
from clip_search.search.opensearch_connect import ML_COMMONS_MEDIA_TYPE, REQUEST_BODY, connect, disconnect
from tests.search.conftest import fail_on_spec_violations

pytestmark = pytest.mark.server

ENDPOINT, REGION, ROLE = "clip-search-test", "eu-west-1", "arn:aws:iam::123456789012:role/opensearch-sagemaker"
TEXT_QUERIES = ["green apple", "red apple", "milk", "yoghurt", "juice", "a banana", "tomato", "mushrooms"]


@pytest.fixture
def standin(server_url):
    from tests.standins.opensearch_standin import OpenSearchStandIn

    server = OpenSearchStandIn().start()
    server.ml.endpoints[ENDPOINT] = server_url  # SageMaker's runtime URL for ENDPOINT -> the real model server
    yield server
    server.stop()
    fail_on_spec_violations(server)


@pytest.fixture
def products():
    return list(read_catalogue(GROCERY / "products.jsonl"))


def _client_side_index(standin, server_url, products) -> SearchClient:
    client = SearchClient(OpenSearchIndex.from_url(standin.url + "/grocery", initial_backoff=0.01),
                          EndpointEmbedder(server_url))
    report = client.index_catalogue(products, progress=False)
    assert report.indexed == len(products) and not report.errors
    client.index.refresh()
    return client


def _pipeline_index(standin, client, products) -> OpenSearchIndex:
    """A second index, filled only through the connected ingest pipeline: documents carry the title
    and the photo (base64), the cluster embeds both."""
    info = client.index.info()
    index = OpenSearchIndex.from_url(standin.url + "/grocery-connected", initial_backoff=0.01)
    index.create(info.dim, info.model_id, info.extra.get("encoder"))
    record = connect(index.location, ENDPOINT, role_arn=ROLE, region=REGION, echo=lambda line: None)
    lines = []
    for product in products:
        photo = (GROCERY / product.image).read_bytes() if not str(product.image).startswith("/") else \
            open(product.image, "rb").read()
        lines += [{"index": {"_index": index.name, "_id": product.id}},
                  {"product_id": product.id, "title": product.title, "image": product.image,
                   "metadata": product.metadata, record["image_source_field"]: base64.b64encode(photo).decode()}]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    answer = index.client.bulk(body=body, params={"pipeline": record["ingest_pipeline"], "refresh": "true"},
                               headers=BULK_HEADERS)
    assert answer["errors"] is False, [i for i in answer["items"] if "error" in i["index"]][:2]
    index._info = None
    return index


def test_neural_text_and_photo_queries_return_the_client_side_top_10(standin, server_url, products, store_photos):
    client = _client_side_index(standin, server_url, products)
    connected = _pipeline_index(standin, client, products)
    stored = standin.indices["grocery-connected"].docs
    assert all("image_base64" not in doc for doc in stored.values())  # the pipeline drops the photo's bytes
    assert len(stored) == len(products) and all(doc.get("image_embedding") and doc.get("title_embedding")
                                                for doc in stored.values())
    calls = standin.ml.calls
    assert calls and {call["headers"]["content-type"] for call in calls} == {ML_COMMONS_MEDIA_TYPE}
    assert calls[0]["url"] == f"https://runtime.sagemaker.{REGION}.amazonaws.com/endpoints/{ENDPOINT}/invocations"
    assert json.loads(calls[0]["body"])["inputImage"] == "null" or json.loads(calls[0]["body"])["inputText"] == "null"

    for text in TEXT_QUERIES:
        expected = client.search_text(text, k=10, fields=FIELDS)
        found = connected.search_neural(text=text, k=10, fields=FIELDS)
        assert [h.id for h in found] == [h.id for h in expected], text
        assert [h.score for h in found] == pytest.approx([h.score for h in expected], abs=1e-4)
    for photo in store_photos[::max(1, len(store_photos) // 6)][:6]:
        data = photo.read_bytes()
        expected = client.search_image(data, k=10, fields=(IMAGE,))
        found = connected.search_neural(image=data, k=10, fields=(IMAGE,))
        assert [h.id for h in found] == [h.id for h in expected], photo.name
    filters = {"department": "Fruit"}
    expected = client.search_text("red", k=10, filters=filters)
    found = connected.search_neural(text="red", k=10, filters=filters)
    assert [h.id for h in found] == [h.id for h in expected] and all(h.metadata["department"] == "Fruit" for h in found)
    hybrid = connected.search_neural(text="apple", k=5, keywords="apple")
    assert hybrid and all("Apple" in h.title for h in hybrid[:3])
    neural_bodies = [b for b in standin.bodies("POST", "/_search") if "neural" in json.dumps(b)]
    assert neural_bodies and all("vector" not in json.dumps(b) for b in neural_bodies)  # the cluster encodes

    # `clip-search search`: neural on the connected index, client-side on request; --json says which
    runner = CliRunner()
    for extra, path in (([], "neural"), (["--query-path", "client", "--endpoint", server_url], "client")):
        result = runner.invoke(main, ["search", "green apple", "--index", connected.location, "--json", *extra])
        assert result.exit_code == 0, result.output
        answer = json.loads(result.stdout)
        assert {hit["query_path"] for hit in answer} == {path}
        assert [hit["id"] for hit in answer] == [h.id for h in client.search_text("green apple", k=10)]
    result = runner.invoke(main, ["search", "--image", str(store_photos[0]), "--index", connected.location, "--json"])
    assert result.exit_code == 0, result.output
    assert [hit["id"] for hit in json.loads(result.stdout)] == [h.id for h in client.search_image(store_photos[0].read_bytes())]
    result = runner.invoke(main, ["search", "apple", "--index", client.index.location, "--query-path", "neural"])
    assert result.exit_code == 2 and "is not connected" in result.stderr

    # the app: the same products, `query_path` in the answer and a `neural` stage in Server-Timing
    from clip_search.app.server import AppServer, create_app
    from clip_search.app.service import SearchService

    service = SearchService(SearchClient(OpenSearchIndex.from_url(connected.location), EndpointEmbedder(server_url)))
    with AppServer(create_app(service)) as app:
        answer = requests.get(app.url + "/api/search", params={"q": "milk", "k": 10})
        photo = requests.post(app.url + "/api/search", json={"image": base64.b64encode(store_photos[1].read_bytes()).decode()})
    service.close()
    assert answer.status_code == 200 and answer.json()["query_path"] == "neural"
    assert [hit["id"] for hit in answer.json()["hits"]] == [h.id for h in client.search_text("milk", k=10)]
    assert re.match(r"^neural;dur=\d+\.\d{3}, app;dur=\d+\.\d{3}$", answer.headers["server-timing"])
    assert [hit["id"] for hit in photo.json()["hits"]] == [h.id for h in client.search_image(store_photos[1].read_bytes())]


def test_connect_and_disconnect_leave_nothing_behind(standin, server_url, products):
    client = _client_side_index(standin, server_url, products[:3])
    record = connect(client.index.location, ENDPOINT, role_arn=ROLE, region=REGION, echo=lambda line: None)
    connector = standin.ml.connectors[record["connector_id"]]
    assert connector["credential"] == {"roleArn": ROLE} and connector["protocol"] == "aws_sigv4"
    assert connector["actions"][0]["request_body"] == REQUEST_BODY
    assert standin.ml.models[record["model_id"]]["model_state"] == "DEPLOYED"
    meta = standin.indices["grocery"].mappings["_meta"]["clip_search"]
    assert meta["connected"]["model_id"] == record["model_id"] and meta["dim"] == client.index.info().dim
    with pytest.raises(Exception, match="already connected"):
        connect(client.index.location, ENDPOINT, role_arn=ROLE, region=REGION, echo=lambda line: None)
    # a document the model refuses (a photo that is not base64) is that document's error, as ingest reports it
    bad = (json.dumps({"index": {"_index": "grocery", "_id": "bad"}}) + "\n"
           + json.dumps({"product_id": "bad", "title": "Bad", "image_base64": "not base64!"}) + "\n")
    answer = client.index.client.bulk(body=bad, params={"pipeline": record["ingest_pipeline"]}, headers=BULK_HEADERS)
    item = answer["items"][0]["index"]
    assert answer["errors"] is True and item["status"] == 400 and "inputImage is not valid base64" in item["error"]["reason"]

    disconnect(client.index.location, echo=lambda line: None)
    ml = standin.ml
    assert not ml.models and not ml.connectors and not ml.groups and not ml.pipelines
    assert "connected" not in standin.indices["grocery"].mappings["_meta"]["clip_search"]
    assert standin.indices["grocery"].mappings["_meta"]["clip_search"]["model_id"] == meta["model_id"]


def test_dry_run_prints_every_request_and_sends_none_that_writes(standin, server_url, products):
    client = _client_side_index(standin, server_url, products[:2])
    before = len(standin.requests)
    result = CliRunner().invoke(main, ["opensearch", "connect", "--index", client.index.location, "--endpoint", ENDPOINT,
                                       "--role-arn", ROLE, "--region", REGION, "--dry-run"])
    assert result.exit_code == 0, result.output
    printed = [line for line in result.output.splitlines() if line.split(" ")[0] in ("GET", "POST", "PUT", "DELETE")]
    assert [line.split(" ")[:2] for line in printed] == [
        ["POST", "/_plugins/_ml/model_groups/_register"], ["POST", "/_plugins/_ml/connectors/_create"],
        ["POST", "/_plugins/_ml/models/_register"], ["POST", "/_plugins/_ml/models/<model_id>/_deploy"],
        ["PUT", "/_ingest/pipeline/clip-search-grocery"], ["PUT", "/grocery/_mapping"]]
    assert ROLE in result.output and ENDPOINT in result.output
    sent = standin.requests[before:]
    assert all(r["method"] == "GET" for r in sent)  # only the mapping was read
    assert not standin.ml.connectors and "connected" not in standin.indices["grocery"].mappings["_meta"]["clip_search"]


def test_refusals_name_the_problem(standin, server_url, products):
    client = _client_side_index(standin, server_url, products[:2])
    runner = CliRunner()
    result = runner.invoke(main, ["opensearch", "disconnect", "--index", client.index.location])
    assert result.exit_code == 1 and result.stderr.strip() == "Error: index grocery is not connected"
    result = runner.invoke(main, ["opensearch", "connect", "--index", standin.url + "/nope", "--endpoint", ENDPOINT,
                                  "--role-arn", ROLE, "--region", REGION])
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and "nope" in result.stderr
    with pytest.raises(Exception, match="not connected"):
        client.index.search_neural(text="apple")
