"""Every runtime runs the test model and gives torch fp32's embeddings (within the guard)."""

import numpy as np
import pytest

from clip_search.artifact import verify_artifact
from clip_search.encoder import ClipEncoder
from clip_search.errors import ModelLoadError
from clip_search.images import decode_image

TEXTS = ["red apple", "Arla Ecological Sour Cream, 300 g", "oat milk " * 40, "x", "a bag of frozen peas"]


@pytest.fixture(scope="module")
def photos(catalogue_photos):
    return [decode_image(path.read_bytes()) for path in catalogue_photos[:5]]


@pytest.fixture(scope="module")
def reference(test_model_dir):
    return ClipEncoder.from_artifact(test_model_dir, runtime="torch")


def _min_cosine(a, b):
    return float(np.sum(a * b, axis=1).min())


@pytest.mark.parametrize("fixture, runtime, image_min, text_min", [
    ("onnx_model_dir", "onnx", 0.99999, 0.99999),
    ("openvino_model_dir", "openvino", 0.999, 0.998),
    ("int8_model_dir", "onnx-int8", 0.999, 0.998),
    ("openvino_int8_model_dir", "openvino-int8", 0.999, 0.998),
])
def test_runtime_matches_torch_fp32(request, reference, photos, fixture, runtime, image_min, text_min):
    encoder = ClipEncoder.from_artifact(request.getfixturevalue(fixture))
    assert type(encoder.runtime).__name__ != "TorchRuntime" and encoder.runtime.name == runtime
    images, texts = encoder.encode_images(photos), encoder.encode_texts(TEXTS)
    assert images.shape == (len(photos), 64) and texts.shape == (len(TEXTS), 64)
    assert images.dtype == np.float32 and np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    assert _min_cosine(images, reference.encode_images(photos)) >= image_min
    assert _min_cosine(texts, reference.encode_texts(TEXTS)) >= text_min


def test_onnx_text_graph_takes_any_length_and_batch(onnx_model_dir, reference):
    """The text graph has a dynamic sequence axis: texts are padded only to the longest one."""
    encoder = ClipEncoder.from_artifact(onnx_model_dir)
    assert encoder.runtime.trims_text
    for batch in (TEXTS[:1], TEXTS[:2], TEXTS[3:], TEXTS):
        assert encoder.tokenize(batch).shape[1] == reference.tokenize(batch).shape[1]
        assert np.abs(encoder.encode_texts(batch) - reference.encode_texts(batch)).max() < 1e-5


def test_exported_files_are_checksummed_and_guard_figures_recorded(onnx_model_dir, openvino_model_dir):
    for model_dir, runtime in ((onnx_model_dir, "onnx"), (openvino_model_dir, "openvino")):
        manifest = verify_artifact(model_dir)
        assert manifest["runtime"] == runtime
        for graph in manifest["runtime_config"]["graphs"].values():
            assert graph in manifest["files"] and (model_dir / graph).is_file()
        guard = manifest["accuracy_guard"]
        assert guard["min_cosine_image"] >= 0.999 and guard["min_cosine_text"] >= 0.998
        assert guard["images"] >= 20 and guard["texts"] >= 20
        assert "/work" not in guard["calibration"]  # no machine paths in a shipped artifact
    assert verify_artifact(openvino_model_dir)["runtime_config"]["precision_hint"] == "auto"


def test_a_corrupt_exported_graph_is_refused(onnx_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(onnx_model_dir, copy)
    graph = copy / verify_artifact(copy)["runtime_config"]["graphs"]["image_encoder"]
    graph.write_bytes(graph.read_bytes()[:-10])
    with pytest.raises(ModelLoadError, match="corrupt"):
        verify_artifact(copy)


def test_the_runtime_variable_takes_run_time_runtimes_only(onnx_model_dir, monkeypatch):
    monkeypatch.setenv("CLIP_SEARCH_RUNTIME", "onnx")
    assert ClipEncoder.from_artifact(onnx_model_dir).runtime.name == "onnx"
    monkeypatch.setenv("CLIP_SEARCH_RUNTIME", "torch")  # build time: never chosen for serving
    with pytest.raises(ModelLoadError, match="CLIP_SEARCH_RUNTIME='torch': choose one of the run-time runtimes onnx"):
        ClipEncoder.from_artifact(onnx_model_dir)


def test_a_build_time_tool_may_still_ask_for_the_torch_reference_by_name(onnx_model_dir, monkeypatch):
    monkeypatch.delenv("CLIP_SEARCH_RUNTIME", raising=False)
    # eval --compare-runtime torch, the accuracy guard: the fp32 weights kept beside the graphs
    assert ClipEncoder.from_artifact(onnx_model_dir, runtime="torch").runtime.name == "torch"


def test_a_runtime_the_artifact_was_not_exported_for_is_refused_not_replaced_by_torch(onnx_model_dir, monkeypatch):
    monkeypatch.setenv("CLIP_SEARCH_RUNTIME", "openvino")
    with pytest.raises(ModelLoadError, match=r"runtime 'openvino' cannot serve .*packaged for runtime 'onnx'"):
        ClipEncoder.from_artifact(onnx_model_dir)


def test_a_broken_runtime_is_a_load_error_naming_it_not_a_fallback_to_torch(onnx_model_dir, tmp_path, monkeypatch):
    import shutil

    monkeypatch.delenv("CLIP_SEARCH_RUNTIME", raising=False)
    copy = tmp_path / "model"
    shutil.copytree(onnx_model_dir, copy)
    (copy / verify_artifact(copy)["runtime_config"]["graphs"]["text_encoder"]).write_bytes(b"not onnx")
    from clip_search.artifact import read_manifest
    from clip_search.runtimes import load_runtime

    with pytest.raises(ModelLoadError, match=r"runtime 'onnx' could not load .*model"):
        load_runtime(copy, read_manifest(copy), threads=1)


def test_a_torch_only_artifact_without_torch_names_the_package_extra(test_model_dir, monkeypatch):
    import importlib.util

    monkeypatch.delenv("CLIP_SEARCH_RUNTIME", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "open_clip" else real(name, *a, **k))
    with pytest.raises(ModelLoadError) as error:
        ClipEncoder.from_artifact(test_model_dir)  # packaged with torch alone, as the test model is
    message = str(error.value)
    assert "'package' extra (open_clip is not installed): pip install 'clip-search[package]'" in message
    assert "package-model --runtime onnx-int8" in message


def test_unknown_runtime_is_a_clear_error(test_model_dir):
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        ClipEncoder.from_artifact(test_model_dir, runtime="tensorrt")
