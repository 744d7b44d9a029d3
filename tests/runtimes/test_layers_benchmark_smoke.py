"""`python -m benchmarks.layers` on the test model's onnx-int8 and openvino-int8 artifacts: both profilers
run, each table is the graph's operators with shares that add up, and the int8 products are found."""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_each_runtime_is_broken_down_by_operator(int8_model_dir, openvino_int8_model_dir, grocery_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "code"), str(REPO)]),
           "CLIP_SEARCH_GROCERY_DIR": str(grocery_dir)}
    result = subprocess.run([sys.executable, "-m", "benchmarks.layers", "--model", str(int8_model_dir),
                             "--model", str(openvino_int8_model_dir), "--images", "4"],
                            capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    sections = re.split(r"^## ", result.stdout, flags=re.M)[1:]
    assert [section.split(" ", 1)[0] for section in sections] == ["onnx-int8", "openvino-int8"]
    for section, products in zip(sections, ("DynamicQuantizeMatMul", "FullyConnectedCompressed"), strict=True):
        assert re.match(r"\S+ \(.*\): 4 images, [\d.]+ ms wall", section)
        rows = {match[0]: (float(match[1]), float(match[2]))
                for match in re.findall(r"^\| (\w+) \| ([\d.]+) \| ([\d.]+)% \|$", section, flags=re.M)}
        # The int8 products the runtime runs are there, and the printed rows (those >= 0.3%) cover the profile.
        assert products in rows and rows[products][0] > 0
        assert 95.0 <= sum(share for _, share in rows.values()) <= 100.5
        profiled = float(re.search(r"profiled ([\d.]+) ms", section)[1])
        assert abs(sum(ms for ms, _ in rows.values()) - profiled) <= 0.05 * profiled + 1
        assert re.search(r"int8 matrix products: [\d.]+% of the profiled time, at \d+ G int8 ops/s", section)
        assert re.search(r"int8 bound: MatMulInteger 1536\^3, 20 runs right after: \d+ G ops/s", section)
