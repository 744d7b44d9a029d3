"""Steps 3 and 4 against moto: model package spec, approval, serverless endpoint create/update."""
import json

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from model_build.aws import Aws
from model_build.config import CONTENT_TYPES, RESPONSE_TYPES, load_config
from model_build.endpoint import deploy_serverless

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search@sha256:" + "ab" * 32


@pytest.fixture
def published(aws, monkeypatch):
    """What steps 1 and 2 leave behind: an artifact in S3 and an image URI."""
    aws["s3"].put_object(Bucket=aws["bucket"], Key="clip-search/models/x/model.tar.gz", Body=b"tar")
    monkeypatch.setenv("CLIP_SEARCH_MODEL_DATA", f"s3://{aws['bucket']}/clip-search/models/x/model.tar.gz")
    monkeypatch.setenv("CLIP_SEARCH_IMAGE_URI", IMAGE)
    monkeypatch.setenv("CLIP_SEARCH_ROLE_ARN", aws["role_arn"])
    return aws


def _packages(sm, group="clip-search"):
    return sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]


def test_register_names_image_artifact_content_types_and_instances(published, publish_cli):
    sm = published["sm"]
    out = publish_cli("register", "--transform-instances", "ml.c5.2xlarge")
    assert "created model package group" in out
    [summary] = _packages(sm)
    assert f"model_package_arn={summary['ModelPackageArn']}" in out
    package = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
    spec = package["InferenceSpecification"]
    assert spec["Containers"][0]["Image"] == IMAGE
    assert spec["Containers"][0]["ModelDataUrl"].endswith("/models/x/model.tar.gz")
    assert spec["SupportedContentTypes"] == CONTENT_TYPES
    assert {"application/json", "application/jsonlines", "application/x-image", "text/plain"} <= set(CONTENT_TYPES)
    assert spec["SupportedResponseMIMETypes"] == RESPONSE_TYPES
    assert spec["SupportedRealtimeInferenceInstanceTypes"] == ["ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge", "ml.c5.2xlarge"]
    assert spec["SupportedTransformInstanceTypes"] == ["ml.c5.2xlarge"]
    assert package["ModelApprovalStatus"] == "PendingManualApproval"

    again = publish_cli("register")
    assert "already registered" in again and "model package group exists" in again
    assert len(_packages(sm)) == 1
    assert len(sm.list_model_package_groups()["ModelPackageGroupSummaryList"]) == 1


def _report(tmp_path):
    """A hand-written evaluation report (test_evaluation_gate.py makes real ones)."""
    path = tmp_path / "eval.json"
    figures = {"recall@1": 0.5, "recall@5": 0.75, "recall@10": 1.0, "mrr": 0.625, "queries": 4, "unanswerable": 0}
    path.write_text(json.dumps({"model_id": "clip-search-tiny/random", "artifact_sha256": None,
                                "metrics": {"text": figures}}))
    return path


def test_approval_status_is_configurable_and_approve_is_idempotent(published, publish_cli, tmp_path):
    sm = published["sm"]
    publish_cli("register", "--approval-status", "Approved", "--package-group", "direct", "--evaluation", _report(tmp_path))
    assert _packages(sm, "direct")[0]["ModelApprovalStatus"] == "Approved"

    publish_cli("register", "--package-group", "reviewed", "--image-uri", IMAGE + "0")
    arn = _packages(sm, "reviewed")[0]["ModelPackageArn"]
    assert "PendingManualApproval -> Approved" in publish_cli("approve", "--force")  # the ARN comes from the state file
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Approved"
    assert "already Approved" in publish_cli("approve", "--model-package-arn", arn)


def test_endpoint_refuses_an_unapproved_package(published, publish_cli):
    publish_cli("register")
    out = publish_cli("endpoint", expect=1)
    assert "is PendingManualApproval: run `clip-search publish approve` first" in out
    assert published["sm"].list_endpoints()["Endpoints"] == []


def test_serverless_endpoint_from_the_approved_package(published, publish_cli):
    sm = published["sm"]
    publish_cli("register")
    publish_cli("approve", "--force")  # no evaluation here (test_evaluation_gate.py has them)
    out = publish_cli("endpoint", "--endpoint-name", "clip-query", "--memory-mb", 2048, "--max-concurrency", 3)
    assert "endpoint clip-query: created" in out and "InService" in out
    endpoint = sm.describe_endpoint(EndpointName="clip-query")
    assert endpoint["EndpointStatus"] == "InService"
    variant = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 3}
    assert "InstanceType" not in variant
    model = sm.describe_model(ModelName=variant["ModelName"])
    arn = _packages(sm)[0]["ModelPackageArn"]
    assert model["Containers"][0]["ModelPackageName"] == arn
    assert model["ExecutionRoleArn"] == published["role_arn"]

    again = publish_cli("endpoint", "--endpoint-name", "clip-query", "--memory-mb", 2048, "--max-concurrency", 3)
    assert "endpoint clip-query: unchanged" in again
    assert len(sm.list_models()["Models"]) == 1
    assert len(sm.list_endpoint_configs()["EndpointConfigs"]) == 1
    assert len(sm.list_endpoints()["Endpoints"]) == 1


def test_endpoint_from_image_and_artifact_without_a_package(published, publish_cli):
    sm = published["sm"]
    publish_cli("endpoint", "--memory-mb", 6144, "--max-concurrency", 1)
    [model] = sm.list_models()["Models"]
    container = sm.describe_model(ModelName=model["ModelName"])["PrimaryContainer"]
    assert container["Image"] == IMAGE and container["ModelDataUrl"].endswith("model.tar.gz")


def test_changed_settings_update_the_endpoint_with_a_new_config(published, publish_cli):
    """moto does not implement UpdateEndpoint: the request is captured at botocore's before-call
    hook and answered there; everything before and after it runs against moto."""
    publish_cli("endpoint", "--memory-mb", 2048)
    calls = []

    def capture(params, **kwargs):
        calls.append(dict(params))

    def answer(**kwargs):
        return AWSResponse("http://127.0.0.1", 200, {}, None), {
            "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/clip-search"}

    session = boto3.Session(region_name="us-east-1")
    session.events.register("provide-client-params.sagemaker.UpdateEndpoint", capture)
    session.events.register("before-call.sagemaker.UpdateEndpoint", answer)
    aws = Aws(load_config({"memory_mb": 4096, "max_concurrency": 8}), boto_session=session)
    from model_build.config import State

    State().fill(aws.config)
    result = deploy_serverless(aws, echo=lambda message: None)
    assert result["action"] == "updated"
    assert calls == [{"EndpointName": "clip-search", "EndpointConfigName": result["endpoint_config"]}]
    variant = published["sm"].describe_endpoint_config(EndpointConfigName=result["endpoint_config"])["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 4096, "MaxConcurrency": 8}


@pytest.mark.parametrize("flags, message", [
    (["--memory-mb", 1000], "serverless memory 1000 MB: must be one of"),
    (["--max-concurrency", 0], "max concurrency 0: must be 1-200"),
    (["--role-arn", "arn:aws:iam::123456789012:role/missing"], "IAM role arn:aws:iam::123456789012:role/missing does not exist"),
])
def test_bad_endpoint_settings_are_clear_errors(published, publish_cli, flags, message):
    out = publish_cli("endpoint", *flags, expect=1)
    assert message in out
    assert published["sm"].list_endpoints()["Endpoints"] == []
