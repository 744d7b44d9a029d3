"""clip-search performance, side by side, in one run: `python -m benchmarks` (or benchmarks/run.py).

1. encoder: images/s and texts/s at batch 1, 8, 32 for every runtime, min cosine to torch fp32
1b. decode: full JPEG decode against libjpeg's draft mode on 800 and 1600 px photos, with min cosine
2. server: the reference regime (one raw JPEG per /invocations, torch fp32) against JSON Lines batches
   of 32 on the best runtime, through the native server (multi-model-server + our handler)
3. query: text query -> embedding -> top-10 from the embedded index holding 100,000 products
4. cold start: `clip-search serve` start to the first embedding, and the worker's RSS

The int8 bound: ONNX Runtime's MatMulInteger (1536^3, the benchmark's threads) is timed in the same
rounds as sections 1 and 2, and images/s at batch 32 are printed as a fraction of what it allows
(G int8 ops/s over the image tower's 2 x weight multiply-adds per image: 8.73 G for ViT-B-32), next
to the ratio to the torch fp32 reference; section 2 also gives the share of decoding + preprocessing.
The header names the CPU flags and the load average.

Full-size ViT-B-32 with seeded random weights (no download needed); artifacts are packaged once per
runtime into --work and reused. `--quick` runs the tiny test model with short timings, and serves and cold-starts
only the best runtime beside the reference (CI smoke).
Inputs are real product photos and titles (the grocery-store dataset beside the repo).
"""
import argparse
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "code"))  # run from a checkout without installing

from clip_search.artifact import extract_artifact, verify_artifact  # noqa: E402
from clip_search.encoder import ClipEncoder, resolve_threads  # noqa: E402
from clip_search.images import decode_image  # noqa: E402
from clip_search.packaging.build import package_model  # noqa: E402
from clip_search.packaging.export import AUTO_CANDIDATES  # noqa: E402
from clip_search.packaging.guard import AccuracyGuardError  # noqa: E402
from clip_search.packaging.torch_runtime import TorchRuntime  # noqa: E402
from clip_search.runtimes import cpu_flags  # noqa: E402
from clip_search.serving.batch import _prepare_images  # noqa: E402  (the handler's own decode path)

GROCERY = Path(os.environ.get("CLIP_SEARCH_GROCERY_DIR", REPO.parent / "shared" / "datasets" / "grocery-store"))
RUNTIMES = ["torch", "onnx", "onnx-int8", "openvino", "openvino-int8"]
BATCHES = (1, 8, 32)


