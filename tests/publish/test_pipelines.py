"""The two SageMaker Pipelines (model_build/pipelines): their definitions as moto's SageMaker takes
them (CreatePipeline, UpdatePipeline, StartPipelineExecution), every reference in them resolvable,
and the model pipeline's recall gate both ways, run by the SDK's own local executor with the
processing jobs and the register step swapped for in-process equivalents
(tests/publish/pipelines_in_process.py)."""
import json

import boto3
import pytest

from clip_search.demo_data import GROCERY as DEMO_DATA
from tests.publish.conftest import BUCKET, REGION

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search:0.1.0"
FULL_IMAGE = IMAGE + "-full"


@pytest.fixture
def session(aws):
    from model_build.pipelines.common import sdk

    sdk()
    from sagemaker.workflow.pipeline_context import PipelineSession

    return PipelineSession(boto_session=boto3.Session(region_name=REGION), default_bucket=BUCKET)


def catalogue_pipeline(aws, session):
    from model_build.pipelines import catalogue

    return catalogue.get_pipeline(role=aws["role_arn"], default_bucket=BUCKET, image_uri=IMAGE, sagemaker_session=session)


def model_pipeline(aws, session):
    from model_build.pipelines import model

    return model.get_pipeline(role=aws["role_arn"], default_bucket=BUCKET, full_image_uri=FULL_IMAGE,
                              serving_image_uri=IMAGE, sagemaker_session=session)


def _steps(steps):
    for step in steps:
        yield step
        yield from _steps(step.get("Arguments", {}).get("IfSteps", []))
        yield from _steps(step.get("Arguments", {}).get("ElseSteps", []))


def _references(node):
    if isinstance(node, dict):
        if set(node) == {"Get"}:
            yield node["Get"]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def check_references(definition: dict) -> dict:
    """Every Get names a declared parameter, an execution variable, or a step (and a property file
    that step declares); step names are unique. -> {step name: step}."""
    steps = list(_steps(definition["Steps"]))
    by_name = {step["Name"]: step for step in steps}
    assert len(by_name) == len(steps), "step names must be unique"
    parameters = {parameter["Name"] for parameter in definition["Parameters"]}
    for reference in _references(definition):
        kind, name, *rest = reference.split(".")
        if kind == "Parameters":
            assert name in parameters, reference
        elif kind == "Steps":
            assert name in by_name, reference
            if rest and rest[0] == "PropertyFiles":
                declared = {f["PropertyFileName"] for f in by_name[name].get("PropertyFiles", [])}
                assert rest[1] in declared, reference
        else:
            assert kind == "Execution", reference
    return by_name


@pytest.mark.parametrize("which", ["catalogue", "model"])
def test_definition_is_json_that_moto_takes_on_create_update_and_start(aws, session, which):
    pipeline = catalogue_pipeline(aws, session) if which == "catalogue" else model_pipeline(aws, session)
    definition = pipeline.definition()
    parsed = json.loads(definition)
    check_references(parsed)
    sm = aws["sm"]
    sm.create_pipeline(PipelineName=pipeline.name, PipelineDefinition=definition, RoleArn=aws["role_arn"])
    sm.update_pipeline(PipelineName=pipeline.name, PipelineDefinition=definition, RoleArn=aws["role_arn"],
                       PipelineDescription="updated")
    described = sm.describe_pipeline(PipelineName=pipeline.name)
    assert json.loads(described["PipelineDefinition"]) == parsed and described["PipelineDescription"] == "updated"
    first = parsed["Parameters"][0]
    arn = sm.start_pipeline_execution(PipelineName=pipeline.name, PipelineParameters=[
        {"Name": first["Name"], "Value": str(first["DefaultValue"])}])["PipelineExecutionArn"]
    assert sm.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineArn"] == described["PipelineArn"]
    assert sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"] == [
        {"Name": first["Name"], "Value": str(first["DefaultValue"])}]
    # The SDK's own upsert (what `publish pipeline upsert` calls) goes through on the existing pipeline.
    assert pipeline.upsert(role_arn=aws["role_arn"])["PipelineArn"] == described["PipelineArn"]


