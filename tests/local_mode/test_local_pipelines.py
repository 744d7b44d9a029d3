"""Both SageMaker Pipelines run by the SDK's LocalPipelineSession, their jobs in Docker.

- The catalogue refresh (pipeline.upsert + pipeline.start, nothing swapped): FindChanges and
  LoadEmbeddings/ApplyDeletions are processing jobs in the processing image (container/build.sh
  --variant processing: the serving image + LanceDB/Arrow + opensearch-py), CreateModel is the
  local client's, EncodeChanged is a local Batch Transform in the serving image the model package
  names. On 8 real photos: the first run encodes all; the next (2 changed, 1 added, 1 removed)
  encodes 3 and deletes 1, counted from the transform's own output; the index (LanceDB on moto's
  S3) then holds exactly the catalogue.
- The model build, its condition both ways: EvaluateModel runs in the processing image and
  RecallGate reads its property file; two steps are swapped, and say so in their properties
  (`InProcessEquivalent`): PackageModel (it needs torch, which is in the `full` image, not in the
  image CI builds) hands on the session's packaged test model (`package-model --test-model`, made
  once for the container tier) after checking the step asked for exactly that, and RegisterModel
  (local pipelines refuse it: "Unsupported step type") calls CreateModelPackage on moto with the
  step's evaluated arguments. The job itself (jobs.package) runs in the server tier's in-process
  run of this pipeline (tests/publish/test_pipelines.py).

Networking: local mode runs containers with docker-compose on its "sagemaker-local" bridge network,
from which 127.0.0.1 is the container itself. moto (S3, SageMaker) listens on that network's gateway
address instead, for this module only, and the jobs get it as AWS_ENDPOINT_URL (the pipeline's
`environment`); this process uses the same URL. The daemon here runs with --iptables=false, so
nothing is forwarded: the gateway address is the host's own interface on that bridge.
"""
import json
import os
import shutil
from pathlib import Path

import boto3
import pytest

from tests.container.docker_helpers import DOCKER, IMAGE, docker, problem

pytestmark = pytest.mark.local_mode

PROCESSING_IMAGE = os.environ.get("CLIP_SEARCH_PROCESSING_IMAGE", "clip-search:processing")
NETWORK = "sagemaker-local"  # the name the SDK's docker-compose file gives its network
REGION = "us-east-1"
BUCKET = "clip-search-local-pipelines"
GROUP = "clip-search-local"
TELEMETRY_OFF = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
SAGEMAKER_TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def _gateway() -> str:
    """The gateway address of the SDK's network, made now if no local-mode run has made it yet
    (docker-compose then uses it as it is: it only warns about labels it would have set)."""
    if docker("network", "inspect", NETWORK, check=False).returncode != 0:
        created = docker("network", "create", NETWORK, check=False)
        if created.returncode != 0 and docker("network", "inspect", NETWORK, check=False).returncode != 0:
            raise RuntimeError(created.stderr)
    return docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", NETWORK).stdout.strip()


