"""Text query round trip through the search app over HTTP: `python -m benchmarks.app_latency`.

What a page or a client sees: GET /api/search?q=TEXT&k=10 on `clip-search app` (a real process on
127.0.0.1, uvicorn + Starlette), which encodes the text in process and searches the embedded index,
then answers JSON. The index holds --rows products (default 100,000) with synthetic unit vectors
for both fields (image and title) and grocery-shaped metadata, recorded with the model's id so the
app accepts it. The model is full-size ViT-B-32 with seeded random weights exported for onnx-int8
(what `package-model --runtime auto` ships on this machine), packaged once into --work:

  clip-search package-model --arch ViT-B-32 --random-weights --runtime onnx-int8 -o WORK/ViT-B-32-random-onnx-int8.tar.gz

Queries are the demo catalogue's titles and description sentences, one request at a time over one
keep-alive connection (http.client). Reported side by side, p50 and p99 of each stage: encode and
search (the answer's `took_ms`), the app's own rest (its `Server-Timing: app;dur=` minus those two:
routing, parsing, the thread hop, JSON) and HTTP (the round trip minus the app's time: sockets,
uvicorn, the client), and the round trip against the target (p50 <= 15 ms, p99 <= 40 ms).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "code"))  # run from a checkout without installing
from clip_search.demo_data import GROCERY  # noqa: E402
from clip_search.runtimes import cpu_flags  # noqa: E402

TARGET_P50_MS, TARGET_P99_MS = 15.0, 40.0
URL_LINE = re.compile(r"clip-search app: (http://[^/\s]+)/")


def model_dir(args) -> Path:
    """The extracted artifact: --model, or the onnx-int8 ViT-B-32 packaged once into --work."""
    from clip_search.artifact import extract_artifact

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.model:
        path = Path(args.model)
    else:
        name = "test-model-onnx-int8" if args.quick else f"{args.arch}-random-onnx-int8"
        path = work / f"{name}.tar.gz"
        if not path.exists():
            command = [sys.executable, "-m", "clip_search.cli", "package-model", "--runtime", "onnx-int8", "-o", str(path)]
            command += ["--test-model"] if args.quick else ["--arch", args.arch, "--random-weights"]
            print(f"packaging {path.name} once: {' '.join(command[2:])}", flush=True)
            subprocess.run(command, check=True, env=_env())
    if path.is_dir():
        return path
    target = path.with_name(path.name[: -len(".tar.gz")])
    if not (target / ".complete").exists():
        import shutil

        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(extract_artifact(path)), target)
        (target / ".complete").touch()
    return target


def build_index(args, model: Path) -> Path:
    """--rows products, image + title vectors (synthetic, unit length), built once per model."""
    from clip_search.artifact import read_manifest
    from clip_search.search.errors import SearchError
    from clip_search.search.index import open_index
    from clip_search.search.records import EmbeddedProduct, Product

    manifest = read_manifest(model)
    model_id, dim = manifest["model_id"], int(manifest["embed_dim"])
    # "lance": the embedded index's LanceDB format (an older run's faiss folder has another name)
    path = Path(args.work) / f"app-index-lance-{args.rows}-{re.sub(r'[^A-Za-z0-9]+', '-', model_id)}"
    try:
        index = open_index(str(path))
        if index.info() is not None and index.count() == args.rows:
            return path
    except SearchError:  # a half-built or outdated folder of ours: build it again
        import shutil

        shutil.rmtree(path)
        index = open_index(str(path))
    print(f"building the {args.rows:,}-product embedded index (once; reused next run) ...", flush=True)
    index.drop()
    index.create(dim, model_id, {"model": str(model)})
    rng = np.random.default_rng(0)
    departments = ["Fruit", "Vegetables", "Packages"]
    categories = [f"category-{i}" for i in range(40)]

    def unit():
        vector = rng.standard_normal(dim, dtype=np.float32)
        return vector / np.linalg.norm(vector)

    index.upsert(EmbeddedProduct(Product(f"p{i}", f"product {i}", None,
                                         {"department": departments[i % 3], "category": categories[i % 40]}),
                                 unit(), unit()) for i in range(args.rows))
    index.close()
    return path


def queries() -> list[str]:
    rows = [json.loads(line) for line in (GROCERY / "products.jsonl").read_text().splitlines() if line]
    texts = [row["title"] for row in rows] + [row["description"].split(".")[0][:80] for row in rows]
    return [text for text in texts if text.strip()]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "code"), str(REPO), os.environ.get("PYTHONPATH", "")])}


def start_app(index: Path, model: Path, log: Path, env: dict | None = None):
    """`clip-search app` as its own process (`env`: extra variables); its log (warnings, errors) goes to `log`."""
    with open(log, "w") as err:
        process = subprocess.Popen([sys.executable, "-m", "clip_search.cli", "app", "--index", str(index), "--model",
                                    str(model), "--port", "0"], stdout=subprocess.PIPE, stderr=err, text=True,
                                   env={**_env(), **(env or {})})
    found: list[str] = []
    ready = threading.Event()

    def read():
        for line in process.stdout:
            match = URL_LINE.search(line)
            if match and not found:
                found.append(match.group(1))
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(300):
        process.kill()
        raise SystemExit(f"clip-search app did not start within 300 s; its log: {log}\n{log.read_text()[-3000:]}")
    return process, found[0]


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def server_implementations() -> str:
    """What uvicorn picks with loop="auto" / http="auto" in the app's interpreter."""
    from importlib.util import find_spec

    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    http = "httptools" if find_spec("httptools") else "h11"
    return f"uvicorn {loop} + {http}"


