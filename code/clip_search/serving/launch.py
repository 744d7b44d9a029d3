"""Start multi-model-server with our handler on a verified model directory: the one launch path
that the native server (`clip-search serve`, tests, the demo) and the container's `serve` share.

`launch` verifies the artifact before anything starts (a model that cannot load must not look
healthy), writes the MMS config into `workdir`, tells the workers the directory is verified (so the
weights are hashed once per start), and starts MMS in its own process group. `stop_group` and
`forward_signals` are the one copy of the process-group handling both entry points need.
"""
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from clip_search import settings
from clip_search.artifact import mark_verified, verify_artifact
from clip_search.serving import mms

logger = logging.getLogger(__name__)


def launch(model_dir: Path, workdir: Path, inference_address: str, management_address: str,
           handler: str = mms.HANDLER, extra_env: dict | None = None, stdout=None) -> subprocess.Popen:
    """Verify `model_dir`, then start MMS serving it; returns the MMS process (its own group)."""
    model_dir = Path(model_dir)
    manifest = verify_artifact(model_dir)  # raises ModelLoadError naming the file
    logger.info("model %s (dim %s, runtime %s) verified in %s", manifest["model_id"], manifest["embed_dim"],
                manifest.get("runtime", "torch"), model_dir)
    if manifest.get("test_model"):
        logger.warning("serving the clip-search TEST MODEL: random weights, meaningless embeddings")
    # MMS and its worker run with extra_env on top of ours: their settings size MMS (request limit,
    # workers), not this process's alone.
    current = settings.parse({**os.environ, **extra_env}) if extra_env else settings.current()
    settings.log_effective(logger, current)
    (Path(workdir) / "logs").mkdir(parents=True, exist_ok=True)
    config = mms.write_config(Path(workdir), inference_address, management_address, handler, current)
    env = mms.worker_environment(Path(workdir), current)
    mark_verified(model_dir, env)
    env.update(extra_env or {})
    return subprocess.Popen(
        mms.command(config, model_dir, env=env), env=env, cwd=workdir,
        stdout=stdout, stderr=subprocess.STDOUT if stdout is not None else None, start_new_session=True,
    )


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process group for a clean shutdown, then SIGKILL it: MMS's Java process is
    re-parented and a worker can outlive SIGTERM."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        signal_group(process.pid, signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


def forward_signals(process: subprocess.Popen, signums=(signal.SIGTERM, signal.SIGINT)) -> list:
    """Pass SIGTERM/SIGINT on to MMS's process group; the returned list records what arrived."""
    received = []

    def forward(signum, _frame):
        received.append(signum)
        signal_group(process.pid, signum)

    for signum in signums:
        signal.signal(signum, forward)
    return received


class Watchdog:
    """Stops MMS's process group and removes `workdir` when this process is gone (serving/watchdog.py).

    Start it before MMS, `guard(process)` once MMS runs, `release()` after a clean stop.
    """

    def __init__(self, workdir: Path | None):
        read_fd, self._write_fd = os.pipe()  # non-inheritable: MMS and its workers never hold it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "clip_search.serving.watchdog", str(read_fd), str(workdir or "")],
            pass_fds=(read_fd,), start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(read_fd)

    def _send(self, word: str) -> None:
        if self._write_fd is not None:
            os.write(self._write_fd, word.encode() + b"\n")

    def guard(self, process: subprocess.Popen) -> None:
        self._send(str(process.pid))  # MMS leads its own process group (start_new_session)

    def release(self) -> None:
        """A clean stop already happened: the watchdog exits without touching anything."""
        if self._write_fd is None:
            return
        self._send("stopped")
        os.close(self._write_fd)
        self._write_fd = None
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
