"""Step 2: ECR repository, login with the ECR token, tag, push, digest.

The docker commands are checked through an injected runner (no Docker needed); the container-marked
test pushes for real to a local Distribution registry (Debian's `docker-registry`) standing in for
ECR's registry host, with moto providing the repository and the authorization token.
"""
import base64
import json

import pytest
import requests

from model_build.aws import Aws
from model_build.config import load_config
from model_build.image import BUILD_SCRIPT, push_image

from .conftest import DOCKER


class RecordingRunner:
    """Records each docker command; answers `image inspect` with the digest a push would leave."""

    def __init__(self, digest="sha256:" + "c" * 64):
        self.calls, self.digest = [], digest

    def __call__(self, args, input=None):
        self.calls.append((args, input))
        if args[1:3] == ["image", "inspect"]:
            return json.dumps([f"{self.repository}@{self.digest}"])
        if args[1] == "push":
            self.repository = args[2].rsplit(":", 1)[0]
        return ""


def test_builds_creates_repository_logs_in_tags_pushes_and_pins_the_digest(aws, monkeypatch):
    monkeypatch.setenv("DOCKER", DOCKER)
    runner, messages = RecordingRunner(), []
    uri = push_image(Aws(load_config({"image_tag": "1.2.3"})), run=runner, build_args=["--offline"], echo=messages.append)
    [repository] = aws["ecr"].describe_repositories()["repositories"]
    assert repository["repositoryName"] == "clip-search"
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    remote = repository["repositoryUri"]
    token = aws["ecr"].get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
    host = token["proxyEndpoint"].split("://")[1]
    assert runner.calls == [
        (["bash", str(BUILD_SCRIPT), "--variant", "slim", "--tag", "clip-search:1.2.3", "--offline"], None),
        ([DOCKER, "login", "--username", user, "--password-stdin", host], password),  # never in argv
        ([DOCKER, "tag", "clip-search:1.2.3", f"{remote}:1.2.3"], None),
        ([DOCKER, "push", f"{remote}:1.2.3"], None),
        ([DOCKER, "image", "inspect", "--format", "{{json .RepoDigests}}", "clip-search:1.2.3"], None),
    ]
    assert uri == f"{remote}@{runner.digest}"
    assert f"image: {uri}" in messages and f"created ECR repository: {remote}" in messages
    assert all(password not in message for message in messages)

    runner = RecordingRunner()
    push_image(Aws(load_config({"image_tag": "1.2.3", "local_image": "prebuilt:x"})), run=runner, echo=messages.append)
    assert f"ECR repository exists: {remote}" in messages
    assert len(aws["ecr"].describe_repositories()["repositories"]) == 1
    assert not any(call[0][0] == "bash" for call in runner.calls)  # --local-image: no build


def test_full_variant_builds_with_build_sh_variant_full_under_its_own_tag(aws, monkeypatch):
    from clip_search import __version__

    monkeypatch.setenv("DOCKER", DOCKER)
    runner = RecordingRunner()
    uri = push_image(Aws(load_config({})), run=runner, echo=lambda _: None, variant="full")
    build, *_ = runner.calls
    # The full image (torch + OpenVINO) never overwrites the slim default tag.
    assert build == (["bash", str(BUILD_SCRIPT), "--variant", "full", "--tag", f"clip-search:{__version__}-full"], None)
    pushed = [call[0] for call in runner.calls if call[0][1] == "push"]
    assert pushed[0][2].endswith(f"/clip-search:{__version__}-full")
    assert uri.endswith(f"@{runner.digest}")

    runner = RecordingRunner()
    push_image(Aws(load_config({})), run=runner, echo=lambda _: None)
    assert runner.calls[0][0][3:6] == ["slim", "--tag", f"clip-search:{__version__}"]


def test_processing_variant_builds_on_the_full_image_unless_told_another(aws, monkeypatch):
    from clip_search import __version__

    monkeypatch.setenv("DOCKER", DOCKER)
    runner = RecordingRunner()
    uri = push_image(Aws(load_config({})), run=runner, echo=lambda _: None, variant="processing")
    # The model build packages with torch and evaluates with LanceDB: the processing layer goes on
    # the full image `publish image --variant full` tagged, not on the slim default.
    assert runner.calls[0] == (["bash", str(BUILD_SCRIPT), "--variant", "processing", "--tag",
                                f"clip-search:{__version__}-processing",
                                "--serving-image", f"clip-search:{__version__}-full"], None)
    assert [call[0][2] for call in runner.calls if call[0][1] == "push"][0].endswith(f"/clip-search:{__version__}-processing")
    assert uri.endswith(f"@{runner.digest}")

    runner = RecordingRunner()
    push_image(Aws(load_config({})), run=runner, echo=lambda _: None, variant="processing",
               build_args=["--serving-image=clip-search:slim-1"])
    assert runner.calls[0][0][-1] == "--serving-image=clip-search:slim-1"  # the caller's, and only it
    assert sum(arg.startswith("--serving-image") for arg in runner.calls[0][0]) == 1


def test_cli_variant_choices_default_slim_and_unknown_names_refused(aws, publish_cli):
    assert "[default: slim]" in publish_cli("image", "--help")
    out = publish_cli("image", "--variant", "bogus", expect=2)
    assert "Invalid value for '--variant'" in out and "'slim', 'full'" in out


@pytest.mark.container
def test_pushes_to_a_real_registry_and_reports_its_digest(aws, publish_cli, local_registry, tiny_image, monkeypatch):
    monkeypatch.setenv("DOCKER", DOCKER)
    monkeypatch.setenv("DOCKER_CONFIG", str(aws["tmp"] / "docker-config"))  # the login stays in the test
    args = ("image", "--local-image", tiny_image, "--registry", local_registry, "--image-tag", "t1",
            "--repository", "clip-search-test")
    out = publish_cli(*args)
    line = next(line for line in out.splitlines() if line.startswith("image_uri="))
    uri = line.split("=", 1)[1]
    assert uri.startswith(f"{local_registry}/clip-search-test@sha256:")
    manifest = requests.get(f"http://{local_registry}/v2/clip-search-test/manifests/t1", timeout=10, headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"] == uri.split("@", 1)[1]
    assert [r["repositoryName"] for r in aws["ecr"].describe_repositories()["repositories"]] == ["clip-search-test"]

    again = publish_cli(*args)
    assert "ECR repository exists" in again and f"image_uri={uri}" in again