@pytest.fixture(scope="module")
def local(tmp_path_factory, serving_model_tar):
    """moto on the gateway, a bucket, a role, the test model as the group's latest Approved package,
    and a LocalPipelineSession. -> dict(session, s3, sm, role_arn, env, home)."""
    reason = problem()
    if reason:
        pytest.fail(reason)
    if docker("image", "inspect", PROCESSING_IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {PROCESSING_IMAGE} not built: container/build.sh --variant processing "
                    "(container/ci_setup.sh builds it)")
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose not installed (apt-get install -y docker-compose)")
    from clip_search.serving.server import free_port
    from tests.conftest import run_moto

    home = tmp_path_factory.mktemp("local-pipelines")
    (home / "sdk-config.yaml").write_text(TELEMETRY_OFF)
    moto = run_moto(tmp_path_factory, "-m", "moto.server", host=_gateway())
    moto_url = next(moto)
    # The jobs' environment: local mode adds the session's credentials itself (twice is refused).
    env = {"AWS_ENDPOINT_URL": moto_url, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in list(os.environ):
                if name.startswith("AWS_"):
                    patch.delenv(name)
            for name, value in {**env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                                "AWS_EC2_METADATA_DISABLED": "true",
                                "AWS_CONFIG_FILE": str(home / "aws-config"),
                                "SAGEMAKER_USER_CONFIG_OVERRIDE": str(home / "sdk-config.yaml"),
                                "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(home / "sdk-config.yaml"),
                                "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
                                # The SDK runs `docker` from PATH: the Debian client of our dockerd.
                                "PATH": f"{Path(DOCKER).parent}{os.pathsep}{os.environ['PATH']}"}.items():
                patch.setenv(name, value)
            from model_build.pipelines.common import sdk

            sdk()
            from sagemaker.workflow.pipeline_context import LocalPipelineSession

            boto_session = boto3.Session(region_name=REGION)
            s3, sm = boto_session.client("s3"), boto_session.client("sagemaker")
            s3.create_bucket(Bucket=BUCKET)
            role_arn = boto_session.client("iam").create_role(
                RoleName="clip-search-sagemaker", AssumeRolePolicyDocument=SAGEMAKER_TRUST)["Role"]["Arn"]
            s3.upload_file(str(serving_model_tar), BUCKET, "models/model.tar.gz")
            sm.create_model_package_group(ModelPackageGroupName=GROUP)
            sm.create_model_package(
                ModelPackageGroupName=GROUP, ModelApprovalStatus="Approved",
                InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/models/model.tar.gz"}],
                                        "SupportedContentTypes": ["application/jsonlines"],
                                        "SupportedResponseMIMETypes": ["application/jsonlines"]})
            session = LocalPipelineSession(boto_session=boto_session, default_bucket=BUCKET)
            session.config = {"local": {"local_code": True, "serving_port": free_port(),
                                        "container_root": str(home)}}
            before = _compose_containers()
            yield {"session": session, "s3": s3, "sm": sm, "role_arn": role_arn, "env": env, "home": home,
                   "moto": moto_url}
            leftovers = _compose_containers() - before  # the SDK stops its containers, leaves them behind
            if leftovers:
                docker("rm", "-f", *sorted(leftovers), check=False)
    finally:
        next(moto, None)  # stops moto


def _compose_containers() -> set[str]:
    listed = docker("ps", "-a", "--filter", "label=com.docker.compose.project", "--filter", f"ancestor={IMAGE}",
                    "--filter", f"ancestor={PROCESSING_IMAGE}", "--format", "{{.ID}}").stdout
    return set(listed.split())


