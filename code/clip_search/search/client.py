"""SearchClient: index a catalogue and search it by text or by image, whatever the backend.

    client = SearchClient("products-index/", model="model.tar.gz")
    client.index_catalogue("products.jsonl")
    client.search_text("red running shoes", k=10, filters={"brand": "Acme"})
    client.search_image("photo.jpg")

Reader -> encoder -> writer, in batches, with a progress bar: images are read and encoded a batch at
a time, so a catalogue never has to fit in memory.
"""
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from clip_search.errors import ClipSearchError
from clip_search.search.catalogue import load_image_bytes, read_catalogue
from clip_search.search.embeddings import Embedder, embedder_for
from clip_search.search.errors import IndexNotFoundError, SearchError
from clip_search.search.filters import normalise_filters
from clip_search.search.index import FIELDS, IMAGE, TITLE, UpsertReport, VectorIndex, open_index
from clip_search.search.records import EmbeddedProduct, Hit, Product

DEFAULT_BATCH = 32


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class SearchClient:
    def __init__(self, index: str | Path | VectorIndex, embedder: Embedder | None = None, *,
                 model: str | None = None, endpoint: str | None = None, **index_options):
        self.index = index if isinstance(index, VectorIndex) else open_index(str(index), **index_options)
        if embedder is None and (model or endpoint):
            embedder = embedder_for(model, endpoint)
        self.embedder = embedder

    def close(self):
        self.index.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _require_embedder(self) -> Embedder:
        if self.embedder is None:
            raise SearchError("no encoder: give a model (model.tar.gz) or an endpoint")
        return self.embedder

    # --- indexing ----------------------------------------------------------------------------
    def index_catalogue(self, catalogue, *, titles: bool = True, batch_size: int = DEFAULT_BATCH,
                        image_embeddings: dict | None = None, model_id: str | None = None,
                        progress: bool = True) -> UpsertReport:
        """Embed and upsert every product. `catalogue` is a file path or an iterable of Products,
        read a batch at a time (never held whole in memory). `report.products` counts what was read.

        `image_embeddings` (id -> vector, e.g. from Batch Transform output) replaces image encoding;
        `model_id` then names the model that made them when no encoder is at hand (titles need one).

        Per-product outcomes: a product whose image is given but cannot be read, decoded or found in
        the precomputed output is an error (id and reason) and is NOT indexed, not even by its title,
        so the index never holds a product the report calls failed; a product without an image is
        indexed by its title alone; one with neither a usable image nor a title is an error.
        """
        products = read_catalogue(catalogue) if isinstance(catalogue, (str, Path)) else catalogue
        embedder = self.embedder
        if embedder is None and (image_embeddings is None or titles):
            raise SearchError("indexing needs an encoder (--model or --endpoint) unless image embeddings "
                              "are given and titles are not embedded (--no-titles)")
        if embedder is not None:
            model_id, dim = embedder.model_id, embedder.dim
        else:
            if not model_id:
                raise SearchError("precomputed embeddings need the model id that made them (--model-id)")
            dim = len(next(v for v in image_embeddings.values() if not isinstance(v, str)))
        self.index.ensure(dim, model_id, getattr(embedder, "spec", None))
        report = UpsertReport()
        total = len(products) if hasattr(products, "__len__") else None
        # The bar closes (ending its line) before any error reaches the CLI's one Error: line.
        with tqdm(total=total, desc="indexing", unit="product", disable=not progress) as bar:
            for batch in _batches(products, batch_size):
                report.products += len(batch)
                items, errors = self._embed_batch(batch, titles, image_embeddings)
                report.errors.extend(errors)
                result = self.index.upsert(items)
                report.indexed += result.indexed
                report.errors.extend(result.errors)
                bar.update(len(batch))
        self.index.refresh()
        return report

    def _embed_batch(self, batch: list[Product], titles: bool, precomputed: dict | None):
        errors, image_vectors, failed = [], {}, set()

        def fail(product_id, reason):
            errors.append((product_id, reason))
            failed.add(product_id)

        if precomputed is not None:
            for product in batch:
                value = precomputed.get(product.id)
                if value is None:
                    fail(product.id, "no embedding in the precomputed output")
                elif isinstance(value, str):
                    fail(product.id, value)
                else:
                    image_vectors[product.id] = np.asarray(value, dtype=np.float32)
        else:
            records = []
            for product in batch:
                if not product.image:
                    continue
                try:
                    records.append((product.id, load_image_bytes(product.image)))
                except Exception as error:
                    fail(product.id, f"image {product.image}: {error}")
            for product_id, value in self.embedder.encode_image_records(records).items():
                if isinstance(value, str):
                    fail(product_id, f"image: {value}")
                else:
                    image_vectors[product_id] = value
        with_titles = [p for p in batch if titles and p.title and p.id not in failed]
        title_vectors = {}
        if with_titles:
            vectors = self.embedder.encode_texts([p.title for p in with_titles])
            title_vectors = {p.id: v for p, v in zip(with_titles, vectors)}
        items = []
        for product in batch:
            if product.id in failed:
                continue
            if product.id not in image_vectors and product.id not in title_vectors:
                fail(product.id, "nothing to index: no image and no title" + ("" if titles else " (--no-titles)"))
                continue
            items.append(EmbeddedProduct(product, image_vectors.get(product.id), title_vectors.get(product.id)))
        return items, errors

    def delete(self, ids) -> int:
        """Delete products by id from the index; returns how many were there."""
        return self.index.delete(ids)

    # --- searching ---------------------------------------------------------------------------
    def _check_index(self):
        embedder = self._require_embedder()
        info = self.index.info()
        if info is None:
            raise IndexNotFoundError(f"no index at {self.index.location}: build it with `clip-search index`")
        self.index.check_model(info, embedder.model_id, embedder.dim)
        return embedder

    def search_vector(self, vector, k: int = 10, filters=None, fields=FIELDS, keywords=None) -> list[Hit]:
        return self.index.search(np.asarray(vector, dtype=np.float32), k, normalise_filters(filters), tuple(fields), keywords)

    def search_text(self, text: str, k: int = 10, filters=None, fields=FIELDS, hybrid: bool = False) -> list[Hit]:
        """Text -> product by its image or its title embedding (the better of the two counts)."""
        if not text or not text.strip():
            raise SearchError("empty text query")
        embedder = self._check_index()
        vector = embedder.encode_texts([text])[0]
        return self.search_vector(vector, k, filters, fields, keywords=text if hybrid else None)

    def search_texts(self, texts: list[str], k: int = 10, filters=None, fields=FIELDS) -> list[list[Hit]]:
        """Many text queries: encoded in one batch (one request to an endpoint), searched one by one."""
        if any(not text or not text.strip() for text in texts):
            raise SearchError("empty text query")
        vectors = self._check_index().encode_texts(list(texts))
        return [self.search_vector(vector, k, filters, fields) for vector in vectors]

    def search_images(self, images: list[bytes], k: int = 10, filters=None, fields=(IMAGE,)) -> list[list[Hit]]:
        """Many photo queries (bytes): encoded in one batch, searched one by one."""
        vectors = self._check_index().encode_images([bytes(image) for image in images])
        return [self.search_vector(vector, k, filters, fields) for vector in vectors]

    def search_image(self, image, k: int = 10, filters=None, fields=(IMAGE,)) -> list[Hit]:
        """Photo -> product by image similarity. `image`: bytes, a path/URI, or a PIL image."""
        embedder = self._check_index()
        named = str(image) if isinstance(image, (str, Path)) else None
        if named is not None:
            image = load_image_bytes(named)
        elif not isinstance(image, (bytes, bytearray)):
            import io

            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
            image = buffer.getvalue()
        try:
            vector = embedder.encode_images([bytes(image)])[0]
        except ClipSearchError as error:
            raise SearchError(f"{named or 'query image'}: {getattr(error, 'message', error)}") from error
        return self.search_vector(vector, k, filters, fields)


__all__ = ["SearchClient", "Hit", "Product", "IMAGE", "TITLE", "FIELDS"]
