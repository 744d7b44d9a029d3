"""`publish stack` and `publish teardown` against moto's server (CloudFormation and every resource
type of infra/clip-search.yaml that moto can create: Emulator=moto leaves out the rest, listed in
docs/deploy.md), with the publish flow run on the stack's outputs in between; the query function's
calls checked against its role per search backend; the update path; the state later steps read."""
import ast
import base64
import fnmatch
import functools
import json

import boto3
import pytest

from model_build.stack import TEMPLATE
from tests.conftest import run_moto
from tests.infra import iam_check
from tests.infra.test_templates import load_template

REGION = "us-east-1"
LAMBDA_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search@sha256:" + "cd" * 32
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search@sha256:" + "ab" * 32
# What moto creates of the template in domain-vpc mode (the default), with a query image.
MOTO_RESOURCES = {
    "Bucket", "Repository", "SageMakerRole", "PublisherPolicy", "CodeBuildRole", "BuildLogs", "QueryRole", "QueryLogs",
    "Vpc", "SubnetA", "SubnetB", "QuerySecurityGroup", "ServiceSecurityGroup", "SageMakerRuntimeEndpoint",
    "SearchLogs", "SearchLogsPolicy", "DeployerRole", "DeployerLogs", "Deployer", "ApprovalRule",
    "ApprovalPermission", "QueryFunction",
}
# Left out under Emulator=moto (no CloudFormation support in moto), covered by cfn-lint and checkov.
NOT_IN_MOTO = {"BucketPolicy", "PackageGroup", "BuildProject", "Domain", "CollectionEncryption", "CollectionNetwork",
               "CollectionAccess", "Collection", "QueryUrl", "QueryUrlPublic", "EndpointErrorsAlarm",
               "EndpointLatencyAlarm", "QueryErrorsAlarm", "QueryLatencyAlarm"}


# moto 5.2.5 computes a stack's outputs only in create_stack/update_stack: after a change set runs
# (ChangeSet.apply) the stack reports none. This module's moto server carries that one fix.
_MOTO_WITH_CHANGE_SET_OUTPUTS = """
import sys
from moto.cloudformation import models
_apply = models.ChangeSet.apply
def apply(self):
    _apply(self)
    self.stack.output_map = models.OutputMap(self.stack.resource_map, self.template_dict, self.stack.stack_id)
models.ChangeSet.apply = apply
from moto.server import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory):
    """moto's server (as tests/conftest.py starts it) with the change-set outputs fix."""
    yield from run_moto(tmp_path_factory, "-c", _MOTO_WITH_CHANGE_SET_OUTPUTS)


def test_the_lists_name_every_resource_of_the_template():
    assert MOTO_RESOURCES | NOT_IN_MOTO == set(load_template(TEMPLATE)["Resources"])


@pytest.fixture
def clean(aws):
    """moto without the conftest's bucket and role: the stack makes its own."""
    aws["s3"].delete_bucket(Bucket=aws["bucket"])
    boto3.client("iam", region_name=REGION).delete_role(RoleName="clip-search-sagemaker")
    return aws


def _clients():
    return {name: boto3.client(name, region_name=REGION)
            for name in ("cloudformation", "s3", "ecr", "iam", "lambda", "events", "ec2", "sagemaker", "logs")}


class ApiCalls:
    """Every AWS API call botocore makes in this process (service, operation, parameters), recorded
    at the client's call boundary; `answer` replies to operations moto does not implement
    (DeleteModelPackage, DeleteModelPackageGroup) there, so the request is still checked."""

    def __init__(self):
        self.calls: list[tuple[str, str, dict]] = []
        self.answer: dict[str, dict] = {}
        self.marks: dict[str, int] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = len(self.calls)

    def between(self, start: str, end: str | None = None) -> list[tuple[str, str, dict]]:
        return self.calls[self.marks[start]:self.marks[end] if end else None]


@pytest.fixture
def api_calls(monkeypatch):
    from botocore.client import BaseClient

    recorder = ApiCalls()
    original = BaseClient._make_api_call

    def record(client, operation, params):
        recorder.calls.append((client.meta.service_model.service_name, operation, dict(params)))
        if operation in recorder.answer:
            return recorder.answer[operation]
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    return recorder


