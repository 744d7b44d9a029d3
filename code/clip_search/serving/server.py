"""Run the serving stack natively: MMS + our handler on 127.0.0.1, no root, no container.

Used by `clip-search serve`, the tests and the demo. Everything it writes (extracted model, MMS
config, pid file, logs) goes to one temp dir that is removed on stop; MMS runs in its own process
group so that stopping it also stops the Java front end and the Python workers. A watchdog
(serving/watchdog.py) does the same if this process dies without stopping (kill -9), and each start
removes the temp dirs of servers whose owner process is gone.
"""
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from clip_search import settings
from clip_search.artifact import extract_artifact
from clip_search.errors import ClipSearchError, ModelLoadError
from clip_search.serving import mms
from clip_search.serving.launch import Watchdog, launch, stop_group

WORKDIR_PREFIX = "clip-search-serve-"
OWNER_FILE = "owner"  # "<pid> <start time>" of the process that owns the temp dir


def check_port(port: int) -> int:
    if not 1 <= int(port) <= mms.MAX_PORT:
        raise ServerError(f"port {port} is out of range: the model server (multi-model-server) accepts "
                          f"ports 1-{mms.MAX_PORT}")
    return int(port)


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (tells a live owner from a reused pid), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


# MMS puts its worker sockets in the temp dir, and a Unix socket path holds at most 107 bytes: under
# a long TMPDIR (pytest's, say) the worker never connects. Such a server works in /tmp instead.
MAX_TEMP_BASE = 48


def workdir_base() -> Path:
    base = Path(tempfile.gettempdir())
    return base if len(str(base)) <= MAX_TEMP_BASE else Path("/tmp")


def _owner_tag(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{pid} {_start_time(pid)}"


def remove_stale_workdirs(root: Path | None = None) -> list[Path]:
    """Remove the temp dirs of native servers whose owner process is gone; return them."""
    removed = []
    for workdir in Path(root or tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            pid, started = (workdir / OWNER_FILE).read_text().split()
        except (OSError, ValueError):
            continue  # not ours, or a start still writing its owner file: leave it
        if pid.isdigit() and _start_time(int(pid)) != started:
            shutil.rmtree(workdir, ignore_errors=True)
            removed.append(workdir)
    return removed


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port below 32768: MMS parses port numbers as a Java short, so the kernel's
    ephemeral ports (32768-60999) are refused with "Invalid port number"."""
    for _ in range(200):
        port = random.randint(20000, mms.MAX_PORT)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise ServerError("no free port found in 20000-32767")


class ServerError(ClipSearchError, RuntimeError):
    pass


class ModelServer:
    """`with ModelServer("model.tar.gz") as server: requests.post(server.url + "/invocations", ...)`."""

    def __init__(self, model_path, port: int | None = None, host: str = "127.0.0.1",
                 env: dict | None = None, log_file=None, ready_timeout: float | None = None,
                 handler: str = mms.HANDLER):
        self.model_path = Path(model_path)
        self.host = host
        self.port = check_port(port) if port else free_port(host)
        self.extra_env = env or {}
        self.log_file = log_file
        self.handler = handler
        self.ready_timeout = ready_timeout or settings.current().ready_timeout
        self.process: subprocess.Popen | None = None
        self.workdir: Path | None = None
        self.watchdog: Watchdog | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, wait: bool = True) -> "ModelServer":
        remove_stale_workdirs()
        if workdir_base() != Path(tempfile.gettempdir()):
            remove_stale_workdirs(workdir_base())
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=workdir_base()))
        (self.workdir / OWNER_FILE).write_text(_owner_tag())
        model_dir = self.model_path
        try:
            self.watchdog = Watchdog(self.workdir)
            if not model_dir.is_dir():
                model_dir = self.workdir / "model"
                extracted = extract_artifact(self.model_path)
                shutil.move(str(extracted), model_dir)
            (self.workdir / "logs").mkdir()
            output = self.log_file if self.log_file is not None else open(self.workdir / "logs" / "server.log", "wb")
            # Verified before MMS starts: fail here, with the file named, not inside a worker.
            try:
                self.process = launch(model_dir, self.workdir, f"http://{self.host}:{self.port}",
                                      f"http://{self.host}:{free_port(self.host)}", self.handler, self.extra_env,
                                      output)
            except ModelLoadError as error:
                # Name the user's file, not the temp dir it was extracted to (removed below).
                raise ModelLoadError(str(error).replace(str(model_dir), str(self.model_path))) from error
            self.watchdog.guard(self.process)
            if wait:
                self.wait_ready()
        except BaseException:
            self.stop()  # nothing left behind: no process, no temp dir
            raise
        return self

    def wait_ready(self) -> None:
        """Ready = a real embedding from /invocations (MMS answers /ping before the model loads)."""
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"model server exited with code {self.process.returncode}; {self.log_tail()}")
            try:
                response = requests.post(
                    self.url + "/invocations", data=b"ready?", timeout=30,
                    headers={"Content-Type": "text/plain", "Accept": "application/json"},
                )
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:500]}"
                if response.status_code == 500 and "model failed to load" in response.text:
                    raise ServerError(last)
            except (requests.ConnectionError, requests.Timeout) as error:  # a loaded machine: ask again
                last = str(error)
            time.sleep(0.1)
        raise ServerError(f"model server not ready after {self.ready_timeout:.0f} s ({last}); {self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        path = self.workdir / "logs" / "server.log" if self.workdir else None
        if path is None or not path.exists():
            return "no log"
        return "last log lines:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15) -> None:
        if self.process is not None:
            stop_group(self.process, timeout)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        if self.watchdog is not None:
            self.watchdog.release()
            self.watchdog = None

    def __enter__(self):
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info):
        self.stop()

