"""Artifacts of the tiny test model exported to each runtime (one export each, shared by the module)."""
import shutil

import pytest
from click.testing import CliRunner

from clip_search.artifact import extract_artifact


@pytest.fixture(scope="session")
def calibration_dir(grocery_dir):
    return grocery_dir / "iconic-images-and-descriptions"


@pytest.fixture(scope="session")
def onnx_model_dir(tmp_path_factory, calibration_dir):
    from clip_search.packaging.build import package_model

    path = tmp_path_factory.mktemp("onnx") / "model.tar.gz"
    # --keep-weights: the torch reference by name (eval --compare-runtime) needs the fp32 weights beside the graphs.
    package_model(path, test_model=True, runtime="onnx", runtime_options={"calibration": calibration_dir},
                  keep_weights=True)
    return extract_artifact(path)


@pytest.fixture(scope="session")
def openvino_model_dir(tmp_path_factory, calibration_dir):
    """Packaged through the CLI, with the issue's spelling `--runtime openvino`: slim (no weights)."""
    from clip_search.packaging.cli import package_model_command

    path = tmp_path_factory.mktemp("openvino") / "model.tar.gz"
    result = CliRunner().invoke(package_model_command, [
        "--test-model", "--runtime", "openvino", "--calibration", str(calibration_dir), "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert "accuracy guard passed" in result.output
    return extract_artifact(path)


@pytest.fixture(scope="session")
def int8_model_dir(tmp_path_factory, test_model_dir):
    """int8 graphs exported without the guard (test_guard runs it with several thresholds)."""
    from clip_search.artifact import read_manifest
    from clip_search.packaging.export import export_runtime
    from clip_search.packaging.manifest import write_manifest

    model_dir = tmp_path_factory.mktemp("int8") / "model"
    shutil.copytree(test_model_dir, model_dir, ignore=shutil.ignore_patterns("code"))
    manifest = export_runtime(model_dir, read_manifest(model_dir), "onnx-int8", guard=False)
    write_manifest(model_dir, manifest)
    return model_dir
