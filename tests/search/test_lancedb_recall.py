"""ANN recall against exact search on 50,000 synthetic 512-d rows (the embedded index's IVF_RQ)."""
import time

import numpy as np

from clip_search.search.index.embedded import EmbeddedIndex
from clip_search.search.records import EmbeddedProduct, Product

ROWS, DIM, QUERIES = 50_000, 512, 100


def clustered(n, dim, rng):
    """Unit vectors around 1,000 centres, like embeddings of many similar products."""
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 1000, n)] + rng.standard_normal((n, dim)).astype(np.float32) * 0.6
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_recall_at_10_against_exact_search_on_50000_rows(tmp_path):
    rng = np.random.default_rng(0)
    vectors = clustered(ROWS, DIM, rng)
    queries = vectors[rng.integers(0, ROWS, QUERIES)] + rng.standard_normal((QUERIES, DIM)).astype(np.float32) * 0.02
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = EmbeddedIndex(tmp_path / "ix", exact_max_rows_=20_000)
    index.ensure(DIM, "m")
    for start in range(0, ROWS, 10_000):
        index.upsert(EmbeddedProduct(Product(str(i), "", None, {"shelf": str(i % 100)}), vectors[i])
                     for i in range(start, start + 10_000))
    started = time.perf_counter()
    index.refresh()
    build = time.perf_counter() - started
    assert index.is_approximate
    found, latencies = 0, []
    for query in queries:
        truth = set(np.argsort(-(vectors @ query))[:10].astype(str))
        started = time.perf_counter()
        hits = index.search(query, k=10, fields=("image",))
        latencies.append(time.perf_counter() - started)
        found += len(truth & {hit.id for hit in hits})
    recall = found / (10 * QUERIES)
    print(f"recall@10 {recall:.3f}, ANN build {build:.1f} s, p50 {np.median(latencies) * 1e3:.1f} ms")
    assert recall >= 0.95
    # A selective filter (1% of rows) still returns its exact top 10.
    members = np.flatnonzero(np.arange(ROWS) % 100 == 7)
    hits = index.search(queries[0], k=10, filters={"shelf": "7"}, fields=("image",))
    truth = members[np.argsort(-(vectors[members] @ queries[0]))[:10]].astype(str)
    assert len(set(truth) & {hit.id for hit in hits}) >= 9
