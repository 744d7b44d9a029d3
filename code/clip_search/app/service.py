"""What the search app does, without HTTP: search by text, photo or product, look products up, serve
their images safely, and count facets. The routes (server.py), also behind the Lambda handler (aws.py), call this.

It works through the search layer's interfaces only (`SearchClient`, `VectorIndex`, `Embedder`), so
every backend (embedded folder, OpenSearch, pgvector) and every encoder (in process, an endpoint, a
SageMaker endpoint) serves the same API. A product is looked up `VectorIndex.get`, and "more like this" searches with the product's stored image vector (its
photo is not read, nor encoded again).
"""
from __future__ import annotations

import logging
import math
import os
import stat
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clip_search.errors import BadRequest, RequestError
from clip_search.search.client import SearchClient
from clip_search.search.errors import IndexNotFoundError
from clip_search.search.filters import parse_filters
from clip_search.search.index import FIELDS, IMAGE
from clip_search.search.records import EmbeddedProduct, Hit

logger = logging.getLogger(__name__)

MAX_K = 100
# Facets and the image folders are counted over the products one search returns: every product of
# a catalogue up to this size, a sample of it beyond.
FACET_SCAN = 5000
FACET_VALUES = 20           # most common values shown per field
FACET_MAX_DISTINCT = 200    # a field with more distinct values is free text or an id, not a facet
FACET_MAX_VALUE_CHARS = 80
# The scan behind facets and the image folders follows the index: it is made again when the index's
# data_version() moves (embedded), and when older than this where the backend cannot tell (None).
SCAN_MAX_AGE_SECONDS = 1.0
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


class NotFound(RequestError):
    status = HTTPStatus.NOT_FOUND


