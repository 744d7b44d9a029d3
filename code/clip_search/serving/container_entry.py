"""What `serve` runs in the SageMaker container: MMS on 0.0.0.0:8080 with the model in /opt/ml/model.

Before MMS starts, the artifact is checked (manifest present, every file's sha256 as recorded). A
model that cannot load must not look healthy: on failure this exits with status 1 and one clear
`MODEL LOAD FAILED` line naming the file, so SageMaker marks the endpoint or transform job failed
instead of sending traffic to it. (A failure only the worker can see, e.g. a runtime that crashes
while loading, is answered with a 500 JSON error on every request; see handler_service.py.)
Everything written at run time goes to one temp dir: the image runs with a read-only root.

The slim image (container/build.sh --variant slim) has no torch or OpenVINO: an artifact whose
runtime needs an extra this install lacks fails the same way, with a line that names the image
variant that serves it, instead of a worker failing at its first request.
"""
import logging
import sys
import tempfile
from pathlib import Path

from clip_search import settings
from clip_search.artifact import read_manifest
from clip_search.errors import ModelLoadError
from clip_search.extras import missing
from clip_search.runtimes import REQUIRES, resolve_name
from clip_search.serving.launch import forward_signals, launch

logger = logging.getLogger("clip_search.serve")


def model_dir() -> Path:
    return Path(settings.current().base_dir) / "model"


def check_runtime_installed(model_dir: Path) -> None:
    """ModelLoadError unless this install has what the artifact's runtime needs (e.g. torch)."""
    try:
        manifest = read_manifest(model_dir)
    except OSError as error:  # e.g. a model directory the container's (non-root) user cannot read
        raise ModelLoadError(f"cannot read the model in {model_dir}: {error}") from error
    runtime = resolve_name(None, manifest)
    if runtime not in REQUIRES:
        return
    extra, *modules = REQUIRES[runtime]
    absent = missing(extra, tuple(modules))
    if absent is not None:
        raise ModelLoadError(
            f"this image cannot serve the {runtime!r} runtime of {model_dir} ({absent} is not "
            f"installed): serve it with the full image (container/build.sh --variant full), or "
            f"package the model for a torch-free runtime (package-model --runtime onnx-int8)")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(levelname)s] %(name)s - %(message)s")
    try:
        current = settings.current()
    except settings.SettingsError as error:
        logger.error("MODEL LOAD FAILED: invalid settings: %s", error)
        return 1
    directory = model_dir()
    workdir = Path(tempfile.mkdtemp(prefix="clip-search-serve-"))
    # SageMaker probes /ping and /invocations on one port; MMS serves both APIs on one address.
    address = f"http://0.0.0.0:{current.bind_to_port}"
    try:
        check_runtime_installed(directory)
        process = launch(directory, workdir, address, address)
    except ModelLoadError as error:
        logger.error("MODEL LOAD FAILED, exiting: %s", error)
        return 1
    stopping = forward_signals(process)
    status = process.wait()
    # Asked to stop (docker stop, SageMaker scaling in) and stopped: a clean exit, not a crash.
    return 0 if stopping else status


if __name__ == "__main__":
    sys.exit(main())
