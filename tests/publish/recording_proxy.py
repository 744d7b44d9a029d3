"""A loopback HTTP proxy in front of the real model server, recording each request it forwards.

It answers both `POST /invocations` (a server URL) and `POST /endpoints/NAME/invocations` (the
sagemaker-runtime InvokeEndpoint path, when boto3's endpoint URL points here), so the endpoint
client's two transports are tested against the real model, not a canned answer.
"""
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class RecordingProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/") + "/invocations"
        self.requests: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.requests.append({"path": self.path, "size": len(body),
                                       "content_type": self.headers.get("Content-Type"),
                                       "accept": self.headers.get("Accept")})
                answer = requests.post(proxy.upstream, data=body, timeout=120, headers={
                    "Content-Type": self.headers.get("Content-Type", ""), "Accept": self.headers.get("Accept", "")})
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
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


class AwsRecordingProxy:
    """A loopback proxy in front of moto's server for one AWS JSON API (point
    AWS_ENDPOINT_URL_SAGEMAKER here): it forwards every POST unchanged and records the operation
    (X-Amz-Target) and its JSON body, so a test sees the request as it went over the wire,
    including fields moto does not check or keep."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.requests: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                import json

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                target = self.headers.get("X-Amz-Target", "")
                proxy.requests.append({"operation": target.rsplit(".", 1)[-1], "path": self.path,
                                       "body": json.loads(body) if body else {}})
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = requests.post(proxy.upstream + self.path, data=body, headers=headers, timeout=60)
                self.send_response(answer.status_code)
                for key in ("Content-Type", "x-amzn-RequestId"):
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

    def calls(self, operation: str) -> list[dict]:
        return [r["body"] for r in self.requests if r["operation"] == operation]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()
