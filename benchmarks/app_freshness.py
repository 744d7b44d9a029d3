"""What following other processes' writes costs the app's queries (issue 26): `python -m benchmarks.app_freshness`.

Two `clip-search app` processes serve the same --rows-product embedded index (app_latency's
synthetic index and onnx-int8 ViT-B-32, built once into --work, copied here so the write phase
cannot change it): one with the freshness mechanism on (CLIP_SEARCH_FRESHNESS_MS unset: the default),
one with it off (CLIP_SEARCH_FRESHNESS_MS=-1: a reader stays at the version it opened, the
behaviour before issue 26). The same text queries (GET /api/search?q=...&k=10, one keep-alive
connection, app_latency's client) go to the two apps in alternating blocks, so the load of a
shared machine falls on both alike. Reported side by side: p50 and p99 of the round trip and of
the index search stage (the answer's took_ms.search), on / off and their ratio.

Phases:
  idle    nobody writes: on a local folder the mechanism costs a stat of the version folder per read
  writes  another process commits an upsert of 10 products every --write-every seconds; the app
          with freshness on moves to each new version at its next query (checkout + its read caches
          again), the one with it off keeps answering from the version it opened
Then, in this process: the check alone (the stat path when nothing changed, and a full check, where
LanceDB lists the versions), and the search on the version after the writer's commits against the
version before them, freshness off (what the writes left, apart from the check). Target: the idle
cost under 10% of p50.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.app_latency import (
    _env,
    build_index,
    measure,
    model_dir,
    parser_with_model_and_index,
    pct,
    queries,
    start_app,
)
from clip_search.runtimes import cpu_flags

TARGET_COST = 0.10  # of p50
WRITER = """
import sys, time, numpy as np
from clip_search.search.index.embedded import EmbeddedIndex
from clip_search.search.records import EmbeddedProduct, Product
index = EmbeddedIndex(sys.argv[1])
dim, every, rng = index.dim, float(sys.argv[2]), np.random.default_rng(1)
print("writing", flush=True)
for batch in range(10**9):
    vectors = rng.standard_normal((10, dim)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.upsert([EmbeddedProduct(Product(f"fresh-{batch}-{i}", f"fresh product {batch} {i}", None, {}), v, v)
                  for i, v in enumerate(vectors)])
    index.flush()
    time.sleep(every)
"""


def versions(index: Path) -> int:
    import lancedb

    return len(lancedb.connect(str(index)).open_table("products").list_versions())


def latest_version(index: Path) -> int:
    import lancedb

    return lancedb.connect(str(index)).open_table("products").version


def copy_index(source: Path, work: Path) -> Path:
    target = work / "app-freshness-index"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    return target


def alternate(urls: dict[str, str], texts: list[str], blocks: int, per_block: int) -> dict[str, dict]:
    """Blocks of `per_block` queries to each app in turn (the order flips every block)."""
    stages = {name: {"search": [], "round trip": []} for name in urls}
    names = list(urls)
    for block in range(blocks):
        for name in names if block % 2 == 0 else names[::-1]:
            offset = block * per_block
            measured = measure(urls[name], texts[offset % len(texts):] + texts[:offset % len(texts)], per_block,
                               10, warm_up=3)
            for stage in stages[name]:
                stages[name][stage] += measured[stage]
    return stages


def table(phase: str, stages: dict[str, dict]) -> list[str]:
    lines = [f"| {phase:<6} {'stage':<12} | on p50 | off p50 | on/off p50 | on p99 | off p99 | on/off p99 |",
             "|---------------------|--------|---------|------------|--------|---------|------------|"]
    for stage in ("round trip", "search"):
        on50, off50 = pct(stages["on"][stage], 50), pct(stages["off"][stage], 50)
        on99, off99 = pct(stages["on"][stage], 99), pct(stages["off"][stage], 99)
        lines.append(f"| {phase:<6} {stage:<12} | {on50:6.2f} | {off50:7.2f} | {on50 / off50:10.3f} | "
                     f"{on99:6.2f} | {off99:7.2f} | {on99 / off99:10.3f} |")
    return lines


def check_cost(index_path: Path) -> str:
    """The mechanism alone, in this process: a read's check when nothing changed, and a full check."""
    from clip_search.search.index.embedded import EmbeddedIndex

    index = EmbeddedIndex(index_path)
    index._checked_at = time.monotonic() + 3600  # the stat path only: no periodic full check here
    index._catch_up()
    runs = 20_000
    started = time.perf_counter()
    for _ in range(runs):
        index._catch_up()
    stat_path = (time.perf_counter() - started) / runs
    full = []
    for _ in range(200):
        started = time.perf_counter()
        index._table.checkout_latest()
        full.append(time.perf_counter() - started)
    versions = len(index._table.list_versions())
    return (f"the check alone (in process): {stat_path * 1e6:.1f} us a read when nothing changed (a stat); "
            f"a full check (LanceDB lists {versions} versions) p50 {pct(full, 50):.3f} ms, p99 {pct(full, 99):.3f} ms")


def data_cost(index_path: Path, before: int, count: int = 100) -> str:
    """Top-10 searches on the version after the writes against the one before them, same process,
    freshness off, alternating blocks: what the writer's small commits cost a search by themselves."""
    from clip_search.search.index.embedded import EmbeddedIndex

    index = EmbeddedIndex(index_path, freshness_ms=-1)
    after = index._table.version
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((count, index.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    times: dict[int, list[float]] = {before: [], after: []}
    blocks = 10
    for block in range(blocks):
        for version in (after, before) if block % 2 == 0 else (before, after):
            index._table.checkout(version)
            index._read_cache.clear()
            index.search(vectors[0], k=10)
            for vector in vectors[block * count // blocks:(block + 1) * count // blocks]:
                started = time.perf_counter()
                index.search(vector, k=10)
                times[version].append(time.perf_counter() - started)
    return (f"search alone (in process, freshness off, {count} queries): after the writes (version {after}) p50 "
            f"{pct(times[after], 50):.2f} ms, p99 {pct(times[after], 99):.2f} ms; before them (version {before}) p50 "
            f"{pct(times[before], 50):.2f} ms, p99 {pct(times[before], 99):.2f} ms")


def main(argv=None):
    parser = parser_with_model_and_index(__doc__)
    parser.add_argument("--queries", type=int, default=1000, help="measured requests per app and phase")
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks the queries are split into")
    parser.add_argument("--write-every", type=float, default=0.5, help="seconds between the writer's commits")
    parser.add_argument("--quick", action="store_true", help="tiny test model, 10,000 rows, 100 queries (smoke)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.queries, args.blocks = min(args.rows, 10_000), min(args.queries, 100), min(args.blocks, 4)
    per_block = max(1, args.queries // args.blocks)

    model = model_dir(args)
    index = copy_index(build_index(args, model), Path(args.work))
    load = os.getloadavg()
    print(f"# clip-search app: the cost of freshness  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"command: python -m benchmarks.app_freshness {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start; CPU flags: {cpu_flags()}")
    work = Path(args.work)
    apps = {"on": start_app(index, model, work / "app-freshness-on.log"),
            "off": start_app(index, model, work / "app-freshness-off.log", env={"CLIP_SEARCH_FRESHNESS_MS": "-1"})}
    writer = None
    try:
        urls = {name: url for name, (_, url) in apps.items()}
        texts = queries()
        print(f"{args.rows:,} products, embedded index on a local folder, top-10 text queries; {per_block} queries "
              f"a block, {args.blocks} blocks per app and phase\n")
        idle = alternate(urls, texts, args.blocks, per_block)
        before = versions(index)
        before_version = latest_version(index)
        script = work / "app-freshness-writer.py"
        script.write_text(WRITER)
        writer = subprocess.Popen([sys.executable, str(script), str(index), str(args.write_every)],
                                  stdout=subprocess.PIPE, text=True, env=_env())
        assert writer.stdout.readline() == "writing\n"
        writes = alternate(urls, texts, args.blocks, per_block)
        writer.kill()
        writer.wait(30)
        commits = versions(index) - before
        print("\n".join(table("idle", idle)))
        print("\n".join(table("writes", writes)[2:]))
        print(f"\nwrites: another process committed {commits} times during the phase (every {args.write_every:g} s)")
        print(check_cost(index))
        print(data_cost(index, before_version))
        on50, off50 = pct(idle["on"]["round trip"], 50), pct(idle["off"]["round trip"], 50)
        cost = on50 / off50 - 1.0
        print(f"\nidle cost of freshness: {cost * 100:+.1f}% of the round trip's p50 ({on50:.2f} vs {off50:.2f} ms); "
              f"target under {TARGET_COST * 100:.0f}%: {'met' if cost < TARGET_COST else 'NOT met'}")
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        for process, _ in apps.values():
            process.terminate()
            process.wait(30)
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
