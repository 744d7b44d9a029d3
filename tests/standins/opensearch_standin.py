"""A local stand-in for an OpenSearch cluster with the k-NN plugin, for tests only.

No OpenSearch can run on these machines, so this server checks every request our backend sends
against OpenSearch's documented APIs and answers in their documented shapes:
  index APIs   PUT/HEAD/DELETE /INDEX, GET /INDEX/_mapping, POST /INDEX/_refresh, GET /INDEX/_count
  documents    POST /_bulk (NDJSON; per-item results, `errors`, 429 rejections), GET /INDEX/_doc/ID
  search       POST /INDEX/_search with `knn` (vector, k, filter), `bool`, `dis_max`, `match`, `term`,
               `terms`, `match_all`, `_source` includes/excludes; k-NN scores per engine + space type
Anything else is refused with OpenSearch's error shape, so a malformed request fails the test
instead of passing silently. References: docs.opensearch.org .../vector-search/ (knn_vector, spaces,
filtering), .../api-reference/document-apis/bulk/, .../api-reference/index-apis/create-index/.

Fault injection (for retry and error-reporting tests): `server.faults` holds
  "bulk_429_requests": N  -> the next N bulk requests are rejected whole with HTTP 429
  "item_429": {id: n}      -> item `id` is rejected with a per-item 429, n times
"""
import base64
import gzip
import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENGINES = {
    "faiss": {"l2", "innerproduct", "cosinesimil"},
    "lucene": {"l2", "innerproduct", "cosinesimil"},
    "nmslib": {"l2", "innerproduct", "cosinesimil", "l1", "linf"},
}
INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-.+]*$")


class OpenSearchError(Exception):
    def __init__(self, status: int, kind: str, reason: str):
        super().__init__(reason)
        self.status, self.kind, self.reason = status, kind, reason

    def body(self) -> dict:
        cause = {"type": self.kind, "reason": self.reason}
        return {"error": {"root_cause": [cause], **cause}, "status": self.status}


def _bad(reason: str, kind: str = "parsing_exception", status: int = 400):
    return OpenSearchError(status, kind, reason)


def _score(cosine_or_dot: float, sq_distance: float, engine: str, space: str) -> float:
    """The documented score of each space (docs: mappings/supported-field-types/knn-spaces)."""
    if space == "innerproduct":
        dot = cosine_or_dot
        return 1.0 + dot if dot >= 0 else 1.0 / (1.0 - dot)
    if space == "cosinesimil":
        distance = 1.0 - cosine_or_dot
        return 1.0 / (1.0 + distance) if engine == "nmslib" else (2.0 - distance) / 2.0
    if space == "l2":
        return 1.0 / (1.0 + sq_distance)
    raise _bad(f"space {space} not supported by the stand-in", "illegal_argument_exception")


