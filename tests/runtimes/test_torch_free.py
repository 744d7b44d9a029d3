"""Encoding with an exported artifact imports neither torch nor open_clip (nor torchvision, onnx)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from clip_search.encoder import ClipEncoder

# Poisoned: `import torch` (or any of these) raises ImportError in the child process.
POISON = ("torch", "open_clip", "torchvision", "onnx", "safetensors")
SCRIPT = """
import json, sys
for name in {poison!r}:
    sys.modules[name] = None
from clip_search.encoder import ClipEncoder
encoder = ClipEncoder.from_artifact(sys.argv[1])
texts = encoder.encode_texts(["red apple", "Arla Ecological Sour Cream, 300 g", "🍣 東京"])
images = encoder.encode_image_bytes([open(path, "rb").read() for path in sys.argv[2:]])
loaded = sorted(name for name in {poison!r} if sys.modules.get(name) is not None)
print(json.dumps({{"runtime": encoder.runtime.name, "texts": texts.tolist(), "images": images.tolist(),
                  "loaded": loaded}}))
"""


@pytest.mark.parametrize("fixture", ["onnx_model_dir", "int8_model_dir", "openvino_model_dir"])
def test_exported_artifact_encodes_without_torch(request, fixture, catalogue_photos):
    model_dir = request.getfixturevalue(fixture)
    photos = [str(path) for path in catalogue_photos[:3]]
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(poison=POISON), str(model_dir), *photos],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["loaded"] == []
    # The same vectors as the encoder in this process (which may have torch loaded) gives.
    encoder = ClipEncoder.from_artifact(model_dir)
    assert answer["runtime"] == encoder.runtime.name != "torch"
    np.testing.assert_allclose(answer["texts"], encoder.encode_texts(
        ["red apple", "Arla Ecological Sour Cream, 300 g", "🍣 東京"]), atol=1e-5)
    np.testing.assert_allclose(answer["images"], encoder.encode_image_bytes(
        [open(path, "rb").read() for path in photos]), atol=1e-5)


def test_slim_artifact_leaves_the_weights_and_code_out(openvino_model_dir):
    from clip_search.artifact import WEIGHTS_FILE, verify_artifact

    manifest = verify_artifact(openvino_model_dir)
    assert WEIGHTS_FILE not in manifest["files"] and not (openvino_model_dir / WEIGHTS_FILE).exists()
    assert manifest["weights_included"] is False and manifest["weights_sha256"]
    assert not (openvino_model_dir / "code").exists()
    assert "tokenizer.json" in manifest["files"]


def test_torch_on_a_slim_artifact_names_keep_weights(openvino_model_dir):
    from clip_search.artifact import read_manifest
    from clip_search.errors import ModelLoadError
    from clip_search.packaging.torch_runtime import TorchRuntime

    with pytest.raises(ModelLoadError, match="--keep-weights"):
        TorchRuntime.load(openvino_model_dir, read_manifest(openvino_model_dir), 1)
    with pytest.raises(ModelLoadError, match="--keep-weights"):
        ClipEncoder.from_artifact(openvino_model_dir, runtime="torch")


def test_keep_weights_keeps_them(onnx_model_dir):
    from clip_search.artifact import WEIGHTS_FILE, verify_artifact

    manifest = verify_artifact(onnx_model_dir)
    assert manifest["weights_included"] is True and WEIGHTS_FILE in manifest["files"]
    assert (onnx_model_dir / "code" / "inference.py").is_file()
    assert ClipEncoder.from_artifact(onnx_model_dir, runtime="torch").runtime.name == "torch"
