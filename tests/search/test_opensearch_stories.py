"""The OpenSearch API specification project's own request stories, replayed against the stand-in.

Each story (`tests/` of ../shared/opensearch-api-specification) is what that project sends to a real
cluster, with the statuses and the parts of the answers it expects. The stand-in must give the same
statuses and answers; the `standin` fixture also checks every request and answer against the
specification. Stories that need the ML plugin (model registration) are not replayed here.
"""
import json
import re
from urllib.parse import quote, urlencode

import pytest
import requests
import yaml

from tests.standins.opensearch_spec import SPEC_DIR

STORIES = [
    "default/_core/bulk.yaml",
    "default/indices/bulk.yaml",
    "default/_core/search/knn/search/search_k.yaml",
    "default/_core/search/knn/search/search_filter.yaml",
    "default/_core/search/knn/search/search_min_score.yaml",
    "default/_core/search/knn/search/search_max_distance.yaml",
    "default/_core/search/hybrid_query_pagination.yaml",
    "default/search_pipeline/search_phase_results_processors/normalization.yaml",
    "default/search_pipeline/search_phase_results_processors/score_ranker.yaml",
]


def _request(base: str, step: dict) -> requests.Response:
    parameters = dict(step.get("parameters") or {})
    path = step["path"]
    for name in re.findall(r"\{(\w+)\}", path):
        path = path.replace("{" + name + "}", quote(str(parameters.pop(name)), safe=","))
    query = {k: json.dumps(v) if isinstance(v, bool) else v for k, v in parameters.items()}
    url = base + path + ("?" + urlencode(query) if query else "")
    request = step.get("request") or {}
    payload, content_type = request.get("payload"), request.get("content_type", "application/json")
    if payload is None:
        return requests.request(step["method"], url)
    if content_type == "application/x-ndjson":
        data = "".join(json.dumps(line) + "\n" for line in payload).encode()
    else:
        data = json.dumps(payload).encode()
    return requests.request(step["method"], url, data=data, headers={"Content-Type": content_type})


def _contains(actual, expected, where="payload"):
    """The story's expected payload is a part of the answer: every key and value it names is there."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{where}: no [{key}] in {sorted(actual)}"
            _contains(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _contains(a, e, f"{where}[{index}]")
    elif isinstance(expected, float) or isinstance(actual, float):
        assert actual == pytest.approx(expected), f"{where}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("story", STORIES)
def test_spec_story_replays_on_the_standin(standin, story):
    spec = yaml.safe_load((SPEC_DIR / "tests" / story).read_text())
    for step in spec.get("prologues") or []:
        answer = _request(standin.url, step)
        assert answer.status_code in step.get("status", [200, 201]), (step["path"], answer.text)
    try:
        for chapter in spec["chapters"]:
            answer = _request(standin.url, chapter)
            expected = chapter.get("response") or {}
            assert answer.status_code == expected.get("status", 200), (chapter["synopsis"], answer.text)
            if "payload" in expected:
                _contains(answer.json(), expected["payload"])
    finally:
        for step in spec.get("epilogues") or []:
            answer = _request(standin.url, step)
            assert answer.status_code in step.get("status", [200, 201]), (step["path"], answer.text)


def test_stories_are_from_the_spec_commit_docs_name():
    """docs/search.md names the specification commit the client and stand-in are held to."""
    from pathlib import Path

    from tests.standins.opensearch_spec import spec_commit

    docs = (Path(__file__).resolve().parents[2] / "docs" / "search.md").read_text()
    assert spec_commit() in docs
