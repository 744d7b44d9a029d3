"""OpenVINO's precision is explicit and degrades to exact f32 on CPUs without bf16."""
import pytest

from clip_search.runtimes.openvino_runtime import resolve_precision

NO_BF16 = ["FP32", "INT8", "BIN", "EXPORT_IMPORT"]  # e.g. an AVX2-only serverless host
BF16 = ["FP32", "BF16", "INT8", "BIN", "EXPORT_IMPORT"]


@pytest.mark.parametrize("hint, capabilities, expected", [
    ("auto", NO_BF16, "f32"), ("auto", BF16, "bf16"),
    ("bf16", NO_BF16, "f32"), ("bf16", BF16, "bf16"),
    ("f32", BF16, "f32"), ("F32", NO_BF16, "f32"), (None, BF16, "bf16"),
])
def test_precision_follows_the_hint_and_the_cpu(hint, capabilities, expected):
    assert resolve_precision(hint, capabilities) == expected


def test_unknown_hint_is_refused():
    with pytest.raises(ValueError, match="fp8"):
        resolve_precision("fp8", BF16)


def test_loaded_precision_is_what_this_cpu_supports(openvino_model_dir, monkeypatch):
    import openvino as ov

    from clip_search.encoder import ClipEncoder

    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert ClipEncoder.from_artifact(openvino_model_dir).runtime.precision == ("bf16" if has_bf16 else "f32")
    monkeypatch.setenv("CLIP_SEARCH_OPENVINO_PRECISION", "f32")
    assert ClipEncoder.from_artifact(openvino_model_dir).runtime.precision == "f32"
