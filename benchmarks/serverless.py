"""The serving image as SageMaker Serverless runs it: slim vs full, side by side in one run.

    python -m benchmarks.serverless [--work DIR] [--slim IMAGE] [--full IMAGE] [--runs 3]

Needs Docker and both images (container/build.sh --variant slim / --variant full). Artifacts are
ViT-B-32 with seeded random weights, packaged once into --work (the names benchmarks/run.py uses,
so either reuses the other's): onnx-int8 (what the slim image serves) and torch fp32 (the reference
regime, served by the full image). Every container runs as Serverless does: --user 12345:12345
--read-only --tmpfs /tmp.

Tables: 1. sizes and model.tar.gz extraction; 2. `docker run` -> first embedding (>= 3 runs, min and
median) and worker RSS, and 2b. where that time goes (the phases, from the containers' log time
stamps, and the CPU seconds each process used by the first embedding); 3. catalogue encoding through the server, JSON Lines batches of 32 (slim,
onnx-int8) against one raw JPEG per request (full, torch fp32), on the same held-out store photos
(the guard calibrates on the catalogue photos of demo_data/, never on val/), interleaved rounds;
4. Serverless memory sizes emulated with `--memory M --cpus C`: cold start and p50 latency of one
text and one photo. The machine may be shared: the load average is printed at start and end.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import re
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "code"))
sys.path.insert(0, str(REPO))

from benchmarks.run import GROCERY, interleaved, pct, table  # noqa: E402
from clip_search.runtimes import cpu_flags  # noqa: E402
from tests.container.docker_helpers import SERVERLESS_ARGS, ServingContainer, cpu_seconds, docker, image_size_bytes  # noqa: E402

MEMORY_MB = (2048, 3072, 4096, 6144)
CPUS = (1, 2)


def package(work: Path, runtime: str, arch: str) -> Path:
    """work/ARCH-random-RUNTIME.tar.gz, packaged once (benchmarks/run.py's naming)."""
    tar = work / f"{arch}-random-{runtime}.tar.gz"
    if not tar.exists():
        from clip_search.packaging.build import package_model

        print(f"packaging {tar.name} (once; reused next run) ...", flush=True)
        package_model(tar, arch=arch, random_weights=True, runtime=runtime)
    return tar


def extract(tar: Path, target: Path) -> float:
    """Seconds to extract model.tar.gz as SageMaker does before the container starts."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    started = time.perf_counter()
    with tarfile.open(tar, "r:gz") as archive:
        archive.extractall(target, filter="data")
    return time.perf_counter() - started


def held_out_photos(count: int) -> list[bytes]:
    paths = sorted((GROCERY / "val").rglob("*.jpg"))
    return [p.read_bytes() for p in paths[:: max(1, len(paths) // count)][:count]]


def worker_rss_mib(container: ServingContainer) -> tuple[float, float]:
    """(Python worker RSS, Java front end RSS) in MiB, read from /proc inside the container."""
    script = ("for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); "
              "r=$(awk '/^VmRSS:/ {print $2}' $p/status 2>/dev/null); echo \"$r|$c\"; done")
    worker = java = 0
    for line in docker("exec", container.name, "sh", "-c", script).stdout.splitlines():
        rss, _, cmd = line.partition("|")
        if not rss.strip():
            continue
        if "java" in cmd:
            java += int(rss)
        elif "model_service_worker" in cmd:
            worker += int(rss)
    return worker / 1024, java / 1024


# Cold start phases: each ends at the first log line holding its marker (docker's time stamps).
PHASES = (
    ("docker: create and start the container", None),
    ("serve: Python, imports, artifact sha256", "verified in /"),
    ("MMS launcher + JVM start -> worker process", "model_service_worker started with args"),
    ("worker: handler imports + model load", "Model model loaded io_fd"),
    ("first request -> embedding at the client", None),
)
WORKER_READY = re.compile(r"worker ready: handler imports ([\d.]+) s, model load ([\d.]+) s")


def _stamp(text: str) -> float:
    """Docker's RFC 3339 time stamp (nanoseconds) -> epoch seconds."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    base = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.timezone.utc).timestamp()
    return base + float("0." + (fraction or "0"))


def timeline(container: ServingContainer, run_at: float, ready_s: float) -> dict:
    """Seconds of each cold start phase (PHASES), the worker's own split and CPU seconds by process."""
    started = _stamp(docker("inspect", "-f", "{{.State.StartedAt}}", container.name).stdout.strip())
    logs = docker("logs", "-t", container.name, check=False)
    ends, split = [started - run_at], {}
    lines = (logs.stdout + logs.stderr).splitlines()
    for _, marker in PHASES[1:-1]:
        stamp = next((_stamp(line.split(" ", 1)[0]) for line in lines if marker in line), None)
        ends.append(None if stamp is None else stamp - run_at)
    for line in lines:
        if match := WORKER_READY.search(line):
            split = {"imports": float(match[1]), "load": float(match[2])}
    ends.append(ready_s)
    phases, previous = {}, 0.0
    for (name, _), end in zip(PHASES, ends, strict=True):
        phases[name] = None if end is None else end - previous
        previous = end if end is not None else previous
    return {"phases": phases, "split": split, "cpu": cpu_seconds(container.name)}


def latencies(url: str, body: bytes, content_type: str, n: int) -> list[float]:
    times = []
    with requests.Session() as http:
        for i in range(n + 2):
            started = time.perf_counter()
            answer = http.post(url + "/invocations", data=body, headers={"Content-Type": content_type}, timeout=120)
            answer.raise_for_status()
            if i >= 2:  # two warm-ups
                times.append(time.perf_counter() - started)
    return times


def cold_start(image: str, model_dir: Path, limits: tuple = ()) -> tuple[float, ServingContainer]:
    container = ServingContainer(model_dir, image=image, run_args=(*SERVERLESS_ARGS, *limits))
    container.start()
    # `docker run` was issued at started_at (monotonic); the log time stamps are wall clock.
    container.run_at = time.time() - (time.monotonic() - container.started_at)
    try:
        return container.wait_ready(timeout=300), container
    except Exception:
        container.remove()
        raise


def breakdown_table(timelines: dict) -> None:
    """Table 2b: the median of each phase and of each process's CPU seconds, per image and artifact."""
    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else "-"

    columns = list(timelines)
    rows = [[f"{name}", *(median([t["phases"][name] for t in timelines[c]]) for c in columns)] for name, _ in PHASES]
    rows += [[f"  of which worker {part} (its log line)", *(median([t["split"].get(part) for t in timelines[c]])
                                                          for c in columns)] for part in ("imports", "load")]
    for kind in next(iter(timelines.values()))[0]["cpu"]:
        rows.append([f"CPU s by the first embedding: {kind}", *(median([t["cpu"][kind] for t in timelines[c]])
                                                                for c in columns)])
    rows.append(["CPU s by the first embedding: all processes",
                 *(median([sum(t["cpu"].values()) for t in timelines[c]]) for c in columns)])
    table("2b. where the cold start goes (median of the runs above; phases in wall seconds from `docker run`)",
          ["phase", *(f"{v}, {r} s" for v, r in columns)], rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "clip-search-bench"))
    parser.add_argument("--slim", default="clip-search:latest")
    parser.add_argument("--full", default="clip-search:full")
    parser.add_argument("--runs", type=int, default=3, help="cold starts per image (min and median)")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per catalogue measurement")
    parser.add_argument("--requests", type=int, default=15, help="timed requests per latency cell")
    parser.add_argument("--sections", default="sizes,cold,catalogue,serverless")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"# clip-search serverless benchmarks  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"host: {os.cpu_count()} vCPUs (shared with other jobs), load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} at start; model: {args.arch} random weights; CPU flags: {cpu_flags()}")
    print(f"command: python -m benchmarks.serverless {' '.join(argv or sys.argv[1:])}")

    tars = {"onnx-int8": package(work, "onnx-int8", args.arch), "torch": package(work, "torch", args.arch)}
    dirs, extraction = {}, {}
    for runtime, tar in tars.items():
        dirs[runtime] = work / f"serverless-{runtime}"
        extraction[runtime] = statistics.median(extract(tar, dirs[runtime]) for _ in range(3))
        os.chmod(dirs[runtime], 0o755)
    images = {"slim": args.slim, "full": args.full}
    present = {v: i for v, i in images.items() if docker("image", "inspect", i, check=False).returncode == 0}
    for variant in set(images) - set(present):
        print(f"  {variant} image {images[variant]} not built: its rows are skipped")

    if "sizes" in sections:
        rows = [[f"model.tar.gz, {runtime}", f"{tar.stat().st_size / 1e6:.0f} MB", f"{extraction[runtime]:.2f} s"]
                for runtime, tar in tars.items()]
        rows += [[f"image {variant} ({image})", f"{image_size_bytes(image) / 1e6:.0f} MB", ""]
                 for variant, image in present.items()]
        table("1. sizes (targets: onnx-int8 model.tar.gz <= 200 MB, slim image <= 600 MB)",
              ["what", "size", "extraction (median of 3)"], rows)

    pairs = [("slim", "onnx-int8"), ("full", "onnx-int8"), ("full", "torch")]
    pairs = [(v, r) for v, r in pairs if v in present]
    if "cold" in sections:
        rows, timelines = [], {}
        for variant, runtime in pairs:
            starts, rss = [], None
            for _ in range(args.runs):
                seconds, container = cold_start(present[variant], dirs[runtime])
                starts.append(seconds)
                timelines.setdefault((variant, runtime), []).append(timeline(container, container.run_at, seconds))
                rss = worker_rss_mib(container)
                container.remove()
            rows.append([f"{variant}, {runtime}", min(starts), statistics.median(starts),
                         extraction[runtime] + statistics.median(starts), rss[0], rss[1]])
        table(f"2. `docker run` -> first embedding ({args.runs} runs; targets: extract + run <= 3 s, worker RSS <= 400 MB)",
              ["image, artifact", "min s", "median s", "extract + median s", "worker RSS MiB", "Java RSS MiB"], rows)
        breakdown_table(timelines)

    if "catalogue" in sections and {"slim", "full"} <= set(present):
        photos = held_out_photos(64)
        batch = photos[:32]
        body = "\n".join(json.dumps({"id": i, "image": base64.b64encode(j).decode()}) for i, j in enumerate(batch)).encode()
        n_ref = 16
        _, slim = cold_start(present["slim"], dirs["onnx-int8"])
        _, full = cold_start(present["full"], dirs["torch"])
        try:
            with requests.Session() as http:
                def one_by_one():
                    for jpeg in photos[:n_ref]:
                        http.post(full.url + "/invocations", data=jpeg,
                                  headers={"Content-Type": "image/jpeg"}, timeout=120).raise_for_status()

                def batched():
                    answer = http.post(slim.url + "/invocations", data=body, timeout=120,
                                       headers={"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"})
                    answer.raise_for_status()
                    assert len(answer.text.splitlines()) == len(batch)

                times = interleaved([("ref", one_by_one), ("slim", batched)], args.budget, settle=0.5)
        finally:
            slim.remove()
            full.remove()
        ref = n_ref / statistics.median(times["ref"])
        ours = len(batch) / statistics.median(times["slim"])
        table("3. catalogue encoding through the server, held-out store photos (target >= 10x the reference)",
              ["path", "images/s", "vs reference", "rounds"],
              [["reference: full image, torch fp32, 1 raw JPEG per request", ref, "1.0x", len(times["ref"])],
               ["slim image, onnx-int8, JSON Lines batches of 32", ours, f"{ours / ref:.1f}x", len(times["slim"])]])

    if "serverless" in sections and "slim" in present:
        text, photo = b"red running shoes", held_out_photos(1)[0]
        rows = []
        for memory in MEMORY_MB:
            for cpus in CPUS:
                limits = ("--memory", f"{memory}m", "--memory-swap", f"{memory}m", "--cpus", str(cpus))
                seconds, container = cold_start(present["slim"], dirs["onnx-int8"], limits)
                try:
                    text_ms = pct(latencies(container.url, text, "text/plain", args.requests), 50)
                    photo_ms = pct(latencies(container.url, photo, "image/jpeg", args.requests), 50)
                    worker, _ = worker_rss_mib(container)
                finally:
                    container.remove()
                rows.append([memory, cpus, seconds, text_ms, photo_ms, worker])
        table("4. Serverless sizes emulated (slim image, onnx-int8; docker --memory/--cpus)",
              ["memory MB", "vCPUs", "cold start -> first embedding s", "text p50 ms", "photo p50 ms",
               "worker RSS MiB"], rows)
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
