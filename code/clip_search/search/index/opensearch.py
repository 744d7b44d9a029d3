"""OpenSearch k-NN backend (self-managed clusters and Amazon OpenSearch Service).

The mapping names its engine and space type explicitly: the reference sample relied on defaults,
and OpenSearch changed them (nmslib was the default engine; it is deprecated since 2.19 and faiss is
the default since 2.18). We use faiss HNSW with `innerproduct` over L2-normalised vectors (= cosine),
which supports efficient filtering (2.9+). Product ids are document ids, so re-indexing is
idempotent. Scores are converted to cosine similarity (see clip_search.search.scores).

Hybrid search (`keywords`) is a neural-search `hybrid` query (a `match` on the title and the k-NN
query) run through the search pipeline `clip-search-hybrid`, whose normalization processor
(min_max, arithmetic_mean 0.3 keyword / 0.7 vector) combines the two scores, as OpenSearch requires
for a hybrid query; the pipeline is created (idempotently) on first use.

OpenSearch Serverless (hosts `ID.REGION.aoss.amazonaws.com`, or OPENSEARCH_SERVICE=aoss): SigV4
with service `aoss`; a vector search collection assigns document ids itself (an `_id` in a bulk
index/create is refused), so upserts find a product's earlier documents by `product_id` and delete
them by their server ids before indexing; shards and replicas are managed by the service and not
sent; there is no `_refresh` call (the collection refreshes on its own).

Freshness: one explicit `POST /INDEX/_refresh` when a write command ends (the end of an index run,
via refresh(); every delete()), so a search sent after `clip-search index` or `clip-search delete`
returns sees the write, in any process. Not `refresh=wait_for` on each bulk request: that waits
for the index's next scheduled refresh (refresh_interval, 1 s by default; never when a bulk load
has set it to -1) on every request of chunk_size documents, and not `refresh=true` per request
(a tiny segment per request). Before the command ends, a cluster's scheduled refresh may show part
of it; each document is atomic. Serverless collections refresh on their own schedule.

Connection settings come from the environment so secrets never appear on a command line:
  OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD  basic auth (self-managed clusters)
  OPENSEARCH_AUTH=sigv4 (automatic for *.es.amazonaws.com / *.aoss.amazonaws.com hosts)
      SigV4 (opensearch-py's AWS signer) with the default AWS credential chain; region from AWS_REGION / AWS_DEFAULT_REGION or
      the host name; service `es` (or `aoss` for OpenSearch Serverless hosts)
  OPENSEARCH_CA_CERTS        CA bundle for self-signed clusters
  OPENSEARCH_VERIFY_CERTS=false  turn TLS verification off (on by default; loudly warned)
  OPENSEARCH_SERVICE=aoss    treat the host as an OpenSearch Serverless collection (automatic for
                             *.aoss.amazonaws.com)
"""
import logging
import os
import re
from typing import Iterable
from urllib.parse import urlsplit

import numpy as np

from clip_search.search.errors import IndexNotFoundError, SearchError, UnsupportedQuery
from clip_search.search.filters import normalise_filters
from clip_search.search.index.base import FIELDS, IndexInfo, UpsertReport, VectorIndex, as_query_vector
from clip_search.search.records import EmbeddedProduct, Hit, Product
from clip_search.search.scores import cosine_from_opensearch
from clip_search.settings import parse_bool

logger = logging.getLogger(__name__)

VECTOR_FIELDS = {"image": "image_embedding", "title": "title_embedding"}
DEFAULT_ENGINE, DEFAULT_SPACE = "faiss", "innerproduct"
HNSW_PARAMETERS = {"m": 16, "ef_construction": 128}
META_KEY = "clip_search"
HYBRID_PIPELINE = "clip-search-hybrid"
HYBRID_WEIGHTS = (0.3, 0.7)  # keyword match, vector similarity
# The API specification declares `_bulk` bodies as NDJSON; opensearch-py sends application/json unless told.
BULK_HEADERS = {"Content-Type": "application/x-ndjson"}
GET_CHUNK = 1000  # ids per terms query in get()
HASH = "content_hash"  # Product.content_hash; absent in documents indexed before it was kept
HASHES_PAGE = 5000
AWS_HOST = re.compile(r"\.(?P<region>[a-z0-9-]+)\.(?P<service>es|aoss)\.amazonaws\.com$")


