"""The container's life as SageMaker sees it: cold start, env vars, bad models, docker stop."""
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
def broken_model_dir(test_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(test_model_dir, target)
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
    weights = broken_model_dir / "open_clip_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the tensor data: the sha256 no longer matches the manifest
    weights.write_bytes(bytes(data))
    with ServingContainer(broken_model_dir) as container:
        assert_exits_with_clear_line(container, "open_clip_model.safetensors")


def test_payload_limit_env_var_is_honoured(docker_ready, test_model_dir):
    env = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1"}
    with ServingContainer(test_model_dir, env=env) as container:
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


def test_docker_stop_shuts_down_promptly(docker_ready, test_model_dir):
    with ServingContainer(test_model_dir) as container:
        container.wait_ready()
        started = time.monotonic()
        docker("stop", "-t", "30", container.name, timeout=60)
        took = time.monotonic() - started
        # SIGTERM reaches MMS and the Python worker; 30 s would mean Docker had to SIGKILL.
        assert took < 15, container.logs()[-2000:]
        assert not container.state()["Running"]
