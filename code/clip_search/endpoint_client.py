"""Encode through a deployed model: a SageMaker endpoint by name, or any server by URL.

`EndpointClient("my-endpoint")` calls sagemaker-runtime InvokeEndpoint (boto3, so credentials,
region and `AWS_ENDPOINT_URL` come from the usual places); `EndpointClient("http://host:8080")`
POSTs to URL + "/invocations" (our native server, the container, SageMaker local mode).

Requests use the handler's JSON Lines wire format (README.md, "Handler contract"): one `{"id", "text"|"image"}` per
line in, one `{"id", "embedding"}` or `{"id", "error"}` per line out. Records are packed into as
few requests as fit under `max_payload_bytes`; SageMaker refuses larger bodies (serverless 4 MB,
real-time 6 MB), so the default is the smaller of the two.
"""
from __future__ import annotations

import base64
import json
from typing import Callable, Iterable, Iterator

import numpy as np

from clip_search.content_types import JSON, JSONLINES
from clip_search.errors import ClipSearchError

SERVERLESS_MAX_PAYLOAD = 4 * 1024 * 1024  # InvokeEndpoint limit for serverless endpoints


def embedding_lines(data: bytes | str, where: str = "answer", first_line: int = 1) -> Iterator[tuple[str, np.ndarray | str]]:
    """(id, embedding or error) per line of a JSON Lines answer of the handler contract (one
    `{"id", "embedding"}` or `{"id", "error"}` per line): endpoint answers and Batch Transform
    `.out` files alike. `data` is the whole text or an iterable of lines (a chunk of a longer file,
    whose first line is number `first_line` in error messages)."""
    import orjson

    for number, line in enumerate(data.splitlines() if isinstance(data, (bytes, str)) else data, first_line):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise EndpointError(f"{where} line {number} is not JSON: {error}") from None
        if not isinstance(record, dict) or "id" not in record:
            raise EndpointError(f"{where} line {number}: record without an id")
        if "embedding" in record:
            yield str(record["id"]), np.asarray(record["embedding"], dtype=np.float32)
        else:
            yield str(record["id"]), str(record.get("error", "no embedding in the answer"))


class EndpointError(ClipSearchError, RuntimeError):
    """The endpoint could not be reached, refused the request, or failed a record."""


def pack_lines(lines: Iterable[bytes], max_bytes: int) -> Iterator[list[bytes]]:
    """Group lines into batches whose newline-joined size stays within max_bytes."""
    batch, size = [], 0
    for line in lines:
        if len(line) > max_bytes:
            raise EndpointError(f"one record is {len(line)} bytes, over the {max_bytes}-byte request limit")
        extra = len(line) + (1 if batch else 0)
        if batch and size + extra > max_bytes:
            yield batch
            batch, size = [], 0
            extra = len(line)
        batch.append(line)
        size += extra
    if batch:
        yield batch


class EndpointClient:
    """encode_texts(list[str]) / encode_images(list[bytes]) -> (n, dim) float32, L2-normalised."""

    def __init__(self, name_or_url: str, *, region: str | None = None, max_payload_bytes: int = SERVERLESS_MAX_PAYLOAD,
                 timeout: float = 120.0, runtime_client=None):
        self.target = name_or_url
        self.max_payload_bytes = int(max_payload_bytes)
        self._model_id: str | None = None
        self._dim: int | None = None
        if name_or_url.startswith(("http://", "https://")):
            import requests

            url = name_or_url.rstrip("/")
            self.url = url if url.endswith("/invocations") else url + "/invocations"
            self._session = requests.Session()
            self._timeout = timeout
            self._post: Callable[[bytes, str, str], bytes] = self._post_http
        else:
            if runtime_client is None:
                import boto3
                from botocore.config import Config

                from clip_search.aws_region import require_region

                runtime_client = boto3.client("sagemaker-runtime", region_name=require_region(region),
                                              config=Config(read_timeout=timeout, retries={"mode": "standard"}))
            self.url = None
            self._runtime = runtime_client
            self._post = self._post_sagemaker

    # --- transports -------------------------------------------------------------------------
    def _post_http(self, body: bytes, content_type: str, accept: str) -> bytes:
        import requests

        try:
            response = self._session.post(self.url, data=body, timeout=self._timeout,
                                          headers={"Content-Type": content_type, "Accept": accept})
        except requests.RequestException as error:
            raise EndpointError(f"{self.url} unreachable: {error}") from None
        if response.status_code != 200:
            raise EndpointError(f"{self.url} answered HTTP {response.status_code}: {response.text[:500]}")
        return response.content

    def _post_sagemaker(self, body: bytes, content_type: str, accept: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._runtime.invoke_endpoint(EndpointName=self.target, Body=body,
                                                     ContentType=content_type, Accept=accept)
        except (BotoCoreError, ClientError) as error:
            raise EndpointError(f"SageMaker endpoint {self.target}: {error}") from None
        return response["Body"].read()

    # --- encoding ---------------------------------------------------------------------------
    def encode_records(self, field: str, values: list[str]) -> list[np.ndarray | str]:
        """One answer per value, in order: its embedding, or the endpoint's error for that record.

        `field` is "text" or "image" (base64). A failed record does not fail the others.
        """
        lines = (json.dumps({"id": str(i), field: value}).encode() for i, value in enumerate(values))
        rows: list[np.ndarray | str | None] = [None] * len(values)
        for batch in pack_lines(lines, self.max_payload_bytes):
            answer = self._post(b"\n".join(batch), JSONLINES, JSONLINES)
            for record_id, row in embedding_lines(answer, "the endpoint's answer"):
                rows[int(record_id)] = row
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            raise EndpointError(f"the endpoint returned no answer for {field} #{missing[0]} ({len(missing)} missing)")
        return rows

    def _encode_all(self, field: str, values: list[str]) -> np.ndarray:
        rows = self.encode_records(field, values)
        for index, row in enumerate(rows):
            if isinstance(row, str):
                raise EndpointError(f"{field} #{index}: {row}")
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(rows)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self._encode_all("text", list(texts))

    def encode_images(self, images: list[bytes]) -> np.ndarray:
        return self._encode_all("image", [base64.b64encode(data).decode("ascii") for data in images])

    @property
    def model_id(self) -> str:
        """"ARCH/PRETRAINED" of the served model (one small JSON request, then cached)."""
        self._probe()
        return self._model_id

    @property
    def dim(self) -> int:
        self._probe()
        return self._dim

    def _probe(self) -> None:
        if self._model_id is None:
            answer = json.loads(self._post(json.dumps({"text": "model probe"}).encode(), JSON, JSON))
            self._model_id, self._dim = answer["model"], int(answer["dim"])
