"""Retrieval quality on a labelled catalogue: recall@1/5/10 and MRR for text -> product and
photo -> product, and the evaluation report the publishing gate reads.

Queries file (JSON Lines), one query a line, relative image paths resolved against the file:
    {"text": "sweet yellow apple", "relevant": ["Golden-Delicious"]}
    {"image": "photos/apple_001.jpg", "relevant": ["Golden-Delicious"]}

How a query is counted (the same for every caller: `clip-search eval`, `publish evaluate`, the demo):
- The ranking is the search's own: products by cosine similarity, the better of image and title
  for a text query, the image for a photo query; a product that comes back twice counts once, at
  its best place. At most DEPTH products are ranked.
- rank = the place of the best-placed relevant product. TIES ARE PESSIMISTIC: every other
  (non-relevant) product that scores the same (within TIE_TOLERANCE) is counted as ahead of it. Two
  products with the same photo are told apart by nothing, so a query for one of them is at rank 2.
- recall@k = share of queries with rank <= k; MRR = mean of 1/rank (0 when no relevant product is
  among the ranked ones).
- A query none of whose relevant products is in the catalogue cannot be answered by any model: it
  is left out of the figures and counted as `unanswerable` (known when the catalogue is given, or
  when the index is small enough to be ranked in full).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from clip_search.errors import ClipSearchError
from clip_search.search.catalogue import load_image_bytes, read_jsonl
from clip_search.search.errors import CatalogueError, SearchError

KS = (1, 5, 10)
KINDS = ("text", "image")
METRICS = tuple(f"recall@{k}" for k in KS) + ("mrr",)
DEPTH = 1000  # products ranked per query (MRR counts ranks up to here)
TIE_TOLERANCE = 1e-6  # float32 cosines of the same input encoded in different batches differ by ~1e-7
REPORT_VERSION = 1
TEST_MODEL_NOTE = ("TEST MODEL (tiny, random weights): these figures are MEANINGLESS; they show that the "
                   "evaluation runs, not how well anything retrieves")
LABELS = {"text": "text -> product", "image": "image -> product"}


@dataclass
class Query:
    kind: str  # "text" or "image"
    value: str | bytes
    relevant: set
    label: str = ""


def first_relevant_rank(ranked: list[tuple[str, float]], relevant: set,
                        tolerance: float = TIE_TOLERANCE) -> int | None:
    """1-based pessimistic rank of the best relevant product in a best-first (id, score) list, or
    None when no relevant product is in it. Repeated ids count once, at their best score."""
    best: dict[str, float] = {}
    for product_id, score in ranked:
        if product_id not in best or score > best[product_id]:
            best[product_id] = float(score)
    found = [score for product_id, score in best.items() if product_id in relevant]
    if not found:
        return None
    top = max(found)
    ahead = sum(1 for product_id, score in best.items() if product_id not in relevant and score >= top - tolerance)
    return 1 + ahead


@dataclass
class Metrics:
    kind: str
    hits_at: dict = field(default_factory=lambda: {k: 0 for k in KS})
    reciprocal_sum: float = 0.0
    queries: int = 0
    unanswerable: int = 0

    def add(self, rank: int | None) -> None:
        self.queries += 1
        if rank is None:
            return
        self.reciprocal_sum += 1.0 / rank
        for k in KS:
            if rank <= k:
                self.hits_at[k] += 1

    def at(self, k: int) -> float:
        return self.hits_at[k] / self.queries if self.queries else float("nan")

    @property
    def mrr(self) -> float:
        return self.reciprocal_sum / self.queries if self.queries else float("nan")

    def value(self, metric: str) -> float:
        return self.mrr if metric == "mrr" else self.at(int(metric.split("@")[1]))

    def to_json(self) -> dict:
        return {**{metric: _figure(self.value(metric)) for metric in METRICS},
                "queries": self.queries, "unanswerable": self.unanswerable}


def _figure(value: float) -> float | None:
    """Rounded for the report; None (JSON null) for a kind whose queries were all unanswerable."""
    return None if value != value else round(value, 6)


def read_queries(path) -> list[Query]:
    path = Path(path)
    queries = []
    for number, row in read_jsonl(path):
        relevant = row.get("relevant")
        if not relevant:
            raise CatalogueError(f"{path}:{number}: query without `relevant` product ids")
        relevant = {str(r) for r in (relevant if isinstance(relevant, list) else [relevant])}
        kind = next((kind for kind in KINDS if kind in row), None)
        if kind is None:
            raise CatalogueError(f"{path}:{number}: a query needs `text` or `image`")
        value = row[kind]
        if not isinstance(value, str) or not value.strip():
            raise CatalogueError(f"{path}:{number}: `{kind}` must be a non-empty string")
        if kind == "image" and "://" not in value and not Path(value).is_absolute():
            value = str(path.parent / value)
        queries.append(Query(kind, value, relevant, value))
    return queries


def evaluate(client, queries: list[Query], progress: bool = True, batch_size: int = 32,
             catalogue_ids: set | None = None, depth: int | None = None) -> dict[str, Metrics]:
    """Rank the index of `client` for every query (encoded in batches: one request per batch
    through an endpoint). `catalogue_ids`: the product ids the index was built from, to tell
    unanswerable queries apart; without them only a fully ranked index tells."""
    count = client.index.count()
    depth = max(1, min(depth or DEPTH, count or 1))
    results = {kind: Metrics(kind) for kind in KINDS}
    with tqdm(total=len(queries), desc="evaluating", unit="query", disable=not progress) as bar:
        for kind in KINDS:
            group = [query for query in queries if query.kind == kind]
            for start in range(0, len(group), batch_size):
                chunk = group[start:start + batch_size]
                if kind == "text":
                    ranked = client.search_texts([query.value for query in chunk], k=depth)
                else:
                    ranked = _search_images(client, chunk, depth)
                for query, hits in zip(chunk, ranked, strict=True):
                    rank = first_relevant_rank([(hit.id, hit.score) for hit in hits], query.relevant)
                    if catalogue_ids is not None:
                        absent = not query.relevant & catalogue_ids
                    else:
                        absent = rank is None and depth >= count
                    if absent:
                        results[kind].unanswerable += 1
                    else:
                        results[kind].add(rank)
                bar.update(len(chunk))
    return {kind: metrics for kind, metrics in results.items() if metrics.queries or metrics.unanswerable}


def _search_images(client, chunk: list[Query], depth: int) -> list:
    try:
        return client.search_images([_image_bytes(query.value) for query in chunk], k=depth)
    except ClipSearchError:  # a photo that does not decode: find it and name it
        for query in chunk:
            try:
                client.search_images([_image_bytes(query.value)], k=1)
            except ClipSearchError as error:
                raise CatalogueError(f"{query.label}: query image: {getattr(error, 'message', error)}") from error
        raise


def _image_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else load_image_bytes(value)


# --- the whole evaluation: a catalogue into a private exact index, then the queries ---------------
def catalogue_digest(path, products) -> str:
    """sha256 of the catalogue file and of every product's image bytes (the data, not its paths)."""
    digest = hashlib.sha256(Path(path).read_bytes())
    for product in products:
        image = hashlib.sha256(load_image_bytes(product.image)).hexdigest() if product.image else "-"
        digest.update(f"\n{product.id}\0{image}".encode())
    return digest.hexdigest()


