"""A local stand-in for an OpenSearch cluster with the k-NN and neural-search plugins, for tests only.

No OpenSearch can run on these machines. Two layers keep the stand-in honest:
- every request is checked against OpenSearch's official API specification
  (tests/standins/opensearch_spec.py: the operation exists, its query parameters and its body match
  the spec's schemas, every `_bulk` line) and so is every answer the stand-in gives; violations are
  kept in `server.violations` and fail the test that caused them (the `standin` fixture);
- the stand-in then answers with OpenSearch's semantics, and refuses what OpenSearch refuses:
  index APIs   PUT/HEAD/GET/DELETE /INDEX (comma lists for DELETE), GET /INDEX/_mapping,
               POST /INDEX/_refresh, GET /INDEX/_count; mappings with `fields` sub-fields
               (`title.raw`), `dynamic` (true/false/strict), dynamic templates; unknown field types,
               knn_vector / method parameters and index settings are refused
  documents    POST /_bulk, /INDEX/_bulk (index/create/update/delete; per-item results, `errors`,
               429 rejections; auto-created indices, auto ids), POST /INDEX/_doc, GET /INDEX/_doc/ID,
               POST /INDEX/_delete_by_query; values are checked against the field types
  search       POST /INDEX/_search with `knn` (vector + one of k / min_score / max_distance; `filter`
               inside = efficient filtering: the top k among the matches), `bool` (a `must` k-NN runs
               over all documents before `filter`: post-filtering, fewer than k hits), `dis_max`,
               `hybrid` (through a search pipeline's normalization or score-ranker processor),
               `match`, `term`, `terms`, `ids`, `match_all`, `_source` includes/excludes; `sort` on
               keyword fields (`[{"FIELD": "asc"|"desc"}]`, hits carry `sort`, `_score` null) with
               `search_after` (paging past the 10,000-hit `from + size` window, which is refused)
  pipelines    PUT/GET/DELETE /_search/pipeline/ID, GET /_search/pipeline
  ml-commons   connectors, remote models, ingest pipelines (`text_image_embedding`), PUT /INDEX/_mapping
               and `neural` queries, with connectors executed against a real model server
               (tests/standins/ml_commons_standin.py)
Scores per engine + space type as documented (knn-spaces). References: docs.opensearch.org
.../vector-search/ (knn_vector, spaces, filtering), .../vector-search/ai-search/hybrid-search/,
.../search-plugins/search-pipelines/normalization-processor/, .../api-reference/document-apis/bulk/.

`OpenSearchStandIn(aoss=True)` behaves as an Amazon OpenSearch Serverless *vector search*
collection: requests must be SigV4-signed for service `aoss` with an `x-amz-content-sha256` header,
documents get server-generated ids (an `_id` in index/create is refused), and the index settings
that Serverless manages (shards, replicas) are refused (see docs/search.md for the AWS sources).

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
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote

ENGINES = {
    "faiss": {"l2", "innerproduct", "cosinesimil"},
    "lucene": {"l2", "innerproduct", "cosinesimil"},
    "nmslib": {"l2", "innerproduct", "cosinesimil", "l1", "linf"},
}
MAX_RESULT_WINDOW = 10000  # index.max_result_window's default
INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-.+]*$")
# Field types of OpenSearch's mappings (docs: mappings/supported-field-types); others are refused.
FIELD_TYPES = {"binary", "boolean", "byte", "short", "integer", "long", "unsigned_long", "float", "double",
               "half_float", "scaled_float", "date", "date_nanos", "keyword", "text", "match_only_text",
               "wildcard", "constant_keyword", "object", "nested", "flat_object", "ip", "geo_point", "geo_shape",
               "knn_vector", "rank_feature", "rank_features", "completion", "search_as_you_type", "token_count",
               "alias", "join", "percolator", "version", "sparse_vector", "semantic"}
NUMERIC = {"byte", "short", "integer", "long", "unsigned_long", "float", "double", "half_float", "scaled_float"}
KNN_VECTOR_KEYS = {"type", "dimension", "method", "space_type", "data_type", "mode", "compression_level",
                   "model_id", "doc_values", "store"}
METHOD_KEYS = {"name", "engine", "space_type", "parameters"}
HNSW_KEYS = {"m", "ef_construction", "ef_search", "encoder"}
# Index settings the stand-in knows, with their value checks (a real cluster knows more; it refuses
# values of the wrong type, and unknown settings, the same way: illegal_argument_exception).
def _int_setting(minimum):
    def check(value):
        try:
            return not isinstance(value, bool) and int(str(value)) >= minimum
        except ValueError:
            return False
    return check
def _bool_setting(value):
    return value in (True, False, "true", "false")
INDEX_SETTINGS = {"knn": _bool_setting, "number_of_shards": _int_setting(1), "number_of_replicas": _int_setting(0),
                  "refresh_interval": lambda v: isinstance(v, str) and re.fullmatch(r"-1|\d+(ms|s|m|h)?", v) is not None,
                  "knn.algo_param.ef_search": _int_setting(2)}
AOSS_MANAGED_SETTINGS = {"number_of_shards", "number_of_replicas", "refresh_interval"}


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


def _flatten_settings(settings: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_settings(value, name + "."))
        else:
            out[name] = value
    return out


class Index:
    def __init__(self, name: str, body: dict, aoss: bool = False):
        self.name = name
        self.ml = None  # the server's ml-commons, for `neural` queries
        self.docs: dict[str, dict] = {}
        self.versions: dict[str, int] = {}
        self.visible: dict[str, dict] = {}  # what searches see: refreshed state
        if not isinstance(body, dict) or set(body) - {"settings", "mappings", "aliases"}:
            raise _bad(f"unknown key in index creation body: {sorted(set(body) - {'settings', 'mappings', 'aliases'})}")
        settings = _flatten_settings(body.get("settings") or {})
        settings = {key[len("index."):] if key.startswith("index.") else key: value for key, value in settings.items()}
        for key, value in settings.items():
            if key not in INDEX_SETTINGS:
                raise _bad(f"unknown setting [index.{key}] please check that any required plugins are installed",
                           "illegal_argument_exception")
            if aoss and key in AOSS_MANAGED_SETTINGS:
                raise _bad(f"setting [index.{key}] is managed by OpenSearch Serverless and cannot be set",
                           "illegal_argument_exception")
            if not INDEX_SETTINGS[key](value):
                raise _bad(f"Failed to parse value [{value}] for setting [index.{key}]", "illegal_argument_exception")
        self.knn = settings.get("knn") in (True, "true")
        mappings = body.get("mappings", {})
        unknown = set(mappings) - {"properties", "_meta", "dynamic", "dynamic_templates", "_source"}
        if unknown:
            raise _bad(f"Root mapping definition has unsupported parameters: {sorted(unknown)}", "mapper_parsing_exception")
        if mappings.get("dynamic", True) not in (True, False, "true", "false", "strict"):
            raise _bad(f"Could not convert [dynamic] to boolean: [{mappings['dynamic']}]", "mapper_parsing_exception")
        self.mappings = json.loads(json.dumps(mappings))
        self.mappings.setdefault("properties", {})
        self.vectors: dict[str, dict] = {}
        self._check_properties(self.mappings["properties"], "")
        if self.vectors and not self.knn:
            raise _bad("knn_vector fields need index.knn: true for approximate search",
                       "mapper_parsing_exception")

    # --- mappings ----------------------------------------------------------------------------
    def _check_properties(self, properties: dict, prefix: str) -> None:
        for field, spec in properties.items():
            path = prefix + field
            if not isinstance(spec, dict):
                raise _bad(f"Expected map for property [fields] on field [{path}]", "mapper_parsing_exception")
            kind = spec.get("type", "object" if "properties" in spec else None)
            if kind is None:
                raise _bad(f"No type specified for field [{path}]", "mapper_parsing_exception")
            if kind not in FIELD_TYPES:
                raise _bad(f"No handler for type [{kind}] declared on field [{path}]", "mapper_parsing_exception")
            if kind == "knn_vector":
                self.vectors[path] = self._check_vector_field(path, spec)
            if kind in ("object", "nested"):
                self._check_properties(spec.get("properties", {}), path + ".")
            for sub, sub_spec in (spec.get("fields") or {}).items():
                sub_kind = sub_spec.get("type") if isinstance(sub_spec, dict) else None
                if sub_kind not in FIELD_TYPES or sub_kind in ("object", "nested", "knn_vector"):
                    raise _bad(f"No handler for type [{sub_kind}] declared on field [{path}.{sub}]",
                               "mapper_parsing_exception")

    @staticmethod
    def _check_vector_field(field: str, spec: dict) -> dict:
        unknown = set(spec) - KNN_VECTOR_KEYS
        if unknown:
            raise _bad(f"Mapping definition for [{field}] has unsupported parameters: {sorted(unknown)}",
                       "mapper_parsing_exception")
        dimension = spec.get("dimension")
        if isinstance(dimension, bool) or not isinstance(dimension, int) or not 1 <= dimension <= 16000:
            raise _bad(f"[dimension] for field [{field}] must be an integer in [1, 16000]", "mapper_parsing_exception")
        method = spec.get("method")
        if method is None:  # the documented defaults: faiss HNSW, l2 (or the field's space_type)
            method = {"name": "hnsw", "engine": "faiss", "space_type": spec.get("space_type", "l2")}
        if not isinstance(method, dict) or set(method) - METHOD_KEYS:
            raise _bad(f"field [{field}]: method has unsupported parameters: {sorted(set(method) - METHOD_KEYS)}",
                       "mapper_parsing_exception")
        if method.get("name") != "hnsw":
            raise _bad(f"field [{field}]: method [{method.get('name')}] is not hnsw", "mapper_parsing_exception")
        engine = method.get("engine", "faiss")
        space = method.get("space_type", spec.get("space_type", "l2"))
        if engine not in ENGINES:
            raise _bad(f"field [{field}]: invalid engine [{engine}]", "mapper_parsing_exception")
        if space not in ENGINES[engine]:
            raise _bad(f"field [{field}]: engine [{engine}] does not support space [{space}]", "mapper_parsing_exception")
        params = method.get("parameters", {})
        for key, value in params.items():
            if key not in HNSW_KEYS:
                raise _bad(f"field [{field}]: unknown hnsw parameter [{key}]", "mapper_parsing_exception")
            if key in {"m", "ef_construction", "ef_search"} and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
                raise _bad(f"field [{field}]: hnsw parameter [{key}] must be an integer >= 2", "mapper_parsing_exception")
        return {"dimension": dimension, "engine": engine, "space": space}

    def field(self, dotted: str) -> tuple[str, dict | None]:
        """(the source path, the field's mapping) of a field name, sub-fields (`title.raw`) included."""
        properties, parts, source = self.mappings["properties"], dotted.split("."), []
        spec = None
        for position, part in enumerate(parts):
            if properties is not None and part in properties:
                spec = properties[part]
                source.append(part)
                properties = spec.get("properties")
            elif spec is not None and part in (spec.get("fields") or {}) and position == len(parts) - 1:
                return ".".join(source), spec["fields"][part]
            else:
                return dotted, None
        return ".".join(source), spec

    # --- documents ---------------------------------------------------------------------------
    def validate_doc(self, source: dict) -> dict:
        """Check a document against the mapping; returns the mappings that dynamic mapping adds."""
        if not isinstance(source, dict):
            raise _bad("document must be a JSON object", "mapper_parsing_exception")
        added: dict = {}
        self._validate_object(source, self.mappings["properties"], "", self.mappings.get("dynamic", True), added)
        return added

    def _validate_object(self, source: dict, properties: dict, prefix: str, dynamic, added: dict) -> None:
        for key, value in source.items():
            path = prefix + key
            spec = properties.get(key)
            if spec is None:
                if dynamic == "strict":
                    raise _bad(f"mapping set to strict, dynamic introduction of [{key}] within [{prefix[:-1] or '_doc'}] "
                               "is not allowed", "strict_dynamic_mapping_exception")
                if dynamic in (False, "false") or value is None:
                    continue
                spec = self._dynamic_mapping(path, value)
                added[path] = spec
                if spec.get("type") == "object":
                    self._validate_object(value, {}, path + ".", dynamic, added)
                continue
            kind = spec.get("type", "object")
            if kind in ("object", "nested"):
                if value is None:
                    continue
                if not isinstance(value, dict):
                    raise _bad(f"object mapping for [{path}] tried to parse field [{key}] as object, but found a "
                               "concrete value", "mapper_parsing_exception")
                self._validate_object(value, spec.setdefault("properties", {}), path + ".",
                                      spec.get("dynamic", dynamic), added)
            elif kind == "knn_vector":
                self._validate_vector(path, value)
            else:
                for item in value if isinstance(value, list) else [value]:
                    if item is not None and not _fits(kind, item):
                        raise _bad(f"failed to parse field [{path}] of type [{kind}] in document", "mapper_parsing_exception")

    def _dynamic_mapping(self, path: str, value) -> dict:
        kind = ("boolean" if isinstance(value, bool) else "long" if isinstance(value, int) else
                "float" if isinstance(value, float) else "object" if isinstance(value, dict) else "string")
        if isinstance(value, list):
            first = next((v for v in value if v is not None), "")
            return self._dynamic_mapping(path, first)
        for template in self.mappings.get("dynamic_templates", []):
            (_, rule), = template.items()
            if "path_match" in rule and not re.fullmatch(re.escape(rule["path_match"]).replace(r"\*", ".*"), path):
                continue
            if "match" in rule and not re.fullmatch(re.escape(rule["match"]).replace(r"\*", ".*"), path.rsplit(".", 1)[-1]):
                continue
            if rule.get("match_mapping_type", "*") not in ("*", kind, "double" if kind == "float" else kind):
                continue
            return dict(rule["mapping"])
        if kind == "string":
            return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
        return {"type": kind} if kind != "object" else {"type": "object", "properties": {}}

    def _apply_dynamic(self, added: dict) -> None:
        for path in sorted(added, key=lambda p: p.count(".")):
            properties = self.mappings["properties"]
            *parents, leaf = path.split(".")
            for parent in parents:
                properties = properties.setdefault(parent, {"type": "object"}).setdefault("properties", {})
            properties.setdefault(leaf, added[path])

    def _validate_vector(self, field: str, vector) -> None:
        spec = self.vectors[field]
        if vector is None:
            return
        if not isinstance(vector, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vector):
            raise _bad(f"failed to parse field [{field}] of type [knn_vector]", "mapper_parsing_exception")
        if len(vector) != spec["dimension"]:
            raise _bad(f"Vector dimension mismatch. Expected: {spec['dimension']}, Given: {len(vector)}",
                       "mapper_parsing_exception")
        if not all(math.isfinite(v) for v in vector):
            raise _bad(f"KNN vector values cannot be NaN or Infinity for field [{field}]", "mapper_parsing_exception")

    def put(self, doc_id: str, source: dict) -> tuple[str, int, int]:
        added = self.validate_doc(source)
        self._apply_dynamic(added)
        existed = doc_id in self.docs
        self.docs[doc_id] = source
        self.versions[doc_id] = self.versions.get(doc_id, 0) + 1
        return ("updated", 200, self.versions[doc_id]) if existed else ("created", 201, self.versions[doc_id])

    def refresh(self):
        self.visible = dict(self.docs)

    # --- search ------------------------------------------------------------------------------
    def search(self, body: dict, pipeline: dict | None = None) -> dict:
        allowed = {"size", "query", "_source", "from", "track_total_hits", "min_score", "sort", "search_after"}
        unknown = set(body) - allowed
        if unknown:
            raise _bad(f"Unknown key for a START_OBJECT in [{sorted(unknown)[0]}].")
        size, start = body.get("size", 10), body.get("from", 0)
        for name, value in (("size", size), ("from", start)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _bad(f"[{name}] must be a non-negative integer, found [{value}]", "illegal_argument_exception")
        query = body.get("query", {"match_all": {}})
        if isinstance(query, dict) and "hybrid" in query:
            scores = self._hybrid(query["hybrid"], set(self.visible), pipeline)
        else:
            scores = self.evaluate(query, set(self.visible))
        if body.get("min_score") is not None:
            scores = {d: s for d, s in scores.items() if s >= body["min_score"]}
        if start + size > MAX_RESULT_WINDOW:
            raise _bad(f"Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}] "
                       f"but was [{start + size}]. See the scroll api for a more efficient way to request large data "
                       "sets.", "illegal_argument_exception")
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        total = len(ranked)
        sort_keys = None
        if "sort" in body:
            ranked, sort_keys = self._sorted(ranked, body["sort"], body.get("search_after"))
        elif "search_after" in body:
            raise _bad("Sort must contain at least one field.", "action_request_validation_exception")
        hits = [{"_index": self.name, "_id": doc_id, "_score": None if sort_keys else score,
                 **({} if body.get("_source", True) is False else
                    {"_source": _filter_source(self.visible[doc_id], body.get("_source", True))}),
                 **({"sort": sort_keys[doc_id]} if sort_keys else {})}
                for doc_id, score in ranked[start:start + size]]
        return {"took": 1, "timed_out": False,
                "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                "hits": {"total": {"value": total, "relation": "eq"},
                         "max_score": None if sort_keys else (ranked[0][1] if ranked else None), "hits": hits}}

    def _sorted(self, ranked: list, sort, after):
        """`sort` on one keyword field (the form paging by search_after uses), then `search_after`."""
        specs = sort if isinstance(sort, list) else [sort]
        if len(specs) != 1:
            raise _bad("the stand-in sorts on one field", "illegal_argument_exception")
        spec = specs[0]
        field, order = (spec, "asc") if isinstance(spec, str) else next(iter(spec.items()))
        order = order.get("order", "asc") if isinstance(order, dict) else order
        kind = (self.field(field)[1] or {}).get("type")
        if kind != "keyword":
            raise _bad(f"Text fields are not optimised for operations that require per-document field data like "
                       f"aggregations and sorting [{field}]" if kind == "text" else
                       f"No mapping found for [{field}] in order to sort on", "illegal_argument_exception")
        keys = {doc_id: min((str(v) for v in self._values(doc_id, field)), default=None) for doc_id, _ in ranked}
        ranked = sorted((item for item in ranked if keys[item[0]] is not None), key=lambda item: keys[item[0]],
                        reverse=order == "desc")
        if after is not None:
            if not isinstance(after, list) or len(after) != 1:
                raise _bad("search_after has 1 value(s) but sort has 1.", "illegal_argument_exception")
            if order == "desc":
                ranked = [item for item in ranked if keys[item[0]] < str(after[0])]
            else:
                ranked = [item for item in ranked if keys[item[0]] > str(after[0])]
        return ranked, {doc_id: [keys[doc_id]] for doc_id, _ in ranked}

    def _hybrid(self, spec: dict, candidates: set, pipeline: dict | None) -> dict[str, float]:
        """neural-search's hybrid query: each sub-query runs on its own; the search pipeline's
        phase-results processor normalizes and combines the scores."""
        unknown = set(spec) - {"queries", "pagination_depth", "filter", "boost"}
        if unknown or not isinstance(spec.get("queries"), list) or not 1 <= len(spec["queries"]) <= 5:
            raise _bad("[hybrid] query needs [queries], a list of 1 to 5 queries")
        pool = set(self.evaluate(spec["filter"], candidates)) if "filter" in spec else candidates
        results = [self.evaluate(sub, pool) for sub in spec["queries"]]
        processor = _phase_processor(pipeline)
        if processor is None:
            # No normalization processor: OpenSearch runs the query but its scores are not combined
            # as documented; the stand-in answers with the best raw sub-query score.
            out: dict[str, float] = {}
            for result in results:
                for doc_id, score in result.items():
                    out[doc_id] = max(out.get(doc_id, 0.0), score)
            return out
        kind, config = processor
        combination = config.get("combination", {})
        if kind == "score-ranker-processor":
            constant = combination.get("rank_constant", 60)
            out = {}
            for result in results:
                for rank, (doc_id, _) in enumerate(sorted(result.items(), key=lambda i: (-i[1], i[0])), start=1):
                    out[doc_id] = out.get(doc_id, 0.0) + 1.0 / (constant + rank)
            return out
        technique = config.get("normalization", {}).get("technique", "min_max")
        normalized = []
        for result in results:
            values = list(result.values())
            if technique == "min_max":
                low, high = (min(values), max(values)) if values else (0.0, 0.0)
                normalized.append({d: (s - low) / (high - low) if high > low else 1.0 for d, s in result.items()})
            else:  # l2
                norm = math.sqrt(sum(v * v for v in values)) or 1.0
                normalized.append({d: s / norm for d, s in result.items()})
        weights = combination.get("parameters", {}).get("weights") or [1.0] * len(results)
        if len(weights) != len(results):
            raise _bad(f"number of weights [{len(weights)}] must match number of sub-queries [{len(results)}] "
                       "in hybrid query", "illegal_argument_exception")
        out = {}
        for doc_id in set().union(*normalized):
            out[doc_id] = sum(w * n.get(doc_id, 0.0) for w, n in zip(weights, normalized, strict=True)) / sum(weights)
        return out

    def evaluate(self, query: dict, candidates: set) -> dict[str, float]:
        """doc id -> score for the docs (among candidates) matching `query`."""
        if not isinstance(query, dict) or len(query) != 1:
            raise _bad("query malformed, must start with a single query name")
        (kind, spec), = query.items()
        if not isinstance(spec, dict):
            raise _bad(f"[{kind}] query malformed, no start_object after query name")
        if kind == "match_all":
            return {doc_id: 1.0 for doc_id in candidates}
        if kind == "knn":
            return self._knn(spec, candidates)
        if kind == "neural":
            from tests.standins.ml_commons_standin import neural_to_knn

            return self._knn(neural_to_knn(spec, self.ml), candidates)
        if kind == "bool":
            return self._bool(spec, candidates)
        if kind == "hybrid":
            raise _bad("[hybrid] query must be a top level query and cannot be wrapped into other queries",
                       "illegal_argument_exception")
        if kind == "ids":
            values = spec.get("values")
            if not isinstance(values, list):
                raise _bad("[ids] query needs a [values] array")
            return {d: 1.0 for d in candidates if d in {str(v) for v in values}}
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
            fields = [(f, v) for f, v in spec.items() if f != "boost"]
            if len(fields) != 1:
                raise _bad(f"[{kind}] query requires exactly one field")
            (field, value), = fields
            if kind == "term":
                if isinstance(value, dict):
                    value = value.get("value")
                if isinstance(value, (list, dict)) or value is None:
                    raise _bad("[term] query does not support array of values" if isinstance(value, list)
                               else "[term] query malformed: needs a value")
                values = [value]
            else:
                values = value
                if not isinstance(values, list):
                    raise _bad("[terms] query does not support [" + field + "] with a value that is not an array")
                if any(isinstance(v, (list, dict)) for v in values):
                    raise _bad("[terms] query values must be scalars")
            return {d: 1.0 for d in candidates if self._matches(d, field, values)}
        if kind == "match":
            fields = [(f, v) for f, v in spec.items()]
            if len(fields) != 1:
                raise _bad("[match] query doesn't support multiple fields")
            (field, value), = fields
            text = value.get("query") if isinstance(value, dict) else value
            if isinstance(text, (list, dict)) or text is None:
                raise _bad("[match] unknown token [START_ARRAY]" if isinstance(text, list) else "[match] needs a query")
            terms = set(re.findall(r"\w+", str(text).lower()))
            out = {}
            for doc_id in candidates:
                words = re.findall(r"\w+", " ".join(str(v) for v in self._values(doc_id, field)).lower())
                score = sum(1.0 for word in words if word in terms)
                if score:
                    out[doc_id] = score
            return out
        raise _bad(f"unknown query [{kind}]", "parsing_exception")

    def _values(self, doc_id: str, field: str) -> list:
        """The indexed values of a field: through sub-fields, with `ignore_above` applied."""
        if field == "_id":
            return [doc_id]
        source_path, spec = self.field(field)
        value = _get(self.visible[doc_id], source_path)
        values = value if isinstance(value, list) else [value]
        values = [v for v in values if v is not None]
        if spec is not None and spec.get("type") == "keyword" and "ignore_above" in spec:
            values = [v for v in values if len(str(v)) <= spec["ignore_above"]]
        return values

    def _matches(self, doc_id: str, field: str, wanted: list) -> bool:
        spec = self.field(field)[1]
        kind = spec.get("type") if spec else None
        values = self._values(doc_id, field)
        if kind == "text":  # a term query on a text field matches a token of the analysed text
            tokens = {t for v in values for t in re.findall(r"\w+", str(v).lower())}
            return any(str(w) in tokens for w in wanted)
        if kind in NUMERIC:
            numbers = set()
            for w in wanted:
                try:
                    numbers.add(float(w))
                except (TypeError, ValueError):
                    raise _bad(f"failed to create query: For input string: \"{w}\"", "query_shard_exception") from None
            return any(float(v) in numbers for v in values if _fits(kind, v))
        if kind == "boolean":
            return any(str(v).lower() in {str(w).lower() for w in wanted} for v in values)
        return any(_as_term(v) in {_as_term(w) for w in wanted} for v in values)

    def _bool(self, spec: dict, candidates: set) -> dict[str, float]:
        unknown = set(spec) - {"must", "should", "filter", "must_not", "minimum_should_match", "boost"}
        if unknown:
            raise _bad(f"[bool] query does not support [{sorted(unknown)[0]}]")
        listed = {key: spec[key] if isinstance(spec.get(key), list) else [spec[key]] for key in spec
                  if key in ("must", "should", "filter", "must_not")}
        # Scoring clauses run over all candidates, then the filters intersect: a k-NN query under
        # `must` or `should` finds its k neighbours among *all* documents and the filter drops
        # those that do not match (post-filtering), as in OpenSearch.
        pool = set(candidates)
        for clause in listed.get("filter", []):
            pool &= set(self.evaluate(clause, candidates))
        for clause in listed.get("must_not", []):
            pool -= set(self.evaluate(clause, candidates))
        scores = {doc_id: 0.0 for doc_id in pool}
        for clause in listed.get("must", []):
            matched = self.evaluate(clause, candidates)
            scores = {d: s + matched[d] for d, s in scores.items() if d in matched}
        should_hits: dict[str, int] = {}
        for clause in listed.get("should", []):
            for doc_id, score in self.evaluate(clause, candidates).items():
                if doc_id in scores:
                    scores[doc_id] += score
                    should_hits[doc_id] = should_hits.get(doc_id, 0) + 1
        minimum = spec.get("minimum_should_match", 0 if (listed.get("must") or listed.get("filter")) else 1)
        if listed.get("should") and minimum:
            scores = {d: s for d, s in scores.items() if should_hits.get(d, 0) >= int(minimum)}
        return scores

    def _knn(self, spec: dict, candidates: set) -> dict[str, float]:
        if len(spec) != 1:
            raise _bad("[knn] query must name exactly one field")
        (field, params), = spec.items()
        if field not in self.vectors:
            raise _bad(f"Field '{field}' is not knn_vector type.", "illegal_argument_exception")
        if not isinstance(params, dict):
            raise _bad("[knn] malformed query, expected an object")
        unknown = set(params) - {"vector", "k", "min_score", "max_distance", "filter", "boost", "method_parameters",
                                 "expand_nested_docs", "rescore", "_name"}
        if unknown:
            raise _bad(f"[knn] unknown token [{sorted(unknown)[0]}]")
        vector = params.get("vector")
        dimension = self.vectors[field]["dimension"]
        if not isinstance(vector, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vector):
            raise _bad("[knn] field [vector] requires an array of numbers", "parsing_exception")
        if len(vector) != dimension:
            raise _bad(f"Query vector has invalid dimension: {len(vector)}. Dimension should be: {dimension}",
                       "illegal_argument_exception")
        modes = [key for key in ("k", "min_score", "max_distance") if key in params]
        if len(modes) != 1:
            raise _bad("[knn] requires exactly one of k, distance or score to be set", "illegal_argument_exception")
        k = params.get("k")
        if "k" in params and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10000):
            raise _bad("[knn] requires k to be an integer in [1, 10000]", "illegal_argument_exception")
        for key in ("min_score", "max_distance"):
            if key in params and (isinstance(params[key], bool) or not isinstance(params[key], (int, float))):
                raise _bad(f"[knn] [{key}] must be a number", "parsing_exception")
        pool = candidates
        if "filter" in params:
            if self.vectors[field]["engine"] == "nmslib":
                raise _bad("Engine [NMSLIB] does not support filters", "illegal_argument_exception")
            pool = set(self.evaluate(params["filter"], candidates))
        engine, space = self.vectors[field]["engine"], self.vectors[field]["space"]
        scored = []
        for doc_id in pool:
            stored = _get(self.visible[doc_id], field)
            if stored is None:
                continue
            dot = sum(a * b for a, b in zip(vector, stored, strict=True))
            sq = sum((a - b) ** 2 for a, b in zip(vector, stored, strict=True))
            if space == "cosinesimil":
                norms = math.sqrt(sum(a * a for a in vector)) * math.sqrt(sum(b * b for b in stored))
                dot = dot / norms if norms else 0.0
            score = _score(dot, sq, engine, space)
            if "min_score" in params and score < params["min_score"]:
                continue
            if "max_distance" in params and _distance(dot, sq, space) > params["max_distance"]:
                continue
            scored.append((doc_id, score))
        scored.sort(key=lambda item: (-item[1], item[0]))
        if "k" in params:
            scored = scored[:k]
        boost = params.get("boost", 1.0)
        return {doc_id: score * boost for doc_id, score in scored}


