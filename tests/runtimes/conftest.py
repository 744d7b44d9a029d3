"""Artifacts of the tiny test model exported to each runtime: one packaging each per test session,
shared by the pytest-xdist workers (tests/conftest.py `built_once`), all from the session's one fp32
ONNX export (tests/conftest.py `test_model_fp32_onnx`). int8_model_dir is in tests/conftest.py."""
import pytest
from click.testing import CliRunner

from clip_search.artifact import extract_artifact
from tests.model_exports import reusing_fp32_export
from tests.session_cache import built_once


@pytest.fixture(scope="session")
def calibration_dir(grocery_dir):
    return grocery_dir / "iconic-images-and-descriptions"


@pytest.fixture(scope="session")
def onnx_model_dir(tmp_path_factory, calibration_dir, test_model_fp32_onnx):
    from clip_search.packaging.build import package_model

    def build(folder):
        # --keep-weights: the torch reference by name (eval --compare-runtime) needs the fp32 weights beside the graphs.
        with reusing_fp32_export(test_model_fp32_onnx) as served:
            package_model(folder / "model.tar.gz", test_model=True, runtime="onnx",
                          runtime_options={"calibration": calibration_dir}, keep_weights=True)
        assert served, "the test model's weights should be the session's (seeded)"

    return extract_artifact(built_once(tmp_path_factory, "test-model-onnx-keep-weights", build) / "model.tar.gz")


@pytest.fixture(scope="session")
def openvino_model_dir(tmp_path_factory, calibration_dir, test_model_fp32_onnx):
    """Packaged through the CLI, with the issue's spelling `--runtime openvino`: slim (no weights)."""
    from clip_search.packaging.cli import package_model_command

    def build(folder):
        with reusing_fp32_export(test_model_fp32_onnx) as served:
            result = CliRunner().invoke(package_model_command, [
                "--test-model", "--runtime", "openvino", "--calibration", str(calibration_dir),
                "-o", str(folder / "model.tar.gz")])
        assert result.exit_code == 0, result.output
        assert served, "the test model's weights should be the session's (seeded)"
        assert "accuracy guard passed" in result.output

    return extract_artifact(built_once(tmp_path_factory, "test-model-openvino-cli", build) / "model.tar.gz")


@pytest.fixture(scope="session")
def openvino_int8_model_dir(tmp_path_factory, test_model_dir, test_model_fp32_onnx):
    """openvino-int8 IR exported without the guard (the tests check batch invariance and the
    stored int8 weights; the guard's figures for it are in docs/performance.md). Read only."""
    import shutil

    from clip_search.artifact import read_manifest
    from clip_search.packaging.export import export_runtime
    from clip_search.packaging.manifest import write_manifest

    def build(folder):
        model_dir = folder / "model"
        shutil.copytree(test_model_dir, model_dir, ignore=shutil.ignore_patterns("code"))
        with reusing_fp32_export(test_model_fp32_onnx):  # if it starts from the fp32 ONNX graphs
            manifest = export_runtime(model_dir, read_manifest(model_dir), "openvino-int8", guard=False)
        write_manifest(model_dir, manifest)

    return built_once(tmp_path_factory, "test-model-openvino-int8-unguarded", build) / "model"


@pytest.fixture
def reused_fp32_export(test_model_fp32_onnx):
    """Packagings of the test model in this test start from the session's fp32 ONNX export
    (tests/model_exports.py); yields the folders served from it."""
    with reusing_fp32_export(test_model_fp32_onnx) as served:
        yield served
