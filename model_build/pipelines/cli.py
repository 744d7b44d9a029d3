"""`clip-search publish pipeline NAME upsert|start|describe` (NAME: catalogue or model).

upsert    builds the pipeline (get_pipeline of model_build/pipelines/NAME.py) with this project's
          settings and creates it, or updates it when it exists (the SDK's Pipeline.upsert)
start     starts an execution; `-p NAME=VALUE` sets a pipeline parameter (repeatable)
describe  the pipeline, its parameters with their defaults, and its latest executions
"""
from __future__ import annotations

import json
import time

import click

from model_build.cli import settings
from model_build.errors import PublishError

NAMES = ("catalogue", "model")
EXECUTIONS_SHOWN = 5


def _default_name(name: str) -> str:
    from model_build.pipelines import catalogue, model

    return {"catalogue": catalogue.PIPELINE_NAME, "model": model.PIPELINE_NAME}[name]


def build_pipeline(aws, name: str, pipeline_name: str, full_image_uri: str | None, index: str | None,
                   processing_image_uri: str | None = None):
    from model_build.pipelines.common import sdk

    config = aws.config
    config.require("bucket", "role_arn", "image_uri")
    sdk()
    from sagemaker.workflow.pipeline_context import PipelineSession

    session = PipelineSession(boto_session=aws.session, default_bucket=config.bucket)
    common = {"region": aws.region, "role": config.role_arn, "default_bucket": config.bucket,
              "pipeline_name": pipeline_name, "base_job_prefix": config.prefix.strip("/"),
              "model_package_group_name": config.package_group, "sagemaker_session": session}
    if name == "catalogue":
        from model_build.pipelines.catalogue import get_pipeline

        # Its jobs open the index: the serving image has neither LanceDB nor opensearch-py.
        if not processing_image_uri:
            raise PublishError("the catalogue pipeline's jobs open the index, which the serving image cannot: give "
                               "--processing-image-uri / CLIP_SEARCH_PROCESSING_IMAGE_URI (the image of "
                               "container/build.sh --variant processing, pushed)")
        return get_pipeline(image_uri=processing_image_uri, index=index, **common)
    from model_build.pipelines.model import get_pipeline

    if not full_image_uri:
        raise PublishError("the model pipeline packages with the `full` image: give --full-image-uri / "
                           "CLIP_SEARCH_FULL_IMAGE_URI (clip-search publish image --variant full)")
    return get_pipeline(full_image_uri=full_image_uri, serving_image_uri=config.image_uri, **common)


def _describe(sm, pipeline_name: str) -> dict:
    try:
        return sm.describe_pipeline(PipelineName=pipeline_name)
    except sm.exceptions.ResourceNotFound:
        raise PublishError(f"no pipeline {pipeline_name}: create it with `clip-search publish pipeline NAME upsert`") from None
    except Exception as error:
        from model_build.aws import client_error_code

        if client_error_code(error) in ("ValidationException", "ResourceNotFound"):
            raise PublishError(f"no pipeline {pipeline_name}: create it with `clip-search publish pipeline NAME upsert`") from None
        raise


def parse_parameters(given, declared: list[dict]) -> list[dict]:
    """["Name=Value", ...] -> StartPipelineExecution's PipelineParameters; unknown names refused."""
    known = {parameter["Name"] for parameter in declared}
    out = []
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"-p {item!r}: expected NAME=VALUE")
        if key not in known:
            raise PublishError(f"unknown parameter {key!r}; the pipeline takes: {', '.join(sorted(known))}")
        out.append({"Name": key, "Value": value})
    return out


@click.command("pipeline")
@click.argument("name", type=click.Choice(NAMES))
@click.argument("action", type=click.Choice(["upsert", "start", "describe"]))
@click.option("--pipeline-name", help="[default: clip-search-catalogue / clip-search-model]")
@click.option("--full-image-uri", envvar="CLIP_SEARCH_FULL_IMAGE_URI",
              help="model: the `full` image the package and evaluate steps run in [env CLIP_SEARCH_FULL_IMAGE_URI].")