def test_stack_then_publish_flow_then_teardown(clean, publish_cli, test_model_tar, catalogue_photos, api_calls):
    c = _clients()
    state_file = clean["tmp"] / "state.json"
    out = publish_cli("stack", "--parameter", "Emulator=moto", "--query-image", LAMBDA_IMAGE)
    assert "change set clip-search-" in out and "(create stack clip-search)" in out
    assert "Add     Bucket" in out and "AWS::S3::Bucket" in out
    assert "stack clip-search: CREATE_COMPLETE" in out

    # moto lists the resources a condition left out with an empty logical id.
    resources = {r["LogicalResourceId"]: r for r in c["cloudformation"].list_stack_resources(
        StackName="clip-search")["StackResourceSummaries"] if r["LogicalResourceId"]}
    assert set(resources) == MOTO_RESOURCES
    state = json.loads(state_file.read_text())
    bucket, role_arn = state["bucket"], state["role_arn"]
    assert f"Bucket={bucket}" in out and f"SageMakerRoleArn={role_arn}" in out
    assert state["repository"] == "clip-search" and state["stack"] == "clip-search"
    assert role_arn.endswith(":role/clip-search-sagemaker")

    # What the stack made, as the services report it.
    encryption = c["s3"].get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert encryption["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    # moto's CloudFormation applies a bucket's encryption and tags only and reads an ECR
    # repository's settings in the API's spelling, not CloudFormation's: versioning, the public
    # access block, scan on push and the lifecycle rule are checked by checkov (tests/infra).
    [repository] = c["ecr"].describe_repositories(repositoryNames=["clip-search"])["repositories"]
    assert state["repository_uri"] == repository["repositoryUri"]
    function = c["lambda"].get_function(FunctionName="clip-search-query")["Configuration"]
    assert function["Role"].endswith(":role/clip-search-query")  # (moto reports PackageType Zip for any function)
    assert function["VpcConfig"]["SubnetIds"] and function["VpcConfig"]["SecurityGroupIds"]
    assert function["Environment"]["Variables"]["CLIP_SEARCH_ENDPOINT"] == "clip-search"
    [rule] = c["events"].list_rules(NamePrefix="clip-search-deploy-on-approval")["Rules"]
    pattern = json.loads(rule["EventPattern"])
    assert pattern["detail-type"] == ["SageMaker Model Package State Change"]
    assert pattern["detail"] == {"ModelPackageGroupName": ["clip-search"], "ModelApprovalStatus": ["Approved"]}
    [target] = c["events"].list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"].endswith(":function:clip-search-deployer")

    policies = deployed_policies(c["iam"])
    for name, policy in policies.items():
        assert iam_check.over_broad(policy) == [], name

    # The publish flow on the stack's outputs: no --bucket, no --role-arn anywhere.
    api_calls.mark("publish")
    out = publish_cli("artifact", "--model", test_model_tar)
    assert f"model_data=s3://{bucket}/clip-search/models/" in out
    publish_cli("register", "--image-uri", IMAGE)
    publish_cli("approve", "--force")
    out = publish_cli("endpoint")
    assert "endpoint clip-search: created" in out
    model_name = c["sagemaker"].list_models()["Models"][0]["ModelName"]
    assert c["sagemaker"].describe_model(ModelName=model_name)["ExecutionRoleArn"] == role_arn
    catalogue = clean["tmp"] / "catalogue.jsonl"
    catalogue.write_text("".join(json.dumps({"id": f"p{i}", "title": p.stem, "image": str(p)}) + "\n"
                                 for i, p in enumerate(catalogue_photos[:3])))
    out = publish_cli("transform", "--catalogue", catalogue)
    assert f"transform_output=s3://{bucket}/clip-search/transform/output/" in out

    # The deployer the approval rule invokes names things as `publish endpoint` does: nothing new.
    api_calls.mark("deployer")
    answer = run_deployer(json.loads(state_file.read_text())["model_package_arn"], role_arn)
    assert answer["action"] == "unchanged" and answer["model"] == model_name

    api_calls.mark("teardown")

    # Least privilege: every call the publish steps made is allowed by the publisher policy (which
    # the CodeBuild role carries), every call of the deployer by the deployer role's policy.
    account = role_arn.split(":")[4]
    publish_calls, deployer_calls = api_calls.between("publish", "deployer"), api_calls.between("deployer", "teardown")
    operations = {op for _, op, _ in publish_calls}
    assert {"PutObject", "CreateModelPackage", "UpdateModelPackage", "CreateModel", "CreateEndpointConfig",
            "CreateEndpoint", "CreateTransformJob", "GetRole"} <= operations
    denied = iam_check.denied(policies["PublisherPolicy"], publish_calls, REGION, account)
    assert denied == [], "\n".join(map(str, denied))
    assert {op for _, op, _ in deployer_calls} >= {"DescribeModelPackage", "DescribeModel", "DescribeEndpoint"}
    assert iam_check.denied(policies["DeployerRole"], deployer_calls, REGION, account) == []
    # ...and the check notices a missing grant: take one action out of the publisher policy.
    trimmed = json.loads(json.dumps(policies["PublisherPolicy"]))
    for statement in trimmed["Statement"]:
        if "sagemaker:CreateEndpointConfig" in statement["Action"]:
            statement["Action"].remove("sagemaker:CreateEndpointConfig")
    missing = iam_check.denied(trimmed, publish_calls, REGION, account)
    assert {(op, action) for op, action, _ in missing} == {("CreateEndpointConfig", "sagemaker:CreateEndpointConfig")}
    # ...or narrows a resource: the artifacts' prefix instead of the bucket's.
    narrowed = json.loads(json.dumps(policies["PublisherPolicy"]))
    for statement in narrowed["Statement"]:
        if statement.get("Sid") == "Artifacts":
            statement["Resource"] = statement["Resource"].replace("/clip-search/*", "/other/*")
    assert ("PutObject", "s3:PutObject") in {(op, a) for op, a, _ in iam_check.denied(narrowed, publish_calls, REGION, account)}

    out = publish_cli("teardown")
    assert "deleted endpoint clip-search" in out and f"deleted model {model_name}" in out
    assert "deleted endpoint config " in out and "deleted stack clip-search" in out
    assert f"kept: bucket {bucket}" in out
    sm = c["sagemaker"]
    assert (sm.list_endpoints()["Endpoints"], sm.list_endpoint_configs()["EndpointConfigs"],
            sm.list_models()["Models"]) == ([], [], [])
    assert [s["StackName"] for s in c["cloudformation"].list_stacks()["StackSummaries"]
            if s["StackStatus"] != "DELETE_COMPLETE"] == []
    assert c["lambda"].list_functions()["Functions"] == []
    assert [r["RoleName"] for r in c["iam"].list_roles()["Roles"] if r["RoleName"].startswith("clip-search")] == []
    assert c["events"].list_rules(NamePrefix="clip-search")["Rules"] == []
    # Kept: the data, the images, the registry.
    assert c["s3"].list_objects_v2(Bucket=bucket)["KeyCount"] > 0
    assert c["ecr"].describe_repositories()["repositories"]
    assert sm.list_model_packages(ModelPackageGroupName="clip-search")["ModelPackageSummaryList"]

    package_arn = json.loads(state_file.read_text())["model_package_arn"]
    api_calls.answer = {"DeleteModelPackage": {}, "DeleteModelPackageGroup": {}}
    api_calls.mark("delete-data")
    out = publish_cli("teardown", "--delete-data")
    assert "stack clip-search: not found" in out and f"deleted bucket {bucket}" in out
    assert "deleted ECR repository clip-search" in out and "deleted model package group clip-search" in out
    assert c["s3"].list_buckets()["Buckets"] == []
    assert c["ecr"].describe_repositories()["repositories"] == []
    deletions = [(op, params) for _, op, params in api_calls.between("delete-data") if op.startswith("DeleteModelPackage")]
    assert deletions == [("DeleteModelPackage", {"ModelPackageName": package_arn}),
                         ("DeleteModelPackageGroup", {"ModelPackageGroupName": "clip-search"})]
    assert f"deleted model package {package_arn}" in out


def _document(document) -> dict:
    """A policy document as moto answers it: a dict, or its text (JSON, or Python's repr of the
    dict CloudFormation resolved)."""
    if isinstance(document, dict):
        return document
    try:
        return json.loads(document)
    except json.JSONDecodeError:
        return ast.literal_eval(document)


def deployed_policies(iam) -> dict[str, dict]:
    """The policies of the stack's roles as moto's IAM holds them (intrinsic functions resolved)."""
    policies = {}
    for logical, role in (("SageMakerRole", "clip-search-sagemaker"), ("QueryRole", "clip-search-query"),
                          ("DeployerRole", "clip-search-deployer"), ("CodeBuildRole", "clip-search-codebuild")):
        statements = []
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            statements += _document(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])["Statement"]
        # moto keeps an `!If [..., AWS::NoValue]` list item as null; CloudFormation drops it.
        policies[logical] = {"Version": "2012-10-17", "Statement": [s for s in statements if s is not None]}
    [managed] = [p for p in iam.list_policies(Scope="Local")["Policies"] if p["PolicyName"] == "clip-search-publisher"]
    version = iam.get_policy_version(PolicyArn=managed["Arn"], VersionId=managed["DefaultVersionId"])
    policies["PublisherPolicy"] = _document(version["PolicyVersion"]["Document"])
    # (moto's CloudFormation does not attach a role's ManagedPolicyArns: read the template for it.)
    codebuild = load_template(TEMPLATE)["Resources"]["CodeBuildRole"]["Properties"]
    assert codebuild["ManagedPolicyArns"] == ["PublisherPolicy"]
    assert all(isinstance(p, dict) and p["Statement"] for p in policies.values())
    return policies


