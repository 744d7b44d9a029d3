"""An input's embedding does not depend on its batch mates, for every runtime (issue 12, part 4).

Each input is encoded alone, then inside batches of 2, 8 and 32 mixed texts / photos (and at every
position of those batches); the embeddings must agree to 1e-5 (max abs). Dynamic int8 given a batch
in one call failed this with 3e-3..8e-3 (its activation scales came from the whole batch); the
onnx-int8 runtime runs each input on its own (tests at the end).
"""
import numpy as np
import pytest

from clip_search.encoder import ClipEncoder
from clip_search.images import decode_image

TOLERANCE = 1e-5
BATCHES = (2, 8, 32)
TEXTS = [
    "red running shoes", "Arla Ecological Sour Cream, 300 g", "oat milk " * 40, "x", "", "🍎 apple",
    "東京の寿司", "crème fraîche 35%", "a bag of frozen peas", "Granny Smith", "whole milk, 1 l", "bananas",
] * 3  # 36: every batch size has mixed lengths in it

RUNTIMES = [("test_model_dir", "torch"), ("onnx_model_dir", "onnx"), ("int8_model_dir", "onnx-int8"),
            ("openvino_model_dir", "openvino"), ("openvino_int8_model_dir", "openvino-int8")]


@pytest.fixture(scope="module")
def photos(catalogue_photos, store_photos):
    return [decode_image(path.read_bytes()) for path in (catalogue_photos[:16] + store_photos[:16])]


def _largest_difference(encode, items):
    alone = np.concatenate([encode([item]) for item in items[:32]])
    worst = 0.0
    for size in BATCHES:
        for start in range(0, 32, size):
            # Rotate the batch so each input also sits at other positions among other mates.
            batch = items[start:start + size]
            together = encode(batch)
            worst = max(worst, float(np.abs(together - alone[start:start + size]).max()))
            reversed_ = encode(batch[::-1])[::-1]
            worst = max(worst, float(np.abs(reversed_ - alone[start:start + size]).max()))
    return worst


@pytest.mark.parametrize("fixture, runtime", RUNTIMES, ids=[name for _, name in RUNTIMES])
def test_text_embeddings_do_not_depend_on_the_batch(request, fixture, runtime):
    encoder = ClipEncoder.from_artifact(request.getfixturevalue(fixture), runtime=runtime, threads=2)
    assert encoder.runtime.name == runtime
    assert _largest_difference(encoder.encode_texts, TEXTS) <= TOLERANCE


@pytest.mark.parametrize("fixture, runtime", RUNTIMES, ids=[name for _, name in RUNTIMES])
def test_image_embeddings_do_not_depend_on_the_batch(request, fixture, runtime, photos):
    encoder = ClipEncoder.from_artifact(request.getfixturevalue(fixture), runtime=runtime, threads=2)
    assert encoder.runtime.name == runtime
    assert _largest_difference(encoder.encode_images, photos) <= TOLERANCE


# --- int8: each input on its own activation scales ------------------------------------------------
# Dynamic int8 takes one activation scale per tensor at run time; the onnx-int8 runtime runs every
# input alone so that scale is the input's own. These batch mates are chosen to move a shared scale a
# lot: a photo with 40x the pixel range, a text of the full 77 tokens (a short text padded beside it).
def _int8_runtimes(int8_model_dir):
    from clip_search.runtimes.onnx_runtime import OnnxRuntime

    encoder = ClipEncoder.from_artifact(int8_model_dir, runtime="onnx-int8", threads=2)
    runtime = encoder.runtime
    assert runtime.one_input_per_run  # what the exporter recorded in the manifest
    together = OnnxRuntime(runtime._image, runtime._text, runtime.name, one_input_per_run=False)
    return encoder, runtime, together


