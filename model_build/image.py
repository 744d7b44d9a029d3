"""Step 2: build the serving image, create the ECR repository if missing, log in with an ECR
authorization token, tag and push; the result is the image URI pinned to its digest.

Docker runs through a `run(args, input=None) -> stdout` callable so the exact commands can be
checked, and the registry host can be replaced (CLIP_SEARCH_REGISTRY) to push to a local registry.
The registry password goes to `docker login --password-stdin`, never on a command line or in a log.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Callable

from model_build.aws import Aws, client_error_code
from model_build.errors import PublishError

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "container" / "build.sh"
Runner = Callable[..., str]
# container/build.sh --variant: slim (default, torch-free: onnx / onnx-int8 artifacts) or full
# (torch, open_clip, OpenVINO: every runtime). The full image's default tag ends in "-full", so
# the two never overwrite each other in one repository.
# lambda: the query function (container/Dockerfile.lambda), tag -lambda. processing: the pipelines'
# processing steps (container/Dockerfile.processing), one layer adding LanceDB/Arrow and opensearch-py
# on a serving image: by default on the `full` image, since the model build packages with torch.
VARIANTS = ("slim", "full", "lambda", "processing")
DEFAULT_VARIANT = "slim"


def docker_binary() -> str:
    return os.environ.get("DOCKER", "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker")


def run_command(args: list[str], input: str | None = None) -> str:
    result = subprocess.run(args, input=input, text=True, capture_output=True)
    if result.returncode != 0:
        shown = " ".join(args[:3])
        raise PublishError(f"`{shown} ...` failed ({result.returncode}): {(result.stderr or result.stdout).strip()[-800:]}")
    return result.stdout


def ensure_repository(aws: Aws, name: str, echo=print) -> str:
    """The repository URI; the repository is created (scan on push) if it does not exist."""
    ecr = aws.client("ecr")
    try:
        repository = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        echo(f"ECR repository exists: {repository['repositoryUri']}")
    except Exception as error:
        if client_error_code(error) != "RepositoryNotFoundException":
            raise
        repository = ecr.create_repository(repositoryName=name,
                                           imageScanningConfiguration={"scanOnPush": True})["repository"]
        echo(f"created ECR repository: {repository['repositoryUri']}")
    return repository["repositoryUri"]


def registry_credentials(aws: Aws) -> tuple[str, str, str]:
    """(username, password, registry host) from an ECR authorization token (valid 12 hours)."""
    data = aws.client("ecr").get_authorization_token()["authorizationData"][0]
    username, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    host = data["proxyEndpoint"].split("://", 1)[-1].rstrip("/")
    return username, password, host


def build_image(tag: str, run: Runner = run_command, extra_args: list[str] | None = None, echo=print,
                variant: str = DEFAULT_VARIANT) -> str:
    if variant not in VARIANTS:
        raise PublishError(f"unknown image variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not BUILD_SCRIPT.is_file():
        raise PublishError(f"{BUILD_SCRIPT} not found: build the image yourself and pass --local-image")
    echo(f"building {tag} ({variant}) with {BUILD_SCRIPT.relative_to(REPO_ROOT)}")
    run(["bash", str(BUILD_SCRIPT), "--variant", variant, "--tag", tag, *(extra_args or [])])
    return tag


def default_tag(version: str, variant: str) -> str:
    return version if variant == DEFAULT_VARIANT else f"{version}-{variant}"


def push_image(aws: Aws, run: Runner = run_command, build_args: list[str] | None = None, echo=print,
               variant: str = DEFAULT_VARIANT) -> str:
    """Build (unless config.local_image is set), push, return REGISTRY/REPOSITORY@sha256:DIGEST."""
    config = aws.config
    from clip_search import __version__ as version  # the image tag defaults to the package version

    tag = config.image_tag or default_tag(version, variant)
    build_args = list(build_args or [])
    if variant == "processing" and not any(arg.split("=", 1)[0] == "--serving-image" for arg in build_args):
        # The full image as `publish image --variant full` tags it locally (run that first).
        build_args += ["--serving-image", f"{config.repository}:{config.image_tag or default_tag(version, 'full')}"]
    docker = docker_binary()
    local = config.local_image or build_image(f"{config.repository}:{tag}", run, build_args, echo, variant)
    repository_uri = ensure_repository(aws, config.repository, echo)
    username, password, host = registry_credentials(aws)
    if config.registry:  # a local or mirror registry stands in for ECR's host
        host = config.registry
        repository_uri = f"{host}/{config.repository}"
    run([docker, "login", "--username", username, "--password-stdin", host], input=password)
    remote = f"{repository_uri}:{tag}"
    run([docker, "tag", local, remote])
    run([docker, "push", remote])
    digests = json.loads(run([docker, "image", "inspect", "--format", "{{json .RepoDigests}}", local]) or "[]") or []
    pinned = next((d for d in digests if d.startswith(repository_uri + "@")), None)
    if not pinned:
        raise PublishError(f"pushed {remote} but docker reports no digest for it (RepoDigests: {digests})")
    echo(f"pushed {remote}")
    echo(f"image: {pinned}")
    return pinned
