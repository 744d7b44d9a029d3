"""The real server under hostile conditions: its parent killed, oversize bodies, charsets, a soak."""
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest
import requests

from clip_search.serving.server import ModelServer, free_port
from tests.processes import still_running
from tests.server.test_serving_lifecycle import CLI

pytestmark = pytest.mark.server


def _serve(model, port, temp):
    log = open(temp.parent / f"serve-{port}.log", "wb")  # outside TMPDIR: the test checks it is empty
    return subprocess.Popen(CLI + ["serve", "--model", str(model), "--port", str(port)],
                            env=dict(os.environ, TMPDIR=str(temp)), stdout=log, stderr=subprocess.STDOUT)


def _wait_serving(process, temp, port, timeout=600):
    """`clip-search serve` prints "serving MODEL on URL (POST URL/invocations; Ctrl-C stops)" once a real
    embedding came back (its own check). Not just "serving ": the test model's warning says that too,
    before Java even starts."""
    log = temp.parent / f"serve-{port}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        if f":{port}/invocations; Ctrl-C stops)".encode() in log.read_bytes():
            return
        time.sleep(0.5)
    raise AssertionError("serve never became ready")


def _names(processes) -> set:
    """Names of the processes still there (a short-lived child can be a zombie or gone by now)."""
    names = set()
    for process in processes:
        try:
            names.add(process.name())
        except psutil.Error:
            pass
    return names


def _refused(port) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/ping", timeout=5)
    except requests.ConnectionError:
        return True
    return False