class Unprocessable(RequestError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class UpstreamError(RuntimeError):
    """The encoder endpoint or the search backend failed (502): not the request's fault."""


@dataclass
class Query:
    text: str | None = None
    image: bytes | None = None
    like: str | None = None
    k: int = 10
    filters: dict = field(default_factory=dict)
    hybrid: bool = False


@dataclass
class ImageAnswer:
    """How to answer GET /api/products/{id}/image: a local file, or a redirect."""

    path: str | None = None
    media_type: str | None = None
    redirect: str | None = None


class _Scan(NamedTuple):
    """What the app derives from a scan of the index (facets, image folders), and when."""

    version: object       # the index's data_version() then
    at: float             # time.monotonic() then
    rows: list            # metadata of up to facet_scan products
    roots: list           # the folders their local images are in
    count: int            # products in the index then


def parse_k(raw) -> int:
    if raw is None or raw == "":
        return 10
    if isinstance(raw, bool):
        raise BadRequest("k must be a whole number")
    try:
        k = int(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"k must be a whole number, not {str(raw)[:40]!r}") from None
    if isinstance(raw, float) and raw != k:
        raise BadRequest(f"k must be a whole number, not {raw!r}")
    if not 1 <= k <= MAX_K:
        raise Unprocessable(f"k must be between 1 and {MAX_K}, not {k}")
    return k


class SearchService:
    def __init__(self, client: SearchClient, *, location: str | None = None, image_roots=None,
                 presign_seconds: int = 900, facet_scan: int = FACET_SCAN):
        if client.embedder is None:
            raise IndexNotFoundError("the search app needs an encoder: give --model or --endpoint, or search "
                                     "an index that recorded the encoder that built it")
        self.client = client
        self.index = client.index
        self.embedder = client.embedder
        self.location = public_location(str(location or self.index.location))
        self.presign_seconds = int(presign_seconds)
        self.facet_scan = int(facet_scan)
        info = self.index.info()
        if info is None:
            raise IndexNotFoundError(f"no index at {self.location}: build it with `clip-search index`")
        self.index.check_model(info, self.embedder.model_id, self.embedder.dim)
        self.model_id = self.embedder.model_id
        self.dim = int(info.dim)
        self._explicit_roots = [self._real(root) for root in image_roots] if image_roots else None
        self._scan: _Scan | None = None
        # The embedded index is not documented as thread-safe (and a read may move it to a newer
        # version); queries are short, so one call into the index at a time.
        self._lock = threading.Lock()
        self._encoder = getattr(self.embedder, "encoder", None)  # ClipEncoder when in process
        # Connected mode (`clip-search opensearch connect`): OpenSearch encodes text and photo queries.
        self.neural = bool(getattr(self.index, "connected", None))

    # --- search ---------------------------------------------------------------------------------
    def search(self, query: Query, on_stage=None, root_path: str = "") -> dict:
        """-> {"hits", "took_ms": {"encode", "search"}, "model", "index"}. `on_stage(name, seconds)`."""
        given = [name for name in ("text", "image", "like") if getattr(query, name) is not None]
        if len(given) != 1:
            raise BadRequest("give exactly one of a text query (q / text), an image, or like (a product id)"
                             + (f"; got {', '.join(given)}" if given else ""))
        filters = parse_filters(query.filters)
        if self.neural and query.like is None:
            return self._search_neural(query, filters, on_stage, root_path)
        exclude = None
        started = time.perf_counter()
        if query.text is not None:
            if not query.text.strip():
                raise BadRequest("empty text query")
            fields, keywords = FIELDS, (query.text if query.hybrid else None)
            self.index.check_query(fields, keywords)  # the backend's refusal, before the encoder's work
            vector = self._encode(lambda: self.embedder.encode_texts([query.text])[0])
        else:
            if query.hybrid:
                raise Unprocessable("hybrid=1 is a text search")
            fields, keywords = (IMAGE,), None
            if query.like is not None:
                vector = self.stored_image_vector(query.like)
                exclude = query.like
            else:
                vector = self.encode_image(query.image)
        encoded = time.perf_counter()
        k = query.k + (1 if exclude is not None else 0)
        hits = self._search(vector, k, filters, fields, keywords)
        if exclude is not None:
            hits = [hit for hit in hits if hit.id != exclude][: query.k]
        done = time.perf_counter()
        if on_stage:
            on_stage("encode", encoded - started)
            on_stage("search", done - encoded)
        return {"hits": [self.hit_json(hit, root_path=root_path) for hit in hits],
                "took_ms": {"encode": round((encoded - started) * 1000, 3), "search": round((done - encoded) * 1000, 3)},
                "model": self.model_id, "index": self.location}

    def _search_neural(self, query: Query, filters, on_stage, root_path: str) -> dict:
        """A `neural` query: the cluster calls the model (one stage, `neural`, in took_ms and
        Server-Timing). A photo is checked here first, so a bad one is a 400, not the cluster's error."""
        from clip_search.search.errors import SearchError

        started = time.perf_counter()
        if query.text is not None:
            if not query.text.strip():
                raise BadRequest("empty text query")
            options = {"text": query.text, "fields": FIELDS, "keywords": query.text if query.hybrid else None}
        else:
            if query.hybrid:
                raise Unprocessable("hybrid=1 is a text search")
            if not query.image:
                raise BadRequest("empty image: the request carried no image bytes")
            from clip_search.images import decode_image

            decode_image(query.image)
            options = {"image": query.image, "fields": (IMAGE,)}
        try:
            with self._lock:
                hits = self.index.search_neural(k=query.k, filters=filters, **options)
        except SearchError as error:
            raise UpstreamError(f"search failed: {error}") from None
        took = time.perf_counter() - started
        if on_stage:
            on_stage("neural", took)
        return {"hits": [self.hit_json(hit, root_path=root_path) for hit in hits],
                "took_ms": {"neural": round(took * 1000, 3)}, "model": self.model_id, "index": self.location,
                "query_path": "neural"}

    def encode_image(self, data: bytes) -> np.ndarray:
        """Decode with the encoder's own decode (400/413 for bad bytes), then encode. Through an
        endpoint the same decode checks the bytes here first, so a bad photo is a clear 400 too."""
        if not data:
            raise BadRequest("empty image: the request carried no image bytes")
        if self._encoder is not None:
            image = self._encoder.decode(data)
            return self._encode(lambda: self._encoder.encode_images([image])[0])
        from clip_search.images import decode_image

        decode_image(data)
        return self._encode(lambda: self.embedder.encode_images([data])[0])

    def _encode(self, function) -> np.ndarray:
        from clip_search.search.errors import EncodingError

        try:
            return np.asarray(function(), dtype=np.float32)
        except EncodingError as error:
            raise UpstreamError(f"encoder failed: {error}") from None

    def _search(self, vector, k, filters, fields=FIELDS, keywords=None) -> list[Hit]:
        return self._backend(lambda: self.index.search(np.asarray(vector, dtype=np.float32), k, filters,
                                                       tuple(fields), keywords))

    def _backend(self, call):
        """One call into the index, one at a time: a query the backend refuses is the request's
        fault (4xx, as the error says); any other failure of the backend is a 502."""
        from clip_search.search.errors import QueryError, SearchError

        try:
            with self._lock:
                return call()
        except QueryError:
            raise
        except SearchError as error:
            raise UpstreamError(f"search failed: {error}") from None

    def hit_json(self, hit: Hit, score: bool = True, root_path: str = "") -> dict:
        """{"id", "score", "title", "image_url", ...metadata}; the stored image location stays private."""
        metadata = {key: value for key, value in (hit.metadata or {}).items()
                    if key not in ("image", "id", "score", "title", "image_url")}
        out = {"id": hit.id}
        if score:
            value = float(hit.score)
            out["score"] = round(value, 6) if math.isfinite(value) else None
        out["title"] = hit.title
        out["image_url"] = image_url(hit.id, root_path) if (hit.metadata or {}).get("image") else None
        out.update(metadata)
        return out

    # --- products -------------------------------------------------------------------------------
    def stored(self, product_id: str) -> EmbeddedProduct:
        """The product with this id as the index stores it, vectors included, or a 404."""
        found = self._backend(lambda: self.index.get([str(product_id)]))
        if not found:
            raise NotFound(f"no product with id {str(product_id)[:200]!r}")
        return found[0]

    def product_hit(self, product_id: str) -> Hit:
        product = self.stored(product_id).product
        metadata = {**(product.metadata or {}), **({"image": product.image} if product.image else {})}
        return Hit(product.id, float("nan"), product.title, metadata)

    def stored_image_vector(self, product_id: str) -> np.ndarray:
        """More like this: the product's stored image embedding (the index's own, not re-encoded)."""
        stored = self.stored(product_id)
        vector = stored.image_embedding
        if vector is None or not stored.product.image:
            raise Unprocessable(f"product {product_id!r} has no image to find more like it")
        return vector

    def product(self, product_id: str, root_path: str = "") -> dict:
        return self.hit_json(self.product_hit(product_id), score=False, root_path=root_path)

    def product_image(self, product_id: str) -> ImageAnswer:
        from clip_search import files

        hit = self.product_hit(product_id)
        location = (hit.metadata or {}).get("image")
        if not location:
            raise NotFound(f"product {product_id!r} has no image")
        location = str(location)
        kind = files.scheme(location)
        if kind == "s3":
            try:
                return ImageAnswer(redirect=files.presigned_url(location, self.presign_seconds))
            except Exception as error:  # noqa: BLE001 - no credentials, bad location: not the request's fault
                raise UpstreamError(f"cannot presign the image of product {product_id!r}: {error}") from None
        if kind in ("http", "https"):
            return ImageAnswer(redirect=location)
        if kind != "file":
            raise NotFound(f"product {product_id!r}: its image location has an unsupported scheme ({kind})")
        path = self.safe_local_path(location)
        if path is None:
            logger.warning("refused to serve the image of product %r: %s is outside the catalogue's folders",
                           product_id, location)
            raise NotFound(f"the image of product {product_id!r} is not available")
        media_type = _sniff_image(path)
        if media_type is None:
            raise NotFound(f"the image of product {product_id!r} is not an image file")
        return ImageAnswer(path=path, media_type=media_type)

    # --- local files: only inside the catalogue's folders ---------------------------------------
    @staticmethod
    def _real(path) -> str:
        return os.path.realpath(os.path.abspath(os.fspath(path)))

    def image_roots(self, current: bool = False) -> list[str]:
        """The folders local images may be served from: the given ones, else the folders the indexed
        products' images are in (as recorded; symlinks resolved only after the check), from the last
        scan of the index, or (`current`) from a scan that follows the index's writes."""
        if self._explicit_roots is not None:
            return self._explicit_roots
        scan = self._scan if not current and self._scan is not None else self._scan_products()
        return scan.roots

    def safe_local_path(self, location: str) -> str | None:
        """The resolved path of a local image location when it is a regular file inside one of the
        image roots after every symlink is followed; None otherwise. Relative paths, `..` parts and
        NUL bytes are refused outright (catalogues store absolute, normalised paths)."""
        from clip_search.files import local_path

        raw = local_path(location)
        if "\x00" in raw or not os.path.isabs(raw) or ".." in Path(raw).parts:
            return None
        real = self._real(raw)
        # A product indexed since the last scan may have its photo in a new folder: scan again
        # (only when the index has changed since, or the scan is old) before refusing.
        for current in (False, True):
            for root in self.image_roots(current):
                if real != root and os.path.commonpath([real, root]) == root:
                    try:
                        mode = os.stat(real).st_mode
                    except OSError:
                        return None
                    return real if stat.S_ISREG(mode) else None
            if self._explicit_roots is not None:
                break
        return None

    # --- facets ---------------------------------------------------------------------------------
    def facets(self) -> dict:
        scan = self._scan_products()
        rows = scan.rows
        values: dict[str, Counter] = {}
        carriers: Counter = Counter()
        unusable: set[str] = set()
        for metadata in rows:
            for name, value in metadata.items():
                if name in unusable or name in ("image", "id", "title", "score", "image_url"):
                    continue
                items = value if isinstance(value, list) else [value]
                if not all(isinstance(item, (str, int, float, bool)) and len(str(item)) <= FACET_MAX_VALUE_CHARS
                           for item in items):
                    unusable.add(name)
                    values.pop(name, None)
                    continue
                carriers[name] += 1
                values.setdefault(name, Counter()).update(str(item) for item in items)
        facets = []
        for name in sorted(values):
            counter = values[name]
            # A facet groups products: not free text, not a value per product (an id).
            if len(counter) > FACET_MAX_DISTINCT or len(counter) >= carriers[name] or len(counter) < 1:
                continue
            facets.append({"field": name, "values": [{"value": value, "count": count}
                                                     for value, count in counter.most_common(FACET_VALUES)]})
        return {"facets": facets, "products": len(rows), "complete": len(rows) >= scan.count}

    def _scan_products(self) -> _Scan:
        """Metadata of up to `facet_scan` products (all of a smaller catalogue) and the folders their
        local images are in; made again when the index has changed (another process writes to it
        while the app serves it), see SCAN_MAX_AGE_SECONDS."""
        with self._lock:
            version = self.index.data_version()
        scan = self._scan
        if scan is None or scan.version != version or (version is None and
                                                       time.monotonic() - scan.at > SCAN_MAX_AGE_SECONDS):
            from clip_search.files import local_path, scheme

            started = time.monotonic()
            with self._lock:
                count = self.index.count()
            rows, roots = [], set()
            if count:
                probe = np.full(self.dim, 1.0 / np.sqrt(self.dim), dtype=np.float32)
                for hit in self._search(probe, min(count, self.facet_scan), None):
                    rows.append(hit.metadata or {})
                    location = (hit.metadata or {}).get("image")
                    if location and scheme(str(location)) == "file":
                        raw = local_path(str(location))
                        if os.path.isabs(raw) and ".." not in Path(raw).parts:
                            roots.add(self._real(os.path.dirname(raw)))
            scan = self._scan = _Scan(version, started, rows, sorted(roots), count)
        return scan

    def health(self) -> dict:
        with self._lock:
            count = self.index.count()
        return {"status": "ok", "model": self.model_id, "index": self.location, "backend": self.index.backend,
                "products": count}

    def close(self) -> None:
        self.client.close()


def public_location(location: str) -> str:
    """The index location as answers show it: a password in a URL or DSN is never shown."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in location:
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def image_url(product_id: str, root_path: str = "") -> str:
    from urllib.parse import quote

    return f"{root_path}/api/products/{quote(str(product_id), safe='')}/image"


def _sniff_image(path: str) -> str | None:
    """The media type of an image file by its content (header only), or None when it is not one."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return IMAGE_TYPES.get(image.format or "")
    except (UnidentifiedImageError, OSError, ValueError):
        return None


__all__ = ["SearchService", "Query", "ImageAnswer", "NotFound", "Unprocessable", "UpstreamError", "MAX_K",
           "parse_k", "image_url"]
