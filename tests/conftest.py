"""Fixtures shared by every suite: the packaged test model, real product photos, moto's server."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.model_exports import reusing_fp32_export, weights_key
from tests.session_cache import built_once

# OpenMP threads that wait passively (sleep) instead of spinning: torch's intra-op pool spins by
# default, and with more busy threads than cores (2 xdist workers x 2 torch threads on CI's 2 cores,
# plus any subprocess) every tiny op of the test model waits for a descheduled spinner. Measured
# 2026-12-07 at load ~13 on 2 cores (AVX-512 VNNI): one text through the test model in torch fp32
# took 80-170 ms with 2 spinning threads, 3-11 ms passive. Set before anything imports torch, and
# inherited by the xdist workers and every subprocess a test starts; the results are the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The model cache (CLIP_SEARCH_MODEL_CACHE) of the encoders and commands the tests run: one folder
# for a pytest session and its workers (who inherit the variable), not the user's ~/.cache; removed
# by the process that made it.
if not os.environ.get("CLIP_SEARCH_MODEL_CACHE"):
    os.environ["CLIP_SEARCH_MODEL_CACHE"] = tempfile.mkdtemp(prefix="clip-search-test-model-cache-")
    atexit.register(shutil.rmtree, os.environ["CLIP_SEARCH_MODEL_CACHE"], True)

# Fixtures more than one suite uses, without importing them into test modules: the image's
# (docker_ready, the model the image variant serves, ...: container and local mode) and the scripted
# HTTP endpoint's (unit, search).
pytest_plugins = ["tests.container.fixtures", "tests.scripted_endpoint"]

REPO = Path(__file__).resolve().parents[1]
# CI clones the repo with shared/ beside it; the photos are MIT-licensed (see SOURCE.md there).
GROCERY_DIR = Path(os.environ.get("CLIP_SEARCH_GROCERY_DIR", REPO.parent / "shared" / "datasets" / "grocery-store")).resolve()


@pytest.fixture(scope="session")
def grocery_dir() -> Path:
    if not (GROCERY_DIR / "classes.csv").is_file():
        pytest.fail(f"real product photos not found at {GROCERY_DIR} (set CLIP_SEARCH_GROCERY_DIR)")
    return GROCERY_DIR


@pytest.fixture(scope="session")
def catalogue_photos(grocery_dir) -> list[Path]:
    """The catalogue ('iconic') photos of the Grocery Store Dataset, sorted."""
    photos = sorted((grocery_dir / "iconic-images-and-descriptions").rglob("*_Iconic.jpg"))
    assert len(photos) >= 20, f"expected catalogue photos under {grocery_dir}"
    return photos


@pytest.fixture(scope="session")
def store_photos(grocery_dir) -> list[Path]:
    """Phone photos taken in stores (realistic image queries), sorted."""
    photos = sorted((grocery_dir / "val").rglob("*.jpg"))
    assert len(photos) >= 20, f"expected store photos under {grocery_dir / 'val'}"
    return photos


@pytest.fixture(scope="session")
def test_model_tar(tmp_path_factory) -> Path:
    """The tiny random test model (torch runtime), packaged once per session."""
    from clip_search.packaging.build import package_model

    return built_once(tmp_path_factory, "test-model-torch",
                      lambda folder: package_model(folder / "model.tar.gz", test_model=True)) / "model.tar.gz"


@pytest.fixture(scope="session")
def test_model_dir(test_model_tar) -> Path:
    from clip_search.artifact import extract_artifact

    return extract_artifact(test_model_tar)


@pytest.fixture(scope="session")
def test_model_fp32_onnx(tmp_path_factory, test_model_dir):
    """The test model's fp32 ONNX graphs (export_onnx) and what they were exported from: exported
    once per session, the start of every packaging of the test model for another runtime
    (tests/model_exports.py)."""
    from clip_search.packaging.export import export_onnx

    folder = built_once(tmp_path_factory, "test-model-fp32-onnx", lambda folder: export_onnx(test_model_dir, folder))
    return folder, weights_key(test_model_dir)


@pytest.fixture(scope="session")
def int8_model_dir(tmp_path_factory, test_model_dir, test_model_fp32_onnx):
    """The test model with int8 ONNX graphs exported without the guard (test_guard runs it with
    several thresholds) and its fp32 weights kept (eval --compare-runtime torch). Shared by every
    worker as it is: the tests only read it."""
    import shutil

    from clip_search.artifact import read_manifest
    from clip_search.packaging.export import export_runtime
    from clip_search.packaging.manifest import write_manifest

    def build(folder):
        model_dir = folder / "model"
        shutil.copytree(test_model_dir, model_dir, ignore=shutil.ignore_patterns("code"))
        with reusing_fp32_export(test_model_fp32_onnx) as served:
            manifest = export_runtime(model_dir, read_manifest(model_dir), "onnx-int8", guard=False)
        assert served, "the test model's weights should be the session's (seeded)"
        write_manifest(model_dir, manifest)

    return built_once(tmp_path_factory, "test-model-int8-unguarded", build) / "model"


@pytest.fixture(scope="session")
def test_encoder(test_model_dir):
    from clip_search.encoder import ClipEncoder

    return ClipEncoder.from_artifact(test_model_dir)


# moto's server (a real process on 127.0.0.1) standing in for AWS: one per session, on a free port.
@pytest.fixture(scope="session")
def moto_url(tmp_path_factory):
    yield from run_moto(tmp_path_factory, "-m", "moto.server")


def run_moto(tmp_path_factory, *python_args: str, host: str = "127.0.0.1"):
    """Start `python PYTHON_ARGS -H HOST -p PORT` (moto's server), yield its URL once it answers.
    HOST: loopback, unless a test's containers must reach it (the Docker network's gateway)."""
    from clip_search.serving.server import free_port

    port = free_port(host)
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    # Not measured by coverage.py (its `patch = subprocess` hands every child its configuration
    # through these variables): moto runs none of the library, and tracing it slows every AWS call.
    env = {key: value for key, value in os.environ.items()
           if key not in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")}
    process = subprocess.Popen([sys.executable, *python_args, "-H", host, "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + "/moto-api/", timeout=1)
            break
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto server did not start on {url} (see {log.name})")
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(10)
    log.close()


# The modules that set their tier's length, longest first (wall seconds on 2 cores, 2026-12-07 idle
# runs: unit, server, container). They start first, so pytest-xdist (--dist loadscope hands out whole
# modules in collection order) fills the other workers with the short modules meanwhile, instead of
# one worker running a long module alone at the end of a tier.
LONGEST_FIRST = (
    "tests/server/test_benchmarks_smoke.py",  # 90-120 s: `python -m benchmarks --quick`
    "tests/server/test_hardening.py",  # ~95 s: the 60 s soak
    "tests/publish/test_buildspec.py",  # container: the install phase into a fresh venv, ~60 s
    "tests/publish/test_quick_start.py",  # ~40 s
    "tests/app/test_freshness_app.py",  # ~35 s
    "tests/app/test_freshness_writers.py",  # ~30 s
    "tests/server/test_http_contract.py",  # ~30 s: 20 clients for 20 s
    "tests/container/test_core_install.py",  # ~35 s
    "tests/publish/test_evaluation_gate.py",  # ~30 s
    "tests/runtimes/test_guard.py",  # ~25 s
    "tests/publish/test_pipelines_catalogue.py",  # ~26 s
    "tests/publish/test_stack.py",  # ~25 s
    "tests/search/test_lancedb_concurrency.py",  # ~20 s
)


def pytest_collection_modifyitems(session, config, items):
    rank = {path: position for position, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest keep their order
