"""moto's server (a real process on 127.0.0.1) standing in for the AWS control plane.

One server per session on a free port; every test starts from a reset server with one bucket and
one role, and all AWS and SageMaker SDK traffic goes to it through AWS_ENDPOINT_URL.
"""
import json
import os
import shutil
import subprocess
import tarfile
import time

import boto3
import pytest
import requests
from click.testing import CliRunner

from clip_search.serving.server import ModelServer, free_port

DOCKER = "/usr/bin/docker"
REGION = "us-east-1"
BUCKET = "clip-search-test-bucket"
# The trust policy a SageMaker execution role has (what `clip-search publish stack` creates).
SAGEMAKER_TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


@pytest.fixture
def aws(moto_url, monkeypatch, tmp_path):
    """A clean moto with a bucket and a SageMaker role; returns {"s3", "sm", "role_arn", ...} clients."""
    requests.post(moto_url + "/moto-api/reset", timeout=10).raise_for_status()
    for name in list(os.environ):
        if name.startswith(("CLIP_SEARCH_", "AWS_")) and name != "CLIP_SEARCH_GROCERY_DIR":
            monkeypatch.delenv(name)
    sdk_config = tmp_path / "sagemaker-config.yaml"
    sdk_config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    env = {
        "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1", "SAGEMAKER_USER_CONFIG_OVERRIDE": str(sdk_config),
        "CLIP_SEARCH_PUBLISH_STATE": str(tmp_path / "state.json"), "CLIP_SEARCH_POLL_SECONDS": "1",
        # No profile region from the machine's ~/.aws/config: tests write this file when they need one.
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    iam = boto3.client("iam", region_name=REGION)
    role_arn = iam.create_role(RoleName="clip-search-sagemaker", AssumeRolePolicyDocument=SAGEMAKER_TRUST)["Role"]["Arn"]
    return {"s3": s3, "sm": boto3.client("sagemaker", region_name=REGION), "ecr": boto3.client("ecr", region_name=REGION),
            "role_arn": role_arn, "bucket": BUCKET, "url": moto_url, "env": env, "tmp": tmp_path}


@pytest.fixture
def publish_cli():
    """Run `clip-search publish ARGS`; fails the test on an unexpected exit code."""
    from model_build.cli import publish

    def run(*args, expect: int = 0):
        result = CliRunner().invoke(publish, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == expect, f"exit {result.exit_code}:\n{result.output}"
        return result.output

    return run


@pytest.fixture(scope="session")
def model_server(test_model_tar):
    """The real model server (multi-model-server) on the tiny test model: the data plane."""
    with ModelServer(test_model_tar) as server:
        yield server


# A real registry and image for the push tests (test_image_step.py, test_buildspec.py).
@pytest.fixture(scope="module")
def local_registry(tmp_path_factory):
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed (apt-get install docker-registry)")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=open(root / "log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if requests.get(url + "/v2/", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail(f"docker-registry did not start: {(root / 'log').read_text()[-500:]}")
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def tiny_image(tmp_path_factory):
    """A one-file image made locally (no registry is reachable to pull a base)."""
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "hello.txt").write_text("clip-search publish test\n")
    archive = folder / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder / "hello.txt", arcname="hello.txt")
    tag = "clip-search-publish-test:tiny"
    subprocess.run([DOCKER, "import", str(archive), tag], check=True, capture_output=True)
    yield tag
    subprocess.run([DOCKER, "rmi", "-f", tag], capture_output=True)
