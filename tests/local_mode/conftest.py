"""A SageMaker SDK LocalSession that runs the built image and never leaves this machine.

- Fake credentials and region; AWS_ENDPOINT_URL points every AWS API call at a closed loopback
  port, so anything that tried to reach AWS would fail the test instead of going out.
- Telemetry off through a user config file (SAGEMAKER_USER_CONFIG_OVERRIDE, TelemetryOptOut).
- Model and data as file:// URIs: no S3.
- Local mode uses docker-compose, with a user-defined bridge network ("sagemaker-local") and the
  container's 8080 published on local.serving_port (a free port here). That works with
  dockerd --bridge=none --iptables=false: only the default bridge is off; docker-proxy publishes.
"""
import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.container.docker_helpers import DOCKER, IMAGE, docker, problem

TELEMETRY_OFF = """SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compose_containers_of_image() -> set[str]:
    listed = docker("ps", "-a", "--filter", "label=com.docker.compose.project", "--filter",
                    f"ancestor={IMAGE}", "--format", "{{.ID}}").stdout
    return set(listed.split())


@pytest.fixture(scope="session")
def local_session(tmp_path_factory):
    reason = problem()
    if reason:
        pytest.fail(reason)
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose not installed (apt-get install -y docker-compose)")
    home = tmp_path_factory.mktemp("sagemaker-local")
    config_file = home / "user-config.yaml"
    config_file.write_text(TELEMETRY_OFF)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config_file))
        patch.setenv("SAGEMAKER_ADMIN_CONFIG_OVERRIDE", str(config_file))
        patch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
        patch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            patch.delenv(name, raising=False)
        # The SDK runs `docker` from PATH: make it the Debian client that talks to our dockerd.
        patch.setenv("PATH", f"{Path(DOCKER).parent}{os.pathsep}{os.environ['PATH']}")

        import boto3
        from sagemaker.local import LocalSession

        boto_session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                     region_name="us-east-1")
        session = LocalSession(boto_session=boto_session)
        session.config = {"local": {"local_code": True, "serving_port": free_port(),
                                    "container_root": str(home)}}
        assert session.sagemaker_config["SageMaker"]["PythonSDK"]["Modules"]["TelemetryOptOut"] is True
        before = compose_containers_of_image()
        yield session
        # The SDK stops its docker-compose containers but leaves them behind (exited): remove ours.
        leftovers = compose_containers_of_image() - before
        if leftovers:
            docker("rm", "-f", *sorted(leftovers), check=False)


@pytest.fixture(scope="session")
def local_model(local_session, serving_model_tar, tmp_path_factory):  # noqa: F811 - the fixture imported above, by name
    """A sagemaker.model.Model for the built image with the packaged test model as file://
    (onnx-int8 for the slim image, torch for the full one)."""
    from sagemaker.model import Model

    # Local mode extracts the tar beside itself and mounts that folder: give it a private copy.
    folder = tmp_path_factory.mktemp("model-data")
    model_tar = shutil.copy(serving_model_tar, folder / "model.tar.gz")
    return Model(image_uri=IMAGE, model_data=f"file://{model_tar}",
                 role="arn:aws:iam::123456789012:role/SageMakerRole",
                 sagemaker_session=local_session, name="clip-search-local-test")
