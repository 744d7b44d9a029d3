"""Run the serving image with the Docker CLI, the way SageMaker does: `docker run IMAGE serve`.

The daemon here has no default bridge (dockerd --bridge=none --iptables=false), so containers join
a user-defined bridge network and their port 8080 is published on a free loopback port by
docker-proxy: inside, the server binds 0.0.0.0:8080 exactly as on SageMaker.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

IMAGE = os.environ.get("CLIP_SEARCH_IMAGE", "clip-search:latest")
NETWORK = "clip-search-test"
# Debian's docker.io client: /usr/local/bin/docker (if any) may be another client without buildx.
DOCKER = os.environ.get("DOCKER") or ("/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker"))
SETUP_HINT = "run container/ci_setup.sh --no-tests (installs Docker, starts dockerd, builds the image)"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def problem() -> str | None:
    """Why the container suites cannot run here, or None."""
    if DOCKER is None:
        return f"no docker client; {SETUP_HINT}"
    if docker("info", check=False).returncode != 0:
        return f"the Docker daemon does not answer; {SETUP_HINT}"
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        return f"image {IMAGE} not built; {SETUP_HINT}"
    return None


def ensure_network() -> str:
    if docker("network", "inspect", NETWORK, check=False).returncode != 0:
        created = docker("network", "create", NETWORK, check=False)
        # Another test process may have created it in between.
        if created.returncode != 0 and docker("network", "inspect", NETWORK, check=False).returncode != 0:
            raise RuntimeError(created.stderr)
    return NETWORK


def image_size_bytes(image: str = IMAGE) -> int:
    return int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout.strip())


def image_variant(image: str = IMAGE) -> str:
    """`slim` or `full` (container/build.sh --variant), from the image's label."""
    labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", image).stdout) or {}
    return labels.get("com.clip-search.variant", "full")


_PROCESSES_SCRIPT = ("for p in /proc/[0-9]*; do echo \"${p#/proc/}|$(cut -d' ' -f14,15 $p/stat 2>/dev/null)|"
                     "$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\"; done")


def process_kind(cmdline: str) -> str:
    """Which part of the serving stack a container process is, by its command line."""
    if "container_entry" in cmdline:
        return "serve"
    if "multi-model-server" in cmdline:
        return "MMS launcher"
    if "java" in cmdline:
        return "Java front end"
    if "model_service_worker" in cmdline:
        return "Python worker"
    return "other"


def container_processes(name: str) -> list[tuple[int, float, str]]:
    """(pid, CPU seconds used so far, command line) of each process in the container."""
    processes = []
    for line in docker("exec", name, "sh", "-c", _PROCESSES_SCRIPT).stdout.splitlines():
        pid, ticks, cmdline = (line.split("|", 2) + ["", ""])[:3]
        if len(ticks.split()) != 2 or "/proc/[0-9]" in cmdline:  # gone, or this very script
            continue
        processes.append((int(pid), sum(map(int, ticks.split())) / os.sysconf("SC_CLK_TCK"), cmdline.strip()))
    return processes


def cpu_seconds(name: str) -> dict[str, float]:
    """CPU seconds used so far by each part of the stack (process_kind), summed over its processes."""
    totals = dict.fromkeys(("serve", "MMS launcher", "Java front end", "Python worker", "other"), 0.0)
    for _, seconds, cmdline in container_processes(name):
        totals[process_kind(cmdline)] += seconds
    return totals


def mapped_packages(name: str, pid: int) -> set[str]:
    """The site-packages distributions whose files (shared libraries) process `pid` has mapped."""
    maps = docker("exec", name, "cat", f"/proc/{pid}/maps", check=False).stdout
    return {line.split("site-packages/", 1)[1].split("/")[0] for line in maps.splitlines() if "site-packages/" in line}


# How SageMaker Serverless runs a container: an arbitrary non-root uid, a read-only root file
# system, only /tmp writable. Every test container runs this way unless a test says otherwise.
SERVERLESS_ARGS = ("--user", "12345:12345", "--read-only", "--tmpfs", "/tmp:rw,exec,size=512m")


