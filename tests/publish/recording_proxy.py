"""Loopback HTTP proxies that forward each request to a real server and record what went over the wire.

`RecordingProxy` stands in front of the real model server. It answers both `POST /invocations` (a
server URL) and `POST /endpoints/NAME/invocations` (the sagemaker-runtime InvokeEndpoint path, when
boto3's endpoint URL points here), so the endpoint client's two transports are tested against the
real model, not a canned answer. `AwsRecordingProxy` stands in front of moto's server for one AWS
JSON API; `S3RecordingProxy` in front of moto's S3 (REST: any method), whoever the client is (boto3,
LanceDB's object store, a browser following a presigned URL). `HandlerEndpoint` is the serving
handler (input_fn, predict_fn, output_fn) on loopback, in process: an endpoint without the Java
model server.
"""
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import requests

# Connection-level headers a proxy does not pass on (RFC 9110 7.6.1); the length is set anew.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length",
              "proxy-authenticate", "proxy-authorization"}


class _ForwardingProxy:
    """Forwards every request to `target(path)` with `forward_headers(headers)`, records
    `record(path, headers, body)` (with `method` set), and answers with the upstream's status, body
    and `answer_headers` (None: every header but the hop-by-hop ones)."""

    answer_headers: tuple[str, ...] | None = ("Content-Type",)
    timeout = 60

    def __init__(self):
        self.requests: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.requests.append({**proxy.record(self.path, self.headers, body), "method": self.command})
                answer = requests.request(self.command, proxy.target(self.path), data=body, timeout=proxy.timeout,
                                          headers=proxy.forward_headers(self.headers), allow_redirects=False)
                self.send_response(answer.status_code)
                keys = proxy.answer_headers or [k for k in answer.headers if k.lower() not in HOP_BY_HOP]
                for key in keys:
                    if key in answer.headers:
                        self.send_header(key, answer.headers[key])
                if self.command == "HEAD":  # the object's length, no body
                    self.send_header("Content-Length", answer.headers.get("Content-Length", "0"))
                    self.end_headers()
                    return
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_HEAD = do_PUT = do_DELETE = do_POST

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


class _MotoProxy(_ForwardingProxy):
    """In front of moto's server: the same path on the upstream, every header but host and length."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        super().__init__()

    def target(self, path: str) -> str:
        return self.upstream + path

    def forward_headers(self, headers) -> dict:
        return {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}


class AwsRecordingProxy(_MotoProxy):
    """In front of moto's server for one AWS JSON API (point AWS_ENDPOINT_URL_SAGEMAKER here): it
    forwards every POST unchanged and records the operation (X-Amz-Target) and its JSON body, so a
    test sees the request as it went over the wire, including fields moto does not check or keep."""

    answer_headers = ("Content-Type", "x-amzn-RequestId")

    def record(self, path: str, headers, body: bytes) -> dict:
        target = headers.get("X-Amz-Target", "")
        return {"operation": target.rsplit(".", 1)[-1], "path": path,
                "body": json.loads(body) if body else {}}

    def calls(self, operation: str) -> list[dict]:
        return [r["body"] for r in self.requests if r["operation"] == operation]


def signing_service(headers, query: dict) -> str | None:
    """The service a SigV4 request is signed for (its credential scope), from the Authorization
    header or a presigned URL's X-Amz-Credential."""
    credential = query.get("X-Amz-Credential", [""])[0] or headers.get("Authorization", "")
    found = re.search(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request", credential) or \
        re.search(r"^[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request", credential)
    return found.group(1) if found else None


class S3RecordingProxy(_MotoProxy):
    """In front of moto's S3 (point AWS_ENDPOINT_URL_S3 here; path-style requests, as clients use for
    an IP address): forwards every request unchanged and records it as the S3 API operation it is,
    with its bucket, key and prefix, and the service it was signed for."""

    answer_headers = None

    def record(self, path: str, headers, body: bytes) -> dict:
        parts = urlsplit(path)
        query = parse_qs(parts.query, keep_blank_values=True)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        return {"bucket": bucket, "key": key, "query": query, "signed_for": signing_service(headers, query)}

    @staticmethod
    def operation(request: dict) -> str:
        method, query, key = request["method"], request["query"], request["key"]
        if key:
            if method == "POST":
                return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
            if method == "PUT":
                return "UploadPart" if "partNumber" in query else "PutObject"
            return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}[method]
        if method == "GET":
            for name, operation in (("location", "GetBucketLocation"), ("versions", "ListObjectVersions")):
                if name in query:
                    return operation
            return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
        return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(method, f"{method} bucket")

    def calls(self) -> list[tuple[str, str, dict]]:
        """(service, operation, parameters) per request, as tests/infra/iam_check.py takes them."""
        calls = []
        for request in self.requests:
            params = {"Bucket": request["bucket"]}
            if request["key"]:
                params["Key"] = request["key"]
            if "prefix" in request["query"]:
                params["Prefix"] = request["query"]["prefix"][0]
            calls.append(("s3", self.operation(request), params))
        return calls


class HandlerEndpoint:
    """POST /invocations answered by the serving handler with an encoder in this process, the
    handler contract as the container serves it (README.md, "Handler contract")."""

    def __init__(self, encoder):
        from clip_search.serving import handler

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    request = handler.input_fn(body, self.headers.get("Content-Type", ""))
                    answer, content_type = handler.output_fn(handler.predict_fn(request, encoder),
                                                             self.headers.get("Accept", ""))
                    status = 200
                except Exception as error:  # noqa: BLE001 - the toolkit's answer to a bad request
                    answer, content_type, status = str(error).encode(), "text/plain", 400
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()
