"""Real processes on one embedded index: concurrent `clip-search index` runs, and `kill -9` of a writer.

Embeddings come from Batch Transform style .out files (`--embeddings`), so the processes need no
model. CLIP_SEARCH_FLUSH_ROWS is meant to make each run commit many small versions, interleaving the
writers; but with precomputed embeddings and --no-titles the client upserts in batches of
PRECOMPUTED_BATCH (8,192) rows and the embedded index commits a whole upsert at once, so today each
run's rows land in one commit (11 versions in all, counted 2026-12-07): the runs overlap (both
writers open, locking, merging into a table the other changed) but their batches do not interleave.
"""
import json
import random
import signal
import subprocess
import sys
import time

import numpy as np

from clip_search.search.index.embedded import EmbeddedIndex
from tests.search.conftest import unit
from tests.writer_process import environment

DIM = 16
ROWS = 1200  # per run; 2,400 in all > EXACT_MAX_ROWS: the run that finishes last builds the ANN index
EXACT_MAX_ROWS = 2000


def write_catalogue(folder, prefix: str, n: int, seed: int):
    """A catalogue `prefix`.jsonl and its embeddings `prefix`-out/part.out (one line per product)."""
    vectors = unit(np.random.default_rng(seed).standard_normal((n, DIM)))
    catalogue = folder / f"{prefix}.jsonl"
    out = folder / f"{prefix}-out"
    out.mkdir()
    with open(catalogue, "w") as products, open(out / "part.out", "w") as embeddings:
        for i in range(n):
            products.write(json.dumps({"id": f"{prefix}{i}", "title": f"{prefix} product {i}", "brand": prefix}) + "\n")
            embeddings.write(json.dumps({"id": f"{prefix}{i}", "embedding": vectors[i].tolist()}) + "\n")
    return catalogue, out


def index_command(catalogue, embeddings, index):
    return [sys.executable, "-m", "clip_search.cli", "index", "--catalogue", str(catalogue), "--index", str(index),
            "--embeddings", str(embeddings), "--model-id", "m", "--no-titles", "--batch-size", "50"]


def test_two_index_runs_into_one_folder_both_land(tmp_path):
    index = tmp_path / "index"
    runs = [write_catalogue(tmp_path, prefix, ROWS, seed) for seed, prefix in enumerate(("a", "b"))]
    env = environment(CLIP_SEARCH_FLUSH_ROWS=50, CLIP_SEARCH_EXACT_MAX_ROWS=EXACT_MAX_ROWS)
    processes = [subprocess.Popen(index_command(catalogue, out, index), env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for catalogue, out in runs]
    results = [process.communicate(timeout=300) for process in processes]
    for process, (stdout, stderr) in zip(processes, results, strict=True):
        assert process.returncode == 0, stderr
        assert f"indexed {ROWS} of {ROWS} products" in stdout
    opened = EmbeddedIndex(index)
    assert opened.count() == 2 * ROWS
    for prefix in ("a", "b"):
        assert opened._table.count_rows(f"id LIKE '{prefix}%'") == ROWS
    assert len(set(opened._table.to_arrow()["id"].to_pylist())) == 2 * ROWS
    assert len(opened._table.to_arrow().column("id")) == 2 * ROWS
    # The ANN index was built by one of them (2 x ROWS > EXACT_MAX_ROWS) and both runs' rows are searchable.
    assert opened.is_approximate
    vector = unit(np.random.default_rng(1).standard_normal((ROWS, DIM)))[567]
    assert opened.search(vector, k=1, fields=("image",))[0].id == "b567"


WRITER = """
import sys, numpy as np
from clip_search.search.index.embedded import EmbeddedIndex
from clip_search.search.records import EmbeddedProduct, Product
index = EmbeddedIndex(sys.argv[1], exact_max_rows_=1500)
index.ensure({dim}, "m")
rng = np.random.default_rng(int(sys.argv[2]))
for batch in range(10**6):
    vectors = rng.standard_normal((200, {dim})).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # Half the rows replace the previous batch's ids (upserts), half are new.
    ids = [f"p{{batch * 100 + i}}" for i in range(200)]
    index.upsert([EmbeddedProduct(Product(i, i, None, {{"batch": str(batch)}}), v) for i, v in zip(ids, vectors)])
    index.flush()
    if batch == 0:
        print("committed", flush=True)
    if batch % 5 == 4:
        index.refresh()  # builds / updates the ANN and scalar indexes: killed there too
    if batch % 7 == 6:
        index.delete([ids[0]])
"""


def test_kill_minus_9_at_random_moments_leaves_the_last_commit_readable(tmp_path):
    index = tmp_path / "index"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(dim=DIM))
    rng = random.Random(13)
    env = environment(CLIP_SEARCH_FLUSH_ROWS=10**6)
    counts = []
    for trial in range(6):
        process = subprocess.Popen([sys.executable, str(script), str(index), str(trial)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stdout.readline() == "committed\n", process.stderr.read()  # past start-up
        time.sleep(rng.uniform(0.0, 3.0))
        assert process.poll() is None, process.stderr.read()
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        opened = EmbeddedIndex(index)  # the last committed version, whatever the writer was doing
        table = opened._table.to_arrow()
        ids = table["id"].to_pylist()
        assert opened.count() == len(ids) == len(set(ids))  # consistent counts, one row per id
        assert opened.count() > 0
        hits = opened.search(table["image_vector"][0].values.to_numpy(), k=3, fields=("image",))
        assert hits and hits[0].id == ids[0]
        counts.append(opened.count())
    # Every writer resumed after the previous one's death (no stale lock, no corrupt version).
    assert len(counts) == 6
