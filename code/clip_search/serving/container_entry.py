"""What `serve` runs in the SageMaker container: MMS on 0.0.0.0:8080 with the model in /opt/ml/model.

Before MMS starts, the artifact is checked (manifest present, every file's sha256 as recorded). A
model that cannot load must not look healthy: on failure this exits with status 1 and one clear
log line naming the file, so SageMaker marks the endpoint or transform job failed instead of
sending traffic to it. (A failure only the worker can see, e.g. a runtime that crashes while
loading, is answered with a 500 JSON error on every request; see handler_service.py.)
"""
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from clip_search.artifact import mark_verified, verify_artifact
from clip_search.errors import ModelLoadError
from clip_search.serving import mms

logger = logging.getLogger("clip_search.serve")


def model_dir() -> Path:
    return Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")) / "model"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(levelname)s] %(name)s - %(message)s")
    directory = model_dir()
    try:
        manifest = verify_artifact(directory)
    except ModelLoadError as error:
        logger.error("MODEL LOAD FAILED, exiting: %s", error)
        return 1
    logger.info("model %s (dim %s) verified in %s", manifest["model_id"], manifest["embed_dim"], directory)
    if manifest.get("test_model"):
        logger.warning("serving the clip-search TEST MODEL: random weights, meaningless embeddings")

    port = os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")
    workdir = Path(tempfile.mkdtemp(prefix="clip-search-serve-"))
    (workdir / "logs").mkdir()
    address = f"http://0.0.0.0:{port}"
    # SageMaker probes /ping and /invocations on one port; MMS serves both APIs on one address.
    config = mms.write_config(workdir, address, address)
    env = mms.worker_environment(workdir)
    mark_verified(directory, env)
    process = subprocess.Popen(mms.command(config, directory), env=env, cwd=workdir, start_new_session=True)

    stopping = []

    def forward(signum, _frame):
        stopping.append(signum)
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = process.wait()
    # Asked to stop (docker stop, SageMaker scaling in) and stopped: a clean exit, not a crash.
    return 0 if stopping else status


if __name__ == "__main__":
    sys.exit(main())
