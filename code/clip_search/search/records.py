"""The data that flows through search: catalogue products in, ranked hits out."""
from dataclasses import dataclass, field

import numpy as np

# Field names every backend stores; anything else in a catalogue row is kept as metadata.
RESERVED_FIELDS = ("id", "title", "image")


@dataclass
class Product:
    id: str
    title: str = ""
    image: str | None = None  # a local path, file:// or s3:// URI, or http(s) URL
    metadata: dict = field(default_factory=dict)
    # sha256 over photo bytes + title + model id (catalogue.content_hash), stored with the product so
    # that the next `clip-search index` skips it when none of those changed; None: not computed.
    content_hash: str | None = None


@dataclass
class EmbeddedProduct:
    """A product with its vectors, ready for a backend's upsert (vectors L2-normalised float32)."""

    product: Product
    image_embedding: np.ndarray | None
    title_embedding: np.ndarray | None = None


@dataclass
class Hit:
    id: str
    score: float  # cosine similarity, 1 = identical, whatever the backend
    title: str = ""
    metadata: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"id": self.id, "score": round(float(self.score), 6), "title": self.title, **self.metadata}
