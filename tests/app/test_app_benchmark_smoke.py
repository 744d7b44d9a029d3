"""`python -m benchmarks.app_latency --quick` end to end: the app latency benchmark keeps working.

Not a timed test (figures are not checked): it packages the test model for onnx-int8, builds a
10,000-product index, starts `clip-search app` and measures 100 queries. Tier: server (slow, like
the other benchmark smoke test)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]


def test_quick_app_latency_benchmark_prints_its_table(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks.app_latency", "--quick", "--work", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "top-10 of 10,000 products, 100 queries" in out and "CPU flags:" in out
    for label in ("encode (in process)", "search (embedded index)", "HTTP + routing + JSON (the rest)", "round trip (client-side)"):
        assert re.search(re.escape(label) + r" +\| +[\d.]+ \| +[\d.]+ \|", out), out
    assert re.search(r"target p50 <= 15 ms, p99 <= 40 ms: (met|NOT met)", out)
