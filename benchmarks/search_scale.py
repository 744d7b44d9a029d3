"""The embedded index at scale: synthetic products fed through `clip-search index` from Batch Transform
style .out files, then ANN build, one upsert, queries (unfiltered, selective filter, hybrid),
recall@10 against exact search, RSS and disk size.

    flock /work/bench.lock python -m benchmarks.search_scale   # 1,000,000 products
    python -m benchmarks.search_scale --rows 200000 --workdir /tmp/scale

Vectors: 512-d unit vectors around 2,000 random centres (like embeddings of many similar products;
uniform random vectors are no ANN's real workload). Metadata is shaped like the grocery catalogue
(department, category, class_id, description) plus a `shelf` with 1,000 values for a selective
(0.1%) filter. Titles are words, so hybrid search has keywords to match. Image embeddings only: the
CLI reads precomputed image embeddings (--embeddings); title vectors need an encoder.
Each phase runs in its own process; RSS is that process's peak resident set, sampled every 0.1 s.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
DIM = 512
CENTRES = 2_000
DEPARTMENTS = ["Fruit", "Vegetables", "Packages"]
WORDS = ("apple banana kiwi lemon lime mango melon orange peach pear plum pomegranate tomato potato onion "
         "pepper carrot cucumber garlic ginger juice milk oat yoghurt soy sour cream organic fresh red green "
         "yellow sweet crisp juicy large small pack bag box").split()
QUERIES = 200


def vectors_for(count: int, centres: np.ndarray, seed: int) -> np.ndarray:
    """Unit vectors around random centres, rounded to 6 decimals (as written to the .out files, so
    the ground truth is computed on exactly what the index holds)."""
    rng = np.random.default_rng(seed)
    vectors = centres[rng.integers(0, len(centres), count)] + rng.standard_normal((count, DIM), np.float32) * 0.6
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.rint(vectors * 1e6).astype(np.int32)


def format_vectors(micros: np.ndarray) -> np.ndarray:
    """Rows of int micro-units -> one JSON number list per row, vectorised: every value is written
    fixed-width as ` 0.012345` / `-0.012345` (JSON allows the space), so a row is one slice of a
    uint8 array: (n, DIM * 10 + 1) bytes ending in `]`. Same 6 decimals as the old generator's
    f"{v:.6f}", so parsing costs what real Batch Transform output costs (orjson writes ~10 digits)."""
    n = len(micros)
    cells = np.empty((n, DIM, 10), np.uint8)
    cells[:, :, 0] = np.where(micros < 0, ord("-"), ord(" "))
    magnitude = np.abs(micros)
    cells[:, :, 1] = ord("0") + magnitude // 1_000_000
    cells[:, :, 2] = ord(".")
    for position in range(6):
        cells[:, :, 8 - position] = ord("0") + (magnitude // 10 ** position) % 10
    cells[:, :, 9] = ord(",")
    cells[:, -1, 9] = ord("]")
    return cells.reshape(n, DIM * 10)


def _generate_part(args):
    """One .out file and its catalogue slice (run in a worker process)."""
    work, part, start, count, seed = args
    work = Path(work)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CENTRES, DIM)).astype(np.float32)
    micros = vectors_for(count, centres, seed)
    vectors = np.lib.format.open_memmap(work / "vectors.npy", mode="r+")
    vectors[start:start + count] = micros.astype(np.float32) / np.float32(1e6)
    vectors.flush()
    del vectors
    words = np.random.default_rng(seed + 10_000).integers(0, len(WORDS), (count, 3))
    lines, rows = [], []
    for offset in range(0, count, 5_000):
        body = format_vectors(micros[offset:offset + 5_000])
        for i, row in enumerate(body):
            n = start + offset + i
            lines.append(b'{"id": "p%d", "embedding": [%s}\n' % (n, row.tobytes()))
            w = words[offset + i]
            rows.append(orjson.dumps({
                "id": f"p{n}", "title": f"{WORDS[w[0]]} {WORDS[w[1]]} {WORDS[w[2]]}",
                "image": f"images/p{n}.jpg", "department": DEPARTMENTS[n % 3], "category": f"cat-{n % 40}",
                "class_id": n % 81, "shelf": f"s{n % 1000}", "description": "synthetic product"}) + b"\n")
    (work / "out" / f"part-{part:04d}.out").write_bytes(b"".join(lines))
    (work / "catalogue" / f"part-{part:04d}.jsonl").write_bytes(b"".join(rows))
    return part


def generate(work: Path, rows: int, chunk: int = 50_000):
    """catalogue.jsonl + out/part-NNNN.out + vectors.npy (float32, for exact ground truth), the parts
    written by a process per core."""
    from concurrent.futures import ProcessPoolExecutor

    for folder in ("out", "catalogue"):
        shutil.rmtree(work / folder, ignore_errors=True)
        (work / folder).mkdir(parents=True)
    all_vectors = np.lib.format.open_memmap(work / "vectors.npy", mode="w+", dtype=np.float32, shape=(rows, DIM))
    del all_vectors
    parts = [(str(work), part, start, min(chunk, rows - start), 1 + part)
             for part, start in enumerate(range(0, rows, chunk))]
    with ProcessPoolExecutor(max_workers=min(len(parts), os.cpu_count() or 1)) as pool:
        for _ in tqdm(pool.map(_generate_part, parts), total=len(parts), desc="generating", unit="part"):
            pass
    with open(work / "catalogue.jsonl", "wb") as catalogue:
        for part in range(len(parts)):
            catalogue.write((work / "catalogue" / f"part-{part:04d}.jsonl").read_bytes())
    shutil.rmtree(work / "catalogue")
    all_vectors = np.load(work / "vectors.npy", mmap_mode="r")
    query_rng = np.random.default_rng(99)
    picks = query_rng.integers(0, rows, QUERIES)
    queries = np.asarray(all_vectors[picks]) + query_rng.standard_normal((QUERIES, DIM)).astype(np.float32) * 0.05
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    np.save(work / "queries.npy", queries)
    truth, filtered = exact_truth(all_vectors, queries, rows)
    (work / "truth.json").write_text(json.dumps({"all": truth, "shelf": filtered}))


def exact_truth(vectors, queries, rows, k=10):
    """Brute-force top 10 per query, overall and among shelf s7 (the selective filter)."""
    scores = np.full((len(queries), 0), 0.0, np.float32)
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), k), np.int64)
    for start in range(0, rows, 100_000):
        block = np.asarray(vectors[start:start + 100_000])
        scores = queries @ block.T
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, np.arange(start, start + len(block))[None, :].repeat(len(queries), 0)], axis=1)
        order = np.argsort(-merged_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, order, 1)
        best_ids = np.take_along_axis(merged_ids, order, 1)
    members = np.arange(7, rows, 1000)
    shelf = members[np.argsort(-(queries @ np.asarray(vectors[members]).T), axis=1)[:, :k]]
    return [[f"p{i}" for i in row] for row in best_ids], [[f"p{i}" for i in row] for row in shelf]


def run_phase(args: list[str], env: dict | None = None) -> tuple[dict, float, float]:
    """Run a phase in its own process; returns (its JSON answer, wall seconds, peak RSS in GB)."""
    import psutil

    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:  # the phase and its worker processes (the .out parsers) together
            family = [watched] + watched.children(recursive=True)
            peak = max(peak, sum(member.memory_info().rss for member in family))
        except psutil.Error:
            pass
        time.sleep(0.1)
    output = process.stdout.read()
    if process.returncode:
        raise SystemExit(f"phase {args[-3:]} failed ({process.returncode}):\n{output}")
    seconds = time.perf_counter() - started
    lines = [line for line in output.strip().splitlines() if line.startswith("{")]
    answer = json.loads(lines[-1]) if lines else {}
    print(f"phase done in {seconds:.0f} s, peak RSS {peak / 1e9:.2f} GB: {json.dumps(answer)}", file=sys.stderr, flush=True)
    return answer, seconds, peak / 1e9


def percentiles(times):
    return {"p50_ms": round(float(np.percentile(times, 50)) * 1e3, 2), "p99_ms": round(float(np.percentile(times, 99)) * 1e3, 2)}


def recall(found, truth):
    return round(float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])), 4)


def phase_build(index_dir: str):
    from clip_search.search.index.embedded import EmbeddedIndex

    index = EmbeddedIndex(index_dir)
    started = time.perf_counter()
    index.refresh()
    print(json.dumps({"build_s": round(time.perf_counter() - started, 1), "approximate": index.is_approximate}))


def phase_serve(index_dir: str, work: str):
    from clip_search.search.index.embedded import EmbeddedIndex
    from clip_search.search.records import EmbeddedProduct, Product

    work = Path(work)
    queries = np.load(work / "queries.npy")
    truth = json.loads((work / "truth.json").read_text())
    from clip_search.search.index import embedded

    index = EmbeddedIndex(index_dir)
    for query in queries[:20]:  # warm the caches a server would have warm
        index.search(query, k=10, fields=("image",))
    results = {}
    default = embedded.NPROBES
    for nprobes in sorted({default // 2, default, default * 2}):  # the recall / latency trade-off
        embedded.NPROBES = nprobes
        times, found = [], []
        for query in queries:
            started = time.perf_counter()
            found.append([hit.id for hit in index.search(query, k=10, fields=("image",))])
            times.append(time.perf_counter() - started)
        results[f"unfiltered_nprobes_{nprobes}"] = {**percentiles(times), "recall@10": recall(found, truth["all"])}
    embedded.NPROBES = default
    for name, kwargs in (("unfiltered", {}), ("filter_shelf_0.1pct", {"filters": {"shelf": "s7"}}),
                         ("filter_department_33pct", {"filters": {"department": "Fruit"}}),
                         ("hybrid", {"keywords": "organic mango"})):
        times, found = [], []
        for query in queries:
            started = time.perf_counter()
            hits = index.search(query, k=10, fields=("image",), **kwargs)
            times.append(time.perf_counter() - started)
            found.append([hit.id for hit in hits])
        results[name] = percentiles(times)
        if name == "unfiltered":
            results[name]["recall@10"] = recall(found, truth["all"])
        if name.startswith("filter_shelf"):
            results[name]["recall@10"] = recall(found, truth["shelf"])
    upserts = []
    for i in range(5):
        vector = queries[i]
        started = time.perf_counter()
        index.upsert([EmbeddedProduct(Product(f"new{i}", "fresh kiwi", None, {"shelf": "s7"}), vector)])
        index.flush()  # committed: a new LanceDB version on disk
        upserts.append(time.perf_counter() - started)
    results["one_upsert_ms"] = round(float(np.median(upserts)) * 1e3, 1)
    print(json.dumps(results))


def du(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workdir", help="keep data and indexes here (default: a temporary folder)")
    parser.add_argument("--phase", choices=["build", "serve"], help=argparse.SUPPRESS)
    parser.add_argument("phase_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase == "build":
        return phase_build(*args.phase_args)
    if args.phase == "serve":
        return phase_serve(*args.phase_args)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="search-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, "-m", "benchmarks.search_scale"]
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "code"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    try:
        if not (work / "truth.json").exists():
            started = time.perf_counter()
            generate(work, args.rows)
            print(f"generated {args.rows} products in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        index_dir = work / "lancedb-index"
        shutil.rmtree(index_dir, ignore_errors=True)
        from clip_search.runtimes import cpu_flags

        report = {"rows": args.rows, "cpu_count": os.cpu_count(), "cpu_flags": cpu_flags(),
                  "load_average_start": [round(x, 1) for x in os.getloadavg()]}
        # Ingest: exact mode during the CLI run so that the ANN build is timed on its own.
        _, seconds, rss = run_phase([sys.executable, "-m", "clip_search.cli", "index", "--catalogue",
                                     str(work / "catalogue.jsonl"), "--index", str(index_dir), "--embeddings",
                                     str(work / "out"), "--model-id", "synthetic", "--no-titles", "--batch-size", "1024"],
                                    {**env, "CLIP_SEARCH_EXACT_MAX_ROWS": str(10**9)})
        report["load_average_after_ingest"] = [round(x, 1) for x in os.getloadavg()]
        report["ingest"] = {"products_per_s": round(args.rows / seconds), "seconds": round(seconds, 1), "rss_gb": round(rss, 2)}
        build, seconds, rss = run_phase(me + ["--phase", "build", str(index_dir)], env)
        report["ann_build"] = {**build, "rss_gb": round(rss, 2)}
        print(json.dumps(report), file=sys.stderr, flush=True)
        serve, _, rss = run_phase(me + ["--phase", "serve", str(index_dir), str(work)], env)
        report["serve"] = {**serve, "rss_gb": round(rss, 2)}
        report["disk_gb"] = round(du(index_dir), 2)
        report["load_average_end"] = [round(x, 1) for x in os.getloadavg()]
        print(json.dumps(report, indent=2))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
