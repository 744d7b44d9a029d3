"""The accuracy guard: real product photos and titles, torch fp32 as the reference."""
import pytest
from click.testing import CliRunner

from clip_search.artifact import read_manifest
from clip_search.runtimes.guard import AccuracyGuardError, calibration_dir, load_calibration, run_guard


def test_calibration_set_is_real_photos_and_titles(calibration_dir):
    images, texts = load_calibration(calibration_dir)
    assert len(images) >= 20 and all(image.mode == "RGB" for image in images)
    assert len(texts) >= 20 and any("Apple" in text for text in texts)


def test_missing_calibration_set_is_a_clear_error(tmp_path):
    with pytest.raises(AccuracyGuardError, match="--calibration"):
        calibration_dir(tmp_path)


def test_guard_refuses_a_runtime_that_drifts(int8_model_dir, calibration_dir):
    """Dynamic int8 is close to fp32 but not exact: a threshold it cannot meet refuses it, with figures."""
    with pytest.raises(AccuracyGuardError, match=r"min cosine to torch fp32 is 0\.99\d+ for images"):
        run_guard(int8_model_dir, read_manifest(int8_model_dir), "onnx-int8", calibration=calibration_dir,
                  image_threshold=0.99999)


def test_guard_records_figures_thresholds_and_cpu(int8_model_dir, calibration_dir):
    figures = run_guard(int8_model_dir, read_manifest(int8_model_dir), "onnx-int8",
                        calibration=calibration_dir, image_threshold=0.9, text_threshold=0.9)
    assert 0.99 <= figures["min_cosine_image"] < 0.99999 and figures["thresholds"] == {"image": 0.9, "text": 0.9}
    assert figures["images"] >= 20 and figures["texts"] >= 20 and figures["cpu_flags"]


def test_cli_writes_no_artifact_when_the_guard_fails(tmp_path, calibration_dir, monkeypatch):
    from clip_search.artifact_cli import package_model_command
    from clip_search.runtimes import guard

    monkeypatch.setattr(guard, "IMAGE_THRESHOLD", 0.99999)  # int8 drifts more than that on photos
    output = tmp_path / "model.tar.gz"
    result = CliRunner().invoke(package_model_command, [
        "--test-model", "--runtime", "onnx-int8", "--calibration", str(calibration_dir), "-o", str(output)])
    assert result.exit_code == 3, result.output
    assert "fails the accuracy guard" in result.output
    assert list(tmp_path.iterdir()) == []  # neither the artifact nor a partial file
