"""SageMaker Serverless readiness: an arbitrary non-root uid, a read-only root file system with only
/tmp writable, no network at start (nothing installed or downloaded), and a first /invocations
answer well inside SageMaker's start-up limit.

The shared `serving_container` (the HTTP suite's) already runs with --user 12345:12345 --read-only
--tmpfs /tmp; the test here also takes the network away (`--network none`: not even loopback
publishing) and talks to the server from inside the container with `docker exec`.
"""
import json
import shutil

import numpy as np
import pytest

from tests.container.docker_helpers import (
    ServingContainer,
    container_processes,
    cpu_seconds,
    docker,
    mapped_packages,
    process_kind,
)

pytestmark = pytest.mark.container

# SageMaker gives a container minutes to pass its health check (endpoints: 8 min by default); the
# first embedding must come far sooner. Measured ~4-8 s for the test model on 2 shared cores.
FIRST_ANSWER_BUDGET_S = 60
# CPU seconds all the container's processes use from `docker run` to the first embedding of the
# test model. Wall time on a shared machine swings 3x with the load; CPU time barely does. Measured
# (slim): 1.8 s (serve 0.24, Java 1.0, worker 0.5), 3.3 s before serve and the worker stopped
# importing the toolkit's model_server and the JVM went C1-only. The bound catches a regression of
# a few seconds (e.g. an import of torch or boto3 on the serving path); full imports torch.
FIRST_ANSWER_CPU_BUDGET_S = {"slim": 4.5, "full": 15.0}


UNINSTALLABLE = "clip-search-no-such-package==9.9.9"


@pytest.fixture(scope="module")
def offline_model_dir(serving_model_dir, tmp_path_factory):
    """The test model plus a code/requirements.txt naming a package that does not exist: a stock
    SageMaker toolkit would pip-install it at start (and, with no network, fail)."""
    target = tmp_path_factory.mktemp("offline") / "model"
    shutil.copytree(serving_model_dir, target)
    (target / "code").mkdir(exist_ok=True)
    (target / "code" / "requirements.txt").write_text(UNINSTALLABLE + "\n")
    return target


@pytest.fixture(scope="module")
def offline_container(docker_ready, offline_model_dir):
    container = ServingContainer(offline_model_dir, network="none").start()
    try:
        container.first_answer_s = container.wait_ready(timeout=180)
        container.cpu_at_first_answer = cpu_seconds(container.name)
        yield container
    finally:
        container.remove()


def test_runs_as_any_uid_read_only_without_network(offline_container, catalogue_photos):
    print(f"--network none, read-only, uid 12345: first embedding after {offline_container.first_answer_s:.1f} s")
    assert offline_container.first_answer_s < FIRST_ANSWER_BUDGET_S
    inspected = json.loads(docker("inspect", offline_container.name).stdout)[0]
    assert inspected["Config"]["User"] == "12345:12345"
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["HostConfig"]["NetworkMode"] == "none"

    status, body = offline_container.exec_invocation(b"oat milk", "text/plain")
    assert status == 200, body
    text = np.array(json.loads(body)["embeddings"])
    status, body = offline_container.exec_invocation(catalogue_photos[0].read_bytes(), "image/jpeg")
    assert status == 200, body
    image = np.array(json.loads(body)["embeddings"])
    assert text.shape == image.shape == (1, 64)
    np.testing.assert_allclose(np.linalg.norm(np.vstack([text, image]), axis=1), 1.0, atol=1e-4)


def test_the_first_embedding_costs_little_cpu(offline_container, variant):
    cpu = offline_container.cpu_at_first_answer
    print("CPU seconds by the first embedding:", {kind: round(seconds, 2) for kind, seconds in cpu.items()})
    assert cpu["Python worker"] > 0 and cpu["Java front end"] > 0, cpu  # it did measure the stack
    assert sum(cpu.values()) < FIRST_ANSWER_CPU_BUDGET_S[variant], cpu


def test_serve_and_the_worker_load_no_scipy(offline_container):
    """The toolkit's model_server (boto3, scipy.sparse) stays out of `serve` and of the worker:
    it was ~1 s of each cold start twice and ~15 MB of worker memory. scipy is what shows in a
    process's memory maps (boto3 is pure Python)."""
    processes = {pid: process_kind(cmdline) for pid, _, cmdline in container_processes(offline_container.name)}
    workers = [pid for pid, kind in processes.items() if kind == "Python worker"]
    maps = {pid: mapped_packages(offline_container.name, pid) for pid in workers}
    assert any("onnxruntime" in packages or "torch" in packages for packages in maps.values()), maps
    serve = [pid for pid, kind in processes.items() if kind == "serve"]
    assert serve, processes
    for pid in workers + serve:
        assert "scipy" not in mapped_packages(offline_container.name, pid), (processes[pid], pid)


def test_processes_run_as_the_given_uid_and_write_only_under_tmp(offline_container):
    # Every process of the container (serve, Java front end, Python worker) runs as uid 12345.
    uids = docker("exec", offline_container.name, "sh", "-c",
                  "for s in /proc/[0-9]*/status; do awk '/^Uid:/ {print $2}' $s; done").stdout.split()
    assert uids and set(uids) == {"12345"}
    # The container's writable layer is empty: with --read-only nothing could be written outside
    # /tmp, and the server started anyway (no pip install, no byte code written, MMS config, logs,
    # pid file and JVM temp files all in /tmp).
    # (Docker itself creates the mount point /opt/ml/model and its parents.)
    changes = set(docker("diff", offline_container.name).stdout.splitlines())
    assert changes <= {"C /opt", "A /opt/ml", "A /opt/ml/model"}, changes
    written = docker("exec", offline_container.name, "sh", "-c", "ls /tmp").stdout.split()
    assert any(name.startswith("clip-search-serve-") for name in written), written


def test_installs_nothing_at_start(offline_container):
    # It served (the fixture got an embedding) although code/requirements.txt names a package that
    # cannot be installed, and nothing tried to.
    logs = offline_container.logs()
    assert UNINSTALLABLE not in logs and "pip install" not in logs, logs[-2000:]
    assert "Installing collected packages" not in logs
