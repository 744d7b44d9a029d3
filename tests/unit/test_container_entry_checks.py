"""The container's `serve` (serving/container_entry.py) refuses, before MMS starts, what it cannot
serve: a bad setting, and an artifact whose runtime needs an extra this install lacks (the slim
image has no torch and no OpenVINO). Exit status 1 and one `MODEL LOAD FAILED` line, never a
healthy-looking server. The start itself is in tests/server/test_serving_lifecycle.py."""
import importlib.util
import json
import logging
import tempfile

import pytest

from clip_search.artifact import MANIFEST_FILE
from clip_search.errors import ModelLoadError
from clip_search.serving import container_entry


def model_dir(tmp_path, runtime):
    directory = tmp_path / "model"
    directory.mkdir()
    manifest = {"model_id": "clip-search-tiny/random", "embed_dim": 32, "files": {}}
    if runtime is not None:
        manifest["runtime"] = runtime
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    return directory


@pytest.fixture
def without(monkeypatch):
    """Make modules look uninstalled, as in the slim image."""
    def hide(*names):
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name in names else real(name, *a, **k))
    return hide


@pytest.mark.parametrize("runtime, hidden, absent", [
    ("torch", ("torch",), "torch"),
    (None, ("open_clip",), "open_clip"),  # no runtime in the manifest: it holds only torch weights
    ("openvino", ("openvino",), "openvino"),
])
def test_a_runtime_whose_extra_is_missing_is_refused_naming_it_and_the_full_image(tmp_path, without, monkeypatch,
                                                                                   runtime, hidden, absent):
    monkeypatch.delenv("CLIP_SEARCH_RUNTIME", raising=False)
    directory = model_dir(tmp_path, runtime)
    without(*hidden)
    with pytest.raises(ModelLoadError) as error:
        container_entry.check_runtime_installed(directory)
    message = str(error.value)
    assert f"cannot serve the {runtime or 'torch'!r} runtime of {directory} ({absent} is not installed)" in message
    assert "container/build.sh --variant full" in message and "--runtime onnx-int8" in message


@pytest.mark.parametrize("runtime", ["onnx", "onnx-int8"])
def test_a_torch_free_artifact_needs_neither_torch_nor_openvino(tmp_path, without, monkeypatch, runtime):
    monkeypatch.delenv("CLIP_SEARCH_RUNTIME", raising=False)
    without("torch", "open_clip", "safetensors", "openvino")
    assert container_entry.check_runtime_installed(model_dir(tmp_path, runtime)) is None


def test_the_runtime_variable_overrides_the_manifest(tmp_path, without, monkeypatch):
    monkeypatch.setenv("CLIP_SEARCH_RUNTIME", "openvino")
    without("openvino")
    with pytest.raises(ModelLoadError, match="cannot serve the 'openvino' runtime"):
        container_entry.check_runtime_installed(model_dir(tmp_path, "onnx"))


def test_a_missing_manifest_is_a_model_load_error(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(ModelLoadError, match=f"missing {MANIFEST_FILE}"):
        container_entry.check_runtime_installed(tmp_path / "model")


def test_the_model_is_read_from_base_dir_model(monkeypatch, tmp_path):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    assert container_entry.model_dir() == tmp_path / "model"
    monkeypatch.delenv("SAGEMAKER_BASE_DIR")
    assert str(container_entry.model_dir()) == "/opt/ml/model"


def test_main_exits_1_on_a_bad_setting_before_anything_starts(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "40000")
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))  # no model there either: settings come first
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where mkdtemp would make the work dir
    with caplog.at_level(logging.ERROR, logger="clip_search.serve"):
        assert container_entry.main() == 1
    [line] = [r.getMessage() for r in caplog.records if r.name == "clip_search.serve"]
    assert line == ("MODEL LOAD FAILED: invalid settings: SAGEMAKER_BIND_TO_PORT='40000' is not valid: "
                    "expected a whole number <= 32767")
    assert list((tmp_path / "tmp").iterdir()) == []  # no work dir made


def test_main_exits_1_when_the_runtime_cannot_be_served(monkeypatch, caplog, tmp_path, without):
    model_dir(tmp_path, "torch")
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    monkeypatch.delenv("CLIP_SEARCH_RUNTIME", raising=False)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    without("torch")
    with caplog.at_level(logging.ERROR, logger="clip_search.serve"):
        assert container_entry.main() == 1
    [line] = [r.getMessage() for r in caplog.records if r.name == "clip_search.serve"]
    assert line.startswith("MODEL LOAD FAILED, exiting: this image cannot serve the 'torch' runtime")
