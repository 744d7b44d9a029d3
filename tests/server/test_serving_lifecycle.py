"""Starting, failing and stopping the real server: `clip-search serve`, the container entry point."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
import requests

from clip_search.artifact import MANIFEST_FILE, WEIGHTS_FILE
from clip_search.serving.server import ModelServer, ServerError, free_port
from tests.processes import still_running

pytestmark = pytest.mark.server
CLI = [sys.executable, "-m", "clip_search.cli"]


def wait_for_embedding(url, process, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited early"
        try:
            response = requests.post(url + "/invocations", data=b"milk",
                                     headers={"Content-Type": "text/plain"}, timeout=10)
            if response.status_code == 200:
                return response
        except (requests.ConnectionError, requests.Timeout):  # MMS accepts before the worker loads
            pass
        time.sleep(0.2)
    raise AssertionError("server never answered")


def test_serve_cli_serves_and_sigterm_stops_the_whole_group(test_model_tar, tmp_path):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    port = free_port()
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    process = subprocess.Popen(CLI + ["serve", "--model", str(test_model_tar), "--port", str(port)],
                               cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        response = wait_for_embedding(f"http://127.0.0.1:{port}", process)
        assert len(response.json()["embeddings"][0]) == 64
        family = psutil.Process(process.pid).children(recursive=True)
        assert any("java" in p.name() for p in family), [p.name() for p in family]
        assert any(p.name().startswith("python") for p in family)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
        assert process.returncode == 0, output[-2000:]
        assert "stopped" in output
        assert still_running(family, timeout=1) == []  # the same 1 s bound, over as soon as it holds
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/ping", timeout=5)
        assert list(workdir.iterdir()) == []  # nothing written outside the temp dir
        assert list((tmp_path / "tmp").iterdir()) == []  # and the temp dir cleaned up
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_cli_refuses_a_corrupt_model_with_a_clear_message(test_model_dir, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(test_model_dir, broken)
    (broken / WEIGHTS_FILE).write_bytes(b"truncated")
    result = subprocess.run(CLI + ["serve", "--model", str(broken), "--port", str(free_port())],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"{WEIGHTS_FILE} is corrupt" in result.stderr


def test_a_model_that_fails_in_the_worker_answers_500_json_on_every_request(test_model_dir, tmp_path):
    # Checksums pass but the manifest names a runtime that does not exist: the worker cannot
    # load it. The server must not look healthy: each request says why, as JSON.
    broken = tmp_path / "model"
    shutil.copytree(test_model_dir, broken)
    manifest = json.loads((broken / MANIFEST_FILE).read_text())
    manifest["runtime"] = "no-such-runtime"
    (broken / MANIFEST_FILE).write_text(json.dumps(manifest))
    server = ModelServer(broken)
    with pytest.raises(ServerError, match="model failed to load"):
        server.start()
    server = ModelServer(broken).start(wait=False)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                response = requests.post(server.url + "/invocations", data=b"milk",
                                         headers={"Content-Type": "text/plain"}, timeout=10)
                if response.status_code == 500:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.2)
        for _ in range(3):
            response = requests.post(server.url + "/invocations", data=b"milk",
                                     headers={"Content-Type": "text/plain"}, timeout=10)
            assert response.status_code == 500
            assert "unknown runtime 'no-such-runtime'" in response.json()["error"]
            assert "Traceback" not in response.text
    finally:
        server.stop()


def test_container_entry_exits_with_a_clear_log_line_when_the_model_is_broken(tmp_path):
    (tmp_path / "model").mkdir()
    env = dict(os.environ, SAGEMAKER_BASE_DIR=str(tmp_path), SAGEMAKER_BIND_TO_PORT=str(free_port()))
    result = subprocess.run([sys.executable, "-m", "clip_search.serving.container_entry"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "MODEL LOAD FAILED" in result.stderr and MANIFEST_FILE in result.stderr


def test_container_entry_serves_on_sagemaker_paths(test_model_dir, tmp_path):
    shutil.copytree(test_model_dir, tmp_path / "model")
    port = free_port()
    # Loopback only: the entry binds 0.0.0.0 as in a container; MMS_* variables override that here.
    env = dict(os.environ, SAGEMAKER_BASE_DIR=str(tmp_path), SAGEMAKER_BIND_TO_PORT=str(port),
               MMS_INFERENCE_ADDRESS=f"http://127.0.0.1:{port}",
               MMS_MANAGEMENT_ADDRESS=f"http://127.0.0.1:{port}")
    process = subprocess.Popen([sys.executable, "-m", "clip_search.serving.container_entry"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        response = wait_for_embedding(f"http://127.0.0.1:{port}", process)
        assert response.json()["model"] == "clip-search-tiny/random"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0  # asked to stop, stopped: a clean exit
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
