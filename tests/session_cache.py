"""Expensive test inputs (packaged models, exports) built once per test session, shared by the
pytest-xdist workers of that session."""
import os
import shutil
from pathlib import Path
from typing import Callable

from filelock import FileLock


def built_once(tmp_path_factory, key: str, build: Callable[[Path], object]) -> Path:
    """The folder `build(folder)` filled, built once per test session however many pytest-xdist
    workers ask: the first to take the lock builds, the others wait and reuse its folder.

    `key` names what is built from what (e.g. "test-model-onnx-int8"): two builds from different
    inputs must not share a key. The folder lives in this session's own pytest temp dir (shared by
    its workers, never by another session), so nothing is reused from an older checkout, or, under
    `scripts/run_tests.sh`, in CLIP_SEARCH_TEST_BUILDS: one folder for every tier of that run (the
    server, container and local-mode sessions would otherwise package the same test models again,
    while their other workers wait), which the script empties when the run starts."""
    shared = os.environ.get("CLIP_SEARCH_TEST_BUILDS")
    if shared:
        root = Path(shared)
    else:
        root = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            root = root.parent  # each worker's basetemp is <session dir>/popen-gwN
        root = root / "built-once"
    root.mkdir(parents=True, exist_ok=True)
    folder, done = root / key, root / f"{key}.done"
    with FileLock(root / f"{key}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way in another worker
            folder.mkdir()
            build(folder)
            done.touch()
    return folder
