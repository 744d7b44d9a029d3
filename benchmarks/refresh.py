"""Incremental refresh of the embedded index: `clip-search index --sync` on a generated catalogue of
N products with generated photos (JPEG, 128x128), run in process through the real CLI with the
encoder counted (a counting wrapper around ClipEncoder: what it was asked to encode, not a log line).

    flock /work/bench.lock python -m benchmarks.refresh                       # 10,000 products, 1% changed
    python -m benchmarks.refresh --products 2000 --workdir /tmp/refresh

Phases: (1) the first index of the whole catalogue (every product encoded), (2) a refresh of the
unchanged catalogue (target: 0 encoded, < 30 s), (3) a refresh with 1% of the photos changed
(target: 1% encoded). The bound for (2) is measured in the same run: reading and hashing every
photo (the work a refresh cannot skip: a changed photo is only found by reading it).
Model: the tiny test model unless --model names an artifact (encoding speed matters only for (1) and (3)).
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

SIDE = 128


def photo(seed: int) -> bytes:
    """A JPEG of coloured blocks, different for every seed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(np.kron(blocks, np.ones((SIDE // 8, SIDE // 8, 1), dtype=np.uint8)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def make_catalogue(folder: Path, products: int) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with open(folder / "products.jsonl", "w") as out:
        for i in range(products):
            (folder / "images" / f"p{i}.jpg").write_bytes(photo(i))
            out.write(json.dumps({"id": f"p{i}", "title": f"product {i} shelf {i % 97}", "image": f"images/p{i}.jpg",
                                  "shelf": str(i % 97)}) + "\n")
    return folder / "products.jsonl"


class Counter:
    """Counts what the real encoder is asked to encode (images, texts), in this process."""

    def __init__(self):
        from clip_search.encoder import ClipEncoder

        self.images = self.texts = 0
        encode_images, encode_texts = ClipEncoder.encode_images, ClipEncoder.encode_texts
        counter = self

        def images(encoder, batch, *args, **kwargs):
            counter.images += len(batch)
            return encode_images(encoder, batch, *args, **kwargs)

        def texts(encoder, batch, *args, **kwargs):
            counter.texts += len(batch)
            return encode_texts(encoder, batch, *args, **kwargs)

        ClipEncoder.encode_images, ClipEncoder.encode_texts = images, texts

    def take(self) -> tuple[int, int]:
        taken = (self.images, self.texts)
        self.images = self.texts = 0
        return taken


def run_index(catalogue: Path, index: Path, model: Path, counter: Counter) -> dict:
    from click.testing import CliRunner

    from clip_search.cli import main

    start = time.perf_counter()
    result = CliRunner().invoke(main, ["index", "--catalogue", str(catalogue), "--index", str(index), "--model",
                                       str(model), "--sync"], catch_exceptions=False)
    seconds = time.perf_counter() - start
    if result.exit_code:
        raise SystemExit(result.output)
    images, texts = counter.take()
    lines = [line for line in result.stdout.splitlines() if line.startswith(("skipped", "deleted", "indexed"))]
    return {"seconds": round(seconds, 2), "images_encoded": images, "titles_encoded": texts, "output": lines}


def hash_bound(catalogue: Path) -> float:
    """Seconds to read and sha256 every photo of the catalogue (the floor of a refresh)."""
    start = time.perf_counter()
    for path in sorted((catalogue.parent / "images").iterdir()):
        hashlib.sha256(path.read_bytes()).digest()
    return round(time.perf_counter() - start, 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of photos changed for phase 3")
    parser.add_argument("--model", type=Path, help="model.tar.gz (default: the tiny test model)")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="clip-search-refresh-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        from clip_search.packaging.build import package_model

        args.model = package_model(workdir / "model.tar.gz", test_model=True)
    flags = subprocess.run("grep -o 'avx512_vnni\\|avx512f\\|avx2' /proc/cpuinfo | sort -u | tr '\\n' ' '",
                           shell=True, capture_output=True, text=True).stdout.strip()
    print(f"cpu flags: {flags}; cores: {os.cpu_count()}; load before: {os.getloadavg()}", flush=True)
    start = time.perf_counter()
    catalogue = make_catalogue(workdir / "shop", args.products)
    print(f"generated {args.products} products with photos in {time.perf_counter() - start:.1f} s", flush=True)
    counter = Counter()
    index = workdir / "index"
    results = {"products": args.products, "cpu_flags": flags}
    results["first"] = run_index(catalogue, index, args.model, counter)
    print("first index:", results["first"], flush=True)
    results["unchanged"] = run_index(catalogue, index, args.model, counter)
    results["read_and_hash_bound_seconds"] = hash_bound(catalogue)
    print("unchanged refresh:", results["unchanged"], "bound (read + sha256 every photo):",
          results["read_and_hash_bound_seconds"], "s", flush=True)
    changed = int(args.products * args.changed)
    step = max(1, args.products // max(changed, 1))
    for i in range(0, step * changed, step):
        (catalogue.parent / "images" / f"p{i}.jpg").write_bytes(photo(args.products + i))
    results["changed"] = changed
    results["one_percent"] = run_index(catalogue, index, args.model, counter)
    print(f"{changed} photos changed:", results["one_percent"], flush=True)
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    ok = (results["unchanged"]["images_encoded"] == 0 and results["unchanged"]["seconds"] < 30
          and results["one_percent"]["images_encoded"] == changed)
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