def test_catalogue_pipeline_encodes_changed_products_only_and_gates_failures(aws, session):
    steps = check_references(json.loads(catalogue_pipeline(aws, session).definition()))
    find, anything = steps["FindChanges"], steps["AnythingToEncode"]
    assert find["Arguments"]["AppSpecification"]["ImageUri"] == IMAGE
    assert find["Arguments"]["AppSpecification"]["ContainerEntrypoint"][-1] == "find-changes"
    assert [s["Name"] for s in anything["Arguments"]["IfSteps"]] == ["CreateModel-CreateModel", "EncodeChanged",
                                                                     "LoadEmbeddings", "CheckFailures"]
    assert [s["Name"] for s in anything["Arguments"]["ElseSteps"]] == ["ApplyDeletions", "CheckFailuresNoEncode"]
    transform = steps["EncodeChanged"]["Arguments"]
    # Only FindChanges' transform input (the changed products), line by line, answers assembled by line.
    source = transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    assert source == {"Get": "Steps.FindChanges.ProcessingOutputConfig.Outputs['transform'].S3Output.S3Uri"}
    assert (transform["TransformInput"]["SplitType"], transform["TransformOutput"]["AssembleWith"],
            transform["BatchStrategy"]) == ("Line", "Line", "MultiRecord")
    embeddings = next(i for i in steps["LoadEmbeddings"]["Arguments"]["ProcessingInputs"] if i["InputName"] == "embeddings")
    assert embeddings["S3Input"]["S3Uri"] == {"Get": "Steps.EncodeChanged.TransformOutput.S3OutputPath"}
    for check, fail in (("CheckFailures", "TooManyFailures"), ("CheckFailuresNoEncode", "TooManyFailuresNoEncode")):
        condition = steps[check]["Arguments"]["Conditions"][0]
        assert condition["Type"] == "GreaterThan" and condition["RightValue"] == {"Get": "Parameters.MaxFailureRate"}
        assert [s["Name"] for s in steps[check]["Arguments"]["IfSteps"]] == [fail]


@pytest.fixture
def evaluation_data(aws):
    """The demo catalogue (real photos) and its text queries in moto's S3, where the parameters point."""
    s3 = aws["s3"]
    s3.upload_file(str(DEMO_DATA / "products.jsonl"), BUCKET, "eval/catalogue/products.jsonl")
    for photo in sorted((DEMO_DATA / "images").iterdir()):
        s3.upload_file(str(photo), BUCKET, f"eval/catalogue/images/{photo.name}")
    s3.upload_file(str(DEMO_DATA / "text-queries.jsonl"), BUCKET, "eval/queries/text-queries.jsonl")
    return {"EvaluationCatalogueUri": f"s3://{BUCKET}/eval/catalogue/", "EvaluationQueriesUri": f"s3://{BUCKET}/eval/queries/"}


def _read_json(s3, uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_model_pipeline_registers_above_the_gate_and_fails_below_it_with_the_figure(aws, session, evaluation_data, tmp_path):
    from clip_search.artifact import read_packed_manifest
    from tests.publish.pipelines_in_process import run_pipeline

    pipeline = model_pipeline(aws, session)
    # Runtime torch: the gate is the point here, not the export (package-model's tests export and
    # guard every runtime); each run packages the model, and an export + guard would double its time.
    parameters = {**evaluation_data, "TestModel": "true", "Runtime": "torch", "MinRecallAt10": 0.0,
                  "ModelPackageGroup": "clip-search-pipeline-test"}
    passed = run_pipeline(pipeline, parameters, tmp_path / "pass", session, "pass")
    assert passed.status == "Succeeded", passed.failure_reason
    steps = passed.step_execution
    assert steps["RecallGate"].properties["Outcome"] is True
    assert steps["RecallTooLow"].status is None  # never ran
    packages = aws["sm"].list_model_packages(ModelPackageGroupName="clip-search-pipeline-test")["ModelPackageSummaryList"]
    assert len(packages) == 1
    package = aws["sm"].describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])
    container = package["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == IMAGE
    # The registered artifact is the one PackageModel made, and its metrics are EvaluateModel's report of it.
    artifact = tmp_path / "registered.tar.gz"
    bucket, _, key = container["ModelDataUrl"][len("s3://"):].partition("/")
    aws["s3"].download_file(bucket, key, str(artifact))
    manifest = read_packed_manifest(artifact)
    model_id = manifest["model_id"]
    assert manifest["runtime"] == "torch"  # the Runtime parameter reached PackageModel (its default is auto)
    statistics = package["ModelMetrics"]["ModelQuality"]["Statistics"]
    report = _read_json(aws["s3"], statistics["S3Uri"])
    assert statistics["ContentType"] == "application/json" and report["model_id"] == model_id
    figure = report["metrics"]["text"]["recall@10"]
    assert 0 <= figure < 1

    threshold = round(figure + 0.01, 4)
    failed = run_pipeline(pipeline, {**parameters, "MinRecallAt10": threshold}, tmp_path / "fail", session, "fail")
    assert failed.status == "Failed"
    assert failed.step_execution["RecallGate"].properties["Outcome"] is False
    again = _read_json(aws["s3"], failed.step_execution["EvaluateModel"].properties["ProcessingOutputConfig"]
                       ["Outputs"]["evaluation"]["S3Output"]["S3Uri"] + "/gate.json")
    assert again["recall_at_10"] == figure  # the same random model and data: the same figure
    message = f"text recall@10 {figure} is below MinRecallAt10 {threshold} - not registered"
    assert failed.step_execution["RecallTooLow"].properties["ErrorMessage"] == message
    assert failed.failure_reason == f"Step 'RecallTooLow' failed with message: {message}"
    assert len(aws["sm"].list_model_packages(ModelPackageGroupName="clip-search-pipeline-test")
               ["ModelPackageSummaryList"]) == 1  # nothing registered below the gate