class Index:
    def __init__(self, name: str, body: dict):
        self.name = name
        self.docs: dict[str, dict] = {}
        self.versions: dict[str, int] = {}
        self.visible: dict[str, dict] = {}  # what searches see: refreshed state
        settings = body.get("settings", {})
        index_settings = settings.get("index", settings)
        self.knn = index_settings.get("knn") in (True, "true") or settings.get("index.knn") in (True, "true")
        mappings = body.get("mappings", {})
        unknown = set(mappings) - {"properties", "_meta", "dynamic", "dynamic_templates", "_source"}
        if unknown:
            raise _bad(f"Root mapping definition has unsupported parameters: {sorted(unknown)}", "mapper_parsing_exception")
        self.mappings = mappings
        self.vectors: dict[str, dict] = {}
        for field, spec in mappings.get("properties", {}).items():
            if spec.get("type") == "knn_vector":
                self.vectors[field] = self._check_vector_field(field, spec)
        if self.vectors and not self.knn:
            raise _bad("knn_vector fields need index.knn: true for approximate search",
                       "mapper_parsing_exception")

    @staticmethod
    def _check_vector_field(field: str, spec: dict) -> dict:
        dimension = spec.get("dimension")
        if not isinstance(dimension, int) or not 1 <= dimension <= 16000:
            raise _bad(f"[dimension] for field [{field}] must be an integer in [1, 16000]", "mapper_parsing_exception")
        method = spec.get("method")
        if method is None:
            raise _bad(f"field [{field}]: the stand-in requires an explicit method (engine, space_type)",
                       "mapper_parsing_exception")
        if method.get("name") != "hnsw":
            raise _bad(f"field [{field}]: method [{method.get('name')}] is not hnsw", "mapper_parsing_exception")
        engine = method.get("engine")
        space = method.get("space_type", spec.get("space_type"))
        if engine not in ENGINES:
            raise _bad(f"field [{field}]: invalid engine [{engine}]", "mapper_parsing_exception")
        if space not in ENGINES[engine]:
            raise _bad(f"field [{field}]: engine [{engine}] does not support space [{space}]", "mapper_parsing_exception")
        params = method.get("parameters", {})
        for key, value in params.items():
            if key not in {"m", "ef_construction", "ef_search", "encoder"}:
                raise _bad(f"field [{field}]: unknown hnsw parameter [{key}]", "mapper_parsing_exception")
            if key in {"m", "ef_construction", "ef_search"} and (not isinstance(value, int) or value < 2):
                raise _bad(f"field [{field}]: hnsw parameter [{key}] must be an integer >= 2", "mapper_parsing_exception")
        return {"dimension": dimension, "engine": engine, "space": space}

    # --- documents ---------------------------------------------------------------------------
    def validate_doc(self, source: dict) -> None:
        if not isinstance(source, dict):
            raise _bad("document must be a JSON object", "mapper_parsing_exception")
        for field, spec in self.vectors.items():
            if field not in source or source[field] is None:
                continue
            vector = source[field]
            if not isinstance(vector, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vector):
                raise _bad(f"failed to parse field [{field}] of type [knn_vector]", "mapper_parsing_exception")
            if len(vector) != spec["dimension"]:
                raise _bad(f"Vector dimension mismatch. Expected: {spec['dimension']}, Given: {len(vector)}",
                           "mapper_parsing_exception")
            if not all(math.isfinite(v) for v in vector):
                raise _bad(f"KNN vector values cannot be NaN or Infinity for field [{field}]", "mapper_parsing_exception")

    def put(self, doc_id: str, source: dict) -> tuple[str, int, int]:
        self.validate_doc(source)
        existed = doc_id in self.docs
        self.docs[doc_id] = source
        self.versions[doc_id] = self.versions.get(doc_id, 0) + 1
        return ("updated", 200, self.versions[doc_id]) if existed else ("created", 201, self.versions[doc_id])

    def refresh(self):
        self.visible = dict(self.docs)

    # --- search ------------------------------------------------------------------------------
    def search(self, body: dict) -> dict:
        allowed = {"size", "query", "_source", "from", "track_total_hits"}
        unknown = set(body) - allowed
        if unknown:
            raise _bad(f"Unknown key for a START_OBJECT in [{sorted(unknown)[0]}].")
        size = body.get("size", 10)
        if not isinstance(size, int) or size < 0:
            raise _bad("[size] must be a non-negative integer", "illegal_argument_exception")
        scores = self.evaluate(body.get("query", {"match_all": {}}), set(self.visible))
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        start = body.get("from", 0)
        hits = [{"_index": self.name, "_id": doc_id, "_score": score,
                 "_source": _filter_source(self.visible[doc_id], body.get("_source", True))}
                for doc_id, score in ranked[start:start + size]]
        return {"took": 1, "timed_out": False,
                "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                "hits": {"total": {"value": len(ranked), "relation": "eq"},
                         "max_score": ranked[0][1] if ranked else None, "hits": hits}}

    def evaluate(self, query: dict, candidates: set) -> dict[str, float]:
        """doc id -> score for the docs (among candidates) matching `query`."""
        if not isinstance(query, dict) or len(query) != 1:
            raise _bad("query malformed, must start with a single query name")
        (kind, spec), = query.items()
        if kind == "match_all":
            return {doc_id: 1.0 for doc_id in candidates}
        if kind == "knn":
            return self._knn(spec, candidates)
        if kind == "bool":
            return self._bool(spec, candidates)
        if kind == "dis_max":
            unknown = set(spec) - {"queries", "tie_breaker", "boost"}
            if unknown or not isinstance(spec.get("queries"), list):
                raise _bad("[dis_max] malformed: needs a [queries] array")
            out: dict[str, float] = {}
            for sub in spec["queries"]:
                for doc_id, score in self.evaluate(sub, candidates).items():
                    out[doc_id] = max(out.get(doc_id, 0.0), score)
            return out
        if kind in ("term", "terms"):
            (field, value), = [(f, v) for f, v in spec.items() if f != "boost"]
            values = value if kind == "terms" else [value.get("value") if isinstance(value, dict) else value]
            if kind == "terms" and not isinstance(values, list):
                raise _bad("[terms] query requires an array of values")
            wanted = {str(v) for v in values}
            return {d: 1.0 for d in candidates if _field_values(self.visible[d], field, d) & wanted}
        if kind == "match":
            (field, value), = spec.items()
            text = value.get("query") if isinstance(value, dict) else value
            terms = set(re.findall(r"\w+", str(text).lower()))
            out = {}
            for doc_id in candidates:
                words = re.findall(r"\w+", str(_get(self.visible[doc_id], field) or "").lower())
                score = sum(1.0 for word in words if word in terms)
                if score:
                    out[doc_id] = score
            return out
        raise _bad(f"unknown query [{kind}]", "parsing_exception")

    def _bool(self, spec: dict, candidates: set) -> dict[str, float]:
        unknown = set(spec) - {"must", "should", "filter", "must_not", "minimum_should_match", "boost"}
        if unknown:
            raise _bad(f"[bool] query does not support [{sorted(unknown)[0]}]")
        listed = {key: spec[key] if isinstance(spec.get(key), list) else [spec[key]] for key in spec
                  if key in ("must", "should", "filter", "must_not")}
        pool = set(candidates)
        for clause in listed.get("filter", []):
            pool &= set(self.evaluate(clause, pool))
        for clause in listed.get("must_not", []):
            pool -= set(self.evaluate(clause, pool))
        scores = {doc_id: 0.0 for doc_id in pool}
        for clause in listed.get("must", []):
            matched = self.evaluate(clause, pool)
            scores = {d: s + matched[d] for d, s in scores.items() if d in matched}
        should_hits: dict[str, int] = {}
        for clause in listed.get("should", []):
            for doc_id, score in self.evaluate(clause, set(scores)).items():
                scores[doc_id] += score
                should_hits[doc_id] = should_hits.get(doc_id, 0) + 1
        if listed.get("should") and not listed.get("must") and not listed.get("filter"):
            scores = {d: s for d, s in scores.items() if should_hits.get(d)}
        return scores

    def _knn(self, spec: dict, candidates: set) -> dict[str, float]:
        if not isinstance(spec, dict) or len(spec) != 1:
            raise _bad("[knn] query must name exactly one field")
        (field, params), = spec.items()
        if field not in self.vectors:
            raise _bad(f"Field '{field}' is not knn_vector type.", "illegal_argument_exception")
        unknown = set(params) - {"vector", "k", "filter", "boost", "method_parameters", "expand_nested_docs"}
        if unknown:
            raise _bad(f"[knn] unknown token [{sorted(unknown)[0]}]")
        vector, k = params.get("vector"), params.get("k")
        dimension = self.vectors[field]["dimension"]
        if not isinstance(vector, list) or len(vector) != dimension:
            raise _bad(f"Query vector has invalid dimension: {len(vector) if isinstance(vector, list) else None}. "
                       f"Dimension should be: {dimension}", "illegal_argument_exception")
        if not isinstance(k, int) or not 1 <= k <= 10000:
            raise _bad("[knn] requires k to be an integer in [1, 10000]", "illegal_argument_exception")
        pool = candidates
        if "filter" in params:
            if self.vectors[field]["engine"] == "nmslib":
                raise _bad("Engine [NMSLIB] does not support filters", "illegal_argument_exception")
            pool = set(self.evaluate(params["filter"], candidates))
        engine, space = self.vectors[field]["engine"], self.vectors[field]["space"]
        scored = []
        for doc_id in pool:
            stored = self.visible[doc_id].get(field)
            if stored is None:
                continue
            dot = sum(a * b for a, b in zip(vector, stored))
            sq = sum((a - b) ** 2 for a, b in zip(vector, stored))
            if space == "cosinesimil":
                norms = math.sqrt(sum(a * a for a in vector)) * math.sqrt(sum(b * b for b in stored))
                dot = dot / norms if norms else 0.0
            scored.append((doc_id, _score(dot, sq, engine, space)))
        scored.sort(key=lambda item: -item[1])
        boost = params.get("boost", 1.0)
        return {doc_id: score * boost for doc_id, score in scored[:k]}


