"""buildspec.yml: it parses, every command it runs exists here, and its build phase runs against moto
(in the test venv, and in a fresh virtual environment made by the buildspec's own install phase)."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from model_build.cli import publish

REPO = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((REPO / "buildspec.yml").read_text())
BUILD = SPEC["phases"]["build"]["commands"]
INSTALL = SPEC["phases"]["install"]["commands"]
PRE_BUILD = SPEC["phases"]["pre_build"]["commands"]
# Fresh environments made by the install phase, one per (install lines, constraints, setup.py,
# checkout, Python): a change to any of them makes a new one.
FRESH_VENVS = Path(os.environ.get("CLIP_SEARCH_FRESH_VENVS", REPO / "build" / "buildspec-venvs"))


def test_buildspec_shape():
    assert SPEC["version"] == 0.2
    assert all(phase.get("on-failure") == "ABORT" for phase in SPEC["phases"].values())
    assert "publish-state.json" in SPEC["artifacts"]["files"]
    assert not any("123456789012" in str(v) or "arn:aws" in str(v) for v in SPEC["env"]["variables"].values())


def test_every_command_exists_in_the_project():
    text = "\n".join(c for phase in SPEC["phases"].values() for c in phase["commands"])
    steps = set(re.findall(r"clip-search publish ([a-z][a-z-]*)", text))
    assert steps == {"artifact", "evaluate", "image", "register", "endpoint", "pipeline"}
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


def test_the_model_pipeline_gets_the_processing_image_on_full_as_its_full_image():
    # PackageModel needs torch (the full image), EvaluateModel opens a LanceDB index (the processing
    # layer): the pipeline's full image is the processing image built on the full one.
    [line] = [command for command in BUILD if "MODEL_PIPELINE" in command]
    steps = [step.strip() for step in line.split("then", 1)[1].rsplit("; fi", 1)[0].split("&&")]
    assert steps[:2] == ["clip-search publish image --variant full",
                         "export CLIP_SEARCH_FULL_IMAGE_URI=$(clip-search publish image --variant processing "
                         "| sed -n 's/^processing_image_uri=//p')"]
    assert steps[-2:] == ["clip-search publish pipeline model upsert", "clip-search publish pipeline model start --wait"]
    assert "processing" in [p for p in publish.commands["image"].params if p.name == "variant"][0].type.choices


def spec_variables() -> dict:
    variables = {k: str(v).split("  #")[0] for k, v in SPEC["env"]["variables"].items()}
    # PyTorch's CPU index is for CodeBuild; here pip's own configuration (this machine's local
    # indexes, the CPU torch wheel) stands in for it, and an environment value would replace that.
    variables.pop("PIP_EXTRA_INDEX_URL")
    return variables


def run_phase(commands: list[str], env: dict, cwd: Path, bin_dir: Path | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """One phase as CodeBuild runs it: one bash shell, stop at the first failing command. With
    bin_dir (a fresh venv's), the test venv's bin folder is left off PATH."""
    script = "set -e\n" + "\n".join(commands) + "\n"
    own = Path(sys.executable).parent
    path = [p for p in os.environ["PATH"].split(os.pathsep) if bin_dir is None or Path(p) != own]
    full_env = {**os.environ, **spec_variables(), **env, "PATH": os.pathsep.join([str(bin_dir or own), *path])}
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def run_build_phase(env: dict, tmp: Path) -> subprocess.CompletedProcess:
    return run_phase(BUILD, env, tmp)


def _dry_run_env(aws, model_tar: Path | None = None, **extra):
    """The CodeBuild project's variables. PACKAGE_ARGS: `--model` the session's packaged test model
    when given (the build phase's `clip-search publish artifact $PACKAGE_ARGS` then uploads it, as
    it uploads any artifact packaged before; packaging in the build is test_artifact_step.py's and
    the fresh-venv test's), else `--test-model` (packaged in the build)."""
    # CodeBuild runs in the source folder; these runs are in a scratch folder.
    paths = {name: str(REPO / SPEC["env"]["variables"][name]) for name in ("EVAL_CATALOGUE", "EVAL_QUERIES")}
    package_args = f"--model {model_tar}" if model_tar else "--test-model"
    return {"CLIP_SEARCH_ACCOUNT_ID": "123456789012", "CLIP_SEARCH_BUCKET": aws["bucket"],
            "CLIP_SEARCH_ROLE_ARN": aws["role_arn"], "PACKAGE_ARGS": package_args, **paths, **extra}


def test_build_phase_dry_run_against_moto_with_a_prebuilt_image(aws, test_model_tar):
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search@sha256:" + "d" * 64
    result = run_build_phase(_dry_run_env(aws, test_model_tar, CLIP_SEARCH_IMAGE_URI=image, DEPLOY_ENDPOINT="true",
                                          CLIP_SEARCH_APPROVAL_STATUS="Approved"), aws["tmp"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert (aws["tmp"] / "publish-state.json").is_file()
    state = json.loads((aws["tmp"] / "publish-state.json").read_text())
    # The artifact the build uploaded is the one PACKAGE_ARGS named.
    sha = hashlib.sha256(test_model_tar.read_bytes()).hexdigest()
    assert state["model_data"] == f"s3://{aws['bucket']}/clip-search/models/{sha[:16]}/model.tar.gz"
    [package] = aws["sm"].list_model_packages(ModelPackageGroupName="clip-search")["ModelPackageSummaryList"]
    assert package["ModelApprovalStatus"] == "Approved"
    assert aws["sm"].describe_endpoint(EndpointName="clip-search")["EndpointStatus"] == "InService"
    assert "uploaded artifact" in result.stdout and "uploaded evaluation" in result.stdout
    described = aws["sm"].describe_model_package(ModelPackageName=package["ModelPackageArn"])
    assert described["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == state["evaluation"]
    assert "clip-search:eval:text:recall@10" in described["CustomerMetadataProperties"]


def test_a_threshold_stops_the_build_before_registering(aws, test_model_tar):
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search@sha256:" + "d" * 64
    # The random test model cannot reach recall@10 = 1 on 81 products.
    result = run_build_phase(_dry_run_env(aws, test_model_tar, CLIP_SEARCH_IMAGE_URI=image,
                                          CLIP_SEARCH_MIN_TEXT_RECALL_AT_10="1"), aws["tmp"])
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
def test_build_phase_dry_run_pushes_the_image(aws, local_registry, tiny_image, test_model_tar):
    result = run_build_phase(_dry_run_env(aws, test_model_tar, CLIP_SEARCH_LOCAL_IMAGE=tiny_image,
                                          CLIP_SEARCH_REGISTRY=local_registry, DOCKER="/usr/bin/docker",
                                          DOCKER_CONFIG=str(aws["tmp"] / "docker")), aws["tmp"])
    assert result.returncode == 0, result.stdout + result.stderr
    [package] = aws["sm"].list_model_packages(ModelPackageGroupName="clip-search")["ModelPackageSummaryList"]
    spec = aws["sm"].describe_model_package(ModelPackageName=package["ModelPackageArn"])["InferenceSpecification"]
    assert spec["Containers"][0]["Image"].startswith(f"{local_registry}/clip-search@sha256:")


def fresh_venv() -> tuple[Path, float | None]:
    """A virtual environment holding only what the install phase installs (-> its bin folder, and the
    seconds the install took, None when an earlier run had made it). It is made with `python -m venv`
    (no system site-packages) and kept once the whole phase has passed."""
    key = hashlib.sha256("\n".join([*INSTALL, (REPO / "constraints.txt").read_text(), (REPO / "setup.py").read_text(),
                                     str(REPO), sys.version]).encode()).hexdigest()[:16]
    venv = FRESH_VENVS / key
    FRESH_VENVS.mkdir(parents=True, exist_ok=True)
    with FileLock(str(venv) + ".lock"):
        if (venv / "installed").is_file():
            return venv / "bin", None
        shutil.rmtree(venv, ignore_errors=True)
        python = sys.executable  # the Python the project is tested on (a `python3.11` on PATH may be older)
        # The base interpreter, not the test venv's: nothing of the test venv is visible inside.
        base = subprocess.run([python, "-c", "import sys; print(sys._base_executable)"], capture_output=True,
                              text=True, check=True).stdout.strip()
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        started = time.monotonic()
        # Without byte-compiling every installed file (torch's thousands): what gets installed is the
        # same, and the build phase compiles the modules it imports. pip reads its negative option
        # `--no-compile` from PIP_NO_COMPILE inverted: "false" turns compiling off.
        result = run_phase(INSTALL, {"VIRTUAL_ENV": str(venv), "PYTHONPATH": "", "PIP_NO_COMPILE": "false"}, REPO,
                           venv / "bin", timeout=3600)
        assert result.returncode == 0, f"install phase failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        seconds = time.monotonic() - started
        (venv / "installed").write_text(f"{seconds:.0f} s\n")
        return venv / "bin", seconds


@pytest.mark.container  # the first run installs torch & co. into a fresh venv: minutes, like an image build
def test_the_install_phase_installs_what_the_build_phase_runs(aws):
    """The install phase in a fresh venv, then pre_build and build there: an extra the buildspec does
    not install (the artifact step's `package`, the register step's `publish`) fails the build."""
    bin_dir, seconds = fresh_venv()
    print(f"fresh venv {bin_dir.parent.name}: " + (f"install phase {seconds:.0f} s" if seconds else "cached"))
    # PYTHONPATH emptied: the checkout is reached only through the venv's own (editable) install.
    env = {**_dry_run_env(aws, CLIP_SEARCH_IMAGE_URI="123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search@sha256:"
                          + "e" * 64, DEPLOY_ENDPOINT="true", CLIP_SEARCH_APPROVAL_STATUS="Approved"),
           "VIRTUAL_ENV": str(bin_dir.parent), "PYTHONPATH": ""}
    which = run_phase(["command -v clip-search python"], env, aws["tmp"], bin_dir)
    assert which.stdout.split() == [str(bin_dir / "clip-search"), str(bin_dir / "python")]
    for phase in (PRE_BUILD, BUILD):
        result = run_phase(phase, env, aws["tmp"], bin_dir, timeout=900)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "packaged" in result.stdout and "uploaded artifact" in result.stdout
    [package] = aws["sm"].list_model_packages(ModelPackageGroupName="clip-search")["ModelPackageSummaryList"]
    assert package["ModelApprovalStatus"] == "Approved"
    state = json.loads((aws["tmp"] / "publish-state.json").read_text())
    assert state["model_package_arn"] == package["ModelPackageArn"]
    endpoint = aws["sm"].describe_endpoint(EndpointName="clip-search")
    assert endpoint["EndpointStatus"] == "InService"
    config = aws["sm"].describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    assert "ServerlessConfig" in config["ProductionVariants"][0]