def test_int8_image_uses_its_own_activation_scales(int8_model_dir, photos):
    encoder, runtime, together = _int8_runtimes(int8_model_dir)
    pixels = encoder.preprocess_images(photos[:2])
    mates = np.concatenate([pixels[:1], pixels[1:] * 40.0])
    alone = runtime.image_features(pixels[:1])
    assert np.abs(runtime.image_features(mates)[:1] - alone).max() <= TOLERANCE
    assert np.abs(runtime.image_features(mates[::-1])[1:] - alone).max() <= TOLERANCE
    # The same graphs given the batch in one call do depend on the mate: the split is what holds.
    assert np.abs(together.image_features(mates)[:1] - alone).max() > 100 * TOLERANCE


def test_int8_text_uses_its_own_length_and_scales(int8_model_dir):
    encoder, runtime, together = _int8_runtimes(int8_model_dir)
    tokens = encoder.tokenize(["red running shoes", "oat milk " * 40])  # padded to 77 for the long one
    assert tokens.shape[1] == 77
    alone = runtime.text_features(encoder.tokenize(["red running shoes"]))
    assert np.abs(runtime.text_features(tokens)[:1] - alone).max() <= TOLERANCE
    assert np.abs(runtime.text_features(tokens[::-1])[1:] - alone).max() <= TOLERANCE
    assert np.abs(together.text_features(tokens)[:1] - alone).max() > 100 * TOLERANCE


def test_which_int8_artifacts_run_one_input_at_a_time():
    """Dynamic int8 artifacts packaged before the exporter recorded it are split too; blockwise int8
    artifacts (MatMulNBits, quantized per row: batch invariant as they are) and fp32 are not."""
    from clip_search.runtimes.onnx_runtime import runs_one_input_at_a_time

    dynamic = {"runtime": "onnx-int8", "runtime_config": {"quantization": "dynamic; int8 weights"}}
    blockwise = {"runtime": "onnx-int8", "runtime_config": {
        "quantization_config": {"bits": 8, "block_size": 128, "accuracy_level": 4}}}
    current = {"runtime": "onnx-int8", "runtime_config": {"quantization_config": {"one_input_per_run": True}}}
    assert runs_one_input_at_a_time(dynamic) and runs_one_input_at_a_time(current)
    assert not runs_one_input_at_a_time(blockwise)
    assert not runs_one_input_at_a_time({"runtime": "onnx", "runtime_config": {"precision": "fp32"}})


# --- openvino-int8: int8 weights, activations quantized per row, batches in one call ---------------
def test_openvino_int8_stores_int8_weights_and_quantizes_activations_per_row(openvino_int8_model_dir, photos):
    """The IR holds the weight matrices as int8 (not the fp32 graph under another name), the
    compiled model quantizes activations per row in the recorded groups, and a whole batch goes
    to the model in one call: the photo beside mates of 40x its pixel range does not move."""
    import openvino as ov

    encoder = ClipEncoder.from_artifact(openvino_int8_model_dir, runtime="openvino-int8", threads=2)
    config = encoder.manifest["runtime_config"]
    group = config["dynamic_quantization_group_size"]
    assert group > 0
    for kind in ("image_encoder", "text_encoder"):
        model = ov.Core().read_model(str(openvino_int8_model_dir / config["graphs"][kind]))
        int8 = [op for op in model.get_ops() if op.get_type_name() == "Constant"
                and op.get_element_type() == ov.Type.i8 and len(op.get_shape()) == 2]
        assert len(int8) >= 2, kind  # every layer's matrices; the test model has 2+ layers per tower
    compiled = encoder.runtime._image
    assert int(compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")) == group
    calls = []
    image = encoder.runtime._image
    encoder.runtime._image = lambda pixels: calls.append(len(pixels)) or image(pixels)
    pixels = encoder.preprocess_images(photos[:8])
    alone = encoder.encode_pixels(pixels[:1])
    loud = np.concatenate([pixels[:1], pixels[1:] * 40.0])
    assert np.abs(encoder.encode_pixels(loud)[:1] - alone).max() <= TOLERANCE
    assert calls == [1, 8]  # one call per batch, not one per input