def server_ms(response) -> float:
    """The app's own time for the request (its Server-Timing: app;dur=MS header), in seconds."""
    match = re.search(r"\bapp;dur=([\d.]+)", response.getheader("server-timing") or "")
    if not match:
        raise SystemExit("the app's answer has no Server-Timing: app;dur=... header")
    return float(match.group(1)) / 1000.0


def measure(url: str, texts: list[str], count: int, k: int, warm_up: int = 30) -> dict[str, list[float]]:
    """`count` GET /api/search?q=...&k=... on one keep-alive connection (http.client: a client that
    adds little of its own), after `warm_up` unmeasured ones. Seconds per stage and request."""
    import http.client
    from urllib.parse import urlencode, urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    stages: dict[str, list[float]] = {"encode": [], "search": [], "app": [], "http": [], "round trip": []}
    try:
        for i in range(warm_up + count):
            path = "/api/search?" + urlencode({"q": texts[i % len(texts)], "k": k})
            started = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise SystemExit(f"GET {path}: {response.status} {body[:300]!r}")
            answer = json.loads(body)
            assert len(answer["hits"]) == k, answer
            if i < warm_up:
                continue
            encode, search = answer["took_ms"]["encode"] / 1000.0, answer["took_ms"]["search"] / 1000.0
            app = server_ms(response)
            stages["encode"].append(encode)
            stages["search"].append(search)
            stages["app"].append(max(app - encode - search, 0.0))
            stages["http"].append(max(elapsed - app, 0.0))
            stages["round trip"].append(elapsed)
    finally:
        connection.close()
    return stages


LABELS = {
    "encode": "encode (in process, onnx-int8)",
    "search": "search (embedded index)",
    "app": "app: routing, parsing, threads, JSON",
    "http": "HTTP: sockets, uvicorn, client",
    "round trip": "round trip (client-side)",
}


def table(stages: dict[str, list[float]]) -> list[str]:
    """Markdown: p50 and p99 of each stage side by side, its share of the round trip's p50, and
    the round trip against the target."""
    p50_total = pct(stages["round trip"], 50)
    lines = [f"| {'stage':<38} | p50 ms | p99 ms | share of p50 | {'against the target':<32} |",
             f"|{'-' * 40}|--------|--------|--------------|{'-' * 34}|"]
    for name, label in LABELS.items():
        p50, p99 = pct(stages[name], 50), pct(stages[name], 99)
        share = "100%" if name == "round trip" else f"{100.0 * p50 / p50_total:.0f}%" if p50_total else "-"
        target = (f"{p50 / TARGET_P50_MS:.2f}x of {TARGET_P50_MS:g}, {p99 / TARGET_P99_MS:.2f}x of {TARGET_P99_MS:g} ms"
                  if name == "round trip" else "")
        lines.append(f"| {label:<38} | {p50:6.2f} | {p99:6.2f} | {share:>12} | {target:<32} |")
    return lines


def parser_with_model_and_index(description: str) -> argparse.ArgumentParser:
    """The options of the app benchmarks that share the packaged model and the index in --work."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "clip-search-bench"),
                        help="where the artifact and the index are kept between runs (shared with python -m benchmarks)")
    parser.add_argument("--model", help="an artifact (model.tar.gz or extracted folder) instead of the packaged one")
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--rows", type=int, default=100_000)
    return parser


def main(argv=None):
    parser = parser_with_model_and_index(__doc__)
    parser.add_argument("--queries", type=int, default=1000, help="measured requests (after 30 warm-up requests)")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny test model, 10,000 rows, 100 queries (smoke)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.queries = min(args.rows, 10_000), min(args.queries, 100)

    model = model_dir(args)
    index = build_index(args, model)
    load = os.getloadavg()
    print(f"# clip-search app latency  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"command: python -m benchmarks.app_latency {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start; CPU flags: {cpu_flags()}")
    log = Path(args.work) / "app-latency-app.log"
    process, url = start_app(index, model, log)
    try:
        import requests

        health = requests.get(url + "/healthz", timeout=60).json()
        print(f"app: {url}, model {health['model']}, {health['products']:,} products ({health['backend']}), "
              f"k={args.k}, {server_implementations()}")
        stages = measure(url, queries(), args.queries, args.k)
    except BaseException:
        print(f"the app's log ({log}):\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        process.terminate()
        process.wait(30)
    print(f"\n## text query round trip through the app over HTTP: top-{args.k} of {args.rows:,} products, "
          f"{args.queries} queries\n")
    print("\n".join(table(stages)))
    p50, p99 = pct(stages["round trip"], 50), pct(stages["round trip"], 99)
    met = p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS
    print(f"\ntarget p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms: "
          f"{'met' if met else 'NOT met'} (p50 {p50:.2f} ms, p99 {p99:.2f} ms)")
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
