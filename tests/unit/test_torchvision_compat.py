import subprocess
import sys


def test_open_clip_imports_beside_the_cpu_torch_in_a_fresh_interpreter():
    # A fresh process: torchvision must not have been imported by anything else first.
    code = (
        "from clip_search.packaging.torchvision_compat import ensure_torchvision_importable\n"
        "declared = ensure_torchvision_importable()\n"
        "import torchvision.transforms, open_clip\n"
        "import torch\n"
        "print('declared' if declared else 'native', torch.ops.torchvision.nms is not None)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == "True"


def test_second_call_is_a_no_op():
    from clip_search.packaging.torchvision_compat import ensure_torchvision_importable

    first = ensure_torchvision_importable()
    assert ensure_torchvision_importable() == first  # declaring the schemas twice would raise
    import torchvision.transforms  # noqa: F401