@click.option("--processing-image-uri", envvar="CLIP_SEARCH_PROCESSING_IMAGE_URI",
              help="catalogue: the image its processing steps run in (container/build.sh --variant processing: "
                   "the serving image + LanceDB and opensearch-py) [env CLIP_SEARCH_PROCESSING_IMAGE_URI].")
@click.option("--index", "index_location", envvar="CLIP_SEARCH_PIPELINE_INDEX",
              help="catalogue: the Index parameter's default (OpenSearch URL or s3:// LanceDB prefix) "
                   "[env CLIP_SEARCH_PIPELINE_INDEX; default: the stack's index (`publish stack`), "
                   "else s3://BUCKET/PREFIX/index].")
@click.option("-p", "--parameter", "parameters", multiple=True, metavar="NAME=VALUE",
              help="start: a pipeline parameter (repeatable).")
@click.option("--wait/--no-wait", default=False, show_default=True, help="start: wait until the execution ends.")
@settings("bucket", "prefix", "role_arn", "image_uri", "package_group", "poll_seconds")
def pipeline_command(name, action, pipeline_name, full_image_uri, processing_image_uri, index_location, parameters,
                     wait, aws, state):
    """The SageMaker Pipelines: NAME catalogue (refresh the index, encoding only what changed) or
    model (package, evaluate, gate on recall@10, register). ACTION: upsert, start or describe."""
    pipeline_name = pipeline_name or _default_name(name)
    sm = aws.client("sagemaker")
    if action == "upsert":
        if not index_location and state.get("index"):  # the stack's IndexUrl output
            index_location = state.get("index")
            click.echo(f"index {index_location} (from `publish stack`, state file {state.path})")
        pipeline = build_pipeline(aws, name, pipeline_name, full_image_uri, index_location, processing_image_uri)
        arn = pipeline.upsert(role_arn=aws.config.role_arn,
                              description=f"clip-search {name} pipeline (model_build/pipelines/{name}.py)")["PipelineArn"]
        state.record(**{f"{name}_pipeline": arn})
        click.echo(f"{name}_pipeline={arn}")
        return
    described = _describe(sm, pipeline_name)
    declared = json.loads(described["PipelineDefinition"]).get("Parameters", [])
    if action == "start":
        arn = sm.start_pipeline_execution(PipelineName=pipeline_name,
                                          PipelineParameters=parse_parameters(parameters, declared))["PipelineExecutionArn"]
        click.echo(f"execution={arn}")
        if wait:
            while True:
                execution = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
                status = execution["PipelineExecutionStatus"]
                if status not in ("Executing", "Stopping"):
                    break
                time.sleep(aws.config.poll_seconds)
            click.echo(f"status={status}" + (f" ({execution['FailureReason']})" if execution.get("FailureReason") else ""))
            if status != "Succeeded":
                raise PublishError(f"pipeline execution {arn} ended {status}")
        return
    if parameters:
        raise click.UsageError("-p is for start")
    click.echo(f"pipeline={described['PipelineArn']} status={described.get('PipelineStatus')} "
               f"modified={described.get('LastModifiedTime')}")
    for parameter in declared:
        click.echo(f"  parameter {parameter['Name']} ({parameter['Type']}) = {parameter.get('DefaultValue')}")
    summaries = sm.list_pipeline_executions(PipelineName=pipeline_name).get("PipelineExecutionSummaries", [])
    for summary in summaries[:EXECUTIONS_SHOWN]:
        click.echo(f"  execution {summary['PipelineExecutionArn']} {summary.get('PipelineExecutionStatus')} "
                   f"{summary.get('StartTime')}")
    if not summaries:
        click.echo("  no executions yet (clip-search publish pipeline NAME start)")
