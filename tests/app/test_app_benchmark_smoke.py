"""`python -m benchmarks.app_latency --quick` end to end: the app latency benchmark keeps working.

Not a timed test (figures are not checked): on the session's test model packaged for onnx-int8
(`--model`; the benchmark's own packaging is the same `package-model` command), it builds a
10,000-product index, starts `clip-search app` and measures 100 queries. Tier: server (slow, like
the other benchmark smoke test)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]


def test_quick_app_latency_benchmark_prints_its_table(tmp_path, onnx_test_model_dir):
    result = subprocess.run([sys.executable, "-m", "benchmarks.app_latency", "--quick", "--work", str(tmp_path),
                             "--model", str(onnx_test_model_dir)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "top-10 of 10,000 products, 100 queries" in out and "CPU flags:" in out
    assert "command: python -m benchmarks.app_latency --quick" in out and "load average at end:" in out
    rows = {}
    for label in ("encode (in process, onnx-int8)", "search (embedded index)", "app: routing, parsing, threads, JSON",
                  "HTTP: sockets, uvicorn, client", "round trip (client-side)"):
        match = re.search(re.escape(label) + r" +\| +([\d.]+) \| +([\d.]+) \| +(\d+)% \|", out)
        assert match, out
        rows[label] = [float(value) for value in match.groups()]
    assert all(p50 <= p99 for p50, p99, _ in rows.values()), rows
    assert rows["round trip (client-side)"][2] == 100
    # the stages are parts of the round trip: at p50 they cannot add up to much more than it
    assert sum(row[0] for label, row in rows.items() if not label.startswith("round")) <= \
        1.5 * rows["round trip (client-side)"][0] + 1, rows
    assert re.search(r"round trip \(client-side\) .*\| \d+\.\d\dx of 15, \d+\.\d\dx of 40 ms", out), out
    assert re.search(r"target p50 <= 15 ms, p99 <= 40 ms: (met|NOT met)", out)