def queries_digest(path, queries: list[Query]) -> str:
    digest = hashlib.sha256(Path(path).read_bytes())
    for query in queries:
        if query.kind == "image":
            digest.update(b"\n" + hashlib.sha256(_image_bytes(query.value)).digest())
    return digest.hexdigest()


def evaluate_catalogue(embedder, catalogue, queries: list[Query], batch_size: int = 32,
                       progress: bool = True) -> tuple[dict[str, Metrics], dict]:
    """Index `catalogue` with `embedder` into a temporary exact embedded index (the search path
    the shop runs), rank it for every query; -> (metrics per kind, {products, indexed, errors})."""
    from clip_search.search.catalogue import read_catalogue
    from clip_search.search.client import SearchClient
    from clip_search.search.index.embedded import EmbeddedIndex

    products = list(read_catalogue(catalogue))
    if not products:
        raise CatalogueError(f"catalogue {catalogue} has no products")
    with tempfile.TemporaryDirectory(prefix="clip-search-eval-") as scratch:
        index = EmbeddedIndex(Path(scratch) / "index", exact_max_rows_=1 << 62)  # exact: no HNSW misses
        with SearchClient(index, embedder) as client:
            report = client.index_catalogue(products, batch_size=batch_size, progress=progress)
            if not report.indexed:
                raise SearchError(f"no product of {catalogue} could be indexed: {report.errors[:3]}")
            results = evaluate(client, queries, progress=progress, batch_size=batch_size,
                               catalogue_ids={product.id for product in products})
    return results, {"products": len(products), "indexed": report.indexed, "errors": len(report.errors)}


