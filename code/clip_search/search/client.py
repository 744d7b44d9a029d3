"""SearchClient: index a catalogue and search it by text or by image, whatever the backend.

    client = SearchClient("products-index/", model="model.tar.gz")
    client.index_catalogue("products.jsonl")
    client.search_text("red running shoes", k=10, filters={"brand": "Acme"})  # or filters=["brand=Acme"]
    client.search_image("photo.jpg")

Reader -> encoder -> writer, in batches, with a progress bar: images are read and encoded a batch at
a time, so a catalogue never has to fit in memory.

A client kept open (a service, a notebook, a worker) sees what other processes write to its index
once their command has returned: at its next search on a local folder, OpenSearch and pgvector,
within CLIP_SEARCH_FRESHNESS_MS (500 ms) on s3:// (docs/search.md, "Freshness").
"""
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from clip_search.errors import ClipSearchError
from clip_search.search.catalogue import content_hash, load_image_bytes, read_catalogue
from clip_search.search.embeddings import Embedder, embedder_for
from clip_search.search.errors import IndexNotFoundError, SearchError
from clip_search.search.filters import parse_filters
from clip_search.search.index import FIELDS, IMAGE, TITLE, UpsertReport, VectorIndex, open_index
from clip_search.search.records import Hit, Product

DEFAULT_BATCH = 32
PRECOMPUTED_BATCH = 8192


class _Precomputed:
    """A plain dict id -> embedding (or error message) with BatchOutput's take()."""

    def __init__(self, embeddings: dict):
        self.embeddings = embeddings
        self.dim = next((len(v) for v in embeddings.values() if not isinstance(v, str)), None)

    def take(self, ids):
        vectors = np.zeros((len(ids), self.dim or 0), np.float32)
        reasons = []
        for i, product_id in enumerate(ids):
            value = self.embeddings.get(product_id)
            if value is None or isinstance(value, str) or len(value) != self.dim:
                reasons.append("no embedding in the precomputed output" if value is None else
                               value if isinstance(value, str) else
                               f"embedding has dimension {len(value)}, the index holds {self.dim}")
            else:
                vectors[i] = value
                reasons.append(None)
        return vectors, reasons


def read_photos(batch: list[Product]) -> dict:
    """id -> photo bytes, or the exception reading it raised (that product's error)."""
    photos = {}
    for product in batch:
        if product.image:
            try:
                photos[product.id] = load_image_bytes(product.image)
            except Exception as error:
                photos[product.id] = error
    return photos


