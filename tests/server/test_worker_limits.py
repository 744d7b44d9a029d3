"""The real multi-model-server at its edges: an answer over MMS's default response limit, a killed
Python worker, multi-frame images, SIGINT to `clip-search serve`."""
import io
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import requests
from PIL import Image

from clip_search.serving.server import ModelServer, free_port
from tests.processes import still_running

pytestmark = pytest.mark.server
MMS_DEFAULT_MAX_RESPONSE = 6_553_500  # bytes: multi-model-server's own default max_response_size


def embed(url, body, content_type, accept="application/json"):
    response = requests.post(url + "/invocations", data=body, timeout=300,
                             headers={"Content-Type": content_type, "Accept": accept})
    assert response.status_code == 200, response.text[:500]
    return response


def workers(server) -> list[psutil.Process]:
    """The Python worker processes under the MMS front end: the worker Java started and the child it
    forks to serve Java's connection (the one that runs the model)."""
    found = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if (process.name().startswith("python") and "model_service_worker" in " ".join(process.cmdline())
                    and process.status() != psutil.STATUS_ZOMBIE):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def test_an_answer_over_the_default_response_limit_reaches_the_client(test_model_tar):
    """docs/configuration.md: the response limit is raised so a large batch answer cannot kill the worker."""
    items = 12_000  # 64 floats per item as JSON: ~760 bytes each, ~9 MB in all
    with ModelServer(test_model_tar, env={"CLIP_SEARCH_MAX_BATCH_ITEMS": str(items)}) as server:
        before = {p.pid for p in workers(server)}
        texts = [f"product number {i}" for i in range(items)]
        import json

        response = embed(server.url, json.dumps({"texts": texts}), "application/json")
        assert len(response.content) > MMS_DEFAULT_MAX_RESPONSE  # the test really crosses the default
        answer = response.json()
        assert len(answer["embeddings"]) == items and answer["dim"] == 64
        vectors = np.array(answer["embeddings"], dtype=np.float32)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        one = np.array(embed(server.url, texts[4321].encode(), "text/plain").json()["embeddings"][0])
        assert np.allclose(vectors[4321], one, atol=1e-5)  # row order kept
        assert {p.pid for p in workers(server)} == before  # the same worker answered both: it survived


def frames(kind: str, colours) -> bytes:
    images = [Image.new("RGB", (48, 40), colour) for colour in colours]
    buffer = io.BytesIO()
    images[0].save(buffer, kind, save_all=True, append_images=images[1:], duration=100)
    return buffer.getvalue()


def png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["GIF", "TIFF"])
def test_a_multi_frame_image_is_encoded_from_its_first_frame(server_url, kind):
    red, blue, green = (255, 0, 0), (0, 0, 255), (0, 255, 0)
    data = frames(kind, [red, blue, green])
    assert Image.open(io.BytesIO(data)).n_frames == 3
    got = np.array(embed(server_url, data, "application/x-image").json()["embeddings"][0])
    first = np.array(embed(server_url, png(red), "image/png").json()["embeddings"][0])
    later = np.array(embed(server_url, png(blue), "image/png").json()["embeddings"][0])
    assert np.allclose(got, first, atol=1e-5)
    assert not np.allclose(got, later, atol=1e-3)


def test_sigint_stops_serve_and_its_whole_group(test_model_tar, tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "clip_search.cli", "serve", "--model", str(test_model_tar),
                                "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read().decode()[-2000:]
            try:
                if requests.post(f"http://127.0.0.1:{port}/invocations", data=b"milk", timeout=60,
                                 headers={"Content-Type": "text/plain"}).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.2)
        family = psutil.Process(process.pid).children(recursive=True)
        assert any("java" in p.name() for p in family)
        process.send_signal(signal.SIGINT)  # Ctrl-C in a terminal
        output = process.communicate(timeout=60)[0].decode()
        assert process.returncode == 0, output[-2000:]
        assert "stopped" in output and "Traceback" not in output
        assert still_running(family, timeout=1) == []  # the same 1 s bound, over as soon as it holds
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/ping", timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
