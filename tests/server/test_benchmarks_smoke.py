"""`python -m benchmarks --quick` end to end: every section runs and prints its table.

Not a timed test (the figures are not checked against anything): it keeps the benchmark command
working, which no other test exercises. It packages the test model for every runtime, starts the
real servers and builds a 10,000-row embedded index.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]


def test_quick_benchmark_runs_every_section_side_by_side(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--work", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for title in ("## 1. encoder", "## 1b. decode", "## 2. server", "## 3. query", "## 4. cold start"):
        assert title in out, f"{title} missing from:\n{out}"
    # Ratios to the reference row, the accuracy column, and a best runtime chosen within the guard.
    assert "| torch fp32 eager (reference) | " in out and "(1.0x)" in out
    encoder = out[out.index("## 1. encoder"):out.index("best runtime")]
    for label in ("ONNX Runtime fp32", "ONNX Runtime dynamic int8", "OpenVINO ("):
        assert label in encoder
    assert re.search(r"best runtime within the accuracy guard: (torch|onnx|onnx-int8|openvino)\n", out)
    assert re.search(r"JSON Lines batches of 32, \S+ +\| [\d.e+]+ \(\d+\.\dx\)", out)
    query = out[out.index("## 3. query"):]
    assert "encode + search" in query and "10,000 products" in query