# --- inputs and artifacts -----------------------------------------------------------------------
def load_inputs(count: int):
    from clip_search.packaging.guard import _titles

    paths = sorted((GROCERY / "iconic-images-and-descriptions").rglob("*.jpg"))
    paths += sorted((GROCERY / "val").rglob("*.jpg"))
    paths = paths[:: max(1, len(paths) // count)][:count]
    jpegs = [p.read_bytes() for p in paths]
    titles = sorted(set(t for t in _titles(GROCERY / "iconic-images-and-descriptions") if len(t) < 120))
    return jpegs, titles


def artifacts(args) -> dict:
    """runtime -> extracted model dir (packaged once into --work), or the reason it is missing."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    found = {}
    for runtime in args.runtimes:
        name = "test-model" if args.quick else f"{args.arch}-random"
        tar = work / f"{name}-{runtime}.tar.gz"
        if not tar.exists():
            print(f"packaging {tar.name} (once; reused next run) ...", flush=True)
            try:
                package_model(tar, arch=args.arch, test_model=args.quick, random_weights=True, runtime=runtime)
            except AccuracyGuardError as error:
                found[runtime] = f"refused by the accuracy guard: {error}"
                continue
        found[runtime] = _extracted(tar)
    return found


def _extracted(tar: Path) -> Path:
    """Extract once into --work (ViT-B-32 artifacts are 0.5-1.1 GB; extraction takes ~10 s each)."""
    import shutil

    target = tar.with_name(tar.name[: -len(".tar.gz")])
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(extract_artifact(tar)), target)
        (target / ".complete").touch()
    verify_artifact(target)
    return target


# --- the int8 bound -----------------------------------------------------------------------------
BOUND_N = 1536
RUNS_AFTER_SLEEP = 3


class Int8Bound:
    """This machine's int8 GEMM speed, measured beside the model in the same rounds: ONNX Runtime's
    MatMulInteger (uint8 x int8 -> int32, the kernel its int8 graphs run), BOUND_N cubed, on the
    benchmark's threads. `images(times)` turns its timings into the images/s an image tower would
    reach if every operation ran at that speed: the bound the catalogue figures are a fraction of."""

    def __init__(self, threads: int, ops_per_image: float):
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        rng = np.random.default_rng(0)
        weights = numpy_helper.from_array(rng.integers(-127, 128, (BOUND_N, BOUND_N), dtype=np.int8), "b")
        graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8-bound",
                                  [helper.make_tensor_value_info("a", TensorProto.UINT8, [BOUND_N, BOUND_N])],
                                  [helper.make_tensor_value_info("y", TensorProto.INT32, [BOUND_N, BOUND_N])], [weights])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the runtime's sessions
        self._session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self._input = {"a": rng.integers(0, 256, (BOUND_N, BOUND_N), dtype=np.uint8)}
        self.threads, self.ops_per_image = threads, ops_per_image
        self.times: list[float] = []
        self.awake_times: list[float] = []

    def call(self) -> None:
        self._session.run(None, self._input)

    def call_awake(self) -> None:
        """One run timed after RUNS_AFTER_SLEEP untimed ones, its time kept in `awake_times`: in the
        server section every call follows a sleep (`settle`), and a ~7 ms run right after it
        measured at about half the speed of a run in a loop (threads and the vCPU waking), which a
        0.5 s served batch does not feel."""
        for _ in range(RUNS_AFTER_SLEEP):
            self._session.run(None, self._input)
        start = time.perf_counter()
        self._session.run(None, self._input)
        self.awake_times.append(time.perf_counter() - start)

    def record(self, times: list[float]) -> None:
        self.times += times

    @property
    def gops(self) -> float:
        return 2 * BOUND_N ** 3 / statistics.median(self.times) / 1e9

    @property
    def images_per_second(self) -> float:
        return self.gops * 1e9 / self.ops_per_image

    def fraction(self, rate: "Figure") -> str:
        return f"{rate.median / self.images_per_second:.2f}"

    def describe(self) -> str:
        return (f"int8 bound: ONNX Runtime MatMulInteger {BOUND_N}^3 on {self.threads} threads, {len(self.times)} runs "
                f"interleaved with the rows above: {self.gops:.0f} G int8 ops/s -> {self.images_per_second:.4g} images/s "
                f"at {self.ops_per_image / 1e9:.3g} G ops per image")


def image_ops(model_dir) -> float:
    """Integer operations per image of a ViT image tower: 2 x the multiply-adds of its weight
    matrices (patch embedding, every layer's qkv, out, and MLP, the projection), from the model
    config; the attention's own products (activations x activations, ~1%) are left out."""
    from clip_search.artifact import read_config

    config = read_config(model_dir)["model_cfg"]
    vision = config["vision_cfg"]
    size, patch, width = vision.get("image_size", 224), vision["patch_size"], vision["width"]
    size = size[0] if isinstance(size, (list, tuple)) else size
    grid = (size // patch) ** 2
    tokens = grid + 1
    mlp = int(width * vision.get("mlp_ratio", 4.0))
    per_layer = tokens * (4 * width * width + 2 * width * mlp)
    macs = grid * 3 * patch * patch * width + vision["layers"] * per_layer + width * config["embed_dim"]
    return 2.0 * macs


# --- timing -------------------------------------------------------------------------------------
def timed(fn, budget: float, min_runs: int = 2) -> list[float]:
    fn()  # warm-up: first calls allocate and pick kernels
    times, start = [], time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def interleaved(calls: list, budget: float, min_rounds: int = 3, settle: float = 0.0) -> dict:
    """{label: [seconds]}: warm each call once, then rounds of one call each until the budget.

    `settle`: untimed seconds of sleep before each call, for calls in other processes: a torch
    worker's OpenMP threads keep spinning for a while after it answers, and without a pause the
    next call measured pays for that (measured: +47 ms on a 350 ms batch)."""
    for _, call in calls:
        call()
    times = {label: [] for label, _ in calls}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or time.perf_counter() - start < (budget + settle) * len(calls):
        for label, call in calls:
            time.sleep(settle)
            t0 = time.perf_counter()
            call()
            times[label].append(time.perf_counter() - t0)
        rounds += 1
    return times


class Figure:
    """One measured figure: its samples, printed as median with min and the number of samples.

    Tables compare medians (ratios are median over median); `best` is the sample best for the
    figure's direction (the fastest rate, the shortest time), printed as min for times."""

    def __init__(self, samples, higher_is_better: bool):
        self.samples = [float(v) for v in samples]
        assert self.samples, "a figure needs at least one sample"
        self.higher_is_better = higher_is_better

    @property
    def median(self) -> float:
        return float(statistics.median(self.samples))

    @property
    def min(self) -> float:
        return float(min(self.samples))

    @property
    def n(self) -> int:
        return len(self.samples)

    def spread(self) -> str:
        return f"[min {self.min:.4g}, n={self.n}]"


def per_second(times: list[float], items: int) -> Figure:
    """Items per second of each timed call (rates: min is the slowest call)."""
    return Figure([items / t for t in times], higher_is_better=True)


def ms(times: list[float]) -> Figure:
    return Figure([t * 1e3 for t in times], higher_is_better=False)


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def table(title: str, header: list[str], rows: list[list], ref: int = 0, ratio_cols=()) -> None:
    """Print rows; columns in ratio_cols also get 'x.x×' relative to row `ref` (higher = better)."""
    out = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            value = cell.median if isinstance(cell, Figure) else cell
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            reference = rows[ref][i].median if isinstance(rows[ref][i], Figure) else rows[ref][i]
            if i in ratio_cols and isinstance(value, float) and isinstance(reference, float) and reference:
                text += f" ({value / reference:.1f}x)"
            if isinstance(cell, Figure):
                text += " " + cell.spread()
            cells.append(text)
        out.append(cells)
    widths = [max(len(str(h)), *(len(r[i]) for r in out)) for i, h in enumerate(header)]
    print(f"\n## {title}\n")
    if any(isinstance(cell, Figure) for row in rows for cell in row):
        print("Each figure: median (ratio of medians to the first row) [min, n = samples].\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cells in out:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |")
    sys.stdout.flush()


# --- 1. encoder ---------------------------------------------------------------------------------
def encoder_rows(args, models, jpegs, titles, threads, bound):
    reference_dir = models["torch"]
    base = ClipEncoder(reference_dir, verify_artifact(reference_dir), runtime=_eager(reference_dir), threads=threads)
    pixels = base.preprocess_images([decode_image(j) for j in jpegs[:32]])
    texts = titles[:32]
    ref_img, ref_txt = base.encode_pixels(pixels), base.encode_texts(texts)
    candidates = [("torch fp32 eager (reference)", base)]
    candidates.append(("torch fp32, text trimmed", ClipEncoder.from_artifact(reference_dir, runtime="torch", threads=threads)))
    for runtime in RUNTIMES[1:]:
        if runtime in models and not isinstance(models[runtime], str):
            enc = ClipEncoder.from_artifact(models[runtime], runtime=runtime, threads=threads)
            label = {"onnx": "ONNX Runtime fp32", "onnx-int8": "ONNX Runtime int8 (dynamic, one input per run)"}.get(runtime)
            if runtime == "openvino-int8":
                label = f"OpenVINO int8 weights, activations per row ({getattr(enc.runtime, 'precision', '?')}), whole batch per run"
            label = label or f"OpenVINO ({getattr(enc.runtime, 'precision', '?')})"
            candidates.append((label, enc))
            if getattr(enc.runtime, "one_input_per_run", False):
                # The same graphs given each batch in one call: what batch invariance costs (or saves).
                candidates.append((BATCHED_INT8, _batched_twin(enc)))
    # Interleaved: each round times every runtime once, so a burst of other load on the machine
    # hits all rows alike instead of whichever row happened to run during it.
    work = [(lambda enc, b=b: enc.encode_pixels(pixels[:b]), b, args.budget) for b in BATCHES]
    work += [(lambda enc, b=b: enc.encode_texts(texts[:b]), b, args.budget / 2) for b in BATCHES]
    rates = {label: [] for label, _ in candidates}
    single_text = {}
    for index, (fn, items, budget) in enumerate(work + [(lambda enc: enc.encode_texts(texts[:1]), 1, args.budget / 2)]):
        calls = [(label, lambda enc=enc, fn=fn: fn(enc)) for label, enc in candidates]
        images = index < len(BATCHES)
        if images:  # the bound is timed in the same rounds as the image rows
            calls.append((BOUND, bound.call))
        times = interleaved(calls, budget)
        if images:
            bound.record(times.pop(BOUND))
        for label, _ in candidates:
            if len(rates[label]) < len(work):
                rates[label].append(per_second(times[label], items))
            else:
                single_text[label] = ms(times[label])
    rows, best = [], None
    for label, enc in candidates:
        assert enc.runtime.name != "torch" or label.startswith("torch"), f"{label} fell back to torch"
        row = [label, *rates[label], single_text[label]]
        cos_img = float(np.sum(enc.encode_pixels(pixels) * ref_img, axis=1).min())
        cos_txt = float(np.sum(enc.encode_texts(texts) * ref_txt, axis=1).min())
        row.append(f"{cos_img:.5f} / {cos_txt:.5f}")
        row.append(bound.fraction(rates[label][len(BATCHES) - 1]))
        rows.append(row)
        within = cos_img >= 0.999 and cos_txt >= 0.998
        if within and label != BATCHED_INT8 and (best is None or row[3].median > best[1]):
            best = (enc, row[3].median, label)
    header = ["runtime", "img/s b1", "img/s b8", "img/s b32", "txt/s b1", "txt/s b8", "txt/s b32",
              f"text ms b1 ({int(base.tokenize(texts[:1]).argmax()) + 1} tokens)", "min cos img / txt",
              "img/s b32 / int8 bound"]
    table("1. encoder (in-process, preprocessed inputs)", header, rows, ratio_cols=range(1, 7))
    print(f"\n{bound.describe()}")
    # The encoders loaded here, by runtime, for the later sections (a ViT-B-32 is not loaded twice).
    loaded = {enc.manifest.get("runtime", "torch") if enc.runtime.name != "torch" else "torch": enc
              for label, enc in candidates[1:] if label != BATCHED_INT8}
    return best, loaded


BOUND = "int8 bound"
BATCHED_INT8 = "ONNX Runtime int8 (dynamic, whole batch per run: not batch invariant)"


def _batched_twin(encoder):
    """`encoder`'s int8 sessions, each batch run in one call (shared activation scales)."""
    from clip_search.runtimes.onnx_runtime import OnnxRuntime

    runtime = encoder.runtime
    twin = OnnxRuntime(runtime._image, runtime._text, runtime.name, one_input_per_run=False)
    return ClipEncoder(encoder.model_dir, encoder.manifest, runtime=twin, threads=encoder.threads)


def _eager(model_dir):
    runtime = TorchRuntime.load(model_dir, verify_artifact(model_dir), 0)
    runtime.trims_text = False  # the reference sample pads every text to the full 77 tokens
    return runtime


# --- 1b. decode ---------------------------------------------------------------------------------
def decode_rows(args, reference, encoder, name, jpegs):
    """Full decode vs JPEG draft (what the encoder does) on catalogue-sized photos, one at a time
    (the server decodes one photo per core). The dataset's photos are 198-348 px, where draft has
    nothing to skip: they are upscaled and re-encoded at quality 90 to 800x600 and 1600x1200.
    Cosines: draft vs full on torch fp32 (`reference`: the decode alone), and `encoder` (runtime
    `name`) on draft vs torch fp32 on a full decode (what the accuracy guard's threshold is about)."""
    import io

    from PIL import Image

    sizes, count = (800, 1600), 4 if args.quick else 16
    rates, decode_cos, total_cos = {"full": [], "draft": []}, [], []
    for side in sizes:
        photos = []
        for jpeg in jpegs[-count:]:
            buffer = io.BytesIO()
            Image.open(io.BytesIO(jpeg)).convert("RGB").resize((side, side * 3 // 4), Image.LANCZOS).save(
                buffer, "JPEG", quality=90)
            photos.append(buffer.getvalue())

        def prepare(draft_size, photos=photos):
            return encoder.preprocess_images([decode_image(p, draft_size=draft_size) for p in photos])

        times = interleaved([("full", lambda: prepare(None)), ("draft", lambda: prepare(encoder.image_size))],
                            args.budget / 2)
        for label in rates:
            rates[label].append(per_second(times[label], len(photos)))
        full, draft = prepare(None), prepare(encoder.image_size)
        exact = reference.encode_pixels(full)
        decode_cos.append(float(np.sum(exact * reference.encode_pixels(draft), axis=1).min()))
        total_cos.append(float(np.sum(exact * encoder.encode_pixels(draft), axis=1).min()))
    rows = [["full decode (exact)", *rates["full"], "1.00000", ""],
            [f"JPEG draft >= {encoder.image_size} px (the encoder's decode)", *rates["draft"],
             f"{min(decode_cos):.5f}", f"{min(total_cos):.5f}"]]
    table(f"1b. decode + preprocess, photos/s, one photo at a time ({count} per size)",
          ["decode", *(f"{s}x{s * 3 // 4}" for s in sizes), "min cos to full, torch fp32",
           f"min cos, {name} on draft vs torch fp32 on full"], rows, ratio_cols=(1, 2))


# --- 2. server ----------------------------------------------------------------------------------
def server_rows(args, models, paths, jpegs, bound):
    """`paths`: [(runtime, in-process encoder)], our batched path on each, against the reference."""
    import contextlib
    import io

    import requests
    from PIL import Image

    from clip_search.serving.server import ModelServer

    # Both sides encode the same 32 photos: the reference one request per photo, ours in one batch.
    batch = jpegs[:32]
    n_ref = len(batch)
    body = "\n".join(json.dumps({"id": i, "image": base64.b64encode(j).decode()}) for i, j in enumerate(batch))
    # All servers run at once and are timed in alternating rounds (fair under changing load).
    with contextlib.ExitStack() as stack, requests.Session() as http:
        ref_server = stack.enter_context(ModelServer(models["torch"]))
        servers = {runtime: stack.enter_context(ModelServer(models[runtime])) for runtime, _ in paths}

        def one_by_one():
            for jpeg in batch:
                r = http.post(ref_server.url + "/invocations", data=jpeg, headers={"Content-Type": "image/jpeg"})
                r.raise_for_status()

        def batched(server):
            r = http.post(server.url + "/invocations", data=body.encode(),
                          headers={"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"})
            r.raise_for_status()
            assert len(r.text.splitlines()) == len(batch)

        def in_process(enc):  # what the handler does for the batch, without HTTP and MMS
            enc.encode_pixels(np.stack(_prepare_images(enc, batch)))

        calls = [("ref", one_by_one)]
        for runtime, enc in paths:
            calls += [(runtime, lambda s=servers[runtime]: batched(s)), (runtime + " model", lambda e=enc: in_process(e)),
                      (runtime + " decode", lambda e=enc: _prepare_images(e, batch))]
        calls.append((BOUND, bound.call_awake))
        times = interleaved(calls, args.budget, settle=0.5)
    times.pop(BOUND)
    bound.times = []  # this section's own bound: the same rounds as its rows
    bound.record(bound.awake_times[1:])  # the first was interleaved's untimed warm-up
    reference = per_second(times["ref"], n_ref)
    rows = [[f"reference: 1 raw JPEG per request ({n_ref} requests), torch fp32", reference, bound.fraction(reference), "", "", ""]]
    for runtime, _ in paths:
        overhead = statistics.median(times[runtime]) / statistics.median(times[runtime + " model"]) - 1
        served = per_second(times[runtime], len(batch))
        decode = statistics.median(times[runtime + " decode"]) / statistics.median(times[runtime])
        rows.append([f"JSON Lines batches of 32, {runtime}", served, bound.fraction(served),
                     per_second(times[runtime + " model"], len(batch)), f"{overhead * 100:+.1f}%", f"{decode * 100:.1f}%"])
    mean_px = sum(Image.open(io.BytesIO(j)).size[0] * Image.open(io.BytesIO(j)).size[1] for j in batch) / len(batch)
    table(f"2. server (native MMS, images/s incl. JPEG decode; the same {len(batch)} photos, {mean_px / 1e3:.0f}k px "
          "on average, on every row)",
          ["path", "images/s", "images/s / int8 bound", "in-process decode+encode img/s", "server overhead",
           "decode+preprocess share"], rows,
          ratio_cols=(1,))
    print(f"\n{bound.describe()}")


# --- 3. query -----------------------------------------------------------------------------------
def query_rows(args, best_enc, titles):
    rows_n = args.rows
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((rows_n, best_enc.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    search, backend = _embedded_index(args, vectors)
    queries = [t.split(".")[0][:60] for t in titles][:200] or ["milk"]
    for q in queries[:5]:
        search(best_enc.encode_texts([q])[0])
    enc_t, rt_t = [], []
    deadline = time.perf_counter() + args.budget * 3
    i = 0
    while time.perf_counter() < deadline or i < 50:
        q = queries[i % len(queries)]
        t0 = time.perf_counter()
        vector = best_enc.encode_texts([q])[0]
        t1 = time.perf_counter()
        hits = search(vector)
        t2 = time.perf_counter()
        assert len(hits) == 10
        enc_t.append(t1 - t0)
        rt_t.append(t2 - t0)
        i += 1
    table(f"3. query: text -> embedding -> top-10 of {rows_n:,} products ({backend}), {i} queries",
          ["step", "ms", "p99 ms"],
          [["encode text", ms(enc_t), pct(enc_t, 99)], ["encode + search", ms(rt_t), pct(rt_t, 99)]])


def _embedded_index(args, vectors):
    """The product's embedded index, through open_index / the VectorIndex interface (any engine)."""
    from clip_search.search.index import open_index
    from clip_search.search.records import EmbeddedProduct, Product

    path = Path(args.work) / f"index-{len(vectors)}-{vectors.shape[1]}"
    index = open_index(str(path))
    if index.info() is None or index.count() != len(vectors):
        print(f"building the embedded index of {len(vectors):,} rows (once) ...", flush=True)
        index.drop()
        index.create(vectors.shape[1], "benchmark/random")
        index.upsert(EmbeddedProduct(Product(id=f"p{i}", title=f"product {i}"), vectors[i])
                     for i in range(len(vectors)))
        index.refresh()
        index.close()
        index = open_index(str(path))
    info = index.info()
    approximate = getattr(index, "is_approximate", None)
    if approximate is None:
        approximate = bool((info.extra or {}).get("approximate")) if info else False
    return (lambda v: index.search(v, k=10)), f"embedded index, {'ANN (HNSW)' if approximate else 'exact'}"


# --- 4. cold start ------------------------------------------------------------------------------
def cold_rows(args, models, runtimes):


    rows = []
    for runtime in runtimes:
        starts, rss = [], None
        for _ in range(args.cold_runs):
            elapsed, rss = _cold_start(models[runtime])
            if elapsed is None:
                break
            starts.append(elapsed)
        if len(starts) < args.cold_runs:
            rows.append([runtime, "no answer", "", ""])
        else:
            rows.append([runtime, Figure(starts, higher_is_better=False), rss[0] / 2**20, rss[1] / 2**20])
    table(f"4. cold start (`clip-search serve --model DIR`, extracted artifact as in /opt/ml/model), "
          f"{args.cold_runs} starts each", ["runtime", "start -> first embedding s", "worker RSS MiB",
                                            "MMS front end (Java) RSS MiB"], rows)


def _cold_start(model):
    """Seconds from `clip-search serve` to the first embedding (None: no answer), and (worker, Java) RSS."""
    import psutil
    import requests

    from clip_search.serving.server import free_port

    port = free_port()
    start = time.perf_counter()
    process = subprocess.Popen([str(Path(sys.executable).parent / "clip-search"), "serve", "--model", str(model),
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, env=dict(os.environ, PYTHONPATH=str(REPO / "code")))
    try:
        elapsed = None
        while time.perf_counter() - start < 180 and process.poll() is None:
            try:
                r = requests.post(f"http://127.0.0.1:{port}/invocations", data=b"milk", timeout=30,
                                  headers={"Content-Type": "text/plain"})
                if r.status_code == 200:
                    elapsed = time.perf_counter() - start
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        rss = _rss(psutil.Process(process.pid))
    finally:
        import signal

        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    return elapsed, rss


def _rss(root):
    workers = java = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            cmd = " ".join(proc.cmdline())
            rss = proc.memory_info().rss
        except Exception:  # noqa: BLE001 - a process may exit while we look
            continue
        if "java" in cmd:
            java += rss
        elif "service_worker" in cmd or "model_service_worker" in cmd:
            workers += rss
    return workers, java


# --- main ---------------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--random-weights", action="store_true", default=True,
                        help="full-size --arch with seeded random weights (the default: no download here)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny test model, short timings, the best runtime only in sections 2 and 4 (CI smoke)")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "clip-search-bench"),
                        help="where packaged artifacts and the 100k index are kept between runs")
    parser.add_argument("--sections", default="encoder,decode,server,query,cold")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--rows", type=int, default=100_000, help="products in the query benchmark's index")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cold-runs", type=int, default=3, help="cold starts timed per runtime (at least 3)")
    args = parser.parse_args(argv)
    args.runtimes = [r for r in args.runtimes.split(",") if r]
    if "torch" not in args.runtimes:
        args.runtimes.insert(0, "torch")
    args.cold_runs = max(3, args.cold_runs)
    if args.quick:
        args.budget, args.rows = min(args.budget, 0.3), min(args.rows, 10_000)
        # The same code paths as the full run: the 10,000-row query index must be past the exact-search
        # threshold (20,000 by default), so the approximate index (HNSW) is what answers.
        os.environ.setdefault("CLIP_SEARCH_EXACT_MAX_ROWS", "1000")
    sections = set(args.sections.split(","))
    threads = resolve_threads(args.threads)
    load = os.getloadavg()
    print(f"# clip-search benchmarks  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {platform.processor() or platform.machine()}, {threads} threads, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start; model: "
          f"{'clip-search test model' if args.quick else args.arch + ' random weights'}; CPU flags: {cpu_flags()}")
    models = artifacts(args)
    for runtime, value in models.items():
        if isinstance(value, str):
            print(f"  {runtime}: {value}")
    jpegs, titles = load_inputs(64)
    bound = Int8Bound(threads, image_ops(models["torch"]))
    best, loaded = None, {}
    if sections & {"encoder", "decode", "server", "query"}:
        best, loaded = encoder_rows(args, models, jpegs, titles, threads, bound)
    if "torch" not in loaded:
        loaded["torch"] = ClipEncoder.from_artifact(models["torch"], runtime="torch", threads=threads)
    best_enc = best[0] if best else loaded["torch"]
    best_runtime = next((name for name, enc in loaded.items() if enc is best_enc), "torch")  # eager won
    print(f"\nbest runtime within the accuracy guard: {best_runtime}")
    if "decode" in sections:
        decode_rows(args, loaded["torch"], best_enc, best_runtime, jpegs)
    # Our best path, and the other runtimes `package-model --runtime auto` may choose for other weights.
    paths = [(best_runtime, best_enc)]
    # and openvino-int8, the batch-invariant int8 that runs whole batches (issue 27), when asked for.
    paths += [(runtime, loaded[runtime]) for runtime in (*AUTO_CANDIDATES, "openvino-int8")
              if runtime != best_runtime and runtime in loaded]
    if args.quick:
        # The smoke run (CI) serves and cold-starts the best runtime only, beside the reference: every
        # other row is the same loop over another artifact, and each costs server starts.
        paths = paths[:1]
    if "server" in sections:
        server_rows(args, models, paths, jpegs, bound)
    if "query" in sections:
        query_rows(args, best_enc, titles)
    if "cold" in sections:
        # Cold starts of what `auto` may package; openvino-int8 is opt-in and its starts are not timed here.
        cold_rows(args, models, ["torch"] + [runtime for runtime, _ in paths
                                             if runtime != "torch" and (runtime == best_runtime or runtime in AUTO_CANDIDATES)])
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