def _reason(error) -> str:
    """The cluster's own reason for refusing a request (the innermost root cause), else the error."""
    info = getattr(error, "info", None)
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        causes = info["error"].get("root_cause") or [info["error"]]
        return str(causes[0].get("reason") or info["error"].get("reason") or error)
    return str(error)


def build_client(url: str, timeout: float = 60):
    """An opensearch-py client for the cluster at `url` (path ignored), auth from the environment."""
    from opensearchpy import OpenSearch

    parts = urlsplit(url)
    use_ssl = parts.scheme == "https"
    port = parts.port or (443 if use_ssl else 9200)
    # opensearch-py's default urllib3 connection: with the requests-based one, a REQUESTS_CA_BUNDLE
    # in the environment silently overrides OPENSEARCH_CA_CERTS (requests prefers it per request).
    options = {"hosts": [{"host": parts.hostname, "port": port}], "use_ssl": use_ssl, "timeout": timeout,
               "http_compress": True}
    if use_ssl:
        verify = _verify_certs()
        options["verify_certs"] = verify
        if not verify:
            logger.warning("TLS CERTIFICATE VERIFICATION IS OFF for %s (OPENSEARCH_VERIFY_CERTS=false)", parts.hostname)
            options["ssl_show_warn"] = False
        if os.environ.get("OPENSEARCH_CA_CERTS"):
            options["ca_certs"] = os.environ["OPENSEARCH_CA_CERTS"]
    if parts.username or parts.password:
        raise SearchError("put OpenSearch credentials in OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD, not in the URL")
    auth_mode = os.environ.get("OPENSEARCH_AUTH", "").lower()
    aws_host = AWS_HOST.search(parts.hostname or "")
    if os.environ.get("OPENSEARCH_USERNAME"):
        options["http_auth"] = (os.environ["OPENSEARCH_USERNAME"], os.environ.get("OPENSEARCH_PASSWORD", ""))
    elif auth_mode == "sigv4" or (aws_host and auth_mode != "none"):
        options["http_auth"] = _sigv4_auth(aws_host)
    return OpenSearch(**options)


def _verify_certs() -> bool:
    """OPENSEARCH_VERIFY_CERTS: on unless set to a false word; unset or empty keeps it on (it is
    never turned off by accident), and a value that is neither is refused."""
    raw = os.environ.get("OPENSEARCH_VERIFY_CERTS", "")
    if not raw.strip():
        return True
    try:
        return parse_bool(raw)
    except ValueError as error:
        raise SearchError(f"OPENSEARCH_VERIFY_CERTS={raw!r} is not valid: expected {error}") from None


def is_serverless(url: str) -> bool:
    """OpenSearch Serverless: an `*.aoss.amazonaws.com` host, or OPENSEARCH_SERVICE=aoss."""
    aws_host = AWS_HOST.search(urlsplit(url).hostname or "")
    if aws_host:
        return aws_host.group("service") == "aoss"
    return os.environ.get("OPENSEARCH_SERVICE", "").strip().lower() == "aoss"


def hybrid_pipeline() -> dict:
    """The search pipeline a `hybrid` query needs: scores of each sub-query normalized (min_max)
    and combined (weighted arithmetic mean)."""
    return {"description": "clip-search hybrid search: keyword match + k-NN, normalized and combined",
            "phase_results_processors": [{"normalization-processor": {
                "normalization": {"technique": "min_max"},
                "combination": {"technique": "arithmetic_mean", "parameters": {"weights": list(HYBRID_WEIGHTS)}}}}]}


def _sigv4_auth(aws_host):
    import boto3

    # The urllib3 flavour of opensearch-py's AWSV4SignerAuth, matching the client's default connection.
    from opensearchpy import Urllib3AWSV4SignerAuth

    session = boto3.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise SearchError("SigV4 auth needs AWS credentials (none found in the default credential chain)")
    from clip_search.aws_region import resolve_region

    region = resolve_region()[0] or (aws_host.group("region") if aws_host else None)
    if not region:
        raise SearchError("SigV4 auth needs a region: set AWS_REGION")
    service = aws_host.group("service") if aws_host else os.environ.get("OPENSEARCH_SERVICE", "es")
    return Urllib3AWSV4SignerAuth(credentials, region, service)


