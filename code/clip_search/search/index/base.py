"""The one interface every index backend implements (embedded folder, OpenSearch, pgvector).

Vectors arrive L2-normalised float32; hits leave with cosine similarity as their score.
"""
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from clip_search.search.errors import ModelMismatchError, UnsupportedQuery
from clip_search.search.records import EmbeddedProduct, Hit

IMAGE, TITLE = "image", "title"
FIELDS = (IMAGE, TITLE)


@dataclass
class IndexInfo:
    model_id: str
    dim: int
    backend: str
    count: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class UpsertReport:
    indexed: int = 0
    products: int = 0  # products read (SearchClient.index_catalogue)
    errors: list = field(default_factory=list)  # [(product id, reason)]
    # Incremental indexing (SearchClient.index_catalogue): of the products read, how many were new,
    # how many changed (content hash differs or none stored), how many unchanged (not encoded);
    # `deleted`: products no longer in the catalogue removed by sync.
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0


class VectorIndex(ABC):
    backend = "abstract"

    def __init__(self, location: str):
        self.location = location

    # Whether search(keywords=...) runs a hybrid keyword + vector ranking on this backend.
    supports_hybrid: bool = False

    @abstractmethod
    def info(self) -> IndexInfo | None:
        """The model and dimension the index was built with, or None when it does not exist yet."""

    @abstractmethod
    def create(self, dim: int, model_id: str, encoder: dict | None = None) -> None:
        """Create an empty index. `encoder` ({"model": path} or {"endpoint": url}) is remembered so
        that `clip-search search` can encode queries with the model that built the index."""

    @abstractmethod
    def upsert(self, items: Iterable[EmbeddedProduct]) -> UpsertReport:
        """Insert or replace products by id; re-indexing the same catalogue is idempotent."""

    def upsert_arrays(self, products: list, image: np.ndarray | None, title: np.ndarray | None = None) -> UpsertReport:
        """Upsert `products` with their vectors as (len(products), dim) float32 arrays, row i for
        products[i]; a zero row (or None for the whole array) means that product has no such
        embedding. Backends that can take whole arrays override this; the default goes through upsert()."""
        def row(vectors, i):
            return None if vectors is None or not vectors[i].any() else vectors[i]

        return self.upsert([EmbeddedProduct(product, row(image, i), row(title, i)) for i, product in enumerate(products)])

    @abstractmethod
    def search(self, vector: np.ndarray, k: int = 10, filters: dict | None = None,
               fields: tuple = FIELDS, keywords: str | None = None) -> list[Hit]:
        """Top-k products by cosine similarity of `vector` to any of `fields`' embeddings (the best
        field counts), restricted to `filters` ({field: [values]}). `keywords` asks backends that
        support it for a hybrid keyword + vector ranking."""

    @abstractmethod
    def get(self, ids: Iterable[str]) -> list[EmbeddedProduct]:
        """The stored products with these ids and their stored vectors (None for a field the product
        has no embedding of), in the order asked, each once; ids not in the index are left out."""

    def check_query(self, fields: tuple, keywords: str | None = None) -> None:
        """Refuse (UnsupportedQuery) a search this backend cannot run as asked, instead of running
        part of it: keywords without hybrid search, a field that is not an embedding field."""
        unknown = [field for field in fields if field not in FIELDS]
        if unknown or not fields:
            raise UnsupportedQuery(f"cannot search by {', '.join(map(repr, unknown)) or 'no field'}: the "
                                   f"embedding fields are {', '.join(FIELDS)}")
        if keywords is not None and not self.supports_hybrid:
            raise UnsupportedQuery(f"hybrid (keyword) search is not available on a {self.backend} index; use an "
                                   "embedded or OpenSearch index, or search without it")

    @abstractmethod
    def delete(self, ids: Iterable[str]) -> int:
        """Delete products by id (ids not in the index are ignored), any number of them; returns how
        many were deleted. When it returns, searches no longer find them (a long-lived reader in
        another process: within the backend's freshness bound, docs/search.md "Freshness")."""

    @abstractmethod
    def content_hashes(self) -> dict[str, str | None]:
        """Every product id in the index -> the content hash stored with it (Product.content_hash),
        None where it was indexed without one (an index from before hashes were kept): incremental
        indexing treats that as changed."""

    @abstractmethod
    def count(self) -> int:
        ...

    @abstractmethod
    def drop(self) -> None:
        """Delete the index and everything in it."""

    def refresh(self) -> None:  # noqa: B027 - an optional hook, a no-op unless a backend needs it
        """Make everything upserted so far visible to searches (a no-op where writes are visible at once)."""

    def close(self) -> None:  # noqa: B027 - an optional hook: most backends hold nothing to release
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def data_version(self):
        """A value that changes whenever what searches see changes (another process's writes
        included), or None where the backend cannot tell cheaply. Callers that derive data from
        the index (the app's facets) derive it again when it changes, and after a short while when None."""
        return None

    def ensure(self, dim: int, model_id: str, encoder: dict | None = None) -> IndexInfo:
        """Create the index, or check that the existing one was built by this model."""
        info = self.info()
        if info is None:
            self.create(dim, model_id, encoder)
            return self.info()
        self.check_model(info, model_id, dim, indexing=True)
        return info

    def check_model(self, info: IndexInfo, model_id: str, dim: int, indexing: bool = False) -> None:
        if info.model_id != model_id or info.dim != dim:
            raise ModelMismatchError(info.model_id, info.dim, model_id, dim, self.location, indexing)


def as_query_vector(vector, dim: int | None = None) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    if dim is not None and vector.shape[0] != dim:
        raise ValueError(f"query vector has dimension {vector.shape[0]}, the index holds {dim}")
    return vector
