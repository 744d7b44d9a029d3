"""`clip-search publish pipeline NAME upsert|start|describe` against moto's SageMaker."""
import json

import pytest

from tests.publish.conftest import BUCKET

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search:0.1.0"
PROCESSING_IMAGE = IMAGE + "-processing"


def _settings(aws):
    return ["--bucket", BUCKET, "--role-arn", aws["role_arn"], "--image-uri", IMAGE, "--processing-image-uri",
            PROCESSING_IMAGE]


def test_upsert_creates_then_updates_start_passes_parameters_describe_lists(aws, publish_cli):
    # The index `publish stack` recorded (the stack's IndexUrl output): the default when --index is
    # not given; a given --index wins.
    stack_index = f"s3://{BUCKET}/other-index"
    state_file = aws["tmp"] / "state.json"
    state_file.write_text(json.dumps({"index": stack_index}))
    out = publish_cli("pipeline", "catalogue", "upsert", *_settings(aws), "--index", "https://search.example:9200/products")
    arn = out.strip().splitlines()[-1].removeprefix("catalogue_pipeline=")
    described = aws["sm"].describe_pipeline(PipelineName="clip-search-catalogue")
    assert described["PipelineArn"] == arn
    definition = json.loads(described["PipelineDefinition"])
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    assert defaults["Index"] == "https://search.example:9200/products"
    assert defaults["CatalogueUri"] == f"s3://{BUCKET}/clip-search/catalogue/"
    assert json.loads(state_file.read_text())["catalogue_pipeline"] == arn
    find = next(step for step in definition["Steps"] if step["Name"] == "FindChanges")
    assert find["Arguments"]["AppSpecification"]["ImageUri"] == PROCESSING_IMAGE  # it opens the index

    # Again without --index: the stack's index, the same pipeline, updated in place.
    out = publish_cli("pipeline", "catalogue", "upsert", *_settings(aws))
    assert f"index {stack_index} (from `publish stack`, state file {state_file})" in out
    definition = json.loads(aws["sm"].describe_pipeline(PipelineName="clip-search-catalogue")["PipelineDefinition"])
    assert {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}["Index"] == f"s3://{BUCKET}/other-index"
    assert len(aws["sm"].list_pipelines()["PipelineSummaries"]) == 1

    out = publish_cli("pipeline", "catalogue", "start", "-p", "ModelPackage=arn:aws:sagemaker:us-east-1:123456789012:"
                      "model-package/clip-search/3", "-p", "MaxFailureRate=0.05")
    execution = out.strip().removeprefix("execution=")
    assert aws["sm"].list_pipeline_parameters_for_execution(PipelineExecutionArn=execution)["PipelineParameters"] == [
        {"Name": "ModelPackage", "Value": "arn:aws:sagemaker:us-east-1:123456789012:model-package/clip-search/3"},
        {"Name": "MaxFailureRate", "Value": "0.05"}]

    out = publish_cli("pipeline", "catalogue", "describe")
    assert f"pipeline={arn}" in out
    assert f"parameter Index (String) = s3://{BUCKET}/other-index" in out
    assert "parameter MaxFailureRate (Float) = 0.01" in out
    assert f"execution {execution}" in out


def test_refusals_are_one_error_line(aws, publish_cli):
    out = publish_cli("pipeline", "catalogue", "upsert", *_settings(aws)[:-2], expect=1)
    assert "--processing-image-uri / CLIP_SEARCH_PROCESSING_IMAGE_URI" in out and out.count("\n") == 1
    out = publish_cli("pipeline", "catalogue", "describe", expect=1)
    assert out.strip() == "Error: no pipeline clip-search-catalogue: create it with `clip-search publish pipeline NAME upsert`"
    publish_cli("pipeline", "catalogue", "upsert", *_settings(aws))
    out = publish_cli("pipeline", "catalogue", "start", "-p", "Indx=x", expect=1)
    assert out.strip().startswith("Error: unknown parameter 'Indx'; the pipeline takes: CatalogueUri, Index,")
    out = publish_cli("pipeline", "model", "upsert", *_settings(aws), expect=1)
    assert "--full-image-uri / CLIP_SEARCH_FULL_IMAGE_URI" in out
    publish_cli("pipeline", "model", "upsert", *_settings(aws), "--full-image-uri", IMAGE + "-full")
    model = json.loads(aws["sm"].describe_pipeline(PipelineName="clip-search-model")["PipelineDefinition"])
    package = next(step for step in model["Steps"] if step["Name"] == "PackageModel")
    assert package["Arguments"]["AppSpecification"]["ImageUri"] == IMAGE + "-full"


def test_the_sdk_config_is_validated_as_the_sdk_does_with_its_schema_checked_once(aws, monkeypatch):
    """model_build.aws.quiet_sdk: the SDK validates its config on every setting it looks up, and
    jsonschema.validate re-checked the SDK's constant schema each time (most of `pipeline upsert`'s
    time). The same validation, the same errors, and no schema check per lookup."""
    import jsonschema

    from model_build.aws import quiet_sdk

    quiet_sdk()
    import sagemaker.config
    import sagemaker.session
    import sagemaker.utils
    from sagemaker.config.config_schema import SAGEMAKER_PYTHON_SDK_CONFIG_SCHEMA as schema

    for module in (sagemaker.config, sagemaker.utils, sagemaker.session):
        assert module.validate_sagemaker_config.schema_checked_once, module
    validator_class = jsonschema.validators.validator_for(schema)

    def no_schema_check(*args, **kwargs):
        raise AssertionError("the SDK's schema checked again")

    good = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
    sagemaker.utils.validate_sagemaker_config(good)  # the first validation checks the schema
    with monkeypatch.context() as patched:
        patched.setattr(validator_class, "check_schema", no_schema_check)
        sagemaker.utils.validate_sagemaker_config(good)
        session = sagemaker.session.Session(default_bucket=BUCKET)
        assert session.sagemaker_config == good  # the aws fixture's SDK config file, loaded and validated
        assert sagemaker.utils.get_sagemaker_config_value(session, "SageMaker.PythonSDK.Modules.TelemetryOptOut")
    for bad in ({"SchemaVersion": "2.0"}, {**good, "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": "no"}}}},
                {**good, "Unknown": 1}):
        with pytest.raises(jsonschema.ValidationError) as ours:
            sagemaker.utils.validate_sagemaker_config(bad)
        with pytest.raises(jsonschema.ValidationError) as sdk:
            jsonschema.validate(bad, schema)
        assert ours.value.message == sdk.value.message
