"""Artifacts of the tiny test model exported to each runtime: one export each per test session,
shared by the pytest-xdist workers (tests/conftest.py `built_once`)."""
import contextlib
import json
import shutil
from pathlib import Path

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
def int8_model_dir(tmp_path_factory, test_model_dir, test_model_fp32_onnx):
    """int8 graphs exported without the guard (test_guard runs it with several thresholds).
    Shared by every worker as it is: the tests only read it."""
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
def test_model_fp32_onnx(onnx_model_dir):
    """The test model's fp32 ONNX graphs as export_onnx writes them, and what they were exported
    from: the onnx runtime's artifact holds exactly them (keep_weights: its weights beside them)."""
    return onnx_model_dir / "onnx", _weights_key(onnx_model_dir)


def _weights_key(model_dir):
    """What export_onnx's graphs are a function of: the model config and the weights."""
    from clip_search.artifact import CONFIG_FILE, WEIGHTS_FILE
    from clip_search.files import sha256_file

    return json.loads((model_dir / CONFIG_FILE).read_text())["model_cfg"], sha256_file(model_dir / WEIGHTS_FILE)


@contextlib.contextmanager
def reusing_fp32_export(test_model_fp32_onnx):
    """package-model's other exporters start from the same fp32 ONNX export of the weights (int8
    quantizes it, OpenVINO converts it). The test model's weights are seeded, so every packaging of
    it exports the same graphs: inside this block they are copied from the session's export instead
    of exported again (the torch exporter is most of a packaging's time). Other weights export as
    before. Yields the list of folders served from the copy, so a test can show it was used."""
    from clip_search.packaging import export

    folder, key = test_model_fp32_onnx
    real, served = export.export_onnx, []

    def export_onnx(model_dir, out_dir):
        if _weights_key(Path(model_dir)) != key:
            return real(model_dir, out_dir)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = [out_dir / f"{export.IMAGE_GRAPH}.onnx", out_dir / f"{export.TEXT_GRAPH}.onnx"]
        for path in files:
            shutil.copyfile(folder / path.name, path)
        served.append(out_dir)
        return files

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "export_onnx", export_onnx)
        yield served


@pytest.fixture
def reused_fp32_export(test_model_fp32_onnx):
    with reusing_fp32_export(test_model_fp32_onnx) as served:
        yield served