def _get(source: dict, dotted: str):
    value = source
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _field_values(source: dict, field: str, doc_id: str) -> set:
    if field == "_id":
        return {doc_id}
    value = _get(source, field)
    if value is None and field.endswith(".keyword"):
        value = _get(source, field[: -len(".keyword")])
    values = value if isinstance(value, list) else [value]
    return {str(v) for v in values if v is not None}


def _filter_source(source: dict, spec):
    if spec is True:
        return source
    if spec is False:
        return None
    includes = spec.get("includes") if isinstance(spec, dict) else spec
    excludes = spec.get("excludes", []) if isinstance(spec, dict) else []
    out = {k: v for k, v in source.items() if not includes or k in includes}
    return {k: v for k, v in out.items() if k not in excludes}


class OpenSearchStandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0, credentials: tuple[str, str] | None = None, tls: tuple[str, str] | None = None):
        super().__init__(("127.0.0.1", port), _Handler)
        self.scheme = "http"
        if tls is not None:  # (certfile, keyfile): serve HTTPS like a secured cluster
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.socket = context.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"
        self.indices: dict[str, Index] = {}
        self.lock = threading.Lock()
        self.credentials = credentials
        self.faults: dict = {}
        self.requests: list[dict] = []  # method, path, headers of every request, for assertions
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "OpenSearchStandIn":
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: OpenSearchStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status: int, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding") == "gzip":  # opensearch-py's http_compress
            raw = gzip.decompress(raw)
        path, _, query = self.path.partition("?")
        parts = [p for p in path.split("/") if p]
        self.server.requests.append({"method": self.command, "path": path, "query": query,
                                     "headers": {k.lower(): v for k, v in self.headers.items()}})  # names are case-insensitive
        try:
            self._authorise()
            with self.server.lock:
                status, body = self._route(parts, raw, query)
        except OpenSearchError as error:
            status, body = error.status, error.body()
        except Exception as error:  # a bug in the stand-in or a request shape it did not foresee
            status, body = 500, OpenSearchError(500, "stand_in_exception", repr(error)).body()
        self._send(status, body)

    def _authorise(self):
        if self.server.credentials is None:
            return
        header = self.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(":".join(self.server.credentials).encode()).decode()
        if header != expected:
            raise OpenSearchError(401, "security_exception", "Unauthorized")

    def _json(self, raw: bytes) -> dict:
        if not raw:
            return {}
        content_type = self.headers.get("Content-Type", "")
        if "json" not in content_type:
            raise OpenSearchError(406, "content_type_exception",
                                  f"Content-Type header [{content_type}] is not supported")
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise _bad(f"Failed to parse request body: {error.msg}", "json_parse_exception")

    def _index(self, name: str) -> Index:
        index = self.server.indices.get(name)
        if index is None:
            raise OpenSearchError(404, "index_not_found_exception", f"no such index [{name}]")
        return index

    def _route(self, parts, raw, query):
        method = self.command
        if not parts:
            return 200, {"name": "standin", "cluster_name": "clip-search-standin",
                         "version": {"distribution": "opensearch", "number": "2.19.0"}, "tagline": "The OpenSearch Project: https://opensearch.org/"}
        if parts == ["_bulk"] and method in ("POST", "PUT"):
            return self._bulk(raw, None, query)
        name = parts[0]
        if len(parts) == 1:
            if method == "HEAD":
                return (200 if name in self.server.indices else 404), None
            if method == "PUT":
                if not INDEX_NAME.match(name):
                    raise _bad(f"Invalid index name [{name}], must be lowercase", "invalid_index_name_exception")
                if name in self.server.indices:
                    raise _bad(f"index [{name}/uuid] already exists", "resource_already_exists_exception")
                self.server.indices[name] = Index(name, self._json(raw))
                return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}
            if method == "DELETE":
                self._index(name)
                del self.server.indices[name]
                return 200, {"acknowledged": True}
            if method == "GET":
                index = self._index(name)
                return 200, {name: {"mappings": index.mappings, "settings": {"index": {"knn": str(index.knn).lower()}}}}
        index_parts = parts[1:]
        if index_parts == ["_mapping"] and method == "GET":
            return 200, {name: {"mappings": self._index(name).mappings}}
        if index_parts == ["_refresh"] and method in ("POST", "GET"):
            self._index(name).refresh()
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if index_parts == ["_count"] and method in ("GET", "POST"):
            return 200, {"count": len(self._index(name).visible), "_shards": {"total": 1, "successful": 1, "failed": 0}}
        if index_parts == ["_search"] and method in ("GET", "POST"):
            return 200, self._index(name).search(self._json(raw))
        if index_parts == ["_bulk"] and method in ("POST", "PUT"):
            return self._bulk(raw, name, query)
        if len(index_parts) == 2 and index_parts[0] == "_doc" and method == "GET":
            index = self._index(name)
            doc_id = index_parts[1]
            if doc_id not in index.docs:
                return 404, {"_index": name, "_id": doc_id, "found": False}
            return 200, {"_index": name, "_id": doc_id, "_version": index.versions[doc_id], "found": True,
                         "_source": index.docs[doc_id]}
        raise _bad(f"no handler found for uri [/{'/'.join(parts)}] and method [{method}]",
                   "invalid_request_exception")

    def _bulk(self, raw: bytes, default_index: str | None, query: str):
        content_type = self.headers.get("Content-Type", "")
        if not ("x-ndjson" in content_type or "json" in content_type):
            raise OpenSearchError(406, "content_type_exception", f"Content-Type header [{content_type}] is not supported")
        if not raw.endswith(b"\n"):
            raise _bad("The bulk request must be terminated by a newline [\\n]", "illegal_argument_exception")
        faults = self.server.faults
        if faults.get("bulk_429_requests", 0) > 0:
            faults["bulk_429_requests"] -= 1
            raise OpenSearchError(429, "es_rejected_execution_exception",
                                  "rejected execution of coordinating operation")
        lines = raw.decode("utf-8").split("\n")[:-1]
        items, errors, position = [], False, 0
        while position < len(lines):
            try:
                action_line = json.loads(lines[position])
            except json.JSONDecodeError:
                raise _bad("Malformed action/metadata line", "illegal_argument_exception")
            if len(action_line) != 1:
                raise _bad(f"Malformed action/metadata line [{position + 1}], expected a single action",
                           "illegal_argument_exception")
            (action, meta), = action_line.items()
            if action not in ("index", "create", "update", "delete"):
                raise _bad(f"Malformed action/metadata line [{position + 1}], unknown action [{action}]",
                           "illegal_argument_exception")
            position += 1
            source = None
            if action != "delete":
                if position >= len(lines):
                    raise _bad("The bulk request must be terminated by a newline [\\n]", "illegal_argument_exception")
                source = json.loads(lines[position])
                position += 1
            items.append(self._bulk_item(action, meta, source, default_index))
            errors = errors or "error" in items[-1][action]
        if "refresh=true" in query or "refresh=wait_for" in query:
            for index in self.server.indices.values():
                index.refresh()
        return 200, {"took": 3, "errors": errors, "items": items}

    def _bulk_item(self, action, meta, source, default_index):
        name = meta.get("_index", default_index)
        doc_id = meta.get("_id")
        result = {"_index": name, "_id": doc_id}
        pending = self.server.faults.get("item_429", {})
        if pending.get(doc_id, 0) > 0:
            pending[doc_id] -= 1
            return {action: {**result, "status": 429, "error": {
                "type": "es_rejected_execution_exception", "reason": "rejected execution of primary operation"}}}
        try:
            index = self.server.indices.get(name)
            if index is None:
                raise OpenSearchError(404, "index_not_found_exception", f"no such index [{name}]")
            if action == "delete":
                if index.docs.pop(doc_id, None) is None:
                    return {action: {**result, "result": "not_found", "status": 404}}
                return {action: {**result, "result": "deleted", "status": 200}}
            if doc_id is None:
                raise _bad("the stand-in requires explicit _id values", "illegal_argument_exception")
            if action == "create" and doc_id in index.docs:
                raise OpenSearchError(409, "version_conflict_engine_exception",
                                      f"[{doc_id}]: version conflict, document already exists")
            if action == "update":
                source = {**index.docs.get(doc_id, {}), **source.get("doc", {})}
            outcome, status, version = index.put(str(doc_id), source)
            return {action: {**result, "_version": version, "result": outcome, "status": status,
                             "_shards": {"total": 1, "successful": 1, "failed": 0}}}
        except OpenSearchError as error:
            return {action: {**result, "status": error.status, "error": {"type": error.kind, "reason": error.reason}}}

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


if __name__ == "__main__":  # python tests/standins/opensearch_standin.py 9200
    import sys

    server = OpenSearchStandIn(int(sys.argv[1]) if len(sys.argv) > 1 else 9200)
    print(f"OpenSearch stand-in on {server.url}", flush=True)
    server.serve_forever()