def test_kill_9_of_serve_leaves_no_java_no_worker_no_port_and_no_temp_dir(test_model_tar, tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    process = _serve(test_model_tar, port, temp)
    family = []
    try:
        _wait_serving(process, temp, port)
        family = psutil.Process(process.pid).children(recursive=True)
        assert "java" in _names(family)
        family += [p for p in psutil.process_iter(["cmdline", "ppid"])  # attrs: None, not an error, for zombies
                   if "clip_search.serving.watchdog" in " ".join(p.info["cmdline"] or [])
                   and p.info["ppid"] == process.pid]
        process.kill()  # SIGKILL: no handler runs, no cleanup of its own
        process.wait()
        assert still_running(family) == []
        assert _refused(port)
        assert list(temp.iterdir()) == []
    finally:
        for p in family:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def test_a_new_start_removes_temp_dirs_of_dead_servers_only(test_model_tar, tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = temp / "clip-search-serve-stale"
    stale.mkdir()
    (stale / "owner").write_text(f"{dead.pid} 12345")
    (stale / "model").mkdir()
    live = temp / "clip-search-serve-live"
    live.mkdir()
    from clip_search.serving.server import _owner_tag

    (live / "owner").write_text(_owner_tag(os.getpid()))  # this test process is alive
    port = free_port()
    process = _serve(test_model_tar, port, temp)
    try:
        _wait_serving(process, temp, port)
        assert not stale.exists()
        assert live.exists()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def test_serve_port_above_32767_is_refused_before_anything_starts(test_model_tar):
    done = subprocess.run(CLI + ["serve", "--model", str(test_model_tar), "--port", "50315"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "1-32767" in done.stderr and "Invalid port number" not in done.stderr + done.stdout


@pytest.fixture(scope="module")
def small_limit_server(test_model_tar):
    with ModelServer(test_model_tar, env={"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1"}) as server:
        yield server


def test_a_body_over_the_limit_gets_the_documented_json_413(small_limit_server):
    body = b"apple " * (1024 * 1024 // 6 + 100)  # a little over 1 MiB
    response = requests.post(small_limit_server.url + "/invocations", data=body,
                             headers={"Content-Type": "text/plain"}, timeout=60)
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("application/json")
    answer = response.json()
    assert answer["status"] == 413 and "SAGEMAKER_MAX_PAYLOAD_IN_MB" in answer["error"]
    ok = requests.post(small_limit_server.url + "/invocations", data=b"apple",
                       headers={"Content-Type": "text/plain"}, timeout=60)
    assert ok.status_code == 200


def _assert_mms_own_413(response_status, content_type, body):
    """multi-model-server's own refusal (Netty's aggregator) of a body over its `max_request_size`,
    twice SAGEMAKER_MAX_PAYLOAD_IN_MB (docs/hardening.md): a 413 with no body and no Content-Type."""
    assert response_status == 413
    assert not content_type and body == b""


def test_a_body_over_twice_the_limit_gets_mms_own_413_without_a_body(native_server):
    # 40 MiB: over twice the default 6 MB limit, so MMS's aggregator refuses it, not the handler
    response = requests.post(native_server.url + "/invocations", data=b"a" * (40 << 20),
                             headers={"Content-Type": "text/plain"}, timeout=120)
    _assert_mms_own_413(response.status_code, response.headers.get("Content-Type", ""), response.content)


def test_mms_own_limit_follows_the_servers_own_environment(small_limit_server):
    # env= gives this server alone a 1 MB limit: MMS takes up to twice that, so 3 MiB is MMS's own
    # refusal, and 1.9 MiB still reaches the handler for its JSON 413. (MMS's limit used to come from
    # this process's settings, the 6 MB default: 12 MiB, and 3 MiB reached the worker.)
    url = small_limit_server.url + "/invocations"
    over = requests.post(url, data=b"a" * (3 << 20), headers={"Content-Type": "text/plain"}, timeout=60)
    _assert_mms_own_413(over.status_code, over.headers.get("Content-Type", ""), over.content)
    under = requests.post(url, data=b"a" * ((19 << 20) // 10), headers={"Content-Type": "text/plain"}, timeout=60)
    assert under.status_code == 413 and "SAGEMAKER_MAX_PAYLOAD_IN_MB" in under.json()["error"]


def test_expect_100_continue_over_the_limit_gets_413_before_the_body_and_the_connection_stays(native_server):
    # what curl sends for a large body: the refusal comes before the body, on a connection kept open
    host, port = native_server.url.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("POST", "/invocations")
    connection.putheader("Content-Type", "text/plain")
    connection.putheader("Content-Length", str(40 << 20))
    connection.putheader("Expect", "100-continue")
    connection.endheaders()
    response = connection.getresponse()
    _assert_mms_own_413(response.status, response.getheader("Content-Type", ""), response.read())
    connection.request("POST", "/invocations", body=b"oat milk", headers={"Content-Type": "text/plain"})
    again = connection.getresponse()
    assert again.status == 200 and len(json.loads(again.read())["embeddings"][0]) == 64
    connection.close()


def test_the_charset_is_honoured_by_the_real_server(server_url):
    def embed(body, content_type):
        response = requests.post(server_url + "/invocations", data=body,
                                 headers={"Content-Type": content_type}, timeout=60)
        assert response.status_code == 200, response.text
        return np.array(response.json()["embeddings"][0])

    latin = embed("Crème brûlée".encode("latin-1"), "text/plain; charset=latin-1")
    utf8 = embed("Crème brûlée".encode(), "text/plain")
    assert np.allclose(latin, utf8, atol=1e-6)


def _worker(server) -> psutil.Process:
    workers = [p for p in psutil.Process(server.process.pid).children(recursive=True)
               if "model_service_worker" in " ".join(p.cmdline())]
    assert workers, "no model_service_worker process"
    return max(workers, key=lambda p: p.memory_info().rss)  # the worker holding the model


def test_soak_16_clients_60_s_mixed_requests(native_server, store_photos):
    url = native_server.url + "/invocations"
    photos = [path.read_bytes() for path in store_photos[:8]]
    lines = b"\n".join(json.dumps({"id": str(i), "text": f"product {i}"} if i % 2 else
                                  {"id": str(i), "image": base64.b64encode(photos[i % 8]).decode()}).encode()
                       for i in range(8))
    requests_ = [
        (b"green apple", "text/plain"),
        (photos[0], "image/jpeg"),
        (json.dumps({"texts": ["milk", "oat milk", "yoghurt"]}).encode(), "application/json"),
        (lines, "application/jsonlines"),
    ]
    worker = _worker(native_server)
    failures, counts = [], [0] * 16
    for body, kind in requests_:  # warm up every path before the first RSS reading
        assert requests.post(url, data=body, headers={"Content-Type": kind}, timeout=60).status_code == 200
    stop = time.monotonic() + 60
    start_rss = None

    def client(number):
        with requests.Session() as session:
            i = number
            while time.monotonic() < stop:
                body, kind = requests_[i % len(requests_)]
                response = session.post(url, data=body, headers={"Content-Type": kind}, timeout=120)
                if not 200 <= response.status_code < 300:
                    failures.append((kind, response.status_code, response.text[:200]))
                counts[number] += 1
                i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    time.sleep(10)  # steady state: allocator pools and caches filled
    start_rss = worker.memory_info().rss
    for thread in threads:
        thread.join()
    end_rss = worker.memory_info().rss
    assert failures == []
    assert sum(counts) > 100
    assert end_rss < 1.05 * start_rss, (start_rss, end_rss)