def deployer_source() -> str:
    return load_template(TEMPLATE)["Resources"]["Deployer"]["Properties"]["Code"]["ZipFile"]


def run_deployer(package_arn: str, role_arn: str) -> dict:
    """The deployer's inline code, run here against moto with the event EventBridge delivers."""
    import os
    from unittest import mock

    env = {"PACKAGE_GROUP": "clip-search", "ENDPOINT_NAME": "clip-search", "ROLE_ARN": role_arn,
           "MEMORY_MB": "3072", "MAX_CONCURRENCY": "5"}
    with mock.patch.dict(os.environ, env):
        namespace = {}
        exec(compile(deployer_source(), "deployer/index.py", "exec"), namespace)
        event = {"source": "aws.sagemaker", "detail-type": "SageMaker Model Package State Change",
                 "detail": {"ModelPackageGroupName": "clip-search", "ModelPackageArn": package_arn,
                            "ModelApprovalStatus": "Approved"}}
        return namespace["handler"](event, None)


def test_refuses_without_credentials_or_region(aws, publish_cli, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws["tmp"] / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws["tmp"] / "none"))
    for command in ("stack", "teardown"):
        out = publish_cli(command, expect=1)
        assert out.startswith("Error: AWS: Unable to locate credentials") and out.count("\n") == 1, out
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    out = publish_cli("stack", expect=1)
    assert out == ("Error: no AWS region: give --region, or set AWS_REGION or AWS_DEFAULT_REGION, "
                   "or a region in your AWS profile\n")