def _distance(dot: float, sq: float, space: str) -> float:
    """The engine's raw distance for radial search: squared L2 for l2, the negated dot product for
    innerproduct, 1 - cos for cosinesimil (docs: vector-search/specialized-operations/radial-search-knn)."""
    return {"l2": sq, "innerproduct": -dot, "cosinesimil": 1.0 - dot}.get(space, sq)


def _fits(kind: str, value) -> bool:
    """Whether OpenSearch accepts `value` (one value, not an array) for a field of type `kind`."""
    if isinstance(value, dict):
        return kind in ("flat_object", "geo_point", "geo_shape", "join", "completion", "rank_features")
    if kind in NUMERIC:
        if isinstance(value, bool):
            return False
        if isinstance(value, (int, float)):
            return True
        try:
            float(str(value))
            return True
        except ValueError:
            return False
    if kind == "boolean":
        return value in (True, False, "true", "false", "")
    return True


def _as_term(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _phase_processor(pipeline: dict | None):
    for processor in (pipeline or {}).get("phase_results_processors", []):
        (kind, config), = processor.items()
        return kind, config
    return None


def check_pipeline(body: dict) -> None:
    """What the neural-search plugin refuses in a search pipeline's phase-results processors."""
    if not isinstance(body, dict):
        raise _bad("search pipeline must be an object")
    unknown = set(body) - {"description", "request_processors", "response_processors", "phase_results_processors", "version"}
    if unknown:
        raise _bad(f"unknown key [{sorted(unknown)[0]}] in search pipeline", "illegal_argument_exception")
    for processor in body.get("phase_results_processors", []):
        if not isinstance(processor, dict) or len(processor) != 1:
            raise _bad("a processor must name exactly one processor type", "illegal_argument_exception")
        (kind, config), = processor.items()
        if kind == "normalization-processor":
            technique = config.get("normalization", {}).get("technique", "min_max")
            combination = config.get("combination", {}).get("technique", "arithmetic_mean")
            if technique not in ("min_max", "l2"):
                raise _bad(f"provided normalization technique [{technique}] is not supported", "illegal_argument_exception")
            if combination != "arithmetic_mean":
                raise _bad(f"combination technique [{combination}] is not modelled by the stand-in (OpenSearch also "
                           "has geometric_mean, harmonic_mean)", "illegal_argument_exception")
            weights = config.get("combination", {}).get("parameters", {}).get("weights")
            if weights is not None and (not all(isinstance(w, (int, float)) and w >= 0 for w in weights)
                                        or abs(sum(weights) - 1.0) > 1e-4):
                raise _bad("sum of weights for combination must be equal to 1.0", "illegal_argument_exception")
        elif kind == "score-ranker-processor":
            combination = config.get("combination", {})
            if combination.get("technique", "rrf") != "rrf":
                raise _bad(f"provided combination technique [{combination.get('technique')}] is not supported",
                           "illegal_argument_exception")
            constant = combination.get("rank_constant", 60)
            if isinstance(constant, bool) or not isinstance(constant, int) or constant < 1:
                raise _bad("rank_constant must be an integer >= 1", "illegal_argument_exception")
        else:
            raise _bad(f"Invalid processor type {kind}", "illegal_argument_exception")


def _get(source: dict, dotted: str):
    value = source
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _filter_source(source: dict, spec):
    if spec is True:
        return source
    includes = spec.get("includes") if isinstance(spec, dict) else spec
    excludes = spec.get("excludes", []) if isinstance(spec, dict) else []
    includes = [includes] if isinstance(includes, str) else includes
    out = {k: v for k, v in source.items() if not includes or k in includes}
    return {k: v for k, v in out.items() if k not in excludes}


class OpenSearchStandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0, credentials: tuple[str, str] | None = None, tls: tuple[str, str] | None = None,
                 aoss: bool = False, spec=True, host: str = "127.0.0.1"):
        # host: loopback, unless a test's containers must reach it (the Docker network's gateway).
        super().__init__((host, port), _Handler)
        self.scheme = "http"
        if tls is not None:  # (certfile, keyfile): serve HTTPS like a secured cluster
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.socket = context.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"
        self.indices: dict[str, Index] = {}
        self.pipelines: dict[str, dict] = {}
        from tests.standins.ml_commons_standin import MLCommons

        self.ml = MLCommons()  # ml-commons + neural-search: connectors, models, ingest pipelines
        self.lock = threading.Lock()
        self.credentials = credentials
        self.aoss = aoss
        self.faults: dict = {}
        # method, path, query, headers and body (decompressed, as text) of every request
        self.requests: list[dict] = []
        if spec is True:
            from tests.standins.opensearch_spec import load

            spec = load()
        self.spec = spec or None
        self.violations: list[str] = []  # requests / answers the API specification does not allow
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.server_address[0]}:{self.server_address[1]}"

    def start(self) -> "OpenSearchStandIn":
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def take_violations(self) -> list[str]:
        """The spec violations seen so far (and forget them): for tests that send bad requests on purpose."""
        found, self.violations[:] = list(self.violations), []
        return found

    def bodies(self, method: str, path_suffix: str) -> list:
        """The JSON bodies of the recorded requests with this method whose path ends with `path_suffix`."""
        return [json.loads(r["body"]) for r in self.requests
                if r["method"] == method and r["path"].endswith(path_suffix) and r["body"]]


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
        parts = [unquote(p) for p in path.split("/") if p]
        self.server.requests.append({"method": self.command, "path": path, "query": query,
                                     "headers": {k.lower(): v for k, v in self.headers.items()},  # case-insensitive
                                     "body": raw.decode("utf-8", "replace")})
        spec, operation = self.server.spec, None
        if spec is not None:
            from tests.standins.opensearch_spec import SpecViolation

            try:
                operation = spec.check_request(self.command, path, query, raw, self.headers.get("Content-Type", ""))
            except SpecViolation as violation:
                self.server.violations.append(f"request: {violation}")
        try:
            self._authorise(raw)
            with self.server.lock:
                try:
                    status, body = self._route(parts, raw, dict(parse_qsl(query, keep_blank_values=True)))
                finally:
                    if self.server.aoss:  # a collection makes writes searchable without _refresh calls
                        for index in self.server.indices.values():
                            index.refresh()
        except OpenSearchError as error:
            status, body = error.status, error.body()
        except Exception as error:  # a bug in the stand-in or a request shape it did not foresee
            status, body = 500, OpenSearchError(500, "stand_in_exception", repr(error)).body()
        if operation is not None:
            for problem in spec.check_response(operation, status, body):
                self.server.violations.append(f"answer {status} to {self.command} {path} ({operation}): {problem}")
        self._send(status, body)

    def _authorise(self, raw: bytes):
        if self.server.aoss:
            # Serverless takes SigV4 for service `aoss` only, and the signed payload hash header.
            header = self.headers.get("Authorization", "")
            if not header.startswith("AWS4-HMAC-SHA256 ") or "/aoss/aws4_request" not in header:
                raise OpenSearchError(403, "security_exception", "requests to a collection must be SigV4-signed "
                                      "for service aoss")
            if not self.headers.get("x-amz-content-sha256"):
                raise OpenSearchError(403, "security_exception", "x-amz-content-sha256 header is required")
        if self.server.credentials is None:
            return
        header = self.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(":".join(self.server.credentials).encode()).decode()
        if header != expected:
            raise OpenSearchError(401, "security_exception", "Unauthorized")

    def _json(self, raw: bytes):
        if not raw:
            return {}
        content_type = self.headers.get("Content-Type", "")
        if "json" not in content_type:
            raise OpenSearchError(406, "content_type_exception",
                                  f"Content-Type header [{content_type}] is not supported")
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise _bad(f"Failed to parse request body: {error.msg}", "json_parse_exception") from error

    def _index(self, name: str) -> Index:
        index = self.server.indices.get(name)
        if index is None:
            raise OpenSearchError(404, "index_not_found_exception", f"no such index [{name}]")
        return index

    def _create_index(self, name: str, body) -> Index:
        if not INDEX_NAME.match(name):
            raise _bad(f"Invalid index name [{name}], must be lowercase", "invalid_index_name_exception")
        if name in self.server.indices:
            raise _bad(f"index [{name}/uuid] already exists", "resource_already_exists_exception")
        index = self.server.indices[name] = Index(name, body, aoss=self.server.aoss)
        index.ml = self.server.ml
        return index

    @staticmethod
    def _refresh_requested(query: dict) -> bool:
        return query.get("refresh") in ("", "true", "wait_for")

    def _route(self, parts, raw, query):
        method = self.command
        if not parts:
            return 200, {"name": "standin", "cluster_name": "clip-search-standin", "cluster_uuid": "standin",
                         "version": {"distribution": "opensearch", "number": "2.19.0", "build_type": "tar",
                                     "build_hash": "standin", "build_date": "2025-01-01T00:00:00Z",
                                     "build_snapshot": False, "lucene_version": "9.12.0",
                                     "minimum_wire_compatibility_version": "7.10.0",
                                     "minimum_index_compatibility_version": "7.0.0"},
                         "tagline": "The OpenSearch Project: https://opensearch.org/"}
        handled = self._ml_route(parts, raw)
        if handled is not None:
            return handled
        if parts == ["_bulk"] and method in ("POST", "PUT"):
            return self._bulk(raw, None, query)
        if parts[:2] == ["_search", "pipeline"]:
            return self._pipeline(parts[2:], raw)
        name = parts[0]
        if len(parts) == 1:
            if method == "HEAD":
                return (200 if name in self.server.indices else 404), None
            if method == "PUT":
                self._create_index(name, self._json(raw))
                return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}
            if method == "DELETE":
                names = name.split(",")
                for each in names:
                    self._index(each)
                for each in names:
                    del self.server.indices[each]
                return 200, {"acknowledged": True}
            if method == "GET":
                index = self._index(name)
                return 200, {name: {"aliases": {}, "mappings": index.mappings,
                                    "settings": {"index": {"knn": str(index.knn).lower()}}}}
        index_parts = parts[1:]
        if index_parts == ["_mapping"] and method == "GET":
            return 200, {name: {"mappings": self._index(name).mappings}}
        if index_parts == ["_refresh"] and method in ("POST", "GET"):
            self._index(name).refresh()
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if index_parts == ["_count"] and method in ("GET", "POST"):
            index = self._index(name)
            body = self._json(raw)
            matched = index.evaluate(body["query"], set(index.visible)) if body.get("query") else index.visible
            return 200, {"count": len(matched), "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}
        if index_parts == ["_search"] and method in ("GET", "POST"):
            pipeline = None
            if query.get("search_pipeline"):
                pipeline = self.server.pipelines.get(query["search_pipeline"])
                if pipeline is None:
                    raise _bad(f"Pipeline {query['search_pipeline']} is not defined", "illegal_argument_exception")
            return 200, self._index(name).search(self._json(raw), pipeline)
        if index_parts == ["_bulk"] and method in ("POST", "PUT"):
            return self._bulk(raw, name, query)
        if index_parts == ["_delete_by_query"] and method == "POST":
            index = self._index(name)
            body = self._json(raw)
            if "query" not in body:
                raise _bad("request does not support [query] missing", "action_request_validation_exception")
            matched = index.evaluate(body["query"], set(index.docs) & set(index.visible))
            for doc_id in matched:
                index.docs.pop(doc_id, None)
            if self._refresh_requested(query):
                index.refresh()
            return 200, {"took": 1, "timed_out": False, "total": len(matched), "deleted": len(matched), "batches": 1,
                         "version_conflicts": 0, "noops": 0, "retries": {"bulk": 0, "search": 0},
                         "throttled_millis": 0, "requests_per_second": -1.0, "throttled_until_millis": 0, "failures": []}
        if index_parts == ["_doc"] and method == "POST":
            index = self.server.indices.get(name) or self._create_index(name, {})
            doc_id = uuid.uuid4().hex[:20]
            outcome, status, version = index.put(doc_id, self._json(raw))
            if self._refresh_requested(query):
                index.refresh()
            return status, {"_index": name, "_id": doc_id, "_version": version, "result": outcome,
                            "_shards": {"total": 1, "successful": 1, "failed": 0}, "_seq_no": version - 1,
                            "_primary_term": 1}
        if len(index_parts) == 2 and index_parts[0] == "_doc" and method == "GET":
            index = self._index(name)
            doc_id = index_parts[1]
            if doc_id not in index.docs:
                return 404, {"_index": name, "_id": doc_id, "found": False}
            return 200, {"_index": name, "_id": doc_id, "_version": index.versions[doc_id], "found": True,
                         "_source": index.docs[doc_id]}
        raise _bad(f"no handler found for uri [/{'/'.join(parts)}] and method [{method}]",
                   "invalid_request_exception")

    def _ml_route(self, parts, raw):
        if parts[:2] in (["_plugins", "_ml"], ["_ingest", "pipeline"]) or (
                len(parts) == 2 and parts[1] == "_mapping" and self.command == "PUT"):
            return self.server.ml.route(self.command, parts, self._json(raw), self.server.indices)
        return None

    def _pipeline(self, rest, raw):
        method = self.command
        if not rest and method == "GET":
            return 200, dict(self.server.pipelines)
        if len(rest) == 1:
            pipeline_id = rest[0]
            if method == "PUT":
                body = self._json(raw)
                check_pipeline(body)
                self.server.pipelines[pipeline_id] = body
                return 200, {"acknowledged": True}
            if method == "GET":
                if pipeline_id not in self.server.pipelines:
                    raise OpenSearchError(404, "resource_not_found_exception", f"pipeline [{pipeline_id}] is missing")
                return 200, {pipeline_id: self.server.pipelines[pipeline_id]}
            if method == "DELETE":
                if self.server.pipelines.pop(pipeline_id, None) is None:
                    raise OpenSearchError(404, "resource_not_found_exception",
                                          f"pipeline [{pipeline_id}] is missing")
                return 200, {"acknowledged": True}
        raise _bad(f"no handler found for uri [/_search/pipeline/{'/'.join(rest)}] and method [{method}]",
                   "invalid_request_exception")

    def _bulk(self, raw: bytes, default_index: str | None, query: dict):
        content_type = self.headers.get("Content-Type", "")
        if not ("x-ndjson" in content_type or "json" in content_type):
            raise OpenSearchError(406, "content_type_exception", f"Content-Type header [{content_type}] is not supported")
        if not raw.endswith(b"\n"):
            raise _bad("The bulk request must be terminated by a newline [\\n]", "illegal_argument_exception")
        lines = raw.decode("utf-8").split("\n")[:-1]
        operations, position = [], 0
        while position < len(lines):  # parse and validate the whole request first, as OpenSearch does
            try:
                action_line = json.loads(lines[position])
            except json.JSONDecodeError:
                raise _bad("Malformed action/metadata line", "illegal_argument_exception") from None
            if not isinstance(action_line, dict) or len(action_line) != 1:
                raise _bad(f"Malformed action/metadata line [{position + 1}], expected a single action",
                           "illegal_argument_exception")
            (action, meta), = action_line.items()
            if action not in ("index", "create", "update", "delete"):
                raise _bad(f"Malformed action/metadata line [{position + 1}], expected one of [create, delete, "
                           f"index, update] but found [{action}]", "illegal_argument_exception")
            if not isinstance(meta, dict):
                raise _bad(f"Malformed action/metadata line [{position + 1}], expected START_OBJECT",
                           "illegal_argument_exception")
            unknown = set(meta) - {"_index", "_id", "routing", "version", "version_type", "if_seq_no", "if_primary_term",
                                   "pipeline", "require_alias", "retry_on_conflict", "_source", "dynamic_templates"}
            if unknown:
                raise _bad(f"Action/metadata line [{position + 1}] contains an unknown parameter [{sorted(unknown)[0]}]",
                           "illegal_argument_exception")
            if meta.get("_index", default_index) is None:
                raise _bad("Validation Failed: 1: index is missing;", "action_request_validation_exception")
            if action in ("update", "delete") and meta.get("_id") is None:
                raise _bad("Validation Failed: 1: id is missing;", "action_request_validation_exception")
            if self.server.aoss and action in ("index", "create") and meta.get("_id") is not None:
                raise _bad("Document ID is not supported in create/index operation request", "illegal_argument_exception")
            position += 1
            source = None
            if action != "delete":
                if position >= len(lines):
                    raise _bad("The bulk request must be terminated by a newline [\\n]", "illegal_argument_exception")
                try:
                    source = json.loads(lines[position])
                except json.JSONDecodeError:
                    raise _bad(f"Failed to parse line [{position + 1}]", "json_parse_exception") from None
                if action == "update" and not (isinstance(source, dict) and {"doc", "script", "upsert"} & set(source)):
                    raise _bad("Validation Failed: 1: script or doc is missing;", "action_request_validation_exception")
                position += 1
            operations.append((action, meta, source))
        faults = self.server.faults
        if faults.get("bulk_429_requests", 0) > 0:
            faults["bulk_429_requests"] -= 1
            raise OpenSearchError(429, "rejected_execution_exception", "rejected execution of coordinating operation")
        self._bulk_pipeline = query.get("pipeline")
        items, errors = [], False
        for action, meta, source in operations:
            items.append(self._bulk_item(action, meta, source, default_index))
            errors = errors or "error" in items[-1][action]
        if self._refresh_requested(query):
            for index in self.server.indices.values():
                index.refresh()
        return 200, {"took": 3, "errors": errors, "items": items}

    def _bulk_item(self, action, meta, source, default_index):
        name = meta.get("_index", default_index)
        doc_id = meta.get("_id")
        if doc_id is None and action in ("index", "create"):
            doc_id = uuid.uuid4().hex[:20]  # auto-generated id
        doc_id = str(doc_id)
        result = {"_index": name, "_id": doc_id}
        pending = self.server.faults.get("item_429", {})
        if pending.get(doc_id, 0) > 0:
            pending[doc_id] -= 1
            return {action: {**result, "status": 429, "error": {
                "type": "rejected_execution_exception", "reason": "rejected execution of primary operation"}}}
        try:
            index = self.server.indices.get(name)
            if index is None and action in ("index", "create", "update"):
                index = self._create_index(name, {})  # action.auto_create_index defaults to true
            if index is None:
                raise OpenSearchError(404, "index_not_found_exception", f"no such index [{name}]")
            shards = {"_shards": {"total": 1, "successful": 1, "failed": 0}}
            if action == "delete":
                if index.docs.pop(doc_id, None) is None:
                    return {action: {**result, "result": "not_found", "status": 404, "_version": 1, **shards}}
                index.versions[doc_id] = index.versions.get(doc_id, 0) + 1
                return {action: {**result, "result": "deleted", "status": 200, "_version": index.versions[doc_id],
                                 **shards}}
            if action == "create" and doc_id in index.docs:
                raise OpenSearchError(409, "version_conflict_engine_exception",
                                      f"[{doc_id}]: version conflict, document already exists")
            if action == "update":
                existing = index.docs.get(doc_id)
                if existing is None and "upsert" not in source and not source.get("doc_as_upsert"):
                    raise OpenSearchError(404, "document_missing_exception", f"[{doc_id}]: document missing")
                if "script" in source:
                    new = _run_script(source["script"], dict(existing if existing is not None else source.get("upsert", {})))
                    if new is None:  # ctx.op = "none"
                        return {action: {**result, "result": "noop", "status": 200, "_version": index.versions.get(doc_id, 1),
                                         **shards}}
                    source = new
                elif existing is None:
                    source = source.get("upsert", source.get("doc", {}))
                else:
                    source = _merge(existing, source.get("doc", {}))
            pipeline = meta.get("pipeline", getattr(self, "_bulk_pipeline", None))
            if pipeline and pipeline != "_none" and action in ("index", "create"):
                source = self.server.ml.run_pipeline(pipeline, source)
            outcome, status, version = index.put(doc_id, source)
            return {action: {**result, "_version": version, "result": outcome, "status": status, **shards,
                             "_seq_no": version - 1, "_primary_term": 1}}
        except OpenSearchError as error:
            return {action: {**result, "status": error.status, "error": {"type": error.kind, "reason": error.reason}}}

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


def _merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _run_script(script, source: dict):
    """The two Painless forms the spec's stories use: `ctx._source.F = V;` and `ctx.op = "none";`.
    Anything else is refused as the stand-in cannot run it."""
    text = script.get("source", "") if isinstance(script, dict) else str(script)
    for statement in [s.strip() for s in text.split(";") if s.strip()]:
        if re.fullmatch(r"ctx\.op\s*=\s*['\"]none['\"]", statement):
            return None
        match = re.fullmatch(r"ctx\._source\.(\w+)\s*=\s*(.+)", statement)
        if not match:
            raise _bad(f"the stand-in cannot run the script [{statement}]", "illegal_argument_exception")
        source[match.group(1)] = json.loads(match.group(2).replace("'", '"'))
    return source


if __name__ == "__main__":  # python tests/standins/opensearch_standin.py 9200
    import sys

    server = OpenSearchStandIn(int(sys.argv[1]) if len(sys.argv) > 1 else 9200)
    print(f"OpenSearch stand-in on {server.url}", flush=True)
    server.serve_forever()
