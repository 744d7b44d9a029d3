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
