"""The app's own share of a query's round trip: no Nagle stall, Server-Timing, JSON by orjson.

Unit tier. The app runs on real uvicorn (tests/app/conftest.py) and is asked over real loopback
sockets; one keep-alive connection per test, like a page or the latency benchmark.
"""
import http.client
import json
import re
import socket
import statistics
import time
from urllib.parse import urlencode, urlsplit

import pytest

SERVER_TIMING = re.compile(r"^app;dur=(\d+\.\d{3})$")


def keep_alive(app_url) -> http.client.HTTPConnection:
    parts = urlsplit(app_url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def timed_get(connection, path):
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    return response, body, time.perf_counter() - started


def test_the_listening_socket_hands_out_connections_with_nagle_off():
    """asyncio turns Nagle off only for sockets whose proto is IPPROTO_TCP; the app's own socket
    must be one, and say TCP_NODELAY itself (Linux copies it to accepted connections)."""
    from clip_search.app.server import bind

    listener = bind("127.0.0.1", 0)
    try:
        assert listener.proto == socket.IPPROTO_TCP
        client = socket.create_connection(listener.getsockname()[:2], timeout=10)
        accepted, _ = listener.accept()
        with client, accepted:
            assert accepted.proto == socket.IPPROTO_TCP
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()


@pytest.mark.parametrize("path, status", [("/static/app.css", 200),  # a file
                                          ("/api/search?" + urlencode({"q": "pear", "k": 0}), 422)])  # JSON, no search
def test_keep_alive_answers_are_not_held_back_for_a_delayed_ack(app_url, path, status):
    """With Nagle on, the body of every answer after the first few on a keep-alive connection waits
    for the client's delayed ACK of the head: 40 ms or more each (the app measured 44-48 ms for a
    static file before). Without it, a small answer on loopback takes a few ms even on a busy machine.
    (Answers that search are left out: the index's own time varies too much here to bound.)"""
    connection = keep_alive(app_url)
    try:
        took = []
        for _ in range(25):
            response, body, elapsed = timed_get(connection, path)
            assert response.status == status and body
            took.append(elapsed)
    finally:
        connection.close()
    median = statistics.median(took[5:]) * 1000
    assert median < 30, f"median {median:.1f} ms per request on a keep-alive connection: {[round(t * 1000, 1) for t in took]}"


def test_every_answer_says_the_apps_own_time_in_server_timing(app_url):
    connection = keep_alive(app_url)
    try:
        for path, status in (("/api/search?q=pear&k=3", 200), ("/api/search?q=pear&k=0", 422),
                             ("/api/products/No-Such-Product", 404), ("/healthz", 200), ("/static/app.js", 200),
                             ("/no/such/route", 404)):
            response, body, elapsed = timed_get(connection, path)
            assert response.status == status, (path, body)
            match = SERVER_TIMING.match(response.getheader("server-timing") or "")
            assert match, (path, response.getheaders())
            app_seconds = float(match.group(1)) / 1000
            assert 0 < app_seconds <= elapsed, (path, app_seconds, elapsed)
            if path.startswith("/api/search") and status == 200:
                took = json.loads(body)["took_ms"]
                # the app's time contains the search's own stages
                assert float(match.group(1)) >= took["encode"] + took["search"] - 0.002, (match.group(1), took)
            assert response.getheader("x-content-type-options") == "nosniff"  # the other headers stay
    finally:
        connection.close()


def test_json_answers_are_compact_utf8_with_non_finite_floats_as_null_and_big_ints_exact():
    from clip_search.app.server import FastJSONResponse, error_response

    answer = FastJSONResponse({"title": "Äpfel – grün", "score": 0.5, "n": [1, 2]})
    assert answer.body == '{"title":"Äpfel – grün","score":0.5,"n":[1,2]}'.encode()
    assert answer.headers["content-type"] == "application/json"
    assert json.loads(FastJSONResponse({"score": float("nan"), "x": float("inf")}).body) == {"score": None, "x": None}
    big = 2 ** 70 + 1  # beyond orjson's 64 bits: the json fallback keeps it exact
    assert json.loads(FastJSONResponse({"ean": big}).body) == {"ean": big}
    error = error_response(413, "request body is over the 6 MB limit")
    assert error.status_code == 413 and json.loads(error.body) == {"error": "request body is over the 6 MB limit",
                                                                    "status": 413}
