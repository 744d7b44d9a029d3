"""multi-model-server configuration and command line, from SageMaker's environment variables.

The toolkit's Environment reads SAGEMAKER_MODEL_SERVER_WORKERS / _TIMEOUT / _VMARGS,
SAGEMAKER_MAX_PAYLOAD_IN_MB and SAGEMAKER_BIND_TO_PORT; we write what its generator writes (its
default-mms.properties and those values) and add what it leaves out: a response-size limit that matches large batch answers (MMS kills the worker on an
answer over 6.5 MB otherwise), one worker using all cores by default (two workers on two cores
halve each other's speed and double memory), and a JVM heap sized for a 6 GB serverless endpoint.

This module never imports the toolkit's `model_server`: that module imports boto3, pkg_resources,
psutil and (through its default handler) scipy.sparse, 0.9-1.5 s and ~15 MB (worker RSS) on a cold start,
paid twice: by `serve` before MMS starts, and by the worker at its first request
(handler_service.check_size reads the limit here). Its generator is six lines over the toolkit's
own default-mms.properties, which we read as package data; tests/unit/test_mms_config.py checks
that the two agree.
"""
import importlib.resources
import os
import sys
from pathlib import Path

from clip_search.extras import require

require("serve", what="serving with multi-model-server")
from sagemaker_inference import environment  # noqa: E402 - light: no boto3, no scipy

from clip_search import settings
from clip_search.encoder import THREADS_ENV, available_cores

HANDLER = "clip_search.serving.handler_service"
MODEL_NAME = "model"
# The toolkit's MMS template and log configuration (its model_server.DEFAULT_MMS_CONFIG_FILE and
# DEFAULT_MMS_LOG_FILE) and model store: "/", so that the model is named by its absolute path.
TOOLKIT_ETC = importlib.resources.files("sagemaker_inference") / "etc"
LOG_CONFIG = str(TOOLKIT_ETC / "log4j2.xml")
MODEL_STORE = "/"
# The Java front end only buffers requests and answers: 1 GB of heap is plenty, leaving the rest of
# a 6 GB serverless container to the Python worker. Exit on OOM so SageMaker replaces the container.
# Answers can outgrow requests (1024 texts of ~60 bytes -> 1024 x 512 floats): never below 32 MiB.
MIN_RESPONSE_BYTES = 32 * 1024 * 1024


JAVA_REQUEST_FACTOR = 2


def max_request_bytes(current: "settings.Settings | None" = None) -> int:
    """The documented request limit (SAGEMAKER_MAX_PAYLOAD_IN_MB) in bytes, enforced by the handler."""
    return int((current or settings.current()).max_payload_mb * 1024 * 1024)


# MMS parses port numbers as a Java short: 32768 and above are refused ("Invalid port number").
MAX_PORT = 32767


def workers(current: "settings.Settings | None" = None) -> int:
    return (current or settings.current()).workers


def toolkit_properties(env: "environment.Environment", handler: str) -> str:
    """What sagemaker_inference.model_server._generate_mms_config_properties writes (one model)."""
    values = {
        "default_response_timeout": env.model_server_timeout,
        "default_workers_per_model": env.model_server_workers,
        "inference_address": f"http://0.0.0.0:{env.inference_http_port}",
        "management_address": f"http://0.0.0.0:{env.management_http_port}",
        "vmargs": env.vmargs,
        "max_request_size": env.max_request_size,
        "default_service_handler": handler,
        "default_response_timeout_seconds": env.model_server_timeout_seconds,
    }
    template = (TOOLKIT_ETC / "default-mms.properties").read_text()
    return template + "".join(f"{key}={value}\n" for key, value in values.items() if value)


