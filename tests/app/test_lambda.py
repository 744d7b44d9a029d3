"""The AWS query function: `clip_search.app.lambda_handler` invoked with API Gateway HTTP API (v2)
events, encoding through the real native model server (the SageMaker endpoint's stack) and searching
OpenSearch (the stand-in, which checks every request against OpenSearch's documented API).

Tier: server (starts multi-model-server).
"""
import base64
import json
import uuid
from urllib.parse import urlencode

import pytest

from tests.app.conftest import DEMO

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def model_server(test_model_tar):
    from clip_search.serving.server import ModelServer

    with ModelServer(test_model_tar) as server:
        yield server


@pytest.fixture(scope="module")
def opensearch():
    from tests.standins.opensearch_standin import OpenSearchStandIn

    server = OpenSearchStandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def lambda_index(model_server, opensearch):
    """The demo catalogue in OpenSearch, encoded through the model server (as Batch Transform would)."""
    from clip_search.search.client import SearchClient
    from clip_search.search.embeddings import EndpointEmbedder

    location = f"{opensearch.url}/products-{uuid.uuid4().hex[:8]}"
    with SearchClient(location, EndpointEmbedder(model_server.url), initial_backoff=0.01) as client:
        report = client.index_catalogue(DEMO / "products.jsonl", progress=False)
    assert report.indexed == 81
    return location


@pytest.fixture
def handler(lambda_index, model_server, monkeypatch):
    """The Lambda as AWS runs it: the module-level handler, configured by the environment only."""
    import clip_search.app as app_package
    from clip_search.app import aws

    monkeypatch.setenv("CLIP_SEARCH_INDEX", lambda_index)
    monkeypatch.setenv("CLIP_SEARCH_ENDPOINT", model_server.url)
    aws.reset()
    yield lambda event: app_package.lambda_handler(event, LambdaContext())
    aws.reset()


class LambdaContext:
    function_name = "clip-search-query"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:clip-search-query"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"


def v2_event(method: str, path: str, query=(), headers=None, body: bytes | str | None = None, binary=False) -> dict:
    """An API Gateway HTTP API payload format 2.0 event (the shape AWS documents)."""
    raw_query = urlencode(list(query))
    event = {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": raw_query,
        "headers": {"host": "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "pytest",
                    "x-forwarded-proto": "https", **{k.lower(): v for k, v in (headers or {}).items()}},
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123", "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123", "requestId": "JKJaXmPLvHcESHA=", "routeKey": "$default", "stage": "$default",
            "time": "01/Dec/2026:11:00:00 +0000", "timeEpoch": 1796124000000,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "198.51.100.7", "userAgent": "pytest"},
        },
        "isBase64Encoded": binary,
    }
    if query:
        merged = {}
        for key, value in query:  # API Gateway joins repeated parameters with commas here
            merged[key] = f"{merged[key]},{value}" if key in merged else str(value)
        event["queryStringParameters"] = merged
    if body is not None:
        event["body"] = base64.b64encode(body).decode() if binary else body
    return event


def body_of(response: dict) -> bytes:
    body = response.get("body", "")
    return base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()


def json_of(response: dict) -> dict:
    assert response["headers"]["content-type"].startswith("application/json"), response
    return json.loads(body_of(response))


def test_text_search_through_the_endpoint_and_opensearch(handler, lambda_index, model_server):
    from clip_search.search.client import SearchClient
    from clip_search.search.embeddings import EndpointEmbedder

    response = handler(v2_event("GET", "/api/search", [("q", "oat milk"), ("k", 5), ("filter", "department:Packages")]))
    assert response["statusCode"] == 200
    answer = json_of(response)
    assert answer["model"] == "clip-search-tiny/random" and answer["index"] == lambda_index
    with SearchClient(lambda_index, EndpointEmbedder(model_server.url)) as client:
        expected = client.search_text("oat milk", k=5, filters={"department": "Packages"})
    assert [h["id"] for h in answer["hits"]] == [h.id for h in expected] and len(expected) == 5
    assert [h["score"] for h in answer["hits"]] == pytest.approx([h.score for h in expected], abs=1e-5)
    assert {h["department"] for h in answer["hits"]} == {"Packages"}
    assert set(answer["took_ms"]) == {"encode", "search"}


