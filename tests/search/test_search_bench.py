"""`python -m clip_search.search.bench`, which produces the README's search figures, run as users run it
(a subprocess, small sizes): one row per index size, every cell a number, and a recall that means
something (the approximate index finds most of the exact top 10 on clustered data)."""
import os
import re
import subprocess
import sys

import pytest

NUMBER = r"\d+(?:\.\d+)?"


@pytest.fixture(scope="module")
def bench_output():
    result = subprocess.run([sys.executable, "-m", "clip_search.search.bench", "--rows", "1500", "3000",
                             "--dim", "32", "--queries", "40"], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_one_numeric_row_per_size(bench_output):
    lines = bench_output.strip().splitlines()
    assert lines[0].split() == ["rows", "exact", "p50", "exact", "p95", "ann", "p50", "ann", "p95", "recall@10", "build", "s"]
    rows = [line.split() for line in lines[1:]]
    assert [row[0] for row in rows] == ["1500", "3000"]
    for row in rows:
        assert len(row) == 7, row
        latencies = [float(re.fullmatch(rf"({NUMBER})ms", cell).group(1)) for cell in row[1:5]]
        exact_p50, exact_p95, hnsw_p50, hnsw_p95 = latencies
        assert 0 < exact_p50 <= exact_p95 and 0 < hnsw_p50 <= hnsw_p95, row
        recall, build = float(row[5]), float(row[6])
        assert 0.8 <= recall <= 1.0, row  # a broken ANN index (or a wrong truth) recalls ~0
        assert build >= 0.0


def test_bench_refuses_bad_arguments():
    result = subprocess.run([sys.executable, "-m", "clip_search.search.bench", "--rows", "many"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "invalid int value: 'many'" in result.stderr
