"""predict_fn's half: encode every record of a request, texts in one batch, images in another.

A record that fails to decode gets its own error (JSON Lines) or fails the request with a message
naming the item (other formats); the rest of a JSON Lines batch still gets its embeddings.
"""
from dataclasses import dataclass
from typing import Any

import numpy as np

from clip_search.decoder import EncodeRequest
from clip_search.errors import RequestError
from clip_search.images import decode_image


@dataclass
class EncodeResult:
    ids: list[Any]
    embeddings: np.ndarray  # (n, dim) float32; rows of failed records are zero
    errors: list[str | None]
    model_id: str
    dim: int

    @property
    def failed(self) -> list[int]:
        return [i for i, error in enumerate(self.errors) if error is not None]


def encode_request(encoder, request: EncodeRequest) -> EncodeResult:
    records = request.records
    errors = [record.error for record in records]
    images, image_rows = [], []
    for row, record in enumerate(records):
        if record.error is None and record.image is not None:
            try:
                images.append(decode_image(record.image))
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
        embeddings[image_rows] = encoder.encode_images(images)
    return EncodeResult([record.id for record in records], embeddings, errors, encoder.model_id, encoder.dim)


def _where(row: int, record) -> str:
    return f"record {row}" + (f" (id {record.id!r})" if record.id is not None else "") + ": "