def test_bad_parameter_is_one_error_line(aws, publish_cli):
    out = publish_cli("stack", "--parameter", "SearchBackend", expect=1)
    assert out.splitlines()[-1] == "Error: --parameter 'SearchBackend': expected KEY=VALUE (a parameter of clip-search.yaml)"



def test_image_variant_lambda_builds_dockerfile_lambda_and_feeds_publish_stack(aws, publish_cli, monkeypatch):
    """`publish image --variant lambda` builds with build.sh --variant lambda under the -lambda tag and
    records lambda_image_uri (not image_uri, which the model package uses); `publish stack` passes
    it to the template as QueryImageUri."""
    from clip_search import __version__
    from model_build import image
    from tests.publish.test_image_step import DOCKER, RecordingRunner

    monkeypatch.setenv("DOCKER", DOCKER)
    runner = RecordingRunner()
    # Docker commands recorded, not run (test_image_step.py pushes to a real registry).
    monkeypatch.setattr(image, "push_image", functools.partial(image.push_image, run=runner))
    out = publish_cli("image", "--variant", "lambda")
    assert runner.calls[0][0][1:] == [str(image.BUILD_SCRIPT), "--variant", "lambda", "--tag", f"clip-search:{__version__}-lambda"]
    state = json.loads((aws["tmp"] / "state.json").read_text())
    assert "image_uri" not in state and state["lambda_image_uri"].endswith(f"@{runner.digest}")
    assert f"lambda_image_uri={state['lambda_image_uri']}" in out
    out = publish_cli("stack", "--parameter", "Emulator=moto", "--no-execute")
    assert "Add     QueryFunction" in out and "not executed (--no-execute); change set deleted" in out


