"""`python -m benchmarks --quick` end to end: every section runs, and every table is made of numbers.

The figures are not checked against targets (timings here are noisy); what is checked is that each
table has numeric cells, that every figure gives its median, min and number of samples, and that
each printed ratio is the ratio of the numbers it was computed from. The run has the test model for
every runtime (the session's torch and onnx-int8 packages, the others packaged by it), starts the real servers and builds a 10,000-row embedded index, which with
--quick is past the exact-search threshold, so the approximate index answers as in the full run.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
FIGURE = re.compile(rf"^({NUMBER})(?: \(({NUMBER})x\))? \[min ({NUMBER}), n=(\d+)\]$")


def tables(out: str) -> dict[str, list[list[str]]]:
    """{title: rows of cells} for every markdown table the benchmark printed."""
    found, title, rows = {}, None, None
    for line in out.splitlines():
        if line.startswith("## "):
            title, rows = line[3:], []
            found[title] = rows
        elif line.startswith("|") and title is not None and not line.startswith("|-"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return {name: rows[1:] for name, rows in found.items()}  # without the header row


def numeric(cell: str) -> float | None:
    match = FIGURE.match(cell) or re.fullmatch(rf"({NUMBER})(?: \({NUMBER}x\))?%?", cell)
    return float(match.group(1)) if match else None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, test_model_tar, onnx_test_model_tar):
    # The torch and onnx-int8 test models the session already packaged, under the names the run
    # looks for in --work (`package_model(test_model=True, runtime=...)`, the call it makes itself);
    # it packages the other runtimes.
    work = tmp_path_factory.mktemp("bench")
    for runtime, tar in (("torch", test_model_tar), ("onnx-int8", onnx_test_model_tar)):
        (work / f"test-model-{runtime}.tar.gz").symlink_to(tar)
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--work", str(work)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_every_section_runs_side_by_side(quick_run):
    out = quick_run
    printed = tables(out)
    for prefix in ("1. encoder", "1b. decode", "2. server", "3. query", "4. cold start"):
        assert any(title.startswith(prefix) for title in printed), f"{prefix} missing from:\n{out}"
    assert re.search(r"\| torch fp32 eager \(reference\) +\|", out) and "(1.0x)" in out
    encoder = out[out.index("## 1. encoder"):out.index("best runtime")]
    for label in ("ONNX Runtime fp32", "ONNX Runtime int8", "OpenVINO ("):
        assert label in encoder
    assert re.search(r"best runtime within the accuracy guard: (torch|onnx|onnx-int8|openvino|openvino-int8)\n", out)
    query = next(title for title in printed if title.startswith("3. query"))
    assert "10,000 products" in query and "ANN (HNSW)" in query  # the same code path as the full run
    server = next(title for title in printed if title.startswith("2. server"))
    assert "the same 32 photos" in server
    assert printed[server][0][0] == "reference: 1 raw JPEG per request (32 requests), torch fp32"
    cold = next(title for title in printed if title.startswith("4. cold start"))
    assert "3 starts each" in cold


def test_every_table_has_numeric_cells_and_every_figure_its_spread(quick_run):
    for title, rows in tables(quick_run).items():
        assert rows, title
        for row in rows:
            assert any(numeric(cell) is not None for cell in row[1:]), (title, row)
            for cell in row:
                if "[min" in cell:
                    median, _, low, n = FIGURE.match(cell).groups()
                    assert float(low) <= float(median) * 1.0005, (title, cell)  # min of the samples
                    assert int(n) >= (3 if title.startswith("4. cold") else 2), (title, cell)
    cold = next(rows for title, rows in tables(quick_run).items() if title.startswith("4. cold start"))
    assert all(FIGURE.match(row[1]) for row in cold), cold  # every runtime answered, each start timed


def test_ratios_are_the_ratios_of_the_printed_numbers(quick_run):
    checked = 0
    for title, rows in tables(quick_run).items():
        reference = rows[0]
        for row in rows:
            for column, cell in enumerate(row):
                match = FIGURE.match(cell) or re.fullmatch(rf"({NUMBER}) \(({NUMBER})x\)", cell)
                if not match or match.group(2) is None:
                    continue
                value, ratio, base = float(match.group(1)), float(match.group(2)), numeric(reference[column])
                assert base, (title, reference)
                # Values print to 4 significant digits and ratios to 1 decimal.
                assert abs(ratio - value / base) <= 0.05 + 1e-3 * value / base, (title, row[0], cell, base)
                checked += 1
    assert checked >= 20  # encoder (6 columns x 5 runtimes), decode, server