def _split(uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def _read_json(s3, uri):
    return json.loads(s3.get_object(Bucket=_split(uri)[0], Key=_split(uri)[1])["Body"].read())


def _objects(s3, uri):
    bucket, prefix = _split(uri)
    return [entry["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for entry in page.get("Contents", [])]


def _upload_catalogue(s3, folder, prefix="catalogue"):
    for key in _objects(s3, f"s3://{BUCKET}/{prefix}/"):
        s3.delete_object(Bucket=BUCKET, Key=key)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder)}")


def _durations(execution) -> str:
    """Seconds per step that ran (printed: shown when a test fails, or with -s)."""
    return ", ".join(f"{name} {(step.end_time - step.start_time):.1f} s" for name, step in execution.step_execution.items()
                     if step.start_time and step.end_time)


def _encoded(s3, execution) -> list[dict]:
    """The records the local Batch Transform answered (its *.out files), [] when it did not run."""
    step = execution.step_execution["EncodeChanged"]
    if step.status is None:
        return []
    output = step.properties["TransformOutput"]["S3OutputPath"]
    return [json.loads(line) for key in _objects(s3, output.rstrip("/") + "/") if key.endswith(".out")
            for line in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().splitlines() if line.strip()]


def test_catalogue_pipeline_in_docker_encodes_only_what_changed(local, tmp_path):
    from clip_search.search.index import open_index
    from model_build.pipelines import catalogue
    from tests.search.test_incremental import Shop

    s3, index_location = local["s3"], f"s3://{BUCKET}/index"
    pipeline = catalogue.get_pipeline(role=local["role_arn"], default_bucket=BUCKET, image_uri=PROCESSING_IMAGE,
                                      sagemaker_session=local["session"], environment=local["env"])
    pipeline.upsert(role_arn=local["role_arn"])
    shop = Shop(tmp_path / "shop")
    parameters = {"CatalogueUri": f"s3://{BUCKET}/catalogue/", "Index": index_location, "ModelPackageGroup": GROUP,
                  "MaxFailureRate": 0.0, "ProcessingInstanceType": "local", "TransformInstanceType": "local"}

    def refresh():
        _upload_catalogue(s3, shop.folder)
        execution = pipeline.start(parameters=parameters)
        print("catalogue refresh:", _durations(execution))
        failed = {name: step.failure_reason for name, step in execution.step_execution.items() if step.failure_reason}
        assert execution.status == "Succeeded", (execution.failure_reason, failed)
        load = next(execution.step_execution[name] for name in ("LoadEmbeddings", "ApplyDeletions")
                    if execution.step_execution[name].status == "Succeeded")
        report = _read_json(s3, load.properties["ProcessingOutputConfig"]["Outputs"]["report"]["S3Output"]["S3Uri"]
                            + "/report.json")
        with open_index(index_location) as index:
            hashes = index.content_hashes()
        assert set(hashes) == set(shop.rows) and all(hashes.values())  # exactly the catalogue
        return execution, report

    first, report = refresh()
    assert first.step_execution["FindChanges"].properties["ProcessingJobStatus"] == "Completed"
    assert first.step_execution["FindChanges"].properties["AppSpecification"]["ImageUri"] == PROCESSING_IMAGE
    encoded = _encoded(s3, first)
    assert sorted(r["id"] for r in encoded) == sorted([f"i:{i}" for i in shop.rows] + [f"t:{i}" for i in shop.rows])
    assert all(len(r["embedding"]) > 0 and "error" not in r for r in encoded)
    assert {key: report[key] for key in ("added", "updated", "deleted", "unchanged", "failed")} == {
        "added": 8, "updated": 0, "deleted": 0, "unchanged": 0, "failed": 0}

    day = shop.change_next_day()
    second, report = refresh()
    encoded_ids = {r["id"][2:] for r in _encoded(s3, second)}  # "i:ID" / "t:ID"
    assert encoded_ids == {*day["changed"], day["added"]} and len(_encoded(s3, second)) == 6
    assert {key: report[key] for key in ("added", "updated", "deleted", "unchanged", "failed")} == {
        "added": 1, "updated": 2, "deleted": 1, "unchanged": 5, "failed": 0}
    with open_index(index_location) as index:
        assert day["removed"] not in index.content_hashes()
        assert index.count() == 8


class _PackagedTestModel:
    """PackageModel's equivalent: the session's test model artifact, put where the step's output
    goes, if the step's evaluated arguments ask for the test model in that artifact's runtime."""

    def __init__(self, artifact: Path):
        from clip_search.artifact import read_packed_manifest

        self.artifact, self.manifest = artifact, read_packed_manifest(artifact)

    def executor(self, pipeline_executor, step):
        from sagemaker.local.pipeline import _StepExecutor

        artifact, manifest = self.artifact, self.manifest

        class Executor(_StepExecutor):
            def execute(self):
                arguments = self.pipline_executor.evaluate_step_arguments(self.step)
                given = arguments["AppSpecification"]["ContainerArguments"]
                options = dict(zip(given[::2], given[1::2], strict=True))
                if options.get("--test-model") != "true" or options.get("--runtime") != manifest["runtime"]:
                    self.pipline_executor.execution.update_step_failure(
                        self.step.name, f"the equivalent has the {manifest['runtime']} test model only, not {options}")
                    return None
                output = arguments["ProcessingOutputConfig"]["Outputs"][0]
                uri = output["S3Output"]["S3Uri"].rstrip("/")
                boto3.client("s3").upload_file(str(artifact), *_split(f"{uri}/model.tar.gz"))
                return {"ProcessingOutputConfig": {"Outputs": {output["OutputName"]: {
                            "OutputName": output["OutputName"], "S3Output": {"S3Uri": uri}}}},
                        "ProcessingJobStatus": "Completed",
                        "InProcessEquivalent": "the session's `package-model --test-model` artifact, packaged once "
                                               "(torch is in the full image only)"}

        return Executor(pipeline_executor, step)


def test_model_pipeline_gate_both_ways_in_docker(local, serving_model_tar, tmp_path):
    from clip_search.demo_data import GROCERY as DEMO_DATA
    from model_build.pipelines import model
    from tests.publish.pipelines_in_process import run_in_local_mode

    s3, sm = local["s3"], local["sm"]
    s3.upload_file(str(DEMO_DATA / "products.jsonl"), BUCKET, "eval/catalogue/products.jsonl")
    for photo in sorted((DEMO_DATA / "images").iterdir()):
        s3.upload_file(str(photo), BUCKET, f"eval/catalogue/images/{photo.name}")
    s3.upload_file(str(DEMO_DATA / "text-queries.jsonl"), BUCKET, "eval/queries/text-queries.jsonl")
    group = "clip-search-local-model"
    pipeline = model.get_pipeline(role=local["role_arn"], default_bucket=BUCKET, full_image_uri=PROCESSING_IMAGE,
                                  serving_image_uri=IMAGE, sagemaker_session=local["session"],
                                  environment=local["env"])
    parameters = {"EvaluationCatalogueUri": f"s3://{BUCKET}/eval/catalogue/",
                  "EvaluationQueriesUri": f"s3://{BUCKET}/eval/queries/", "TestModel": "true",
                  "MinRecallAt10": 0.0, "ModelPackageGroup": group, "ProcessingInstanceType": "local"}
    packaged = _PackagedTestModel(serving_model_tar)
    parameters["Runtime"] = packaged.manifest["runtime"]

    passed = run_in_local_mode(pipeline, parameters, tmp_path / "pass", local["session"], "pass",
                               swapped={"PackageModel": packaged.executor})
    steps = passed.step_execution
    print("model build (passes):", _durations(passed))
    assert passed.status == "Succeeded", (passed.failure_reason, {n: s.failure_reason for n, s in steps.items()})
    assert steps["EvaluateModel"].properties["AppSpecification"]["ImageUri"] == PROCESSING_IMAGE  # in Docker
    assert "InProcessEquivalent" not in steps["EvaluateModel"].properties
    assert steps["PackageModel"].properties["InProcessEquivalent"]
    assert steps["RegisterModel-RegisterModel"].properties["InProcessEquivalent"]  # ModelStep names it so
    assert steps["RecallGate"].properties["Outcome"] is True and steps["RecallTooLow"].status is None
    evaluation = steps["EvaluateModel"].properties["ProcessingOutputConfig"]["Outputs"]["evaluation"]["S3Output"]["S3Uri"]
    figure = _read_json(s3, evaluation + "/gate.json")["recall_at_10"]
    assert 0 <= figure < 1
    packages = sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert len(packages) == 1
    registered = sm.describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])
    assert registered["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == evaluation + "/evaluation.json"

    threshold = round(figure + 0.01, 4)
    failed = run_in_local_mode(pipeline, {**parameters, "MinRecallAt10": threshold}, tmp_path / "fail",
                               local["session"], "fail", swapped={"PackageModel": packaged.executor})
    print("model build (fails):", _durations(failed))
    assert failed.status == "Failed"
    assert failed.step_execution["RecallGate"].properties["Outcome"] is False
    message = f"text recall@10 {figure} is below MinRecallAt10 {threshold} - not registered"
    assert failed.failure_reason == f"Step 'RecallTooLow' failed with message: {message}"
    assert failed.step_execution["RegisterModel-RegisterModel"].status is None
    assert len(sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]) == 1
