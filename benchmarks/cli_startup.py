"""`clip-search` command latency, start-up included: `python -m benchmarks.cli_startup`.

What a user waits for at the shell (issue 27 targets): `clip-search search` with the tiny test model
(≤ 1.0 s wall) and one product into a 100,000-product index through `clip-search index` with its
embedding given by `--embeddings` (≤ 1.5 s wall); beside them `clip-search --help` and a bare
`import lancedb`, the bound the commands start from. Each command runs --runs times, alternating;
the median wall and CPU (user + sys, of the command's process) are printed, with the load average,
since on a shared machine wall time is mostly waiting for a core while CPU time is not.

Inputs are built once into --work: the test model (`package-model --test-model`), the demo catalogue
indexed with it (81 products) and 100,000 synthetic 512-d products from benchmarks.search_scale.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"search": 1.0, "index one product": 1.5}


def _env(code: Path = REPO / "code"):
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), str(REPO), os.environ.get("PYTHONPATH", "")])}


def cli(*args):
    return [sys.executable, "-m", "clip_search.cli", *args]


def prepare(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    model = work / "test-model.tar.gz"
    if not model.exists():
        subprocess.run(cli("package-model", "--test-model", "-o", str(model)), check=True, env=_env())
    grocery = work / "grocery-index"
    if not grocery.exists():
        catalogue = REPO / "code" / "clip_search" / "demo_data" / "grocery" / "products.jsonl"
        subprocess.run(cli("index", "--catalogue", str(catalogue), "--index", str(grocery), "--model", str(model)),
                       check=True, env=_env())
    scale, big = work / "scale-100k", work / "scale-100k" / "index"
    if not big.exists():
        from benchmarks.search_scale import generate

        generate(scale, 100_000)
        subprocess.run(cli("index", "--catalogue", str(scale / "catalogue.jsonl"), "--index", str(big), "--embeddings",
                           str(scale / "out"), "--model-id", "synthetic", "--no-titles", "--batch-size", "1024"),
                       check=True, env=_env())
    one = work / "one-product"
    (one / "out").mkdir(parents=True, exist_ok=True)
    vector = np.random.default_rng(5).standard_normal(512)
    (one / "out" / "part-0000.out").write_text(json.dumps({"id": "new-one", "embedding": (vector / np.linalg.norm(vector)).tolist()}) + "\n")
    (one / "catalogue.jsonl").write_text(json.dumps({"id": "new-one", "title": "fresh kiwi", "image": "images/new-one.jpg", "department": "Fruit"}) + "\n")
    return {
        "search": cli("search", "green apple", "--index", str(grocery), "-k", "5"),
        "index one product": cli("index", "--catalogue", str(one / "catalogue.jsonl"), "--index", str(big),
                                 "--embeddings", str(one / "out"), "--model-id", "synthetic", "--no-titles"),
        "--help": cli("--help"),
        "import lancedb": [sys.executable, "-c", "import lancedb"],
    }


def timed(command, code: Path = REPO / "code") -> tuple[float, float]:
    """(wall s, CPU s) of one run of `command` (its own process and children) with `code` first on the path."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=_env(code), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "clip-search-cli-bench"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-code", metavar="DIR", help="also run the two commands with this checkout's "
                        "code/ folder (e.g. the main branch's), alternating, and print the ratios")
    args = parser.parse_args(argv)
    from clip_search.runtimes import cpu_flags

    commands = prepare(Path(args.work))
    load_start = os.getloadavg()
    for command in commands.values():  # warm the page cache and the bytecode cache once
        timed(command)
    runs = [(name, command, REPO / "code") for name, command in commands.items()]
    if args.baseline_code:
        runs += [(f"{name} (baseline)", commands[name], Path(args.baseline_code)) for name in TARGETS]
    figures = {name: [] for name, _, _ in runs}
    for _ in range(args.runs):
        for name, command, code in runs:
            figures[name].append(timed(command, code))
    print(f"# clip-search CLI start-up  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"CPU flags: {cpu_flags()}; {os.cpu_count()} CPUs; load average {load_start[0]:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end; {args.runs} runs each, medians")
    print(f"{'command':<28} {'wall s':>8} {'CPU s':>8} {'target s':>9} {'wall/target':>12}")
    medians = {name: [float(np.median([run[i] for run in times])) for i in (0, 1)] for name, times in figures.items()}
    for name, (wall, cpu) in medians.items():
        target = TARGETS.get(name)
        ratio = f"{wall / target:.2f}x" if target else ""
        print(f"{name:<28} {wall:8.2f} {cpu:8.2f} {target if target else '':>9} {ratio:>12}")
    for name in TARGETS:
        if f"{name} (baseline)" in medians:
            base = medians[f"{name} (baseline)"]
            print(f"{name}: {medians[name][0] / base[0]:.2f}x the baseline's wall, {medians[name][1] / base[1]:.2f}x its CPU")


if __name__ == "__main__":
    main()
