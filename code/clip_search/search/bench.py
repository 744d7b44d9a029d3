"""Measure the embedded index: exact vs ANN (LanceDB IVF_RQ; IVF_HNSW_SQ below 256 dimensions) query latency and ANN recall, by index size.

(At a million products through the CLI, with filters, hybrid and RSS: `python -m benchmarks.search_scale`.)

    python -m clip_search.search.bench --rows 10000 20000 50000 100000 [--dim 512]

Vectors are clustered (unit vectors around 1,000 random centres, like product embeddings of many
similar items) rather than uniform: uniform high-dimensional data is every ANN index's worst case and nothing
like real embeddings. Queries are perturbed catalogue vectors. Latency is one query at a time
through EmbeddedIndex.search (what `clip-search search` pays), p50 and p95 over 200 queries.
"""
import argparse
import tempfile
import time

import numpy as np

from clip_search.search.index.embedded import EmbeddedIndex
from clip_search.search.records import EmbeddedProduct, Product


def clustered(n: int, dim: int, rng) -> np.ndarray:
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 1000, n)] + rng.standard_normal((n, dim)).astype(np.float32) * 0.6
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def measure(index: EmbeddedIndex, queries: np.ndarray, k: int = 10):
    times, results = [], []
    for query in queries:
        start = time.perf_counter()
        hits = index.search(query, k=k, fields=("image",))
        times.append(time.perf_counter() - start)
        results.append([hit.id for hit in hits])
    return np.percentile(times, 50) * 1e3, np.percentile(times, 95) * 1e3, results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 20_000, 50_000, 100_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"{'rows':>8} {'exact p50':>10} {'exact p95':>10} {'ann p50':>9} {'ann p95':>9} {'recall@10':>9} {'build s':>8}")
    for n in args.rows:
        vectors = clustered(n, args.dim, rng)
        noise = rng.standard_normal((args.queries, args.dim)).astype(np.float32) * 0.02
        queries = vectors[rng.integers(0, n, args.queries)] + noise
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        items = [EmbeddedProduct(Product(str(i)), vector, None) for i, vector in enumerate(vectors)]
        with tempfile.TemporaryDirectory() as folder:
            exact = EmbeddedIndex(f"{folder}/exact", exact_max_rows_=10**9)
            exact.ensure(args.dim, "bench")
            exact.upsert(items)
            exact.refresh()
            exact_p50, exact_p95, truth = measure(exact, queries)
            approximate = EmbeddedIndex(f"{folder}/ann", exact_max_rows_=0)
            approximate.ensure(args.dim, "bench")
            approximate.upsert(items)
            approximate.flush()
            start = time.perf_counter()
            approximate.refresh()  # builds the ANN index
            build = time.perf_counter() - start
            hnsw_p50, hnsw_p95, found = measure(approximate, queries)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found, strict=True)])
        print(f"{n:>8} {exact_p50:>9.2f}ms {exact_p95:>9.2f}ms {hnsw_p50:>8.2f}ms {hnsw_p95:>8.2f}ms "
              f"{recall:>9.3f} {build:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
