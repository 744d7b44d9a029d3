"""The exported image graphs embed patches with a MatMul (which the int8 exporters quantize), not the
convolution, and it is the same function."""
from collections import Counter

import onnx
import pytest
import torch

from clip_search.packaging.export import _patch_embedding_as_matmul


class _Visual(torch.nn.Module):
    """What open_clip's VisionTransformer gives the rewrite: conv1 and image_size."""

    def __init__(self, image_size, patch, width, bias=False):
        super().__init__()
        self.image_size = image_size
        self.conv1 = torch.nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=bias)


@pytest.mark.parametrize("image_size, patch, width", [(64, 16, 64), (224, 32, 768), ((96, 128), 16, 32)])
def test_the_matmul_gives_the_convolutions_output(image_size, patch, width):
    torch.manual_seed(0)
    visual = _Visual(image_size, patch, width)
    convolution = visual.conv1
    _patch_embedding_as_matmul(visual)
    assert not isinstance(visual.conv1, torch.nn.Conv2d)
    height, breadth = image_size if isinstance(image_size, tuple) else (image_size, image_size)
    # Each of the batch's images different, so a patch taken from the wrong image or place shows.
    pixels = torch.randn(3, 3, height, breadth)
    with torch.no_grad():
        expected, got = convolution(pixels), visual.conv1(pixels)
    assert got.shape == expected.shape == (3, width, height // patch, breadth // patch)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("visual", [
    _Visual(224, 14, 64),  # ViT-L-14: a patch is 588 values, which OpenVINO's groups of 256 do not divide
    _Visual(64, 16, 64, bias=True),
    _Visual(70, 16, 64),  # the image does not divide into patches: the convolution drops the edge
], ids=["patch-588", "bias", "ragged"])
def test_convolutions_it_cannot_replace_exactly_or_cheaply_stay(visual):
    before = visual.conv1
    _patch_embedding_as_matmul(visual)
    assert visual.conv1 is before


def test_the_exported_test_model_has_no_convolution_and_int8_patches(test_model_fp32_onnx, int8_model_dir):
    fp32_folder, _ = test_model_fp32_onnx
    fp32 = onnx.load(str(fp32_folder / "image_encoder.onnx"))
    assert "Conv" not in Counter(node.op_type for node in fp32.graph.node)
    int8 = onnx.load(str(int8_model_dir / "onnx" / "image_encoder.int8.onnx"))
    weights = {init.name: init for init in int8.graph.initializer}
    # The test model's patches are 3 x 16 x 16 = 768 values embedded into 64: that matrix is stored int8.
    shapes = {(tuple(init.dims), init.data_type) for init in weights.values()}
    assert ((768, 64), onnx.TensorProto.INT8) in shapes
    assert ((768, 64), onnx.TensorProto.FLOAT) not in shapes
    assert not any(node.op_type == "Conv" for node in int8.graph.node)
