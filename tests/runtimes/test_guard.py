"""The accuracy guard: real product photos and titles, torch fp32 as the reference."""
import pytest
from click.testing import CliRunner

from clip_search.artifact import read_manifest
from clip_search.packaging.guard import AccuracyGuardError, calibration_dir, load_calibration, run_guard


def test_calibration_set_is_real_photos_and_titles(calibration_dir):
    images, texts = load_calibration(calibration_dir)
    assert len(images) >= 20 and all(image.mode == "RGB" for image in images)
    assert len(texts) >= 20 and any("Apple" in text for text in texts)


def test_missing_calibration_set_is_a_clear_error(tmp_path):
    with pytest.raises(AccuracyGuardError, match="--calibration"):
        calibration_dir(tmp_path)


def test_guard_refuses_a_runtime_that_drifts(int8_model_dir, calibration_dir):
    """int8 is close to fp32 but not exact: a threshold it cannot meet refuses it, with figures."""
    with pytest.raises(AccuracyGuardError, match=r"min cosine to torch fp32 is 0\.99\d+ for images"):
        run_guard(int8_model_dir, read_manifest(int8_model_dir), "onnx-int8", calibration=calibration_dir,
                  image_threshold=0.99999)


def test_guard_records_figures_thresholds_and_cpu(int8_model_dir, calibration_dir):
    figures = run_guard(int8_model_dir, read_manifest(int8_model_dir), "onnx-int8",
                        calibration=calibration_dir, image_threshold=0.9, text_threshold=0.9)
    assert 0.99 <= figures["min_cosine_image"] < 0.99999 and figures["thresholds"] == {"image": 0.9, "text": 0.9}
    assert figures["images"] >= 20 and figures["texts"] >= 20 and figures["cpu_flags"]
    # The serving path (photo files -> decode -> numpy preprocessing; titles -> tokenizer.json)
    # against open_clip's own preprocess + tokenizer + torch fp32, recorded beside the graphs' figures.
    path = figures["serving_path"]
    assert path["preprocessing"] == "tokenizer.json + numpy preprocessing" and path["jpeg_draft"] is True
    assert 0.999 <= path["min_cosine_image"] < 0.99999 and 0.998 <= path["min_cosine_text"] <= 1.0


def test_cli_writes_no_artifact_when_the_guard_fails(tmp_path, calibration_dir, monkeypatch, reused_fp32_export):
    from clip_search.packaging import guard
    from clip_search.packaging.cli import package_model_command

    monkeypatch.setattr(guard, "IMAGE_THRESHOLD", 0.99999)  # int8 drifts more than that on photos
    output = tmp_path / "model.tar.gz"
    result = CliRunner().invoke(package_model_command, [
        "--test-model", "--runtime", "onnx-int8", "--calibration", str(calibration_dir), "-o", str(output)])
    assert result.exit_code == 3, result.output
    assert "fails the accuracy guard" in result.output
    assert list(tmp_path.iterdir()) == []  # neither the artifact nor a partial file
    assert len(reused_fp32_export) == 1


# --- --runtime auto: the fastest runtime the guard accepts ------------------------------------
# Each candidate is exported, guarded and (when refused) removed for real; the fp32 ONNX graphs they
# start from are the session's export of the same seeded weights (reused_fp32_export).
def _package_auto(tmp_path, calibration_dir):
    from clip_search.packaging.cli import package_model_command

    output = tmp_path / "model.tar.gz"
    result = CliRunner().invoke(package_model_command, [
        "--test-model", "--calibration", str(calibration_dir), "-o", str(output)])  # auto is the default
    return output, result


def _packed(output):
    from clip_search.artifact import extract_artifact, read_manifest

    model_dir = extract_artifact(output)
    return model_dir, read_manifest(model_dir)


def test_auto_packages_int8_when_the_guard_accepts_it(tmp_path, calibration_dir, monkeypatch, reused_fp32_export):
    from clip_search.packaging import guard

    # Force the guard's answer: int8 measures >= 0.99 on every CPU here, so thresholds of 0.95 accept
    # it, and auto must then pick the first candidate, int8, and not try OpenVINO at all.
    monkeypatch.setattr(guard, "IMAGE_THRESHOLD", 0.95)
    monkeypatch.setattr(guard, "TEXT_THRESHOLD", 0.95)
    output, result = _package_auto(tmp_path, calibration_dir)
    assert result.exit_code == 0, result.output
    model_dir, manifest = _packed(output)
    selection = manifest["runtime_selection"]
    assert selection["requested"] == "auto" and selection["candidates"] == ["onnx-int8", "openvino"]
    assert not selection["refused"]
    assert manifest["runtime"] == "onnx-int8"
    assert manifest["accuracy_guard"]["thresholds"] == {"image": 0.95, "text": 0.95}
    assert 0.99 <= manifest["accuracy_guard"]["min_cosine_text"] < 1.0  # int8: close, not exact
    assert not (model_dir / "openvino").exists()
    assert "runtime onnx-int8" in result.output
    assert len(reused_fp32_export) == 1  # OpenVINO was never exported


def test_auto_falls_back_to_openvino_and_leaves_no_int8_behind(tmp_path, calibration_dir, monkeypatch,
                                                              reused_fp32_export):
    from clip_search.encoder import ClipEncoder
    from clip_search.packaging import guard

    # int8 texts measure ~0.9993 with the test model; OpenVINO (f32 exact, bf16 ~0.9999) passes.
    monkeypatch.setattr(guard, "TEXT_THRESHOLD", 0.9997)
    output, result = _package_auto(tmp_path, calibration_dir)
    assert result.exit_code == 0, result.output
    assert "the accuracy guard refused onnx-int8" in result.output and "packaged openvino instead" in result.output
    model_dir, manifest = _packed(output)
    assert manifest["runtime"] == "openvino"
    assert "min cosine to torch fp32" in manifest["runtime_selection"]["refused"]["onnx-int8"]
    assert not (model_dir / "onnx").exists()
    assert not any(name.startswith("onnx/") for name in manifest["files"])  # the checksums match the files
    assert ClipEncoder.from_artifact(output).runtime.name == "openvino"
    assert len(reused_fp32_export) == 2


def test_auto_writes_nothing_when_every_candidate_is_refused(tmp_path, calibration_dir, monkeypatch, reused_fp32_export):
    from clip_search.packaging import guard

    monkeypatch.setattr(guard, "IMAGE_THRESHOLD", 1.000001)  # unreachable, even in f32
    output, result = _package_auto(tmp_path, calibration_dir)
    assert result.exit_code == 3, result.output
    assert "refused every candidate runtime" in result.output
    assert "onnx-int8:" in result.output and "openvino:" in result.output
    assert not output.exists() and list(tmp_path.iterdir()) == []
    assert len(reused_fp32_export) == 2
