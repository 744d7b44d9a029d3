"""Random requests at the real HTTP server (MMS + our handler): never a 5xx, never a traceback in a
body, errors are the documented JSON, and a good request still answers afterwards."""
import json

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.strategies import accepts, bodies, content_types

pytestmark = pytest.mark.fuzz

METHODS = st.sampled_from(["POST", "POST", "POST", "PUT", "GET", "DELETE", "PATCH", "OPTIONS"])


def _good(url):
    response = requests.post(url, data=b"green apple", headers={"Content-Type": "text/plain"}, timeout=120)
    assert response.status_code == 200 and len(response.json()["embeddings"][0]) == 64


@settings(max_examples=150, deadline=None)  # a real server on a shared 2-core host: no per-example deadline
@given(body=st.one_of(bodies, st.just(b"a" * (1024 * 1024 + 10))), content_type=content_types,
       accept=accepts, method=METHODS)
def test_random_requests_never_5xx_and_never_a_traceback(fuzz_server, body, content_type, accept, method):
    url = fuzz_server.url + "/invocations"
    headers = {"Accept": accept}
    if content_type:
        headers["Content-Type"] = content_type
    response = requests.request(method, url, data=body, headers=headers, timeout=120)
    assert response.status_code < 500, response.text[:500]
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        answer = json.loads(response.content)
        assert answer["status"] == response.status_code and answer["error"]


def test_a_good_request_still_answers_after_the_fuzzing(fuzz_server):
    _good(fuzz_server.url + "/invocations")
