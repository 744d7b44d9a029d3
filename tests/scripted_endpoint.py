"""An HTTP endpoint on loopback that answers each POST with a scripted (status, body), for the
answers the real model server never gives (HTTP errors, records left out, lines that are not JSON).
Each request is recorded: path, body, Content-Type, Accept, Authorization."""
import http.server
import json
import threading

import pytest


class ScriptedEndpoint:
    def __init__(self):
        self.answers: list = []   # (status, body or body(request_body) -> bytes), in order
        self.received: list = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the standard library's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.received.append({"path": self.path, "body": body, "content_type": self.headers["Content-Type"],
                                          "accept": self.headers["Accept"],
                                          "authorization": self.headers.get("Authorization", "")})
                status, answer = endpoint.answers.pop(0)
                if callable(answer):
                    answer = answer(body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info):
        self._server.shutdown()
        self._server.server_close()

    def reset(self):
        self.answers, self.received = [], []


def json_lines(*records) -> bytes:
    return b"\n".join(json.dumps(record).encode() for record in records)


def echo_ids(vector):
    """An answer with the same embedding for every line of the request, under the ids it sent."""
    def answer(body):
        return json_lines(*({"id": json.loads(line)["id"], "embedding": vector} for line in body.splitlines()))
    return answer


# Fixtures (a plugin of tests/conftest.py: every test module sees them without importing them).
@pytest.fixture(scope="module")
def scripted():
    with ScriptedEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def scripted_endpoint(scripted):
    """The module's scripted endpoint, reset; every scripted answer must have been asked for."""
    scripted.reset()
    yield scripted
    assert scripted.answers == [], "a scripted answer was never asked for"
