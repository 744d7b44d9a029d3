"""Loopback HTTP proxies that forward each POST to a real server and record what went over the wire.

`RecordingProxy` stands in front of the real model server. It answers both `POST /invocations` (a
server URL) and `POST /endpoints/NAME/invocations` (the sagemaker-runtime InvokeEndpoint path, when
boto3's endpoint URL points here), so the endpoint client's two transports are tested against the
real model, not a canned answer. `AwsRecordingProxy` stands in front of moto's server for one AWS
JSON API.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class _ForwardingProxy:
    """Forwards every POST to `target(path)` with `forward_headers(headers)`, records
    `record(path, headers, body)`, and answers with the upstream's status, body and `answer_headers`."""

    answer_headers: tuple[str, ...] = ("Content-Type",)
    timeout = 60

    def __init__(self):
        self.requests: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.requests.append(proxy.record(self.path, self.headers, body))
                answer = requests.post(proxy.target(self.path), data=body, timeout=proxy.timeout,
                                       headers=proxy.forward_headers(self.headers))
                self.send_response(answer.status_code)
                for key in proxy.answer_headers:
                    if key in answer.headers:
                        self.send_header(key, answer.headers[key])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()


class RecordingProxy(_ForwardingProxy):
    timeout = 120

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/") + "/invocations"
        super().__init__()

    def target(self, path: str) -> str:
        return self.upstream  # both paths reach the model server's /invocations

    def forward_headers(self, headers) -> dict:
        return {"Content-Type": headers.get("Content-Type", ""), "Accept": headers.get("Accept", "")}

    def record(self, path: str, headers, body: bytes) -> dict:
        return {"path": path, "size": len(body), "content_type": headers.get("Content-Type"),
                "accept": headers.get("Accept")}


class AwsRecordingProxy(_ForwardingProxy):
    """In front of moto's server for one AWS JSON API (point AWS_ENDPOINT_URL_SAGEMAKER here): it
    forwards every POST unchanged and records the operation (X-Amz-Target) and its JSON body, so a
    test sees the request as it went over the wire, including fields moto does not check or keep."""

    answer_headers = ("Content-Type", "x-amzn-RequestId")

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        super().__init__()

    def target(self, path: str) -> str:
        return self.upstream + path

    def forward_headers(self, headers) -> dict:
        return {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}

    def record(self, path: str, headers, body: bytes) -> dict:
        target = headers.get("X-Amz-Target", "")
        return {"operation": target.rsplit(".", 1)[-1], "path": path,
                "body": json.loads(body) if body else {}}

    def calls(self, operation: str) -> list[dict]:
        return [r["body"] for r in self.requests if r["operation"] == operation]
