"""The query function's image (container/build.sh --variant lambda) run as Lambda runs it: its entry
point is awslambdaric, which polls the Lambda Runtime API. Here a stand-in of that API (the
documented interface, https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html, version
2018-06-01: GET invocation/next, POST invocation/ID/response, POST invocation/ID/error, POST
init/error) hands it API Gateway v2 events; queries are encoded by the real model server and
searched in the OpenSearch stand-in (tests/standins), as the function does in the domain's VPC.

Image: CLIP_SEARCH_LAMBDA_IMAGE (default clip-search:lambda; build it with
`container/build.sh --variant lambda --base-image local/debian:bookworm`).
"""
import json
import os
import queue
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.app.conftest import DEMO
from tests.app.test_lambda import v2_event
from tests.container.docker_helpers import DOCKER, docker

pytestmark = pytest.mark.container

IMAGE = os.environ.get("CLIP_SEARCH_LAMBDA_IMAGE", "clip-search:lambda")
PREFIX = "/2018-06-01/runtime"


class RuntimeApi:
    """The Lambda Runtime API: one queue of events; responses, errors and init errors recorded."""

    def __init__(self):
        self.events: queue.Queue = queue.Queue()
        self.results: dict[str, queue.Queue] = {}
        self.init_errors: queue.Queue = queue.Queue()
        self.polled = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body: bytes = b"", headers=None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path != f"{PREFIX}/invocation/next":
                    return self._answer(404)
                api.polled.set()
                request_id, event = api.events.get()  # long poll, as Lambda does
                self._answer(200, json.dumps(event).encode(), {
                    "Content-Type": "application/json",
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
                    "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:clip-search-query",
                    "Lambda-Runtime-Trace-Id": "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1",
                })

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path[len(PREFIX):].strip("/").split("/")
                if parts == ["init", "error"]:
                    api.init_errors.put((self.headers.get("Lambda-Runtime-Function-Error-Type"), json.loads(body)))
                elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    api.results.setdefault(parts[1], queue.Queue()).put((parts[2], body, headers))
                else:
                    return self._answer(404)
                self._answer(202, b'{"status":"OK"}', {"Content-Type": "application/json"})

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, event: dict, timeout: float = 30) -> tuple[str, bytes, dict]:
        request_id = str(uuid.uuid4())
        self.results.setdefault(request_id, queue.Queue())
        self.events.put((request_id, event))
        return self.results[request_id].get(timeout=timeout)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def lambda_image():
    if DOCKER is None or docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} not built: container/build.sh --variant lambda --tag {IMAGE} "
                    "--base-image local/debian:bookworm (or set CLIP_SEARCH_LAMBDA_IMAGE)")
    return IMAGE


@pytest.fixture(scope="module")
def model_server(test_model_tar):
    from clip_search.serving.server import ModelServer

    with ModelServer(test_model_tar) as server:
        yield server


@pytest.fixture(scope="module")
def lambda_index(model_server):
    from clip_search.search.client import SearchClient
    from clip_search.search.embeddings import EndpointEmbedder
    from tests.standins.opensearch_standin import OpenSearchStandIn

    opensearch = OpenSearchStandIn().start()
    location = f"{opensearch.url}/products-{uuid.uuid4().hex[:8]}"
    with SearchClient(location, EndpointEmbedder(model_server.url), initial_backoff=0.01) as client:
        assert client.index_catalogue(DEMO / "products.jsonl", progress=False).indexed == 81
    yield location
    opensearch.stop()


def run_function(image: str, api: RuntimeApi, env: dict, command=()) -> subprocess.Popen:
    """The image as Lambda starts it: read-only root, only /tmp writable, any uid."""
    name = f"clip-search-lambda-test-{uuid.uuid4().hex[:8]}"
    args = [DOCKER, "run", "--rm", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp", "--user", "993:993",
            "-e", f"AWS_LAMBDA_RUNTIME_API={api.address}", "-e", "AWS_REGION=us-east-1",
            "-e", "AWS_LAMBDA_FUNCTION_NAME=clip-search-query", "-e", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    process = subprocess.Popen([*args, image, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    process.container = name
    return process


def stop(process: subprocess.Popen, api: RuntimeApi) -> None:
    subprocess.run([DOCKER, "kill", process.container], capture_output=True)
    process.wait(30)
    api.close()


def test_search_bad_query_and_handler_error_through_the_runtime_api(lambda_image, lambda_index, model_server):
    from clip_search.search.client import SearchClient
    from clip_search.search.embeddings import EndpointEmbedder

    api = RuntimeApi()
    started = time.monotonic()
    process = run_function(lambda_image, api, {"CLIP_SEARCH_INDEX": lambda_index,
                                               "CLIP_SEARCH_ENDPOINT": model_server.url})
    try:
        kind, body, _ = api.invoke(v2_event("GET", "/api/search", [("q", "oat milk"), ("k", 5)]))
        first_answer_s = time.monotonic() - started  # docker run + init + the first search
        assert kind == "response", body
        response = json.loads(body)
        assert response["statusCode"] == 200, response
        answer = json.loads(response["body"])
        with SearchClient(lambda_index, EndpointEmbedder(model_server.url)) as client:
            expected = client.search_text("oat milk", k=5)
        assert [h["id"] for h in answer["hits"]] == [h.id for h in expected] and len(expected) == 5
        assert answer["model"] == "clip-search-tiny/random"

        kind, body, _ = api.invoke(v2_event("GET", "/api/search", [("q", "oat milk"), ("k", "lots")]))
        response = json.loads(body)
        assert kind == "response" and response["statusCode"] == 400
        assert response["headers"]["content-type"].startswith("application/json")
        assert "k" in json.loads(response["body"])["error"]

        # An event the handler cannot take (no API Gateway shape): an error through the error route,
        # and the function keeps serving.
        kind, body, _ = api.invoke({"unexpected": "event"})
        error = json.loads(body)  # the documented error body: errorMessage, errorType, stackTrace
        assert kind == "error" and error["errorMessage"] and error["errorType"]
        kind, body, _ = api.invoke(v2_event("GET", "/api/search", [("q", "bananas")]))
        assert kind == "response" and json.loads(body)["statusCode"] == 200
        assert process.poll() is None
        print(f"\nlambda image: docker run -> first search answered in {first_answer_s:.2f} s")
    finally:
        stop(process, api)


def test_a_handler_that_cannot_load_is_an_init_error(lambda_image):
    api = RuntimeApi()
    process = run_function(lambda_image, api, {}, command=["clip_search.app.no_such_handler"])
    try:
        _, error = api.init_errors.get(timeout=60)
        assert "no_such_handler" in error["errorMessage"] and error["errorType"]
    finally:
        stop(process, api)


def test_image_is_torch_free_and_within_300_mb(lambda_image):
    size = int(docker("image", "inspect", "-f", "{{.Size}}", lambda_image).stdout)
    assert size <= 300e6, f"{size / 1e6:.0f} MB"
    listing = docker("run", "--rm", "--entrypoint", "/opt/venv/bin/python", lambda_image, "-c",
                     "import importlib.util as u, botocore.session as b; "
                     "print([m for m in ('torch','open_clip','onnxruntime','lancedb','pyarrow','awslambdaric','mangum') "
                     "if u.find_spec(m)]); s = b.get_session(); "
                     "[s.get_service_model(n) for n in ('s3','sagemaker-runtime','sts','opensearch')]").stdout
    assert listing.strip() == "['awslambdaric', 'mangum']"