def evaluate_model(catalogue, queries_path, model=None, endpoint=None, compare_runtime: str | None = None,
                   batch_size: int = 32, progress: bool = True) -> dict:
    """The report for a model artifact (in process) or an endpoint on a labelled catalogue.

    compare_runtime="torch": the same catalogue and queries encoded again with torch fp32 from the
    artifact's own weights, so what an exported runtime (int8, OpenVINO) costs in retrieval shows.
    """
    from clip_search.search.embeddings import LocalEmbedder, embedder_for

    started = time.monotonic()
    if compare_runtime and not model:
        raise SearchError(f"--compare-runtime {compare_runtime} needs the artifact: give --model")
    queries = read_queries(queries_path)
    if not queries:
        raise CatalogueError(f"query set {queries_path} has no queries")
    model_dir = None
    if model:
        from clip_search.artifact import extract_artifact
        from clip_search.encoder import ClipEncoder
        from clip_search.errors import ModelLoadError

        try:
            model_dir = extract_artifact(Path(model), shared=True)
            if compare_runtime:
                _require_weights(model_dir, model, compare_runtime)
            embedder = LocalEmbedder(ClipEncoder.from_artifact(model_dir))
        except ModelLoadError as error:
            raise SearchError(str(error)) from None
    else:
        embedder = embedder_for(None, endpoint)
    results, counts = evaluate_catalogue(embedder, catalogue, queries, batch_size, progress)
    compare = None
    if compare_runtime:
        from clip_search.encoder import ClipEncoder

        reference = LocalEmbedder(ClipEncoder.from_artifact(model_dir, runtime=compare_runtime))
        if reference.encoder.runtime.name != compare_runtime:
            raise SearchError(f"runtime {compare_runtime} did not load for {model}")
        reference_results, _ = evaluate_catalogue(reference, catalogue, queries, batch_size, progress)
        compare = comparison(results, reference_results, compare_runtime)
    from clip_search.search.catalogue import read_catalogue

    catalogue_info = {"location": str(catalogue), "sha256": catalogue_digest(catalogue, read_catalogue(catalogue)), **counts}
    artifact = artifact_facts(model) if model else None
    return build_report(embedder, results, catalogue_info, _query_set(queries_path, queries), artifact,
                        time.monotonic() - started, compare)


def evaluate_index(client, location: str, queries_path, model=None, batch_size: int = 32,
                   progress: bool = True) -> dict:
    """The report for an index built earlier (its catalogue's hash is unknown: `sha256` is null)."""
    started = time.monotonic()
    queries = read_queries(queries_path)
    results = evaluate(client, queries, progress=progress, batch_size=batch_size)
    catalogue = {"index": str(location), "sha256": None, "products": client.index.count()}
    return build_report(client.embedder, results, catalogue, _query_set(queries_path, queries),
                        artifact_facts(model) if model else None, time.monotonic() - started)


def _query_set(path, queries: list[Query]) -> dict:
    return {"location": str(path), "sha256": queries_digest(path, queries), "queries": len(queries),
            **{kind: sum(1 for query in queries if query.kind == kind) for kind in KINDS}}


def _require_weights(model_dir: Path, model, runtime: str) -> None:
    from clip_search.artifact import WEIGHTS_FILE

    if not (Path(model_dir) / WEIGHTS_FILE).is_file():
        raise SearchError(f"--compare-runtime {runtime} needs the fp32 weights ({WEIGHTS_FILE}), which {model} "
                          "does not contain: package the model with --keep-weights to compare")


def artifact_facts(model) -> dict:
    """model id, sha256 of model.tar.gz (or of the manifest of an extracted folder), test model?"""
    from clip_search.files import sha256_file

    path = Path(model)
    facts = {"artifact": str(path), "artifact_sha256": sha256_file(path) if path.is_file() else None}
    if path.is_dir():
        from clip_search.artifact import read_manifest

        facts["weights_sha256"] = read_manifest(path).get("weights_sha256")
    return facts


def build_report(embedder, results: dict[str, Metrics], catalogue: dict, query_set: dict,
                 artifact: dict | None = None, seconds: float | None = None, compare: dict | None = None) -> dict:
    """The report `clip-search eval --report` writes and `publish register` attaches."""
    from clip_search import __version__

    encoder = getattr(embedder, "encoder", None)
    runtime = getattr(getattr(encoder, "runtime", None), "name", None)
    report = {
        "report_version": REPORT_VERSION,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "clip_search_version": __version__,
        "model_id": embedder.model_id,
        "test_model": bool(getattr(embedder, "is_test_model", False)),
        **(artifact or {"artifact": None, "artifact_sha256": None}),
        "runtime": runtime or ("endpoint" if getattr(embedder, "spec", {}) and "endpoint" in embedder.spec else None),
        "endpoint": (getattr(embedder, "spec", None) or {}).get("endpoint"),
        "catalogue": catalogue,
        "query_set": query_set,
        "ranking": {"depth": DEPTH, "ties": "pessimistic", "tie_tolerance": TIE_TOLERANCE,
                    "text_fields": ["image", "title"], "image_fields": ["image"]},
        "metrics": {kind: metrics.to_json() for kind, metrics in results.items()},
    }
    if seconds is not None:
        report["seconds"] = round(seconds, 1)
    if report["test_model"]:
        report["note"] = TEST_MODEL_NOTE
    if compare is not None:
        report["compare"] = compare
    return report


