"""What is inside the image: the variant's Python stack, a minimal JRE, `serve` on PATH, no build tools.

slim (the default): no torch, open_clip or OpenVINO, <= 600 MB. full: the CPU torch build, no CUDA.
"""
import json

import pytest

from tests.container.docker_helpers import IMAGE, docker, image_size_bytes

pytestmark = pytest.mark.container

# slim: issue 12's target. full: measured ~1.5 GB (torch CPU ~0.7 GB); a CUDA torch would add ~3 GB.
MAX_IMAGE_BYTES = {"slim": 600_000_000, "full": 2_000_000_000}


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


def test_python_stack_of_the_variant(variant):
    """slim: no torch, open_clip, OpenVINO or onnx; full: the CPU torch build and no CUDA library."""
    out = run_in_image(
        "python -c 'import importlib.util as u;"
        "print([m for m in (\"torch\", \"torchvision\", \"open_clip\", \"openvino\", \"onnx\") if u.find_spec(m)])';"
        "python -c 'import onnxruntime, tokenizers, PIL, numpy; print(\"core ok\")';"
        "pip list --format freeze 2>/dev/null | grep -Ei '^(nvidia-|triton=)' || echo no-cuda-packages;"
        "python -c 'import importlib.util as u; print([m for m in (\"lancedb\", \"pyarrow\") if u.find_spec(m)])';"
        "find / -xdev \\( -name 'libcudart*' -o -name 'libcublas*' -o -name 'libcudnn*' \\) | head -n1")
    lines = out.split("\n")
    # Either variant: the image encodes and never opens an index, so LanceDB and Arrow stay out
    # (container/build.sh's NOT_SERVED; they were 370 MB of an 892 MB slim image).
    assert lines.pop(3) == "[]"
    if variant == "slim":
        assert lines[0] == "[]"
    else:
        assert lines[0] == "['torch', 'torchvision', 'open_clip', 'openvino', 'onnx']"
        assert run_in_image("python -c 'import torch; print(torch.__version__, torch.version.cuda)'").strip() \
            == "2.13.0+cpu None"
    assert lines[1:4] == ["core ok", "no-cuda-packages", ""]


def test_minimal_jre_and_no_compilers(docker_ready):
    out = run_in_image(
        "java -version 2>&1 | head -n1;"
        "java --list-modules | grep -c -E '^(jdk.compiler|jdk.jlink|jdk.jshell|java.compiler)@' ;"
        "for tool in gcc cc g++ make javac jlink; do command -v $tool; done; echo end")
    lines = out.split("\n")
    assert lines[0].startswith('openjdk version "17')
    assert lines[1] == "0"  # jlink'ed: a run time only (no compiler, jlink or jshell modules)
    assert lines[2] == "end"  # none of the build tools is on PATH


def test_serving_stack_imports(variant):
    out = run_in_image(
        "python -c 'import clip_search.serving.handler_service, clip_search.serving.mms, sagemaker_inference, mms;"
        "import clip_search.runtimes.onnx_runtime; print(\"ok\")'")
    assert out.split() == ["ok"]
    if variant == "full":
        out = run_in_image(
            "python -c 'from clip_search.packaging.torchvision_compat import ensure_torchvision_importable as guard;"
            "print(guard()); import open_clip, openvino; print(\"ok\")'")
        # True: the guard was needed, as PyPI torchvision's compiled ops were removed from the image.
        assert out.split() == ["True", "ok"]


def test_image_is_small(variant):
    size = image_size_bytes()
    print(f"image {IMAGE} ({variant}): {size / 1e6:.0f} MB")
    assert size <= MAX_IMAGE_BYTES[variant]


def test_the_jvm_maps_mms_classes_from_its_archive(docker_ready):
    """The front end's classes come from the JVM's class data archive (serving/java_archive.py),
    not parsed from the jar: half the JVM's CPU at start. With the class path `serve` gives it (MMS's
    jars only); -Xshare:on makes a class path mismatch an error, not a fallback."""
    out = run_in_image(
        "cd \"$(mktemp -d)\" && java -Xshare:on -Xlog:class+load=info "
        "-cp \"$(python -c 'from clip_search.serving import mms; print(mms.class_path())')\" "
        "com.amazonaws.ml.mms.ModelServer --help 2>&1 | grep -E '(com.amazonaws.ml.mms|io.netty)[.]' ; echo end")
    loaded = [line for line in out.splitlines() if " source: " in line]
    assert any("com.amazonaws.ml.mms.ModelServer source: shared objects file" in line for line in loaded), out[-2000:]
    assert not [line for line in loaded if "source: jar" in line or "source: file" in line], loaded
