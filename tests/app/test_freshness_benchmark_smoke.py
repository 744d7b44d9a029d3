"""`python -m benchmarks.app_freshness --quick` end to end: the freshness cost benchmark keeps working.

Not a timed test (figures are not checked, only that they are there and sane): on the session's
test model packaged for onnx-int8 (`--model`), it builds a 10,000-product index, starts two `clip-search app` processes (freshness on and
off) and a writer, and measures both phases. Tier: server (slow, like the other benchmark smoke tests).
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]


def test_quick_freshness_benchmark_prints_on_and_off_side_by_side(tmp_path, onnx_test_model_dir):
    result = subprocess.run([sys.executable, "-m", "benchmarks.app_freshness", "--quick", "--queries", "40",
                             "--work", str(tmp_path), "--model", str(onnx_test_model_dir)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "command: python -m benchmarks.app_freshness --quick" in out and "CPU flags:" in out
    assert "load average at end:" in out
    for phase in ("idle", "writes"):
        for stage in ("round trip", "search"):
            match = re.search(rf"\| {phase} +{stage} +\| +([\d.]+) \| +([\d.]+) \| +([\d.]+) \| +([\d.]+) \| "
                              rf"+([\d.]+) \| +([\d.]+) \|", out)
            assert match, out
            on50, off50, ratio50, on99, off99, ratio99 = map(float, match.groups())
            assert on50 <= on99 and off50 <= off99
            assert ratio50 == pytest.approx(on50 / off50, abs=0.01) and ratio99 == pytest.approx(on99 / off99, abs=0.01)
    # the writer really committed while the apps were queried (the phase measures what it says)
    commits = int(re.search(r"another process committed (\d+) times during the phase", out).group(1))
    assert commits >= 1
    assert re.search(r"the check alone \(in process\): [\d.]+ us a read when nothing changed", out), out
    assert re.search(r"search alone \(in process, freshness off, 100 queries\): after the writes \(version \d+\) p50 "
                     r"[\d.]+ ms, p99 [\d.]+ ms; before them \(version \d+\) p50 [\d.]+ ms", out), out
    assert re.search(r"idle cost of freshness: [+-][\d.]+% .* target under 10%: (met|NOT met)", out), out
