import subprocess
import sys


def test_open_clip_imports_beside_the_cpu_torch_in_a_fresh_interpreter():
    # A fresh process: torchvision must not have been imported by anything else first.
    code = (
        "from clip_search.packaging.torchvision_compat import ensure_torchvision_importable\n"
        "declared = ensure_torchvision_importable()\n"
        "import torchvision.transforms, open_clip, torch\n"
        "from PIL import Image\n"
        "size = torchvision.transforms.Resize(8)(Image.new('RGB', (32, 16))).size\n"
        "boxes, scores = torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]]), torch.tensor([0.9, 0.8])\n"
        "try:\n"
        "    kept = torch.ops.torchvision.nms(boxes, scores, 0.5).tolist()\n"
        "except (NotImplementedError, RuntimeError) as error:\n"
        "    kept = 'no-kernel'\n"
        "print('declared' if declared else 'native', size, kept, sep='|')\n"
        "print(torch.ops.torchvision.nms.default._schema)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    first, schema = result.stdout.strip().splitlines()[-2:]
    mode, size, kept = first.split("|")
    assert size == "(16, 8)"  # the pure-Python transforms open_clip needs work
    assert schema == "torchvision::nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
    # Declared schemas carry no kernel and fail loudly; the real library keeps the first box only.
    assert (mode, kept) in (("declared", "no-kernel"), ("native", "[0]")), first


def test_second_call_is_a_no_op():
    from clip_search.packaging.torchvision_compat import ensure_torchvision_importable

    first = ensure_torchvision_importable()
    assert ensure_torchvision_importable() == first  # declaring the schemas twice would raise
    import torchvision.transforms  # noqa: F401
