"""docs/publishing.md's quick start, run as written against moto's server.

The block marked `<!-- quick-start: ... -->` is extracted and run in one bash shell that stops at
the first failing command, in the docs' own example account (111122223333, reached in moto through
STS AssumeRole) and region, after the prerequisites the quick start lists (the bucket and the
SageMaker execution role, what `clip-search publish stack` creates) are made. It must end with a
registered, approved package carrying its evaluation, and a serverless endpoint serving it.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import requests

from .conftest import SAGEMAKER_TRUST

DOC = Path(__file__).resolve().parents[2] / "docs" / "publishing.md"
MARKER = "<!-- quick-start:"


def quick_start_block(text: str) -> str:
    """The fenced block right after the marker line."""
    after = text[text.index(MARKER):]
    match = re.search(r"^```bash\n(.*?)^```$", after, re.S | re.M)
    assert match, "no ```bash block after the quick-start marker"
    return match.group(1)


def exported(block: str) -> dict:
    """The variables the block's first command exports (the user's values)."""
    command = block.split("\n")[0]
    joined = block[: block.index("\n", block.index("CLIP_SEARCH_IMAGE_URI"))].replace("\\\n", " ")
    assert command.startswith("export ")
    return dict(re.findall(r"([A-Z_]+)=(\S+)", joined))


def test_the_block_is_found_and_names_every_step():
    block = quick_start_block(DOC.read_text())
    steps = re.findall(r"^clip-search publish ([a-z]+)", block, re.M)
    assert steps == ["artifact", "evaluate", "image", "register", "approve", "endpoint"]
    assert {"AWS_REGION", "CLIP_SEARCH_BUCKET", "CLIP_SEARCH_ROLE_ARN", "CLIP_SEARCH_IMAGE_URI"} <= set(exported(block))


@pytest.fixture
def docs_account(moto_url, tmp_path):
    """A reset moto, credentials of the docs' account, and the prerequisites: bucket + role."""
    requests.post(moto_url + "/moto-api/reset", timeout=10).raise_for_status()
    values = exported(quick_start_block(DOC.read_text()))
    region, bucket, role_arn = values["AWS_REGION"], values["CLIP_SEARCH_BUCKET"], values["CLIP_SEARCH_ROLE_ARN"]
    account = role_arn.split(":")[4]
    base = {"endpoint_url": moto_url, "region_name": region, "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing"}
    credentials = boto3.client("sts", **base).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/admin", RoleSessionName="quick-start")["Credentials"]
    session = boto3.Session(aws_access_key_id=credentials["AccessKeyId"], region_name=region,
                            aws_secret_access_key=credentials["SecretAccessKey"],
                            aws_session_token=credentials["SessionToken"])
    clients = {name: session.client(name, endpoint_url=moto_url) for name in ("s3", "iam", "sagemaker", "sts")}
    assert clients["sts"].get_caller_identity()["Account"] == account
    clients["s3"].create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    created = clients["iam"].create_role(RoleName=role_arn.rsplit("/", 1)[1], AssumeRolePolicyDocument=SAGEMAKER_TRUST)
    assert created["Role"]["Arn"] == role_arn
    sdk_config = tmp_path / "sagemaker-config.yaml"
    sdk_config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLIP_SEARCH_"))}
    env.update({"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"], "AWS_SESSION_TOKEN": credentials["SessionToken"],
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                "SAGEMAKER_USER_CONFIG_OVERRIDE": str(sdk_config),
                "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]})
    return {"env": env, "values": values, "clients": clients, "tmp": tmp_path}


def test_the_quick_start_runs_as_written(docs_account):
    block = quick_start_block(DOC.read_text())
    result = subprocess.run(["bash", "-c", "set -e\n" + block], cwd=docs_account["tmp"], env=docs_account["env"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    # One key=value line per step, in order.
    keys = [line.split("=", 1)[0] for line in result.stdout.splitlines() if re.match(r"^[a-z_]+=\S", line)]
    assert keys == ["model_data", "evaluation", "image_uri", "model_package_arn", "approval_status", "endpoint"]

    values, sm = docs_account["values"], docs_account["clients"]["sagemaker"]
    [summary] = sm.list_model_packages(ModelPackageGroupName="clip-search")["ModelPackageSummaryList"]
    package = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["ModelPackageArn"].split(":")[3:5] == [values["AWS_REGION"], "111122223333"]
    container = package["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == values["CLIP_SEARCH_IMAGE_URI"]
    state = json.loads((docs_account["tmp"] / ".clip-search-publish.json").read_text())
    assert container["ModelDataUrl"] == state["model_data"]
    assert container["ModelDataUrl"].startswith(f"s3://{values['CLIP_SEARCH_BUCKET']}/clip-search/models/")
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == state["evaluation"]

    endpoint = sm.describe_endpoint(EndpointName="clip-search")
    assert endpoint["EndpointStatus"] == "InService"
    [variant] = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 5}
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["ExecutionRoleArn"] == values["CLIP_SEARCH_ROLE_ARN"]
    assert model["Containers"][0]["ModelPackageName"] == package["ModelPackageArn"]  # the package, not an image
