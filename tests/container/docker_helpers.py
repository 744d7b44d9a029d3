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


@dataclass
class ServingContainer:
    """One `docker run -d IMAGE serve` with a model directory mounted at /opt/ml/model."""

    model_dir: Path
    env: dict = field(default_factory=dict)
    image: str = IMAGE
    name: str = field(default_factory=lambda: f"clip-search-test-{uuid.uuid4().hex[:10]}")
    started_at: float = 0.0
    url: str = ""

    def start(self) -> "ServingContainer":
        ensure_network()
        args = ["run", "-d", "--name", self.name, "--network", NETWORK,
                "-p", "127.0.0.1::8080", "-v", f"{Path(self.model_dir).resolve()}:/opt/ml/model:ro"]
        for key, value in self.env.items():
            args += ["-e", f"{key}={value}"]
        self.started_at = time.monotonic()
        docker(*args, self.image, "serve")
        mapping = docker("port", self.name, "8080/tcp").stdout.split()[0]  # 127.0.0.1:NNNNN
        self.url = f"http://{mapping}"
        return self

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
            try:
                answer = requests.post(f"{self.url}/invocations", data=b"ready?",
                                       headers={"Content-Type": "text/plain"}, timeout=10)
                if answer.status_code == 200 and answer.json()["embeddings"]:
                    return time.monotonic() - self.started_at
            except requests.RequestException:
                pass
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
