"""`pip install clip-search` with no extras is the run-time core: a fresh venv (no torch) encodes
texts and a photo with an onnx-int8 artifact, and the commands that need an extra exit 2 with one
line naming it.

Container tier: it builds a venv (~30 s), and installs offline from the slim image's host-built
wheelhouse (container/build.sh --variant slim, which ci_setup.sh runs), under constraints.txt.
"""
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / "container" / ".build" / "slim" / "wheelhouse"


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> Path:
    if not any(WHEELHOUSE.glob("*.whl")):
        pytest.fail(f"no wheelhouse at {WHEELHOUSE}: run container/build.sh --variant slim first")
    root = tmp_path_factory.mktemp("core-install")
    # The project's wheel from this checkout (a copy, so the work tree gets no build/ directory).
    source = root / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", ".build", "__pycache__", "tests"))
    built = run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                "--wheel-dir", root / "dist", source)
    assert built.returncode == 0, built.stderr
    [wheel] = (root / "dist").glob("clip_search-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    installed = run(env_dir / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index",
                    "--disable-pip-version-check", "--find-links", WHEELHOUSE,
                    "-c", REPO / "constraints.txt", wheel)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return env_dir


def test_core_install_has_no_torch_and_no_serving_stack(core_venv):
    found = run(core_venv / "bin" / "python", "-c",
                "import importlib.util as u; print([m for m in ('torch', 'open_clip', 'onnx', 'openvino',"
                " 'sagemaker_inference', 'mms', 'boto3') if u.find_spec(m)])")
    assert found.stdout.strip() == "[]", found.stderr
    listed = run(core_venv / "bin" / "python", "-m", "pip", "list", "--format", "freeze")
    names = {line.split("==")[0].lower() for line in listed.stdout.split()}
    assert "torch" not in names and "onnxruntime" in names and "tokenizers" in names


def test_core_install_encodes_texts_and_a_photo(core_venv, onnx_test_model_tar, catalogue_photos, tmp_path):
    done = run(core_venv / "bin" / "clip-search", "encode", "--model", onnx_test_model_tar,
               "red apple", "oat milk", "--image", catalogue_photos[0], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    vectors = np.array(answer["embeddings"])
    assert answer["dim"] == 64 and vectors.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("command, extra", [
    (["serve", "--model", "MODEL"], "serve"),
    (["package-model", "--test-model", "-o", "out/model.tar.gz"], "package"),
])
def test_commands_needing_an_extra_exit_2_naming_it(core_venv, onnx_test_model_tar, tmp_path, command, extra):
    args = [str(onnx_test_model_tar) if a == "MODEL" else a for a in command]
    done = run(core_venv / "bin" / "clip-search", *args, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ") and f"pip install 'clip-search[{extra}]'" in lines[0]
    assert "Traceback" not in done.stderr
