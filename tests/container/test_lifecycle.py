"""The container's life as SageMaker sees it: cold start, env vars, bad models, docker stop."""
import json
import shutil
import time

import pytest
import requests

from tests.container.docker_helpers import ServingContainer, docker

pytestmark = pytest.mark.container

COLD_START_BUDGET_S = 60  # test model; measured ~9.5 s on 2 cores


def test_cold_start_to_first_embedding(serving_container):
    print(f"docker run -> first embedding: {serving_container.cold_start_s:.1f} s")
    assert serving_container.cold_start_s < COLD_START_BUDGET_S


@pytest.fixture
def broken_model_dir(serving_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(serving_model_dir, target)
    return target


def assert_exits_with_clear_line(container: ServingContainer, needle: str):
    code = container.wait_exit(timeout=120)
    logs = container.logs()
    assert code != 0, logs
    assert "MODEL LOAD FAILED" in logs and needle in logs, logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]


def test_empty_model_dir_exits_with_a_clear_log_line(docker_ready, tmp_path):
    (tmp_path / "empty").mkdir()
    with ServingContainer(tmp_path / "empty") as container:
        assert_exits_with_clear_line(container, "manifest")


def test_corrupted_weights_exit_with_a_clear_log_line(docker_ready, broken_model_dir):
    # The largest file the manifest lists: the safetensors (torch) or a graph (onnx-int8).
    files = json.loads((broken_model_dir / "clip-search-manifest.json").read_text())["files"]
    name = max(files, key=lambda n: (broken_model_dir / n).stat().st_size)
    weights = broken_model_dir / name
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte: the sha256 no longer matches the manifest
    weights.write_bytes(bytes(data))
    with ServingContainer(broken_model_dir) as container:
        assert_exits_with_clear_line(container, name)


def test_slim_image_given_a_torch_artifact_names_the_full_variant(variant, test_model_dir):
    """The torch test model needs torch: the slim image says which image serves it, and exits."""
    with ServingContainer(test_model_dir) as container:
        if variant == "slim":
            assert_exits_with_clear_line(container, "--variant full")
            assert "'torch' runtime" in container.logs()
        else:  # the full image serves it
            assert container.wait_ready() > 0


def test_payload_limit_env_var_is_honoured(docker_ready, serving_model_dir):
    env = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1"}
    with ServingContainer(serving_model_dir, env=env) as container:
        container.wait_ready()
        small = requests.post(f"{container.url}/invocations", data=b"x" * 1000,
                              headers={"Content-Type": "text/plain"}, timeout=30)
        assert small.status_code == 200
        big = requests.post(f"{container.url}/invocations", data=b"x" * (2 * 1024 * 1024),
                            headers={"Content-Type": "text/plain"}, timeout=30)
        assert big.status_code == 413
        after = requests.post(f"{container.url}/invocations", data=b"still serving",
                              headers={"Content-Type": "text/plain"}, timeout=30)
        assert after.status_code == 200


def test_docker_stop_shuts_down_promptly(docker_ready, serving_model_dir):
    with ServingContainer(serving_model_dir) as container:
        container.wait_ready()
        started = time.monotonic()
        docker("stop", "-t", "30", container.name, timeout=60)
        took = time.monotonic() - started
        # SIGTERM reaches MMS and the Python worker; 30 s would mean Docker had to SIGKILL.
        assert took < 15, container.logs()[-2000:]
        assert not container.state()["Running"]