# ------------------------------------------------------------------ the query function's role
# What the query function calls at run time, per search backend, recorded where it goes over the
# wire: S3 through a recording proxy in front of moto (boto3's presigning, LanceDB's object store
# and the browser following the presigned URL alike), InvokeEndpoint through the recording proxy in
# front of the serving handler, OpenSearch in the stand-in's request log. Each backend gets its own
# stack (moto makes one in about a second): the role's policy differs by SearchBackend.
QUERY_INDEX = "products"
DOMAIN = "clip-search"                 # the template's Name: the domain the role's es:ESHttp* names
COLLECTION = "standin-collection-id"   # a collection's id (the stand-in's host carries none)


@pytest.fixture(scope="module")
def opensearch_spec():
    """Loaded before `clean` (a function fixture) takes CLIP_SEARCH_OPENSEARCH_SPEC out of the environment."""
    from tests.standins.opensearch_spec import load

    return load()


def query_role_calls(stack_env: dict, backend: str, aws: dict, test_encoder, photos, moto_url, monkeypatch, spec):
    """Index three products as the index writer would (not recorded), then drive the query function
    (`clip_search.app.lambda_handler`, configured by the function's environment from the stack) and
    return every AWS call it made: (service, operation, parameters)."""
    import requests

    from clip_search.app import aws as lambda_app
    from clip_search.app import lambda_handler
    from clip_search.search.client import SearchClient
    from clip_search.search.embeddings import LocalEmbedder
    from tests.app.test_lambda import LambdaContext, body_of, json_of, v2_event
    from tests.publish.recording_proxy import HandlerEndpoint, RecordingProxy, S3RecordingProxy, signing_service
    from tests.standins.opensearch_standin import OpenSearchStandIn

    bucket, s3 = stack_env["bucket"], aws["s3"]
    lines = []
    for i, photo in enumerate(photos):
        s3.put_object(Bucket=bucket, Key=f"clip-search/images/{photo.name}", Body=photo.read_bytes())
        lines.append(json.dumps({"id": f"p{i}", "title": photo.stem, "department": "Fruit" if i % 2 else "Packages",
                                 "image": f"s3://{bucket}/clip-search/images/{photo.name}"}) + "\n")
    catalogue = aws["tmp"] / "query-catalogue.jsonl"
    catalogue.write_text("".join(lines))
    variables = stack_env["function_env"]
    standin = None
    if backend == "lancedb":
        index = variables["CLIP_SEARCH_INDEX"]
        assert index == f"s3://{bucket}/clip-search/index/{QUERY_INDEX}" == stack_env["index"]
    else:
        # Under Emulator=moto there is no domain or collection: the function's URL names a stand-in host.
        assert variables["CLIP_SEARCH_INDEX"] == f"https://search.invalid/{QUERY_INDEX}"
        standin = OpenSearchStandIn(aoss=backend == "serverless", spec=spec).start()
        index = f"{standin.url}/{QUERY_INDEX}"
        monkeypatch.setenv("OPENSEARCH_AUTH", "sigv4")
        if backend == "serverless":
            monkeypatch.setenv("OPENSEARCH_SERVICE", "aoss")
    try:
        # As the index writer (CodeBuild, the admin) builds it; the query role's calls start below.
        with SearchClient(index, LocalEmbedder(test_encoder)) as client:
            assert client.index_catalogue(catalogue, progress=False).indexed == len(photos)
        with HandlerEndpoint(test_encoder) as endpoint, RecordingProxy(endpoint.url) as runtime, \
                S3RecordingProxy(moto_url) as s3_proxy:
            monkeypatch.setenv("CLIP_SEARCH_INDEX", index)
            monkeypatch.setenv("CLIP_SEARCH_ENDPOINT", variables["CLIP_SEARCH_ENDPOINT"])
            monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_proxy.url)
            if standin is not None:
                standin.requests.clear()
            lambda_app.reset()
            try:
                def call(event):
                    return lambda_handler(event, LambdaContext())

                answer = json_of(call(v2_event("GET", "/api/search", [("q", photos[0].stem), ("k", 3)])))
                assert len(answer["hits"]) == 3
                photo = photos[1].read_bytes()
                by_photo = json_of(call(v2_event("POST", "/api/search", headers={"content-type": "application/json"},
                                                 body=json.dumps({"image": base64.b64encode(photo).decode(), "k": 1}))))
                assert by_photo["hits"][0]["id"] == "p1"
                assert json_of(call(v2_event("GET", "/api/products/p2")))["title"] == photos[2].stem
                facets = json_of(call(v2_event("GET", "/api/facets")))["facets"]
                assert {f["field"] for f in facets} >= {"department"}
                assert json_of(call(v2_event("GET", "/healthz")))["products"] == len(photos)
                image = call(v2_event("GET", "/api/products/p1/image"))
                assert image["statusCode"] == 307, body_of(image)
                # The browser fetches the presigned URL: signed with the function's credentials.
                fetched = requests.get(image["headers"]["location"], timeout=30)
                assert fetched.status_code == 200 and fetched.content == photo
            finally:
                lambda_app.reset()
        assert standin is None or standin.take_violations() == []
        calls = s3_proxy.calls()
        assert {r["signed_for"] for r in s3_proxy.requests} == {"s3"}
        calls += [("sagemaker-runtime", "InvokeEndpoint", {"EndpointName": r["path"].split("/")[2]})
                  for r in runtime.requests]
        for request in standin.requests if standin else []:
            service = signing_service({"Authorization": request["headers"].get("authorization", "")}, {})
            assert service == ("aoss" if backend == "serverless" else "es"), request
            if backend == "serverless":
                calls.append(("aoss", "APIAccessAll", {"collection": COLLECTION}))
            else:
                calls.append(("es", f"ESHttp{request['method'].title()}",
                              {"method": request["method"], "path": request["path"], "domain": DOMAIN}))
        return calls
    finally:
        if standin is not None:
            standin.stop()