def properties(inference_address: str, management_address: str, handler: str = HANDLER,
               current: "settings.Settings | None" = None) -> str:
    """MMS's configuration; `current` is the settings of the environment MMS and its worker get
    (default: this process's)."""
    text = toolkit_properties(environment.Environment(), handler)
    current = current or settings.current()
    request_bytes = max_request_bytes(current)
    overrides = {
        "inference_address": inference_address,
        "management_address": management_address,
        "default_workers_per_model": workers(current),
        # Java's own refusal is a 413 with an empty body: let it take up to twice the limit and
        # refuse in the handler with the JSON error (handler_service.check_size).
        "max_request_size": JAVA_REQUEST_FACTOR * request_bytes,
        "max_response_size": max(request_bytes, MIN_RESPONSE_BYTES),
        "vmargs": current.vmargs,
    }
    # java.util.Properties keeps the last value of a repeated key.
    return text + "".join(f"{key}={value}\n" for key, value in overrides.items())


def worker_environment(workdir: Path, current: "settings.Settings | None" = None) -> dict:
    """Environment for MMS and its workers: temp files and logs in `workdir`, threads per worker."""
    env = dict(os.environ)
    for name in ("TMPDIR", "TEMP", "TMP"):
        env[name] = str(workdir)
    env["LOG_LOCATION"] = str(workdir / "logs")
    env["METRICS_LOCATION"] = str(workdir / "logs")
    env.setdefault(THREADS_ENV, str(max(1, available_cores() // workers(current))))
    return env


def mms_home() -> Path:
    """The folder holding the `mms` package (its jars are in mms/frontend/)."""
    import mms as mms_package  # the bare package: its __init__ imports nothing heavy

    return Path(mms_package.__file__).resolve().parent.parent


def java(env: dict | None = None) -> str:
    home = (env if env is not None else os.environ).get("JAVA_HOME")
    return os.path.join(home, "bin", "java") if home else "java"


def class_path() -> str:
    """The JVM's class path: MMS's own jars (mms/frontend/*.jar), named one by one in a fixed order.

    Jars only, and no "." (MMS's launcher puts it first): the JVM maps the application classes of
    its class data archive (serving/java_archive.py) only when the class path is the one the archive
    was dumped with and no directory on it has files. Named rather than a `*` wildcard, whose
    expansion order the JVM leaves open."""
    jars = sorted((mms_home() / "mms" / "frontend").glob("*.jar"))
    if not jars:
        raise FileNotFoundError(f"no multi-model-server jar in {mms_home() / 'mms' / 'frontend'}")
    return ":".join(str(jar) for jar in jars)


def read_properties(path: Path) -> dict:
    """key=value lines as MMS's launcher reads them (mms/model_server.py load_properties): the
    last of a repeated key wins."""
    values = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def command(config_file: Path, model_dir: Path, env: dict | None = None) -> list[str]:
    """The Java front end's command line, as MMS's launcher (`multi-model-server --start`,
    mms/model_server.py) builds it, without running that launcher: it is one more Python process
    on the cold start (psutil, a pid file in the temp dir), and it puts "." first on the class
    path. `env` is the environment the JVM gets (TEMP sets its temp dir, JAVA_HOME the java)."""
    env = env if env is not None else os.environ
    vmargs = [word for word in read_properties(config_file).get("vmargs", "").split()
              if not word.startswith("-Dlog4j.configurationFile=")]  # ours below, as the launcher does
    cmd = [java(env), f"-Dmodel_server_home={mms_home()}", f"-Dlog4j.configurationFile=file://{LOG_CONFIG}"]
    if env.get("TEMP"):
        cmd.append(f"-Djava.io.tmpdir={env['TEMP']}")
    return cmd + vmargs + [
        "-cp", class_path(), "com.amazonaws.ml.mms.ModelServer",
        "--python", sys.executable,
        "-f", str(config_file),
        "-s", MODEL_STORE,
        "-m", f"{MODEL_NAME}={Path(model_dir).resolve()}",
    ]


def write_config(workdir: Path, inference_address: str, management_address: str,
                 handler: str = HANDLER, current: "settings.Settings | None" = None) -> Path:
    path = workdir / "mms.properties"
    path.write_text(properties(inference_address, management_address, handler, current))
    return path
