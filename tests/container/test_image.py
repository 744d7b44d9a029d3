"""What is inside the image: CPU-only torch, a headless JRE, `serve` on PATH, no build tools."""
import json

import pytest

from tests.container.docker_helpers import IMAGE, docker, image_size_bytes

pytestmark = pytest.mark.container

# Measured 1.71 GB (torch CPU ~0.7 GB, JRE ~0.18 GB); a CUDA torch alone would add ~3 GB.
MAX_IMAGE_BYTES = 2_000_000_000


def run_in_image(script: str) -> str:
    return docker("run", "--rm", "--network", "none", "--entrypoint", "sh", IMAGE, "-c", script).stdout


@pytest.fixture(scope="module")
def config(docker_ready) -> dict:
    return json.loads(docker("image", "inspect", "-f", "{{json .Config}}", IMAGE).stdout)


def test_default_command_is_serve_on_path(config):
    assert config["Cmd"] == ["serve"]
    assert not config.get("Entrypoint")  # SageMaker passes `serve` as the command
    assert run_in_image("command -v serve").strip() == "/usr/local/bin/serve"
    assert "8080/tcp" in config["ExposedPorts"]


def test_torch_is_the_cpu_build_and_no_cuda_libraries(docker_ready):
    out = run_in_image(
        "python -c 'import torch; print(torch.__version__, torch.version.cuda)';"
        "pip list --format freeze 2>/dev/null | grep -Ei '^(nvidia-|triton=)' || echo no-cuda-packages;"
        "find / -xdev \\( -name 'libcudart*' -o -name 'libcublas*' -o -name 'libcudnn*' \\) | head -n1")
    lines = out.split("\n")
    assert lines[0] == "2.13.0+cpu None"
    assert lines[1] == "no-cuda-packages"
    assert lines[2] == ""


def test_headless_jre_and_no_compilers(docker_ready):
    out = run_in_image(
        "java -version 2>&1 | head -n1;"
        "ls /usr/lib/jvm/*/lib/libawt_xawt.so 2>/dev/null || echo headless;"
        "for tool in gcc cc g++ make javac; do command -v $tool; done; echo end")
    lines = out.split("\n")
    assert lines[0].startswith('openjdk version "17')
    assert lines[1] == "headless"
    assert lines[2] == "end"  # none of the build tools is on PATH


def test_serving_stack_imports(docker_ready):
    out = run_in_image(
        "python -c 'import clip_search.serving.handler_service, sagemaker_inference, mms;"
        "from clip_search.packaging.torchvision_compat import ensure_torchvision_importable as guard;"
        "print(guard()); import open_clip; print(\"ok\")'")
    # True: the guard was needed, as PyPI torchvision's compiled ops were removed from the image.
    assert out.split() == ["True", "ok"]


def test_image_is_small(docker_ready):
    size = image_size_bytes()
    print(f"image {IMAGE}: {size / 1e6:.0f} MB")
    assert size < MAX_IMAGE_BYTES