def _without(policy: dict, action: str) -> dict:
    trimmed = json.loads(json.dumps(policy))
    for statement in trimmed["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        statement["Action"] = [a for a in actions if a != action]
    return trimmed


@pytest.mark.parametrize("backend, removed", [("domain-vpc", "es:ESHttpPost"), ("serverless", "aoss:APIAccessAll"),
                                              ("lancedb", "s3:ListBucket")])
def test_query_function_calls_are_allowed_by_its_role(backend, removed, opensearch_spec, clean, publish_cli, test_encoder,
                                                      catalogue_photos, moto_url, monkeypatch):
    publish_cli("stack", "--parameter", "Emulator=moto", "--parameter", f"SearchBackend={backend}",
                "--query-image", LAMBDA_IMAGE)
    c = _clients()
    state = json.loads((clean["tmp"] / "state.json").read_text())
    function = c["lambda"].get_function(FunctionName="clip-search-query")["Configuration"]
    stack_env = {"bucket": state["bucket"], "index": state.get("index"),
                 "function_env": function["Environment"]["Variables"]}
    policy = deployed_policies(c["iam"])["QueryRole"]
    assert iam_check.over_broad(policy) == []

    calls = query_role_calls(stack_env, backend, clean, test_encoder, catalogue_photos[:3], moto_url, monkeypatch,
                             opensearch_spec)
    account = state["role_arn"].split(":")[4]
    by_service = {(service, op) for service, op, _ in calls}
    assert ("sagemaker-runtime", "InvokeEndpoint") in by_service and ("s3", "GetObject") in by_service
    assert {"es": ("es", "ESHttpPost"), "aoss": ("aoss", "APIAccessAll"),
            "s3": ("s3", "ListObjectsV2")}[removed.split(":")[0]] in by_service
    denied = iam_check.denied(policy, calls, REGION, account)
    assert denied == [], "\n".join(map(str, denied))
    # The listing condition (s3:prefix under the index) holds too: parliament does not evaluate conditions.
    for statement in policy["Statement"]:
        if statement.get("Sid") == "ListIndex":
            [pattern] = iam_check._as_list(statement["Condition"]["StringLike"]["s3:prefix"])
            prefixes = [params.get("Prefix", "") for _, op, params in calls if op.startswith("List")]
            assert prefixes and all(fnmatch.fnmatchcase(p, pattern) for p in prefixes), (pattern, prefixes)

    # ...and the check notices a missing grant: without InvokeEndpoint, without the backend's action.
    for action in ("sagemaker:InvokeEndpoint", removed):
        missing = {a for _, a, _ in iam_check.denied(_without(policy, action), calls, REGION, account)}
        assert missing == {action}, (action, missing)


def test_later_steps_take_the_stacks_names_and_index(clean, publish_cli, test_model_tar):
    """A stack with its own names: the steps after `publish stack` take its prefix, repository,
    package group and index URL from the state; what the user gives still wins."""
    from model_build.config import State, load_config

    publish_cli("stack", "--parameter", "Emulator=moto", "--parameter", "Name=shop-search", "--parameter", "Prefix=shop",
                "--parameter", "PackageGroupName=shop-models", "--parameter", "SearchBackend=lancedb")
    state = json.loads((clean["tmp"] / "state.json").read_text())
    bucket = state["bucket"]
    assert state["index"] == f"s3://{bucket}/shop/index/products"
    config = State(clean["tmp"] / "state.json").fill(load_config({}))
    assert (config.prefix, config.repository, config.package_group) == ("shop", "shop-search", "shop-models")
    assert config.role_arn.endswith(":role/shop-search-sagemaker")
    given = State(clean["tmp"] / "state.json").fill(load_config({"prefix": "mine", "repository": "theirs"}))
    assert (given.prefix, given.repository, given.package_group) == ("mine", "theirs", "shop-models")
    assert f"model_data=s3://{bucket}/shop/models/" in publish_cli("artifact", "--model", test_model_tar)
    # `publish pipeline catalogue upsert` takes the index from the state: tests/publish/test_pipelines_cli.py.


def test_update_goes_through_an_update_change_set_and_rewrites_the_state(clean, publish_cli, api_calls):
    """`publish stack` on an existing stack: an UPDATE change set, parameters not given keep their
    values, the outputs replace the state's (an output gone clears its entry). moto executes the
    change set and recomputes parameters and outputs, but does not apply changed resource
    properties (docs/deploy.md): what an update does to resources is AWS's, not tested here."""
    cfn = boto3.client("cloudformation", region_name=REGION)
    state_file = clean["tmp"] / "state.json"
    # (From the default domain-vpc, with the query function: moto's update fails on a resource its
    # condition left out of the stack, e.g. the security groups outside domain-vpc.)
    publish_cli("stack", "--parameter", "Emulator=moto", "--query-image", LAMBDA_IMAGE)
    state = json.loads(state_file.read_text())
    assert state["index"] is None  # no domain under Emulator=moto
    bucket = state["bucket"]

    api_calls.mark("shown")
    out = publish_cli("stack", "--parameter", "SearchBackend=lancedb", "--no-execute")
    assert "(update stack clip-search)" in out and "not executed (--no-execute); change set deleted" in out
    [created] = [params for _, op, params in api_calls.between("shown") if op == "CreateChangeSet"]
    assert created["ChangeSetType"] == "UPDATE"
    given = {p["ParameterKey"]: p.get("ParameterValue", "previous") for p in created["Parameters"]
             if "ParameterValue" in p or p.get("UsePreviousValue")}
    previous = {p["ParameterKey"] for p in cfn.describe_stacks(StackName="clip-search")["Stacks"][0]["Parameters"]}
    assert given == {**{k: "previous" for k in previous - {"SearchBackend"}}, "SearchBackend": "lancedb"}
    assert [params["ChangeSetName"] for _, op, params in api_calls.between("shown") if op == "DeleteChangeSet"] \
        == [created["ChangeSetName"]]
    assert json.loads(state_file.read_text()) == state  # not executed: the state is as it was

    for backend, index in (("lancedb", f"s3://{bucket}/clip-search/index/products"), ("serverless", None)):
        out = publish_cli("stack", "--parameter", f"SearchBackend={backend}")
        assert "(update stack clip-search)" in out and "stack clip-search: UPDATE_COMPLETE" in out
        parameters = {p["ParameterKey"]: p["ParameterValue"]
                      for p in cfn.describe_stacks(StackName="clip-search")["Stacks"][0]["Parameters"]}
        assert parameters["SearchBackend"] == backend
        assert parameters["Emulator"] == "moto" and parameters["QueryImageUri"] == LAMBDA_IMAGE  # kept
        state = json.loads(state_file.read_text())
        assert state["bucket"] == bucket and state["index"] == index, backend  # serverless: the lancedb URL is gone