def changed_products(batch: list[Product], photos: dict, known: dict, model_id: str, report: UpsertReport,
                     hash_photos: bool = True) -> list[Product]:
    """The products of `batch` to encode: new ones, and those whose content hash (photo bytes +
    title + model id; computed here from `photos` unless the product brings one) differs from the
    one `known` (id -> stored hash) holds; None stored counts as changed. Counts added / updated /
    unchanged into `report`. A product whose photo could not be read passes through (no hash) to
    become that product's error."""
    changed = []
    for product in batch:
        photo = photos.get(product.id)
        if product.content_hash is None and hash_photos and not isinstance(photo, Exception):
            product.content_hash = content_hash(photo, product.title, model_id)
        stored = known.get(product.id)
        if stored is not None and stored == product.content_hash:
            report.unchanged += 1
            continue
        if product.id in known:
            report.updated += 1
        else:
            report.added += 1
        changed.append(product)
    return changed


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def open_client(index: str, model: str | None = None, endpoint: str | None = None, *,
                need_encoder: bool = True) -> "SearchClient":
    """A client for INDEX that encodes queries with `model` or `endpoint` when one is given, else
    with the encoder the index recorded when it was built (`clip-search search`/`eval`/`app` and the
    Lambda handler). need_encoder=False: no recorded encoder is looked up (indexing brings its own)."""
    client = SearchClient(index)
    try:
        if model or endpoint:
            client.embedder = embedder_for(model, endpoint)
        elif need_encoder:
            info = client.index.info()
            if info is None:
                raise IndexNotFoundError(f"no index at {index}: build it with `clip-search index`")
            spec = info.extra.get("encoder") or {}
            if not spec:
                raise SearchError(f"no encoder recorded for {index}: pass --model or --endpoint")
            client.embedder = embedder_for(spec.get("model"), spec.get("endpoint"))
    except BaseException:
        client.close()
        raise
    return client


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
                        progress: bool = True, incremental: bool = True, sync: bool = False) -> UpsertReport:
        """Embed and upsert every product. `catalogue` is a file path or an iterable of Products,
        read a batch at a time (never held whole in memory). `report.products` counts what was read.

        `image_embeddings` (id -> vector, e.g. from Batch Transform output) replaces image encoding;
        `model_id` then names the model that made them when no encoder is at hand (titles need one).

        Per-product outcomes: a product whose image is given but cannot be read, decoded or found in
        the precomputed output is an error (id and reason) and is NOT indexed, not even by its title,
        so the index never holds a product the report calls failed; a product without an image is
        indexed by its title alone; one with neither a usable image nor a title is an error.

        Incremental (`incremental`, the default): each product is stored with its content hash
        (catalogue.content_hash: photo bytes, title, model id; a Product may bring its own), and a
        product whose hash equals the one the index holds is not encoded again (`report.unchanged`).
        With precomputed image embeddings and no hash on the product, the photo is not read and the
        product is always upserted. `sync` then deletes the products the index holds that the
        catalogue no longer lists (`report.deleted`; only when the whole catalogue was read).
        """
        products = read_catalogue(catalogue) if isinstance(catalogue, (str, Path)) else catalogue
        embedder = self.embedder
        if embedder is None and (image_embeddings is None or titles):
            raise SearchError("indexing needs an encoder (--model or --endpoint) unless image embeddings "
                              "are given and titles are not embedded (--no-titles)")
        if image_embeddings is not None and not hasattr(image_embeddings, "take"):
            image_embeddings = _Precomputed(image_embeddings)
        if embedder is not None:
            model_id, dim = embedder.model_id, embedder.dim
        else:
            if not model_id:
                raise SearchError("precomputed embeddings need the model id that made them (--model-id)")
            if not image_embeddings.dim:
                raise SearchError("the precomputed output holds no embedding, only errors")
            dim = image_embeddings.dim
        self.index.ensure(dim, model_id, getattr(embedder, "spec", None))
        report = UpsertReport()
        known = self.index.content_hashes() if incremental or sync else {}
        baseline = known if incremental else {}
        seen: set[str] = set()
        total = len(products) if hasattr(products, "__len__") else None
        # Without an encoder to feed, batches are only bookkeeping: take big ones.
        if image_embeddings is not None and not titles:
            batch_size = max(batch_size, PRECOMPUTED_BATCH)
        # The bar closes (ending its line) before any error reaches the CLI's one Error: line.
        # Changed products gather until a full batch is due: a refresh where 1 product in 100
        # changed still encodes whole batches, not one product per call.
        pending: list[Product] = []
        pending_photos: dict = {}

        def encode_pending():
            batch, images, title_vectors, errors = self._embed_batch(pending, titles, image_embeddings, dim,
                                                                     pending_photos)
            report.errors.extend(errors)
            result = self.index.upsert_arrays(batch, images, title_vectors)
            report.indexed += result.indexed
            report.errors.extend(result.errors)
            for product_id in {product_id for product_id, _ in errors + result.errors}:
                if product_id in baseline:  # counted as changed above; failed instead
                    report.updated -= 1
                else:
                    report.added -= 1
            pending.clear()
            pending_photos.clear()

        from tqdm import tqdm  # here, not at the top: a search does not pay for it (~0.06 s)

        with tqdm(total=total, desc="indexing", unit="product", disable=not progress) as bar:
            for batch in _batches(products, batch_size):
                report.products += len(batch)
                seen.update(product.id for product in batch)
                photos = {} if image_embeddings is not None else read_photos(batch)
                for product in changed_products(batch, photos, baseline, model_id, report,
                                                hash_photos=image_embeddings is None):
                    pending.append(product)
                    if product.id in photos:
                        pending_photos[product.id] = photos[product.id]
                if len(pending) >= batch_size:
                    encode_pending()
                bar.update(report.products - bar.n)
            if pending:
                encode_pending()
        if sync:
            gone = [product_id for product_id in known if product_id not in seen]
            if gone:
                report.deleted = self.index.delete(gone)
        self.index.refresh()
        return report

    def _embed_batch(self, batch: list[Product], titles: bool, precomputed, dim: int, photos: dict | None = None):
        """-> (the products to upsert, their image and title vectors as (n, dim) arrays, zero rows
        where a product has none; None: no product has any, errors [(id, reason)])."""
        errors, failed = [], set()

        def fail(product_id, reason):
            errors.append((product_id, reason))
            failed.add(product_id)

        images = None
        if precomputed is not None:
            images, reasons = precomputed.take([product.id for product in batch])
            if images.shape[1] != dim:
                images = np.zeros((len(batch), dim), np.float32)
                reasons = [reason or f"embedding has dimension {precomputed.dim}, the index holds {dim}" for reason in reasons]
            for product, reason in zip(batch, reasons, strict=True):
                if reason is not None:
                    fail(product.id, reason)
        else:
            records, image_vectors = [], {}
            photos = read_photos(batch) if photos is None else photos
            for product in batch:
                if not product.image:
                    continue
                photo = photos[product.id]
                if isinstance(photo, Exception):
                    fail(product.id, f"image {product.image}: {photo}")
                else:
                    records.append((product.id, photo))
            for product_id, value in self.embedder.encode_image_records(records).items():
                if isinstance(value, str):
                    fail(product_id, f"image: {value}")
                else:
                    image_vectors[product_id] = value
            if image_vectors:
                images = np.zeros((len(batch), dim), np.float32)
                for i, product in enumerate(batch):
                    if product.id in image_vectors and product.id not in failed:
                        images[i] = image_vectors[product.id]
        title_vectors = None
        with_titles = [i for i, p in enumerate(batch) if titles and p.title and p.id not in failed]
        if with_titles:
            title_vectors = np.zeros((len(batch), dim), np.float32)
            title_vectors[with_titles] = self.embedder.encode_texts([batch[i].title for i in with_titles])
        has_any = np.zeros(len(batch), bool)
        for vectors in (images, title_vectors):
            if vectors is not None:
                has_any |= vectors.any(axis=1)
        keep = []
        for i, product in enumerate(batch):
            if product.id in failed:
                continue
            if not has_any[i]:
                fail(product.id, "nothing to index: no image and no title" + ("" if titles else " (--no-titles)"))
                continue
            keep.append(i)
        if len(keep) < len(batch):
            batch = [batch[i] for i in keep]
            images = None if images is None else images[keep]
            title_vectors = None if title_vectors is None else title_vectors[keep]
        return batch, images, title_vectors, errors

    def delete(self, ids) -> int:
        """Delete products by id from the index, any number at once; returns how many were there.
        When it returns, searches no longer find them."""
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
        return self.index.search(np.asarray(vector, dtype=np.float32), k, parse_filters(filters), tuple(fields), keywords)

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


__all__ = ["SearchClient", "open_client", "Hit", "Product", "IMAGE", "TITLE", "FIELDS"]
