"""Artifacts of the tiny test model exported to each runtime: one export each per test session,
shared by the pytest-xdist workers (tests/conftest.py `built_once`)."""
import shutil

import pytest
from click.testing import CliRunner

from clip_search.artifact import extract_artifact
from tests.session_cache import built_once


@pytest.fixture(scope="session")
def calibration_dir(grocery_dir):
    return grocery_dir / "iconic-images-and-descriptions"


@pytest.fixture(scope="session")
def onnx_model_dir(tmp_path_factory, calibration_dir):
    from clip_search.packaging.build import package_model

    def build(folder):
        # --keep-weights: the torch reference by name (eval --compare-runtime) needs the fp32 weights beside the graphs.
        package_model(folder / "model.tar.gz", test_model=True, runtime="onnx",
                      runtime_options={"calibration": calibration_dir}, keep_weights=True)

    return extract_artifact(built_once(tmp_path_factory, "test-model-onnx-keep-weights", build) / "model.tar.gz")


@pytest.fixture(scope="session")
def openvino_model_dir(tmp_path_factory, calibration_dir):
    """Packaged through the CLI, with the issue's spelling `--runtime openvino`: slim (no weights)."""
    from clip_search.packaging.cli import package_model_command

    def build(folder):
        result = CliRunner().invoke(package_model_command, [
            "--test-model", "--runtime", "openvino", "--calibration", str(calibration_dir),
            "-o", str(folder / "model.tar.gz")])
        assert result.exit_code == 0, result.output
        assert "accuracy guard passed" in result.output

    return extract_artifact(built_once(tmp_path_factory, "test-model-openvino-cli", build) / "model.tar.gz")


@pytest.fixture(scope="session")
def int8_model_dir(tmp_path_factory, test_model_dir):
    """int8 graphs exported without the guard (test_guard runs it with several thresholds).
    Shared by every worker as it is: the tests only read it."""
    from clip_search.artifact import read_manifest
    from clip_search.packaging.export import export_runtime
    from clip_search.packaging.manifest import write_manifest

    def build(folder):
        model_dir = folder / "model"
        shutil.copytree(test_model_dir, model_dir, ignore=shutil.ignore_patterns("code"))
        manifest = export_runtime(model_dir, read_manifest(model_dir), "onnx-int8", guard=False)
        write_manifest(model_dir, manifest)

    return built_once(tmp_path_factory, "test-model-int8-unguarded", build) / "model"


@pytest.fixture(scope="session")
def openvino_int8_model_dir(tmp_path_factory, test_model_dir):
    """openvino-int8 IR exported without the guard (the tests check batch invariance and the
    stored int8 weights; the guard's figures for it are in docs/performance.md). Read only."""
    from clip_search.artifact import read_manifest
    from clip_search.packaging.export import export_runtime
    from clip_search.packaging.manifest import write_manifest

    def build(folder):
        model_dir = folder / "model"
        shutil.copytree(test_model_dir, model_dir, ignore=shutil.ignore_patterns("code"))
        manifest = export_runtime(model_dir, read_manifest(model_dir), "openvino-int8", guard=False)
        write_manifest(model_dir, manifest)

    return built_once(tmp_path_factory, "test-model-openvino-int8-unguarded", build) / "model"