def comparison(primary: dict[str, Metrics], reference: dict[str, Metrics], runtime: str) -> dict:
    """{runtime, metrics (of the reference run), delta = primary - reference} per kind and figure."""
    delta = {kind: {metric: _figure(primary[kind].value(metric) - reference[kind].value(metric))
                    for metric in METRICS}
             for kind in primary if kind in reference}
    return {"runtime": runtime, "metrics": {kind: m.to_json() for kind, m in reference.items()}, "delta": delta}


def write_report(report: dict, path) -> None:
    Path(path).write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def read_report(text_or_path) -> dict:
    """A report from a file or its JSON text; checks it has figures for at least one query kind."""
    text = text_or_path if isinstance(text_or_path, str) and text_or_path.lstrip().startswith("{") \
        else Path(text_or_path).read_text(encoding="utf-8")
    try:
        report = json.loads(text)
    except json.JSONDecodeError as error:
        raise SearchError(f"evaluation report is not JSON: {error.msg}") from None
    metrics = report.get("metrics") if isinstance(report, dict) else None
    if not isinstance(metrics, dict) or not metrics or not all(
            isinstance(m, dict) and all(name in m for name in METRICS) for m in metrics.values()):
        raise SearchError(f"not a clip-search evaluation report (no `metrics` with {', '.join(METRICS)} per query kind)")
    return report


# --- tables ----------------------------------------------------------------------------------
def format_table(results: dict[str, Metrics], labels: dict[str, str] | None = None,
                 test_model: bool = False) -> str:
    """queries, recall@1/5/10 and MRR per query kind; the test model's table says it is meaningless."""
    return _table({kind: metrics.to_json() for kind, metrics in results.items()}, labels, test_model)


def format_report(report: dict) -> str:
    """The table of a report, and the runtime comparison side by side when it has one."""
    text = _table(report["metrics"], None, report.get("test_model", False))
    return text + ("\n\n" + format_comparison(report) if "compare" in report else "")


def _table(figures: dict[str, dict], labels: dict[str, str] | None, test_model: bool) -> str:
    labels = labels or {}
    names = {kind: labels.get(kind, LABELS.get(kind, f"{kind} -> product")) for kind in figures}
    width = max([len("queries"), *map(len, names.values())])
    header = f"{'':{width}}  {'queries':>7}" + "".join(f"  {name:>9}" for name in METRICS)
    lines = [header]
    for kind, row in figures.items():
        lines.append(f"{names[kind]:{width}}  {row['queries']:>7}" + "".join(f"  {_cell(row[name], '9.3f')}" for name in METRICS))
    unanswerable = {kind: row["unanswerable"] for kind, row in figures.items() if row.get("unanswerable")}
    if unanswerable:
        lines.append("left out (no relevant product in the catalogue): "
                     + ", ".join(f"{n} {kind} quer{'y' if n == 1 else 'ies'}" for kind, n in unanswerable.items()))
    if test_model:
        lines.append(TEST_MODEL_NOTE)
    return "\n".join(lines)


def format_comparison(report: dict) -> str:
    """Both runtimes' figures and the delta side by side, per query kind."""
    compare = report["compare"]
    runtime, other = report.get("runtime") or "model", compare["runtime"]
    lines = [f"{'':16}  {'':9}  {runtime:>10}  {other:>10}  {'delta':>8}"]
    for kind, figures in report["metrics"].items():
        for metric in METRICS:
            if kind in compare["metrics"]:
                lines.append(f"{LABELS.get(kind, kind):16}  {metric:9}  {_cell(figures[metric], '10.4f')}  "
                             f"{_cell(compare['metrics'][kind][metric], '10.4f')}  "
                             f"{_cell(compare['delta'][kind][metric], '+8.4f')}")
    return "\n".join(lines)


def _cell(value, spec: str) -> str:
    width = int(spec.lstrip("+").split(".")[0])
    return f"{'-':>{width}}" if value is None else format(value, spec)