@dataclass
class ServingContainer:
    """One `docker run -d IMAGE serve` with a model directory mounted at /opt/ml/model."""

    model_dir: Path
    env: dict = field(default_factory=dict)
    image: str = IMAGE
    # Extra `docker run` options (before the image); the Serverless ones by default.
    run_args: tuple = SERVERLESS_ARGS
    # None: a user-defined bridge network with 8080 published on loopback; "none": no network at
    # all (the server is reached with `docker exec` from inside the container).
    network: str | None = None
    name: str = field(default_factory=lambda: f"clip-search-test-{uuid.uuid4().hex[:10]}")
    started_at: float = 0.0
    url: str = ""

    def start(self) -> "ServingContainer":
        # SageMaker's /opt/ml/model is readable by the container's user, whatever its uid; pytest's
        # temp dirs are 0700 (root only).
        for path in [Path(self.model_dir), *Path(self.model_dir).rglob("*")]:
            path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))
        args = ["run", "-d", "--name", self.name, *self.run_args,
                "-v", f"{Path(self.model_dir).resolve()}:/opt/ml/model:ro"]
        if self.network is None:
            args += ["--network", ensure_network(), "-p", "127.0.0.1::8080"]
        else:
            args += ["--network", self.network]
        for key, value in self.env.items():
            args += ["-e", f"{key}={value}"]
        self.started_at = time.monotonic()
        docker(*args, self.image, "serve")
        if self.network is None:
            mapping = docker("port", self.name, "8080/tcp").stdout.split()[0]  # 127.0.0.1:NNNNN
            self.url = f"http://{mapping}"
        return self

    def exec_invocation(self, body: bytes, content_type: str, timeout: float = 30) -> tuple[int, bytes]:
        """POST /invocations from inside the container (loopback; works with --network none)."""
        script = ("import sys, urllib.request, urllib.error\n"
                  "request = urllib.request.Request('http://127.0.0.1:8080/invocations', data=sys.stdin.buffer.read(),"
                  f" headers={{'Content-Type': {content_type!r}}})\n"
                  "try:\n    answer = urllib.request.urlopen(request, timeout=20)\n"
                  "except urllib.error.HTTPError as error:\n    answer = error\n"
                  "except OSError as error:\n    print(0); print(error); sys.exit(0)\n"
                  "print(answer.status); sys.stdout.flush(); sys.stdout.buffer.write(answer.read())\n")
        done = subprocess.run([DOCKER, "exec", "-i", self.name, "python", "-c", script], input=body,
                              capture_output=True, timeout=timeout)
        if done.returncode != 0:
            return 0, done.stderr
        status, _, answer = done.stdout.partition(b"\n")
        return int(status), answer

    def state(self) -> dict:
        return json.loads(docker("inspect", "-f", "{{json .State}}", self.name).stdout)

    def logs(self) -> str:
        done = docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def wait_exit(self, timeout: float) -> int:
        done = docker("wait", self.name, timeout=timeout)
        return int(done.stdout.strip())

    def wait_ready(self, timeout: float = 180) -> float:
        """Seconds from `docker run` to the first successful embedding (not /ping: MMS answers it
        before the model loads)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.network is None:
                try:
                    answer = requests.post(f"{self.url}/invocations", data=b"ready?",
                                           headers={"Content-Type": "text/plain"}, timeout=10)
                    if answer.status_code == 200 and answer.json()["embeddings"]:
                        return time.monotonic() - self.started_at
                except requests.RequestException:
                    pass
            else:
                status, body = self.exec_invocation(b"ready?", "text/plain")
                if status == 200 and json.loads(body)["embeddings"]:
                    return time.monotonic() - self.started_at
            if not self.state()["Running"]:
                raise RuntimeError(f"container {self.name} exited:\n{self.logs()[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"no embedding from {self.name} in {timeout} s:\n{self.logs()[-4000:]}")

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)

    def __enter__(self) -> "ServingContainer":
        return self if self.started_at else self.start()

    def __exit__(self, *exc) -> None:
        self.remove()
