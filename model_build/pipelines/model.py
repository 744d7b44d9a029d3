"""The model build pipeline: package, evaluate, gate on recall@10, register.

    PackageModel (Processing, the `full` image: package-model with its accuracy guard -> model.tar.gz)
      -> EvaluateModel (Processing: clip-search eval on a labelled catalogue -> evaluation.json, and
         gate.json, the property file `Evaluation`)
      -> RecallGate (Condition: recall@10 >= MinRecallAt10)
           yes: RegisterModel (model package in ModelPackageGroup, the serving image, ModelMetrics =
                the evaluation report)
           no:  RecallTooLow (Fail: "recall@10 X is below MinRecallAt10 Y")

Parameters: ModelPackageGroup, MinRecallAt10, EvaluationKind (text or image queries), Arch,
Pretrained, Runtime (what package-model exports for), TestModel ("true": the tiny random model,
for tests), EvaluationCatalogueUri (an s3:// folder: products.jsonl + photos), EvaluationQueriesUri
(an s3:// folder holding the queries .jsonl), ModelApprovalStatus, the instance types.
"""
from __future__ import annotations

from model_build.pipelines.common import job_processor, pipeline_session, retries, sdk

PIPELINE_NAME = "clip-search-model"
PROCESSING = "/opt/ml/processing"


def get_pipeline(region: str | None = None, role: str | None = None, default_bucket: str | None = None,
                 full_image_uri: str | None = None, serving_image_uri: str | None = None,
                 pipeline_name: str = PIPELINE_NAME, base_job_prefix: str = "clip-search",
                 model_package_group_name: str = "clip-search", sagemaker_session=None,
                 content_types=None, response_types=None, inference_instances=None, transform_instances=None,
                 environment: dict | None = None):
    """The model build pipeline. `full_image_uri`: the `full` image (torch: packaging and its guard,
    evaluation); `serving_image_uri`: the image the registered package names (default: the same).
    `environment`: the processing jobs' variables."""
    sdk()
    from sagemaker.model import Model
    from sagemaker.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.processing import ProcessingInput, ProcessingOutput
    from sagemaker.workflow.condition_step import ConditionStep
    from sagemaker.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.workflow.execution_variables import ExecutionVariables
    from sagemaker.workflow.fail_step import FailStep
    from sagemaker.workflow.functions import Join, JsonGet
    from sagemaker.workflow.model_step import ModelStep
    from sagemaker.workflow.parameters import ParameterFloat, ParameterString
    from sagemaker.workflow.pipeline import Pipeline
    from sagemaker.workflow.properties import PropertyFile
    from sagemaker.workflow.steps import ProcessingStep

    from model_build.config import CONTENT_TYPES, RESPONSE_TYPES, PublishConfig

    if full_image_uri is None:
        raise ValueError("full_image_uri: the clip-search `full` image (publish image --variant full)")
    session = pipeline_session(region, default_bucket, sagemaker_session)
    bucket = default_bucket or session.default_bucket()
    defaults = PublishConfig()
    package_group = ParameterString("ModelPackageGroup", default_value=model_package_group_name)
    min_recall = ParameterFloat("MinRecallAt10", default_value=0.5)
    kind = ParameterString("EvaluationKind", default_value="text", enum_values=["text", "image"])
    arch = ParameterString("Arch", default_value="ViT-B-32")
    pretrained = ParameterString("Pretrained", default_value="laion2b_s34b_b79k")
    runtime = ParameterString("Runtime", default_value="auto",
                              enum_values=["auto", "torch", "onnx", "onnx-int8", "openvino"])
    test_model = ParameterString("TestModel", default_value="false", enum_values=["true", "false"])
    catalogue_uri = ParameterString("EvaluationCatalogueUri", default_value=f"s3://{bucket}/{base_job_prefix}/evaluation/catalogue/")
    queries_uri = ParameterString("EvaluationQueriesUri", default_value=f"s3://{bucket}/{base_job_prefix}/evaluation/queries/")
    approval = ParameterString("ModelApprovalStatus", default_value="PendingManualApproval",
                               enum_values=["PendingManualApproval", "Approved"])
    processing_type = ParameterString("ProcessingInstanceType", default_value="ml.m5.2xlarge")
    run_folder = Join(on="/", values=["s3:/", bucket, base_job_prefix, "model-build", ExecutionVariables.PIPELINE_EXECUTION_ID])

    def processor(step):
        return job_processor(step, full_image_uri, role, processing_type, session, f"{base_job_prefix}-{step}",
                             environment=environment)

    package = ProcessingStep(
        name="PackageModel",
        step_args=processor("package").run(
            outputs=[ProcessingOutput(output_name="model", source=f"{PROCESSING}/output/model",
                                      destination=Join(on="/", values=[run_folder, "model"]))],
            arguments=["--arch", arch, "--pretrained", pretrained, "--runtime", runtime, "--test-model", test_model]),
        retry_policies=retries())
    model_uri = package.properties.ProcessingOutputConfig.Outputs["model"].S3Output.S3Uri
    evaluation_file = PropertyFile(name="Evaluation", output_name="evaluation", path="gate.json")
    evaluate = ProcessingStep(
        name="EvaluateModel",
        step_args=processor("evaluate").run(
            inputs=[ProcessingInput(source=model_uri, destination=f"{PROCESSING}/input/model", input_name="model"),
                    ProcessingInput(source=catalogue_uri, destination=f"{PROCESSING}/input/catalogue",
                                    input_name="catalogue"),
                    ProcessingInput(source=queries_uri, destination=f"{PROCESSING}/input/queries", input_name="queries")],
            outputs=[ProcessingOutput(output_name="evaluation", source=f"{PROCESSING}/output/evaluation",
                                      destination=Join(on="/", values=[run_folder, "evaluation"]))],
            arguments=["--kind", kind]),
        property_files=[evaluation_file], retry_policies=retries())
    evaluation_uri = evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri
    recall = JsonGet(step_name=evaluate.name, property_file=evaluation_file, json_path="recall_at_10")

    model = Model(image_uri=serving_image_uri or full_image_uri,
                  model_data=Join(on="/", values=[model_uri, "model.tar.gz"]), role=role, sagemaker_session=session)
    metrics = ModelMetrics(model_statistics=MetricsSource(
        s3_uri=Join(on="/", values=[evaluation_uri, "evaluation.json"]), content_type="application/json"))
    register = ModelStep(name="RegisterModel", step_args=model.register(
        content_types=content_types or CONTENT_TYPES, response_types=response_types or RESPONSE_TYPES,
        inference_instances=inference_instances or defaults.split(defaults.inference_instances),
        transform_instances=transform_instances or defaults.split(defaults.transform_instances),
        model_package_group_name=package_group, approval_status=approval, model_metrics=metrics,
        description="clip-search model built by the model pipeline"))
    fail = FailStep(name="RecallTooLow", error_message=Join(on=" ", values=[
        kind, "recall@10", recall, "is below MinRecallAt10", min_recall, "- not registered"]))
    gate = ConditionStep(name="RecallGate", conditions=[ConditionGreaterThanOrEqualTo(left=recall, right=min_recall)],
                         if_steps=[register], else_steps=[fail])
    return Pipeline(name=pipeline_name,
                    parameters=[package_group, min_recall, kind, arch, pretrained, runtime, test_model, catalogue_uri,
                                queries_uri, approval, processing_type],
                    steps=[package, evaluate, gate], sagemaker_session=session)