class OpenSearchIndex(VectorIndex):
    backend = "opensearch"
    supports_hybrid = True

    def __init__(self, client, name: str, location: str, engine: str = DEFAULT_ENGINE,
                 space_type: str = DEFAULT_SPACE, shards: int = 1, replicas: int | None = None,
                 chunk_size: int = 200, max_retries: int = 5, initial_backoff: float = 2.0,
                 serverless: bool = False):
        super().__init__(location)
        self.client, self.name = client, name
        self.serverless = serverless
        self._pipeline_ready = False
        self.engine, self.space_type = engine, space_type
        self.shards, self.replicas = shards, replicas
        self.chunk_size, self.max_retries, self.initial_backoff = chunk_size, max_retries, initial_backoff
        self._info: IndexInfo | None = None
        self.connected: dict | None = None

    @classmethod
    def from_url(cls, url: str, **options) -> "OpenSearchIndex":
        parts = urlsplit(url)
        name = parts.path.strip("/")
        if not name or "/" in name:
            raise SearchError(f"OpenSearch location {url} must end in the index name, e.g. https://host:9200/products")
        options.setdefault("serverless", is_serverless(url))
        return cls(build_client(url), name, url, **options)

    # --- lifecycle ---------------------------------------------------------------------------
    def mapping(self, dim: int, model_id: str, encoder: dict | None) -> dict:
        method = {"name": "hnsw", "engine": self.engine, "space_type": self.space_type, "parameters": dict(HNSW_PARAMETERS)}
        vector = {"type": "knn_vector", "dimension": int(dim), "method": method}
        settings = {"knn": True}
        if not self.serverless:  # Serverless manages shards and replicas itself
            settings["number_of_shards"] = self.shards
            if self.replicas is not None:
                settings["number_of_replicas"] = self.replicas
        return {
            "settings": {"index": settings},
            "mappings": {
                "_meta": {META_KEY: {"model_id": model_id, "dim": int(dim), "encoder": encoder or {},
                                     "engine": self.engine, "space_type": self.space_type}},
                # Metadata strings are exact-match keywords, so `--filter brand=Acme` is a term query.
                "dynamic_templates": [{"metadata_strings": {
                    "path_match": "metadata.*", "match_mapping_type": "string", "mapping": {"type": "keyword"}}}],
                "properties": {
                    "product_id": {"type": "keyword"},
                    "title": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 512}}},
                    "image": {"type": "keyword", "index": False},
                    HASH: {"type": "keyword", "index": False},
                    "metadata": {"type": "object"},
                    VECTOR_FIELDS["image"]: vector,
                    VECTOR_FIELDS["title"]: dict(vector),
                },
            },
        }

    def info(self) -> IndexInfo | None:
        from opensearchpy.exceptions import NotFoundError

        if self._info is not None:
            return self._info
        try:
            mapping = self.client.indices.get_mapping(index=self.name)
        except NotFoundError:
            return None
        except Exception as error:
            raise SearchError(f"OpenSearch {self.location}: {error}") from None
        mappings = next(iter(mapping.values()))["mappings"]
        meta = mappings.get("_meta", {}).get(META_KEY)
        if meta is None:
            raise SearchError(f"OpenSearch index {self.name} was not made by clip-search (no _meta.{META_KEY})")
        self.engine, self.space_type = meta["engine"], meta["space_type"]
        self.connected = meta.get("connected")  # set by `clip-search opensearch connect`
        self._info = IndexInfo(meta["model_id"], meta["dim"], self.backend, 0,
                               {"encoder": meta.get("encoder") or {}, "engine": self.engine, "space_type": self.space_type})
        return self._info

    def create(self, dim: int, model_id: str, encoder: dict | None = None) -> None:
        from opensearchpy.exceptions import RequestError

        try:
            self.client.indices.create(index=self.name, body=self.mapping(dim, model_id, encoder))
        except RequestError as error:
            if error.error != "resource_already_exists_exception":
                raise SearchError(f"creating OpenSearch index {self.name}: {error.info}") from None
        self._info = None
        self.check_model(self.info(), model_id, dim)

    def drop(self) -> None:
        self.client.indices.delete(index=self.name, ignore=[404])
        self._info = None

    def count(self) -> int:
        from opensearchpy.exceptions import NotFoundError

        try:
            self.refresh()
            return int(self.client.count(index=self.name)["count"])
        except NotFoundError:
            return 0

    def close(self) -> None:
        self.client.close()

    # --- writes ------------------------------------------------------------------------------
    def _actions(self, items: Iterable[EmbeddedProduct]):
        for item in items:
            product = item.product
            source = {"product_id": product.id, "title": product.title, "image": product.image,
                      "metadata": product.metadata}
            if product.content_hash:
                source[HASH] = product.content_hash
            for field, vector in (("image", item.image_embedding), ("title", item.title_embedding)):
                if vector is not None:
                    source[VECTOR_FIELDS[field]] = [float(v) for v in np.asarray(vector, dtype=np.float32)]
            if self.serverless:  # vector search collections assign document ids themselves
                yield {"_op_type": "index", "_index": self.name, "_source": source}
            else:
                yield {"_op_type": "index", "_index": self.name, "_id": product.id, "_source": source}

    def _serverless_actions(self, items: Iterable[EmbeddedProduct]):
        """Serverless upserts: per chunk, delete the documents already holding these product ids
        (found by `product_id`, deleted by their server-generated ids), then index the new ones."""
        chunk: dict[str, EmbeddedProduct] = {}

        def flush():
            yield from self._server_ids_of(list(chunk))
            yield from self._actions(chunk.values())
            chunk.clear()

        for item in items:
            chunk[item.product.id] = item
            if len(chunk) >= self.chunk_size:
                yield from flush()
        if chunk:
            yield from flush()

    def _server_ids_of(self, product_ids: list[str]):
        """Delete actions for the documents holding these product ids (Serverless: server ids)."""
        found = self.client.search(index=self.name, body={
            "size": 10000, "query": {"terms": {"product_id": product_ids}}, "_source": ["product_id"]})
        for hit in found["hits"]["hits"]:
            yield {"_op_type": "delete", "_index": self.name, "_id": hit["_id"]}

    def upsert(self, items: Iterable[EmbeddedProduct]) -> UpsertReport:
        """Bulk index with opensearch-py's streaming_bulk: documents rejected with 429 (and whole
        bulk requests rejected with 429) are retried with exponential backoff; other per-item
        failures are reported, not raised, so one bad product does not stop a catalogue."""
        from opensearchpy import helpers
        from opensearchpy.exceptions import TransportError

        report = UpsertReport()
        actions = self._serverless_actions(items) if self.serverless else self._actions(items)
        try:
            for ok, result in helpers.streaming_bulk(
                self.client, actions, chunk_size=self.chunk_size, max_retries=self.max_retries,
                initial_backoff=self.initial_backoff, max_backoff=60, raise_on_error=False,
                raise_on_exception=False, headers=BULK_HEADERS,
            ):
                (kind, outcome), = result.items()
                if kind == "delete":  # the serverless upsert's removal of a product's old document
                    continue
                if ok:
                    report.indexed += 1
                else:
                    error = outcome.get("error", {})
                    reason = error.get("reason", error) if isinstance(error, dict) else error
                    kind = error.get("type", "") if isinstance(error, dict) else ""
                    report.errors.append((str(outcome.get("_id")), f"HTTP {outcome.get('status')} {kind}: {reason}".strip()))
        except TransportError as error:
            raise SearchError(f"bulk indexing into {self.location} failed: HTTP {error.status_code} {error.error}") from None
        return report

    # --- reads -------------------------------------------------------------------------------
    def content_hashes(self) -> dict[str, str | None]:
        """Paged by `search_after` on product_id (no scroll context to clean up; works on
        Serverless, where document ids are the server's and product_id is the key)."""
        from opensearchpy.exceptions import NotFoundError

        hashes: dict[str, str | None] = {}
        after = None
        while True:
            body = {"size": HASHES_PAGE, "query": {"match_all": {}}, "_source": ["product_id", HASH],
                    "sort": [{"product_id": "asc"}]}
            if after is not None:
                body["search_after"] = after
            try:
                if after is None:
                    self.refresh()
                hits = self.client.search(index=self.name, body=body)["hits"]["hits"]
            except NotFoundError:
                return {}
            for hit in hits:
                hashes[hit["_source"]["product_id"]] = hit["_source"].get(HASH)
            if len(hits) < HASHES_PAGE:
                return hashes
            after = hits[-1]["sort"]

    def _filter_query(self, filters: dict[str, list[str]]) -> dict | None:
        if not filters:
            return None
        clauses = []
        for field, values in filters.items():
            target = {"id": "product_id", "title": "title.raw"}.get(field, f"metadata.{field}")
            clauses.append({"terms": {target: values}})
        return {"bool": {"filter": clauses}}

    def _knn(self, field: str, vector: np.ndarray, k: int, filter_query: dict | None) -> dict:
        clause = {"vector": [float(v) for v in vector], "k": k}
        if filter_query is not None:
            clause["filter"] = filter_query  # efficient filtering: top k among the matching products
        return {"knn": {VECTOR_FIELDS[field]: clause}}

    def get(self, ids) -> list[EmbeddedProduct]:
        """By `product_id` (a terms query), which Serverless documents carry as well as the others."""
        ids = list(dict.fromkeys(str(i) for i in ids))
        if not ids or self.info() is None:
            return []
        found = {}
        for start in range(0, len(ids), GET_CHUNK):
            chunk = ids[start:start + GET_CHUNK]
            body = {"size": len(chunk), "query": {"terms": {"product_id": chunk}}}
            try:
                response = self.client.search(index=self.name, body=body)
            except Exception as error:
                raise SearchError(f"OpenSearch {self.location}: reading products: {error}") from None
            for hit in response["hits"]["hits"]:
                source = hit["_source"]
                found[str(source.get("product_id", hit["_id"]))] = source
        out = []
        for product_id in ids:
            if product_id in found:
                source = found[product_id]
                vectors = [None if source.get(VECTOR_FIELDS[f]) is None else np.asarray(source[VECTOR_FIELDS[f]], np.float32)
                           for f in FIELDS]
                product = Product(product_id, source.get("title") or "", source.get("image"), dict(source.get("metadata") or {}))
                out.append(EmbeddedProduct(product, *vectors))
        return out

    def search(self, vector, k: int = 10, filters: dict | None = None, fields: tuple = FIELDS,
               keywords: str | None = None) -> list[Hit]:
        self.check_query(fields, keywords)
        info = self.info()
        if info is None:
            raise IndexNotFoundError(f"no OpenSearch index {self.name} at {self.location}")
        vector = as_query_vector(vector, info.dim)
        return self._search(lambda field, filter_query: self._knn(field, vector, k, filter_query),
                            k, filters, fields, keywords, vector)

    def search_neural(self, text: str | None = None, image: bytes | None = None, k: int = 10,
                      filters: dict | None = None, fields: tuple = FIELDS, keywords: str | None = None) -> list[Hit]:
        """Connected mode: a `neural` query per vector field; the cluster encodes `text` or `image`
        (base64 `query_image`) with the model `connect` registered. Hybrid (`keywords`) scores are the
        search pipeline's combined scores (there is no query vector here to recompute the cosine)."""
        import base64

        info = self.info()
        if info is None:
            raise IndexNotFoundError(f"no OpenSearch index {self.name} at {self.location}")
        if not self.connected:
            raise SearchError(f"OpenSearch index {self.name} is not connected to a model "
                              "(run `clip-search opensearch connect`)")
        if not text and not image:
            raise SearchError("a neural query needs a text or an image")
        model_id = self.connected["model_id"]

        def neural(field, filter_query):
            clause = {"model_id": model_id, "k": k}
            if text:
                clause["query_text"] = text
            if image:
                clause["query_image"] = base64.b64encode(image).decode("ascii")
            if filter_query is not None:
                clause["filter"] = filter_query
            return {"neural": {VECTOR_FIELDS[field]: clause}}

        return self._search(neural, k, filters, fields, keywords, None)

    def _search(self, clause, k: int, filters, fields, keywords, vector) -> list[Hit]:
        filter_query = self._filter_query(normalise_filters(filters))
        knns = [clause(field, filter_query) for field in fields]
        # dis_max keeps the better field's score: the best of image and title similarity counts.
        query = knns[0] if len(knns) == 1 else {"dis_max": {"queries": knns}}
        excludes = list(VECTOR_FIELDS.values())
        params = {}
        if keywords:
            # Hybrid: keyword match on the title and the k-NN query, ranked by the search pipeline's
            # normalized, combined score; the reported score stays the cosine similarity, computed
            # from the returned vectors. Each sub-query carries the filter (hybrid.filter is 3.0+).
            match = {"match": {"title": keywords}}
            if filter_query is not None:
                match = {"bool": {"must": [match], "filter": [filter_query]}}
            query = {"hybrid": {"queries": [match, query]}}
            excludes = []
            self._ensure_pipeline()
            params["search_pipeline"] = HYBRID_PIPELINE
        body = {"size": k, "query": query, "_source": {"excludes": excludes}}
        try:
            response = self.client.search(index=self.name, body=body, params=params)
        except Exception as error:
            if filter_query is not None and getattr(error, "status_code", None) == 400:
                # The cluster refused the query, and what the user chose in it is the filter: e.g. a
                # value that cannot be compared with a numeric or boolean field.
                shown = ", ".join(f"{f}={v}" for f, values in normalise_filters(filters).items() for v in values)
                raise UnsupportedQuery(f"OpenSearch {self.location} cannot apply the filter {shown}: "
                                       f"{_reason(error)}") from None
            raise SearchError(f"OpenSearch search on {self.location} failed: {error}") from None
        hits = []
        for hit in response["hits"]["hits"]:
            source = hit["_source"]
            if keywords:
                stored = [np.asarray(source.pop(VECTOR_FIELDS[f]), np.float32) for f in fields if source.get(VECTOR_FIELDS[f])]
                for name in VECTOR_FIELDS.values():
                    source.pop(name, None)
                score = (max((float(vector @ s) for s in stored), default=float("nan")) if vector is not None
                         else float(hit["_score"]))
            else:
                score = cosine_from_opensearch(hit["_score"], self.engine, self.space_type)
            extra = dict(source.get("metadata") or {})
            if source.get("image"):
                extra.setdefault("image", source["image"])
            hits.append(Hit(source.get("product_id", hit["_id"]), score, source.get("title") or "", extra))
        return hits

    def _ensure_pipeline(self) -> None:
        """Create the hybrid search pipeline unless it is already there as we define it."""
        from opensearchpy.exceptions import NotFoundError

        if self._pipeline_ready:
            return
        wanted = hybrid_pipeline()
        try:
            current = self.client.search_pipeline.get(id=HYBRID_PIPELINE).get(HYBRID_PIPELINE)
        except NotFoundError:
            current = None
        except Exception as error:
            raise SearchError(f"OpenSearch {self.location}: reading search pipeline {HYBRID_PIPELINE}: {error}") from None
        if current != wanted:
            try:
                self.client.search_pipeline.put(id=HYBRID_PIPELINE, body=wanted)
            except Exception as error:
                raise SearchError(f"OpenSearch {self.location}: creating search pipeline {HYBRID_PIPELINE} "
                                  f"(hybrid search needs it): {error}") from None
        self._pipeline_ready = True

    def refresh(self) -> None:
        if not self.serverless:  # Serverless collections refresh on their own; no _refresh API call
            self.client.indices.refresh(index=self.name)

    def delete(self, ids) -> int:
        """Delete products by id with bulk delete actions (404s, ids not in the index, are not errors),
        chunk_size a request, then one refresh: when it returns, searches no longer find them.
        On Serverless the documents' ids are the server's: found by `product_id` first."""
        from opensearchpy import helpers

        ids = [str(i) for i in ids]
        if self.serverless:
            actions = (action for start in range(0, len(ids), self.chunk_size)
                       for action in self._server_ids_of(ids[start:start + self.chunk_size]))
        else:
            actions = ({"_op_type": "delete", "_index": self.name, "_id": i} for i in ids)
        deleted = 0
        for ok, result in helpers.streaming_bulk(self.client, actions, chunk_size=self.chunk_size,
                                                 max_retries=self.max_retries, initial_backoff=self.initial_backoff,
                                                 raise_on_error=False, raise_on_exception=False,
                                                 headers=BULK_HEADERS):
            outcome = next(iter(result.values()))
            if ok and outcome.get("result") == "deleted":
                deleted += 1
            elif outcome.get("status") != 404:
                raise SearchError(f"deleting {outcome.get('_id')} from {self.location} failed: {outcome.get('error')}")
        self.refresh()  # the freshness policy (module docstring): searchable when delete returns
        return deleted
