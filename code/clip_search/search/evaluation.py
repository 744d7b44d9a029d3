"""Retrieval quality on a labelled catalogue: recall@k for text -> product and image -> product.

Queries file (JSON Lines), one query a line, relative image paths resolved against the file:
    {"text": "sweet yellow apple", "relevant": ["Golden-Delicious"]}
    {"image": "photos/apple_001.jpg", "relevant": ["Golden-Delicious"]}
recall@k = share of queries with at least one relevant product among the top k hits.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from clip_search.errors import ClipSearchError
from clip_search.search.catalogue import load_image_bytes
from clip_search.search.errors import CatalogueError

KS = (1, 5, 10)


@dataclass
class Query:
    kind: str  # "text" or "image"
    value: str | bytes
    relevant: set
    label: str = ""


@dataclass
class Recall:
    kind: str
    hits_at: dict = field(default_factory=lambda: {k: 0 for k in KS})
    queries: int = 0

    def add(self, ranked_ids: list[str], relevant: set) -> None:
        self.queries += 1
        for k in KS:
            if relevant & set(ranked_ids[:k]):
                self.hits_at[k] += 1

    def at(self, k: int) -> float:
        return self.hits_at[k] / self.queries if self.queries else float("nan")

    def to_json(self) -> dict:
        return {"queries": self.queries, **{f"recall@{k}": round(self.at(k), 4) for k in KS}}


def read_queries(path) -> list[Query]:
    path = Path(path)
    queries = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise CatalogueError(f"{path}:{number}: not a JSON object: {error}") from None
            if not isinstance(row, dict):
                raise CatalogueError(f"{path}:{number}: not a JSON object")
            relevant = row.get("relevant")
            if not relevant:
                raise CatalogueError(f"{path}:{number}: query without `relevant` product ids")
            relevant = {str(r) for r in (relevant if isinstance(relevant, list) else [relevant])}
            if "text" in row:
                queries.append(Query("text", row["text"], relevant, row["text"]))
            elif "image" in row:
                image = row["image"]
                if "://" not in image and not Path(image).is_absolute():
                    image = str(path.parent / image)
                queries.append(Query("image", image, relevant, image))
            else:
                raise CatalogueError(f"{path}:{number}: a query needs `text` or `image`")
    return queries


def evaluate(client, queries: list[Query], progress: bool = True, batch_size: int = 32) -> dict[str, Recall]:
    """Queries are encoded in batches (one request per batch through an endpoint), then searched."""
    results = {"text": Recall("text"), "image": Recall("image")}
    with tqdm(total=len(queries), desc="evaluating", unit="query", disable=not progress) as bar:
        for kind in ("text", "image"):
            group = [query for query in queries if query.kind == kind]
            for start in range(0, len(group), batch_size):
                chunk = group[start:start + batch_size]
                if kind == "text":
                    ranked = client.search_texts([query.value for query in chunk], k=max(KS))
                else:
                    ranked = _search_images(client, chunk)
                for query, hits in zip(chunk, ranked):
                    results[kind].add([hit.id for hit in hits], query.relevant)
                bar.update(len(chunk))
    return {kind: recall for kind, recall in results.items() if recall.queries}


def _search_images(client, chunk: list[Query]) -> list:
    try:
        return client.search_images([_image_bytes(query.value) for query in chunk], k=max(KS))
    except ClipSearchError:  # a photo that does not decode: find it and name it
        for query in chunk:
            try:
                client.search_images([_image_bytes(query.value)], k=1)
            except ClipSearchError as error:
                raise CatalogueError(f"{query.label}: query image: {getattr(error, 'message', error)}") from error
        raise


def _image_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else load_image_bytes(value)


def format_table(results: dict[str, Recall], labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    names = {kind: labels.get(kind, f"{kind} -> product") for kind in results}
    width = max([len("queries"), *map(len, names.values())])
    header = f"{'':{width}}  {'queries':>7}" + "".join(f"  {f'recall@{k}':>9}" for k in KS)
    lines = [header]
    for kind, recall in results.items():
        lines.append(f"{names[kind]:{width}}  {recall.queries:>7}" + "".join(f"  {recall.at(k):>9.3f}" for k in KS))
    return "\n".join(lines)
