"""predict_fn's half: encode every record of a request, texts in one batch, images in another.

A record that fails to decode gets its own error (JSON Lines) or fails the request with a message
naming the item (other formats); the rest of a JSON Lines batch still gets its embeddings.
"""
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from clip_search.errors import RequestError
from clip_search.serving.decoder import EncodeRequest


@dataclass
class EncodeResult:
    ids: list[Any]
    embeddings: np.ndarray  # (n, dim) float32; rows of failed records are zero
    errors: list[str | None]
    model_id: str
    dim: int
    combine: bool = False  # the request asked for one embedding of all its records

    @property
    def failed(self) -> list[int]:
        return [i for i, error in enumerate(self.errors) if error is not None]


def encode_request(encoder, request: EncodeRequest) -> EncodeResult:
    records = request.records
    errors = [record.error for record in records]
    images, image_rows = [], []
    wanted = [row for row, record in enumerate(records) if record.error is None and record.image is not None]
    prepared = dict(zip(wanted, _prepare_images(encoder, [records[row].image for row in wanted]), strict=True))
    for row, record in enumerate(records):
        if row in prepared:
            try:
                if isinstance(prepared[row], RequestError):
                    raise prepared[row]
                images.append(prepared[row])
                image_rows.append(row)
            except RequestError as error:
                if not request.per_record_errors:
                    if len(records) > 1:
                        error.message = error.phrase = f"item {row}: {error.message}"
                    raise
                errors[row] = _where(row, record) + error.message
    text_rows = [row for row, record in enumerate(records) if errors[row] is None and record.text is not None]

    embeddings = np.zeros((len(records), encoder.dim), dtype=np.float32)
    if text_rows:
        embeddings[text_rows] = encoder.encode_texts([records[row].text for row in text_rows])
    if image_rows:
        embeddings[image_rows] = encoder.encode_pixels(np.stack(images))
    return EncodeResult([record.id for record in records], embeddings, errors, encoder.model_id, encoder.dim,
                        request.combine)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _prepare_images(encoder, payloads: list[bytes]) -> list:
    """Decode + preprocess each payload into model pixels (or the RequestError it raised).

    Images are prepared on all cores at once: PIL and numpy release the GIL while decoding,
    resizing and normalising, and preprocessing is about half the time of an image on the fast runtimes. The decode
    is the encoder's own (JPEG draft mode included), so the server gives what the encoder gives.
    """
    def prepare(data):
        try:
            image = encoder.decode(data)
            return np.asarray(encoder.preprocess(image), dtype=np.float32)
        except RequestError as error:
            return error

    if len(payloads) < 2:
        return [prepare(data) for data in payloads]
    return list(_executor(getattr(encoder, "threads", 1)).map(prepare, payloads))


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="clip-search-decode")
        return _pool


def _where(row: int, record) -> str:
    return f"record {row}" + (f" (id {record.id!r})" if record.id is not None else "") + ": "
