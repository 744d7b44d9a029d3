"""buildspec.yml: it parses, every command it runs exists here, and its build phase runs against moto."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model_build.cli import publish

REPO = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((REPO / "buildspec.yml").read_text())
BUILD = SPEC["phases"]["build"]["commands"]


def test_buildspec_shape():
    assert SPEC["version"] == 0.2
    assert all(phase.get("on-failure") == "ABORT" for phase in SPEC["phases"].values())
    assert "publish-state.json" in SPEC["artifacts"]["files"]
    assert not any("123456789012" in str(v) or "arn:aws" in str(v) for v in SPEC["env"]["variables"].values())


def test_every_command_exists_in_the_project():
    text = "\n".join(c for phase in SPEC["phases"].values() for c in phase["commands"])
    steps = set(re.findall(r"clip-search publish ([a-z][a-z-]*)", text))
    assert steps == {"artifact", "evaluate", "image", "register", "endpoint"}
    assert steps <= set(publish.commands)
    assert (REPO / "constraints.txt").is_file() and (REPO / "container" / "build.sh").is_file()
    for option in ("--arch", "--pretrained"):
        assert option in [p.opts[0] for p in publish.commands["artifact"].params]
    for option in ("--catalogue", "--queries"):
        assert option in [p.opts[0] for p in publish.commands["evaluate"].params]
    for name in ("EVAL_CATALOGUE", "EVAL_QUERIES"):
        assert (REPO / SPEC["env"]["variables"][name]).is_file()
    register_flags = [p.opts[0] for p in publish.commands["register"].params]
    for name in ("CLIP_SEARCH_MIN_RECALL_AT_10", "CLIP_SEARCH_MIN_TEXT_RECALL_AT_10", "CLIP_SEARCH_MIN_IMAGE_RECALL_AT_10"):
        assert SPEC["env"]["variables"][name] == ""  # no threshold by default: metrics recorded, nothing gated
        assert "--" + name[len("CLIP_SEARCH_"):].lower().replace("_", "-") in register_flags


def run_build_phase(env: dict, tmp: Path) -> subprocess.CompletedProcess:
    """The build phase as CodeBuild runs it: one bash shell, stop at the first failing command."""
    script = "set -e\n" + "\n".join(BUILD) + "\n"
    variables = {k: str(v).split("  #")[0] for k, v in SPEC["env"]["variables"].items()}
    bin_dir = str(Path(sys.executable).parent)
    full_env = {**os.environ, **variables, **env, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    return subprocess.run(["bash", "-c", script], cwd=tmp, env=full_env, capture_output=True, text=True, timeout=600)


def _dry_run_env(aws, **extra):
    # CodeBuild runs in the source folder; these runs are in a scratch folder.
    paths = {name: str(REPO / SPEC["env"]["variables"][name]) for name in ("EVAL_CATALOGUE", "EVAL_QUERIES")}
    return {"CLIP_SEARCH_ACCOUNT_ID": "123456789012", "CLIP_SEARCH_BUCKET": aws["bucket"],
            "CLIP_SEARCH_ROLE_ARN": aws["role_arn"], "PACKAGE_ARGS": "--test-model", **paths, **extra}


def test_build_phase_dry_run_against_moto_with_a_prebuilt_image(aws):
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search@sha256:" + "d" * 64
    result = run_build_phase(_dry_run_env(aws, CLIP_SEARCH_IMAGE_URI=image, DEPLOY_ENDPOINT="true",
                                          CLIP_SEARCH_APPROVAL_STATUS="Approved"), aws["tmp"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert (aws["tmp"] / "publish-state.json").is_file()
    [package] = aws["sm"].list_model_packages(ModelPackageGroupName="clip-search")["ModelPackageSummaryList"]
    assert package["ModelApprovalStatus"] == "Approved"
    assert aws["sm"].describe_endpoint(EndpointName="clip-search")["EndpointStatus"] == "InService"
    assert "uploaded artifact" in result.stdout and "uploaded evaluation" in result.stdout
    described = aws["sm"].describe_model_package(ModelPackageName=package["ModelPackageArn"])
    state = json.loads((aws["tmp"] / "publish-state.json").read_text())
    assert described["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == state["evaluation"]
    assert "clip-search:eval:text:recall@10" in described["CustomerMetadataProperties"]


def test_a_threshold_stops_the_build_before_registering(aws):
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search@sha256:" + "d" * 64
    # The random test model cannot reach recall@10 = 1 on 81 products.
    result = run_build_phase(_dry_run_env(aws, CLIP_SEARCH_IMAGE_URI=image, CLIP_SEARCH_MIN_TEXT_RECALL_AT_10="1"),
                             aws["tmp"])
    assert result.returncode == 3, result.stdout + result.stderr
    assert "is below --min-text-recall-at-10 1" in result.stderr
    assert aws["sm"].list_model_package_groups()["ModelPackageGroupSummaryList"] == []


def test_build_stops_at_the_first_error(aws):
    result = run_build_phase(_dry_run_env(aws, CLIP_SEARCH_BUCKET="missing-bucket", CLIP_SEARCH_IMAGE_URI="x:1"),
                             aws["tmp"])
    assert result.returncode != 0
    assert "S3 bucket 'missing-bucket' does not exist" in result.stderr
    assert aws["sm"].list_model_package_groups()["ModelPackageGroupSummaryList"] == []


def test_wrong_account_is_refused(aws):
    result = run_build_phase(_dry_run_env(aws, CLIP_SEARCH_ACCOUNT_ID="999999999999", CLIP_SEARCH_IMAGE_URI="x:1"),
                             aws["tmp"])
    assert result.returncode != 0 and "not CLIP_SEARCH_ACCOUNT_ID=999999999999" in result.stderr
    assert aws["s3"].list_objects_v2(Bucket=aws["bucket"]).get("KeyCount", 0) == 0


@pytest.mark.container
def test_build_phase_dry_run_pushes_the_image(aws, local_registry, tiny_image):
    result = run_build_phase(_dry_run_env(aws, CLIP_SEARCH_LOCAL_IMAGE=tiny_image, CLIP_SEARCH_REGISTRY=local_registry,
                                          DOCKER="/usr/bin/docker", DOCKER_CONFIG=str(aws["tmp"] / "docker")), aws["tmp"])
    assert result.returncode == 0, result.stdout + result.stderr
    [package] = aws["sm"].list_model_packages(ModelPackageGroupName="clip-search")["ModelPackageSummaryList"]
    spec = aws["sm"].describe_model_package(ModelPackageName=package["ModelPackageArn"])["InferenceSpecification"]
    assert spec["Containers"][0]["Image"].startswith(f"{local_registry}/clip-search@sha256:")
