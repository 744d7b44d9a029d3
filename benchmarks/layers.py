"""Where an image tower's time goes, by operator: `python -m benchmarks.layers`.

For each artifact (by default the ViT-B-32 onnx-int8 and openvino-int8 ones `python -m benchmarks`
packaged into --work), the image graph runs the way its runtime runs it (onnx-int8 one input per
call, openvino-int8 the whole batch in one call; the runtime's own session options and compile
properties) on --images real photos, with the runtime's profiler on: ONNX Runtime's per-node
profile, OpenVINO's per-layer performance counters. Printed: time and share by operator type, and
the int8 matrix products' speed against the int8 bound (benchmarks.run.Int8Bound), timed in the
same run (20 runs in a loop right after each model: warmer than `python -m benchmarks`, which times
it between its other rows). The profilers add a little per node (most to the small ones), so the
shares are a breakdown, not a throughput.
"""
import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.run import BOUND_N, GROCERY, Int8Bound, image_ops, load_inputs, timed
from clip_search.artifact import extract_artifact, read_manifest
from clip_search.encoder import ClipEncoder, resolve_threads
from clip_search.runtimes import cpu_flags

# The operators that are the int8 matrix products: what the bound is the speed of.
INT8_PRODUCTS = {"DynamicQuantizeMatMul", "MatMulInteger", "QLinearMatMul", "FullyConnectedCompressed"}
BOUND_RUNS = 20  # the bound's runs, in a loop right after each model's


def onnx_layers(model_dir: Path, manifest: dict, pixels: np.ndarray, threads: int) -> tuple[dict, float]:
    """{operator: seconds} over the batch, run one input per call as the onnx-int8 runtime does; wall s."""
    import onnxruntime as ort

    from clip_search.runtimes.onnx_runtime import runs_one_input_at_a_time, session_options

    options = session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="clip-search-layers-"), "ort")
    graph = str(model_dir / manifest["runtime_config"]["graphs"]["image_encoder"])
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    one = runs_one_input_at_a_time(manifest)
    batches = [pixels[i:i + 1] for i in range(len(pixels))] if one else [pixels]
    for batch in batches[:2]:  # warm-up: kernels picked, buffers allocated (their nodes are dropped below)
        session.run(None, {"pixels": batch})
    warm_runs = min(2, len(batches))
    start = time.perf_counter()
    for batch in batches:
        session.run(None, {"pixels": batch})
    wall = time.perf_counter() - start
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = [event for event in events if event.get("name") == "model_run"]
    first_timed = runs[warm_runs]["ts"] if len(runs) > warm_runs else 0
    spent: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= first_timed:
            spent[event["args"]["op_name"]] += event["dur"] / 1e6
    return spent, wall


def openvino_layers(model_dir: Path, manifest: dict, pixels: np.ndarray, threads: int) -> tuple[dict, float]:
    """{operator: seconds} of one call on the whole batch (OpenVINO's counters); wall s."""
    import openvino as ov

    from clip_search.runtimes.openvino_runtime import compile_properties

    core = ov.Core()
    properties = {**compile_properties(core, manifest, threads), "PERF_COUNT": "YES"}
    compiled = core.compile_model(str(model_dir / manifest["runtime_config"]["graphs"]["image_encoder"]), "CPU",
                                  properties)
    request = compiled.create_infer_request()
    request.infer({0: pixels})  # warm-up
    start = time.perf_counter()
    request.infer({0: pixels})
    wall = time.perf_counter() - start
    spent: dict[str, float] = defaultdict(float)
    for layer in request.profiling_info:
        spent[layer.node_type] += layer.real_time.total_seconds()
    return spent, wall


def report(name: str, spent: dict, wall: float, images: int, bound: Int8Bound) -> None:
    total = sum(spent.values())
    products = sum(seconds for op, seconds in spent.items() if op in INT8_PRODUCTS)
    print(f"\n## {name}: {images} images, {wall * 1000:.0f} ms wall ({images / wall:.1f} images/s, "
          f"{images / wall / bound.images_per_second:.2f} of the int8 bound); profiled {total * 1000:.0f} ms\n")
    print("| operator | ms | share |\n|---|---:|---:|")
    for op, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        if seconds / total >= 0.003:
            print(f"| {op} | {seconds * 1000:.1f} | {100 * seconds / total:.1f}% |")
    if products:
        rate = images * bound.ops_per_image / products / 1e9
        print(f"\nint8 matrix products: {100 * products / total:.1f}% of the profiled time, at {rate:.0f} G int8 ops/s = "
              f"{rate / bound.gops:.2f} of the bound; the rest of the graph takes the other {100 * (1 - products / total):.1f}%")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "clip-search-bench"),
                        help="where `python -m benchmarks` packaged its artifacts")
    parser.add_argument("--model", action="append", help="an onnx-int8 or openvino-int8 artifact (repeatable) "
                        "instead of --work's ViT-B-32 ones")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    threads = resolve_threads(args.threads)
    models = args.model or [str(Path(args.work) / f"ViT-B-32-random-{runtime}")
                            for runtime in ("onnx-int8", "openvino-int8")]
    load = os.getloadavg()
    print(f"# clip-search image tower by operator  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"CPU flags: {cpu_flags()}; {threads} threads; load average {load[0]:.2f} at start; photos from {GROCERY}")
    jpegs, _ = load_inputs(args.images)
    for path in models:
        model_dir = extract_artifact(Path(path))
        manifest = read_manifest(model_dir)
        encoder = ClipEncoder.from_artifact(model_dir, threads=threads)
        pixels = np.stack([encoder.preprocess(encoder.decode(jpeg)) for jpeg in jpegs]).astype(np.float32)
        bound = Int8Bound(threads, image_ops(model_dir))
        profile = openvino_layers if manifest["runtime"].startswith("openvino") else onnx_layers
        spent, wall = profile(model_dir, manifest, pixels, threads)
        bound.record(timed(bound.call, budget=0.0, min_runs=BOUND_RUNS))  # a warm-up, then a loop
        report(f"{manifest['runtime']} ({manifest.get('model_id', path)})", spent, wall, len(pixels), bound)
        print(f"\nint8 bound: MatMulInteger {BOUND_N}^3, {len(bound.times)} runs right after: {bound.gops:.0f} G ops/s")
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f}")


if __name__ == "__main__":
    main()