def test_photo_queries_as_json_and_as_a_multipart_upload(handler):
    photo = (DEMO / "images" / "Red-Bell-Pepper.jpg").read_bytes()
    as_json = handler(v2_event("POST", "/api/search", headers={"content-type": "application/json"},
                               body=json.dumps({"image": base64.b64encode(photo).decode(), "k": 3})))
    assert as_json["statusCode"] == 200
    hits = json_of(as_json)["hits"]
    assert hits[0]["id"] == "Red-Bell-Pepper" and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    boundary = "----clipsearchboundary"
    multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n"
                 f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    uploaded = handler(v2_event("POST", "/api/search", headers={"content-type": f"multipart/form-data; boundary={boundary}"},
                                body=multipart, binary=True))
    assert uploaded["statusCode"] == 200
    assert [h["id"] for h in json_of(uploaded)["hits"]][:3] == [h["id"] for h in hits]


def test_more_like_this_products_and_images(handler):
    like = json_of(handler(v2_event("POST", "/api/search", headers={"content-type": "application/json"},
                                    body=json.dumps({"like": "Lime", "k": 4}))))
    assert len(like["hits"]) == 4 and "Lime" not in [h["id"] for h in like["hits"]]
    product = json_of(handler(v2_event("GET", "/api/products/Lime")))
    assert product["title"] == "Lime" and product["image_url"] == "/api/products/Lime/image"
    image = handler(v2_event("GET", "/api/products/Lime/image"))
    assert image["statusCode"] == 200 and image["isBase64Encoded"] is True
    assert image["headers"]["content-type"] == "image/jpeg"
    assert body_of(image) == (DEMO / "images" / "Lime.jpg").read_bytes()


def test_errors_are_json_with_their_status(handler):
    cases = [
        (v2_event("GET", "/api/search", [("q", "milk"), ("k", 0)]), 422),
        (v2_event("GET", "/api/search", [("q", "milk"), ("filter", "nocolon")]), 400),
        (v2_event("GET", "/api/products/No-Such"), 404),
        (v2_event("GET", "/api/products/%2e%2e%2f%2e%2e%2fetc%2fpasswd/image"), 404),
        (v2_event("GET", "/nothing"), 404),
        (v2_event("POST", "/api/search", headers={"content-type": "text/plain"}, body="milk"), 415),
        (v2_event("POST", "/api/search", headers={"content-type": "application/json"}, body="{oops"), 400),
        (v2_event("POST", "/api/search", headers={"content-type": "application/json"},
                  body=json.dumps({"image": base64.b64encode(b"not a photo").decode()})), 400),
        (v2_event("DELETE", "/api/search"), 405),
    ]
    for event, status in cases:
        response = handler(event)
        assert response["statusCode"] == status, (event["rawPath"], response)
        body = json_of(response)
        assert body["status"] == status and body["error"] and "Traceback" not in body["error"]
    # hybrid works on OpenSearch: keyword match on the title plus k-NN
    hybrid = json_of(handler(v2_event("GET", "/api/search", [("q", "Lime"), ("k", 3), ("hybrid", "1")])))
    assert hybrid["hits"][0]["id"] == "Lime"


def test_page_health_facets_and_metrics(handler):
    page = handler(v2_event("GET", "/"))
    assert page["statusCode"] == 200 and page["headers"]["content-type"].startswith("text/html")
    assert "clip-search" in body_of(page).decode()
    script = handler(v2_event("GET", "/static/app.js"))
    assert script["statusCode"] == 200 and b"api/search" in body_of(script)
    health = json_of(handler(v2_event("GET", "/healthz")))
    assert health["backend"] == "opensearch" and health["products"] == 81
    facets = {f["field"]: f["values"] for f in json_of(handler(v2_event("GET", "/api/facets")))["facets"]}
    assert facets["department"][0] == {"value": "Packages", "count": 31}
    handler(v2_event("GET", "/api/search", [("q", "pear")]))
    metrics = body_of(handler(v2_event("GET", "/metrics"))).decode()
    assert 'clip_search_app_requests_total{method="GET",route="/api/search",status="200"}' in metrics


def test_a_missing_setting_is_named(monkeypatch):
    from clip_search.app import aws, lambda_handler
    from clip_search.settings import SettingsError

    aws.reset()
    monkeypatch.delenv("CLIP_SEARCH_INDEX", raising=False)
    with pytest.raises(SettingsError, match="CLIP_SEARCH_INDEX"):
        lambda_handler(v2_event("GET", "/healthz"), LambdaContext())
    aws.reset()
