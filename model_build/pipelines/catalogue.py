"""The catalogue refresh pipeline: encode only what changed, keep the index equal to the catalogue.

    FindChanges (Processing: hash photo bytes + title + model id, compare with the index)
      -> AnythingToEncode? (Condition: changes.json to_encode > 0)
           yes: CreateModel (from the model package) -> EncodeChanged (Batch Transform over the
                changed products only, our image) -> LoadEmbeddings (Processing: upsert changed,
                delete removed) -> CheckFailures (Condition) -> TooManyFailures (Fail)
           no:  ApplyDeletions (Processing: delete removed) -> CheckFailuresNoEncode -> TooManyFailuresNoEncode

Parameters: CatalogueUri (an s3:// folder holding products.jsonl / .csv and the photos it names by
relative path), ModelPackage (an ARN, or "latest": the latest Approved package of
ModelPackageGroup), Index (an OpenSearch URL ending in the index name, or a LanceDB s3:// prefix),
MaxFailureRate (failed / products above it fails the execution), and the instance types. The load
step writes report.json (added, updated, deleted, unchanged, failed, failure_rate) as the property
file `RefreshReport`.
"""
from __future__ import annotations

from model_build.pipelines.common import job_processor, pipeline_session, retries, sdk

PIPELINE_NAME = "clip-search-catalogue"
JSONLINES = "application/jsonlines"
PROCESSING = "/opt/ml/processing"


