"""Issue 24's rules against moto: one region rule for every AWS command, what the user gives beats
the state file, the state file remembers what later steps use, the role ARN checked whole, and
every missing input names the step to run first."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from click.testing import CliRunner

from clip_search.aws_region import resolve_region
from clip_search.cli import main

from .conftest import REGION, SAGEMAKER_TRUST

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search@sha256:" + "ab" * 32
OTHER_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search@sha256:" + "cd" * 32


@pytest.fixture
def uploaded(aws):
    """An artifact in S3 (what `publish artifact` leaves) and the role in the environment."""
    for key in ("a", "b"):
        aws["s3"].put_object(Bucket=aws["bucket"], Key=f"clip-search/models/{key}/model.tar.gz", Body=b"tar")
    aws["model_data"] = f"s3://{aws['bucket']}/clip-search/models/a/model.tar.gz"
    aws["other_model_data"] = f"s3://{aws['bucket']}/clip-search/models/b/model.tar.gz"
    return aws


def _state(aws) -> dict:
    return json.loads((aws["tmp"] / "state.json").read_text())


# --- the region rule -----------------------------------------------------------------------------
def test_region_rule_flag_then_aws_region_then_aws_default_region_then_profile(aws, monkeypatch):
    (aws["tmp"] / "aws-config").write_text("[default]\nregion = ap-south-1\n[profile other]\nregion = sa-east-1\n")
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert resolve_region() == ("ap-south-1", "profile default")
    monkeypatch.setenv("AWS_PROFILE", "other")
    assert resolve_region() == ("sa-east-1", "profile other")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert resolve_region() == ("eu-central-1", "AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    assert resolve_region() == ("eu-west-3", "AWS_REGION")
    assert resolve_region("us-west-2") == ("us-west-2", "--region")


def _register(publish_cli, *args):
    out = publish_cli("register", *args)
    return [line.split("=", 1)[1] for line in out.splitlines() if line.startswith("model_package_arn=")][0]


def test_region_on_the_group_and_on_the_step_the_step_wins(uploaded, publish_cli, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")  # AWS_REGION (us-east-1) beats it
    base = ("--image-uri", IMAGE, "--model-data", uploaded["model_data"])
    assert _register(publish_cli, *base).split(":")[3] == REGION
    assert _register(publish_cli, *base, "--region", "eu-west-1").split(":")[3] == "eu-west-1"
    out = publish_cli("--region", "ap-south-1", "register", *base)
    assert ":ap-south-1:" in out
    out = publish_cli("--region", "ap-south-1", "register", *base, "--region", "eu-north-1")
    assert ":eu-north-1:" in out and ":ap-south-1:" not in out


def test_the_profile_region_is_used_last(uploaded, publish_cli, monkeypatch):
    (uploaded["tmp"] / "aws-config").write_text("[default]\nregion = ca-central-1\n")
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    arn = _register(publish_cli, "--image-uri", IMAGE, "--model-data", uploaded["model_data"])
    assert arn.split(":")[3] == "ca-central-1"
    (uploaded["tmp"] / "aws-config").write_text("[default]\n")
    out = publish_cli("register", expect=1)
    assert "no AWS region: give --region, or set AWS_REGION or AWS_DEFAULT_REGION, or a region in your AWS profile" in out


def test_a_package_looked_up_in_another_region_names_both_and_the_state_file(uploaded, publish_cli):
    arn = _register(publish_cli, "--image-uri", IMAGE, "--model-data", uploaded["model_data"])
    out = publish_cli("approve", "--force", "--region", "eu-west-1", expect=1)
    assert (f"model package {arn} is in region us-east-1, but this step searched region eu-west-1 (from --region); "
            f"the ARN was recorded in state file {uploaded['tmp'] / 'state.json'}: run with --region us-east-1") in out
    out = publish_cli("--region", "eu-west-1", "endpoint", "--role-arn", uploaded["role_arn"], expect=1)
    assert "is in region us-east-1, but this step searched region eu-west-1" in out
    missing = arn.rsplit("/", 1)[0] + "/99"
    out = publish_cli("approve", "--model-package-arn", missing, expect=1)
    assert f"model package {missing} does not exist in region us-east-1 (searched there, from AWS_REGION; " \
           "it was recorded in --model-package-arn)" in out


class _RuntimeStandIn:
    """sagemaker-runtime's InvokeEndpoint on loopback: records the SigV4 scope (which region the
    client signed for) and answers one JSON Lines embedding per record, as the handler does."""

    def __init__(self):
        self.scopes = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                stand_in.scopes.append(self.headers["Authorization"].split("Credential=")[1].split("/")[2])
                if self.headers["Accept"] == "application/json":  # the client's model probe
                    kind = "application/json"
                    answer = json.dumps({"embeddings": [[0.6, 0.8]], "dim": 2, "model": "stand-in"}).encode()
                else:
                    kind = "application/jsonlines"
                    answer = "\n".join(json.dumps({"id": json.loads(line).get("id"), "embedding": [0.6, 0.8]})
                                       for line in body.splitlines() if line.strip()).encode()
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_encode_endpoint_follows_the_rule(aws, monkeypatch):
    runtime = _RuntimeStandIn()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_DEFAULT_REGION")  # boto3 alone would have no region: NoRegionError
    try:
        result = CliRunner().invoke(main, ["encode", "--endpoint", "clip-search", "red apples"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["embeddings"] == [[pytest.approx(0.6), pytest.approx(0.8)]]
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")  # AWS_REGION still wins
        result = CliRunner().invoke(main, ["encode", "--endpoint", "clip-search", "red apples"])
        assert result.exit_code == 0, result.output
        assert set(runtime.scopes) == {"eu-west-1"}
        before = len(runtime.scopes)
        result = CliRunner().invoke(main, ["encode", "--endpoint", "clip-search", "--region", "ap-south-1", "a"])
        assert result.exit_code == 0, result.output
        assert set(runtime.scopes[before:]) == {"ap-south-1"}
        monkeypatch.delenv("AWS_REGION")
        monkeypatch.delenv("AWS_DEFAULT_REGION")
        result = CliRunner().invoke(main, ["encode", "--endpoint", "clip-search", "a"])
        assert result.exit_code == 1
        assert result.output.strip().endswith("Error: no AWS region: give --region, or set AWS_REGION or "
                                              "AWS_DEFAULT_REGION, or a region in your AWS profile")
    finally:
        runtime.server.shutdown()


@pytest.mark.parametrize("command", [["index"], ["search"], ["eval"], ["app"], ["encode"],
                                     ["publish"], ["publish", "artifact"], ["publish", "endpoint"],
                                     ["publish", "transform"], ["publish", "approve"]])
def test_every_aws_command_takes_region(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "--region" in result.output


# --- the user wins; the state file remembers -----------------------------------------------------
def test_an_image_given_to_register_is_remembered(uploaded, publish_cli):
    arn = _register(publish_cli, "--image-uri", IMAGE, "--model-data", uploaded["model_data"])
    assert _state(uploaded)["image_uri"] == IMAGE and _state(uploaded)["model_data"] == uploaded["model_data"]
    assert _register(publish_cli) == arn  # the re-run needs nothing typed again


def test_typed_image_and_artifact_beat_a_remembered_package(uploaded, publish_cli):
    _register(publish_cli, "--image-uri", IMAGE, "--model-data", uploaded["model_data"])
    assert publish_cli("approve", "--force").strip().endswith("approval_status=Approved")
    publish_cli("endpoint", "--role-arn", uploaded["role_arn"], "--endpoint-name", "typed",
                "--image-uri", OTHER_IMAGE, "--model-data", uploaded["other_model_data"])
    sm = uploaded["sm"]
    config = sm.describe_endpoint_config(EndpointConfigName=sm.describe_endpoint(EndpointName="typed")["EndpointConfigName"])
    container = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])["PrimaryContainer"]
    assert container["Image"] == OTHER_IMAGE and container["ModelDataUrl"] == uploaded["other_model_data"]
    # Without them, the remembered (approved) package is what is deployed.
    publish_cli("endpoint", "--role-arn", uploaded["role_arn"], "--endpoint-name", "remembered")
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName="remembered")["EndpointConfigName"])
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert model["Containers"][0]["ModelPackageName"] == _state(uploaded)["model_package_arn"]


def test_publish_image_records_a_given_image_without_building(aws, publish_cli, monkeypatch):
    monkeypatch.setenv("DOCKER", "/nonexistent/docker")  # building or pushing would fail
    out = publish_cli("image", "--image-uri", IMAGE)
    assert "nothing built or pushed" in out and out.strip().endswith(f"image_uri={IMAGE}")
    assert _state(aws)["image_uri"] == IMAGE


# --- missing inputs name the step to run first ---------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["endpoint"], "nothing to deploy: run `clip-search publish register` and `approve` first"),
    (["approve"], "missing --model-package-arn / CLIP_SEARCH_MODEL_PACKAGE_ARN: run `clip-search publish register` first"),
    (["register", "--model-data", "s3://b/k"], "missing --image-uri / CLIP_SEARCH_IMAGE_URI: run `clip-search publish image` first"),
    (["register", "--image-uri", IMAGE], "missing --model-data / CLIP_SEARCH_MODEL_DATA: run `clip-search publish artifact` first"),
    (["evaluate", "--catalogue", "CATALOGUE", "--queries", "CATALOGUE"],
     "missing --model-data / CLIP_SEARCH_MODEL_DATA: run `clip-search publish artifact` first"),
])
def test_a_missing_input_names_the_step_to_run_first(aws, publish_cli, monkeypatch, args, message):
    monkeypatch.setenv("CLIP_SEARCH_ROLE_ARN", aws["role_arn"])
    catalogue = aws["tmp"] / "products.jsonl"
    catalogue.write_text('{"id": "1", "title": "apple"}\n')
    out = publish_cli(*[str(catalogue) if a == "CATALOGUE" else a for a in args], expect=1)
    assert message in out and len(out.strip().splitlines()) == 1


def test_transform_before_register_names_the_steps(aws, publish_cli, monkeypatch):
    monkeypatch.setenv("CLIP_SEARCH_ROLE_ARN", aws["role_arn"])
    catalogue = aws["tmp"] / "products.jsonl"
    catalogue.write_text('{"id": "1", "title": "apple"}\n')
    out = publish_cli("transform", "--catalogue", catalogue, "--bucket", aws["bucket"], expect=1)
    assert "run `clip-search publish register` and `approve` first" in out


def test_missing_prerequisites_point_to_publish_stack(aws, publish_cli):
    out = publish_cli("endpoint", "--image-uri", IMAGE, "--model-data", "s3://b/k", expect=1)
    assert "--role-arn / CLIP_SEARCH_ROLE_ARN" in out and "`clip-search publish stack`" in out


# --- the role ARN, checked whole -----------------------------------------------------------------
@pytest.fixture
def roles(aws):
    iam = boto3.client("iam", region_name=REGION)
    lambda_trust = SAGEMAKER_TRUST.replace("sagemaker.amazonaws.com", "lambda.amazonaws.com")
    deny = json.loads(SAGEMAKER_TRUST)
    deny["Statement"][0]["Effect"] = "Deny"
    return {
        "lambda": iam.create_role(RoleName="for-lambda", AssumeRolePolicyDocument=lambda_trust)["Role"]["Arn"],
        "deny": iam.create_role(RoleName="denied", AssumeRolePolicyDocument=json.dumps(deny))["Role"]["Arn"],
        "pathed": iam.create_role(RoleName="pathed", Path="/service/",
                                  AssumeRolePolicyDocument=SAGEMAKER_TRUST)["Role"]["Arn"],
    }


@pytest.mark.parametrize("which, message", [
    ("arn:aws:iam::111122223333:role/clip-search-sagemaker",
     "IAM role arn:aws:iam::111122223333:role/clip-search-sagemaker is in account 111122223333, but the credentials "
     "are for account 123456789012"),
    ("arn:aws:iam::123456789012:role/absent", "IAM role arn:aws:iam::123456789012:role/absent does not exist in account "
                                              "123456789012"),
    ("arn:aws:iam::123456789012:user/someone", "is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
    ("clip-search-sagemaker", "is not an IAM role ARN"),
    ("lambda", "cannot be assumed by SageMaker: its trust policy does not allow sts:AssumeRole for the service "
               "sagemaker.amazonaws.com"),
    ("deny", "cannot be assumed by SageMaker"),
    ("arn:aws:iam::123456789012:role/other/pathed", "does not exist: the role named pathed is "
                                                    "arn:aws:iam::123456789012:role/service/pathed (its path differs)"),
])
def test_a_wrong_role_is_one_clear_line_and_creates_nothing(aws, roles, publish_cli, which, message):
    role = roles.get(which, which)
    out = publish_cli("endpoint", "--image-uri", IMAGE, "--model-data", "s3://b/k", "--role-arn", role, expect=1)
    assert message in out and len(out.strip().splitlines()) == 1
    assert aws["sm"].list_models()["Models"] == []


def test_a_good_role_with_a_path_is_accepted(aws, roles, publish_cli):
    publish_cli("endpoint", "--image-uri", IMAGE, "--model-data", "s3://b/k", "--role-arn", roles["pathed"])
    [model] = aws["sm"].list_models()["Models"]
    assert aws["sm"].describe_model(ModelName=model["ModelName"])["ExecutionRoleArn"] == roles["pathed"]