def get_pipeline(region: str | None = None, role: str | None = None, default_bucket: str | None = None,
                 image_uri: str | None = None, pipeline_name: str = PIPELINE_NAME, base_job_prefix: str = "clip-search",
                 model_package_group_name: str = "clip-search", index: str | None = None,
                 sagemaker_session=None, max_payload_mb: int = 6,
                 environment: dict | None = None):
    """The catalogue refresh pipeline. `image_uri`: the image the processing jobs run in; they open
    the index, so the processing image (container/build.sh --variant processing: the serving image
    plus LanceDB/Arrow and opensearch-py); the transform runs the model package's own image.
    `sagemaker_session`: a PipelineSession (default, for `region`) or a LocalPipelineSession.
    `environment`: the processing jobs' variables (e.g. AWS_ENDPOINT_URL for an S3-compatible store)."""
    sdk()
    from sagemaker.model import Model
    from sagemaker.processing import ProcessingInput, ProcessingOutput
    from sagemaker.transformer import Transformer
    from sagemaker.workflow.condition_step import ConditionStep
    from sagemaker.workflow.conditions import ConditionGreaterThan
    from sagemaker.workflow.execution_variables import ExecutionVariables
    from sagemaker.workflow.fail_step import FailStep
    from sagemaker.workflow.functions import Join, JsonGet
    from sagemaker.workflow.model_step import ModelStep
    from sagemaker.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
    from sagemaker.workflow.pipeline import Pipeline
    from sagemaker.workflow.properties import PropertyFile
    from sagemaker.workflow.steps import ProcessingStep, TransformStep

    session = pipeline_session(region, default_bucket, sagemaker_session)
    bucket = default_bucket or session.default_bucket()
    if image_uri is None:
        raise ValueError("image_uri: the clip-search image (publish image) the steps run in")
    catalogue_uri = ParameterString("CatalogueUri", default_value=f"s3://{bucket}/{base_job_prefix}/catalogue/")
    model_package = ParameterString("ModelPackage", default_value="latest")
    package_group = ParameterString("ModelPackageGroup", default_value=model_package_group_name)
    index_location = ParameterString("Index", default_value=index or f"s3://{bucket}/{base_job_prefix}/index")
    max_failure_rate = ParameterFloat("MaxFailureRate", default_value=0.01)
    processing_type = ParameterString("ProcessingInstanceType", default_value="ml.m5.xlarge")
    transform_type = ParameterString("TransformInstanceType", default_value="ml.m5.xlarge")
    transform_count = ParameterInteger("TransformInstanceCount", default_value=1)
    run_folder = Join(on="/", values=["s3:/", bucket, base_job_prefix, "catalogue-refresh",
                                      ExecutionVariables.PIPELINE_EXECUTION_ID])

    def processor(step):
        return job_processor(step, image_uri, role, processing_type, session, f"{base_job_prefix}-{step}",
                             environment=environment)

    changes_file = PropertyFile(name="Changes", output_name="changes", path="changes.json")
    find = ProcessingStep(
        name="FindChanges",
        step_args=processor("find-changes").run(
            inputs=[ProcessingInput(source=catalogue_uri, destination=f"{PROCESSING}/input/catalogue",
                                    input_name="catalogue")],
            outputs=[ProcessingOutput(output_name="transform", source=f"{PROCESSING}/output/transform",
                                      destination=Join(on="/", values=[run_folder, "transform-input"])),
                     ProcessingOutput(output_name="changes", source=f"{PROCESSING}/output/changes",
                                      destination=Join(on="/", values=[run_folder, "changes"]))],
            arguments=["--index", index_location, "--model-package", model_package, "--package-group", package_group]),
        property_files=[changes_file], retry_policies=retries())
    changes_uri = find.properties.ProcessingOutputConfig.Outputs["changes"].S3Output.S3Uri

    def load_step(name, embeddings_uri=None):
        report_file = PropertyFile(name=f"{name}Report", output_name="report", path="report.json")
        inputs = [ProcessingInput(source=changes_uri, destination=f"{PROCESSING}/input/changes", input_name="changes")]
        if embeddings_uri is not None:
            inputs.append(ProcessingInput(source=embeddings_uri, destination=f"{PROCESSING}/input/embeddings",
                                          input_name="embeddings"))
        step = ProcessingStep(
            name=name,
            step_args=processor("load").run(
                inputs=inputs,
                outputs=[ProcessingOutput(output_name="report", source=f"{PROCESSING}/output/report",
                                          destination=Join(on="/", values=[run_folder, "report"]))],
                arguments=["--index", index_location]),
            property_files=[report_file], retry_policies=retries())
        rate = JsonGet(step_name=step.name, property_file=report_file, json_path="failure_rate")
        suffix = "" if embeddings_uri is not None else "NoEncode"
        fail = FailStep(name=f"TooManyFailures{suffix}",
                        error_message=Join(on=" ", values=[
                            "failure rate", rate, "is over MaxFailureRate", max_failure_rate, "- see",
                            Join(on="/", values=[run_folder, "report", "report.json"])]))
        check = ConditionStep(name=f"CheckFailures{suffix}",
                              conditions=[ConditionGreaterThan(left=rate, right=max_failure_rate)],
                              if_steps=[fail], else_steps=[])
        return step, check

    model = Model(image_uri=JsonGet(step_name=find.name, property_file=changes_file, json_path="image_uri"),
                  model_data=JsonGet(step_name=find.name, property_file=changes_file, json_path="model_data"),
                  role=role, sagemaker_session=session)
    create_model = ModelStep(name="CreateModel", step_args=model.create(instance_type=transform_type))
    transformer = Transformer(model_name=create_model.properties.ModelName, instance_type=transform_type,
                              instance_count=transform_count, output_path=Join(on="/", values=[run_folder, "embeddings"]),
                              accept=JSONLINES, assemble_with="Line", strategy="MultiRecord",
                              max_payload=max_payload_mb, base_transform_job_name=f"{base_job_prefix}-encode",
                              sagemaker_session=session)
    encode = TransformStep(
        name="EncodeChanged",
        step_args=transformer.transform(
            data=find.properties.ProcessingOutputConfig.Outputs["transform"].S3Output.S3Uri,
            content_type=JSONLINES, split_type="Line"),
        retry_policies=retries())
    load, check_load = load_step("LoadEmbeddings", encode.properties.TransformOutput.S3OutputPath)
    deletions, check_deletions = load_step("ApplyDeletions")
    anything = ConditionStep(
        name="AnythingToEncode",
        conditions=[ConditionGreaterThan(left=JsonGet(step_name=find.name, property_file=changes_file,
                                                      json_path="to_encode"), right=0)],
        if_steps=[create_model, encode, load, check_load], else_steps=[deletions, check_deletions])
    return Pipeline(name=pipeline_name,
                    parameters=[catalogue_uri, model_package, package_group, index_location, max_failure_rate,
                                processing_type, transform_type, transform_count],
                    steps=[find, anything], sagemaker_session=session)
