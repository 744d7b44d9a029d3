"""`clip-search publish STEP` / `python -m model_build STEP`.

Every setting is a flag, an environment variable (shown in --help) or a key of the config file
given with --config / CLIP_SEARCH_PUBLISH_CONFIG. Outputs of each step are recorded in the state
file (--state / CLIP_SEARCH_PUBLISH_STATE, default ./.clip-search-publish.json) and are the
defaults of the next steps; what the user gives wins over them. --region and --account-id are
accepted on the group (`publish --region R STEP`) and on every step (`publish STEP --region R`).
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import click

from clip_search.runtimes import PACKAGING_CHOICES, PACKAGING_DEFAULT
from model_build.config import FIELDS, State, load_config
from model_build.errors import PublishError


@dataclasses.dataclass
class GroupOptions:
    config_file: str | None = None
    state_file: str | None = None
    region: str | None = None
    account_id: str | None = None


# Settings every step takes, on the group or on the step (the step's wins).
GLOBAL = ("region", "account_id")


def settings(*names: str):
    """Add a --flag for each named setting (and GLOBAL's); the command receives `aws` and `state`."""

    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            flags = {name: kwargs.pop(name) for name in list(kwargs) if name in FIELDS}
            # The group's options, whether run as `clip-search publish` or `python -m model_build`.
            group = click.get_current_context().find_object(GroupOptions) or GroupOptions()
            for name in GLOBAL:
                if flags.get(name) is None:
                    flags[name] = getattr(group, name)
            try:
                config = load_config(flags, group.config_file)
                state = State(group.state_file)
                state.fill(config)
                from model_build.aws import Aws

                aws = Aws(config)
                aws.check_account()
                return command(*args, aws=aws, state=state, **kwargs)
            except PublishError as error:
                failure = click.ClickException(str(error))
                failure.exit_code = error.exit_code  # 3: refused by the evaluation gate
                raise failure from None
            except Exception as error:  # botocore's: no credentials, access denied, throttled...
                if type(error).__module__.startswith(("botocore", "boto3")):
                    raise click.ClickException(f"AWS: {error}") from None
                raise

        for name in reversed(names + GLOBAL):
            field = FIELDS[name]
            wrapper = click.option(f"--{name.replace('_', '-')}", name, type=field.metadata["kind"], default=None,
                                   help=f"{field.metadata['help']} [env {field.metadata['env']}]"
                                        + (f" [default: {field.default}]" if field.default is not None else ""))(wrapper)
        return wrapper

    return decorate


@click.group("publish")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="CLIP_SEARCH_PUBLISH_CONFIG",
              help="YAML or JSON file of settings (keys: the long flag names).")
@click.option("--state", "state_file", type=click.Path(dir_okay=False), envvar="CLIP_SEARCH_PUBLISH_STATE",
              help="Where step outputs are recorded [default: ./.clip-search-publish.json].")
@click.option("--region", help=f"{FIELDS['region'].metadata['help']} [env AWS_REGION / AWS_DEFAULT_REGION].")
@click.option("--account-id", help=f"{FIELDS['account_id'].metadata['help']} [env CLIP_SEARCH_ACCOUNT_ID]")
@click.pass_context
def publish(ctx, config_file, state_file, region, account_id):
    """Ship the model to SageMaker: artifact, evaluate, image, register, approve, endpoint, transform."""
    ctx.obj = GroupOptions(config_file, state_file, region, account_id)


@publish.command("artifact")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path),
              help="An existing model.tar.gz (default: package one now).")
@click.option("--arch", default=None, help="open_clip architecture to package (default ViT-B-32).")
@click.option("--pretrained", default=None, help="open_clip pretrained tag (default laion2b_s34b_b79k).")
@click.option("--random-weights", is_flag=True, help="Package the architecture with random weights.")
@click.option("--test-model", is_flag=True, help="Package the tiny random test model.")
@click.option("--runtime", type=click.Choice(PACKAGING_CHOICES), default=PACKAGING_DEFAULT, show_default=True,
              help="Runtime to export for when packaging (checked by the accuracy guard; see package-model).")
@click.option("--calibration", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Photos + titles for the accuracy guard (default: demo_data/ of this checkout).")
@click.option("--keep-weights", is_flag=True,
              help="Keep the fp32 safetensors in an artifact packaged for a torch-free runtime (default: left out).")
@settings("bucket", "prefix")
def artifact_command(model_path, arch, pretrained, random_weights, test_model, runtime, calibration, keep_weights,
                     aws, state):
    """Step 1: package the model and upload model.tar.gz to S3."""
    from model_build.artifact import upload_artifact

    options = {k: v for k, v in {"arch": arch, "pretrained": pretrained, "random_weights": random_weights,
                                 "test_model": test_model}.items() if v}
    options["runtime"] = runtime
    if keep_weights:
        options["keep_weights"] = True
    if runtime != "torch":
        options["runtime_options"] = {"calibration": calibration}
    uri = upload_artifact(aws, model_path, options, echo=click.echo)
    if state.get("model_data") != uri:
        state.record(model_data=uri, evaluation=None)  # an evaluation is of one artifact
    else:
        state.record(model_data=uri)
    click.echo(f"model_data={uri}")


@publish.command("image")
@click.option("--variant", type=click.Choice(["slim", "full", "lambda", "processing"]), default="slim",
              show_default=True,
              help="slim: torch-free, serves onnx/onnx-int8 artifacts; full: torch + OpenVINO, every runtime "
                   "(its default tag ends in -full); lambda: the query function; processing: the pipelines' "
                   "steps, LanceDB + opensearch-py on the full image (build that first; another with "
                   "--build-arg=--serving-image --build-arg=TAG).")
@click.option("--build-arg", "build_args", multiple=True, help="Extra argument for container/build.sh (repeatable).")
@settings("repository", "image_tag", "local_image", "registry", "image_uri")
def image_command(variant, build_args, aws, state):
    """Step 2: build the image, push it to ECR (repository created if missing), print URI@digest.
    With --image-uri / CLIP_SEARCH_IMAGE_URI (an image already pushed), nothing is built."""
    from model_build.config import State
    from model_build.image import push_image

    config = aws.config
    # lambda: the query function (publish stack); processing: the pipelines' processing steps.
    key = {"lambda": "lambda_image_uri", "processing": "processing_image_uri"}.get(variant, "image_uri")
    if key == "image_uri" and config.image_uri and not State.remembered(config, "image_uri"):
        click.echo(f"image given ({config.sources['image_uri']}): nothing built or pushed")
        uri = config.image_uri
    else:
        uri = push_image(aws, build_args=list(build_args), echo=click.echo, variant=variant)
    state.record(**{key: uri})
    click.echo(f"{key}={uri}")


@publish.command("evaluate")
@click.option("--catalogue", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labelled catalogue (.jsonl/.csv) to index and search.")
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help='Labelled queries (JSON Lines: {"text"|"image": ..., "relevant": [product ids]}).')
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The artifact's local copy (default: download --model-data); its sha256 must match.")
@click.option("--compare-runtime", type=click.Choice(["torch"]),
              help="Also evaluate with torch fp32 from the artifact's weights and report the deltas.")
@settings("model_data")
def evaluate_command(catalogue, queries, model_path, compare_runtime, aws, state):
    """Step 1b: evaluate the uploaded artifact in process; the report goes to S3 next to it."""
    from model_build.evaluation import evaluate_artifact

    uri, _ = evaluate_artifact(aws, catalogue, queries, model_path, compare_runtime, echo=click.echo)
    state.record(evaluation=uri)
    click.echo(f"evaluation={uri}")


@publish.command("register")
@settings("image_uri", "model_data", "evaluation", "min_recall_at_10", "min_text_recall_at_10",
          "min_image_recall_at_10", "package_group", "approval_status", "inference_instances", "transform_instances")
def register_command(aws, state):
    """Step 3: check the evaluation gate, create the model package group if missing and register a
    model package (with the evaluation as its ModelMetrics)."""
    from model_build.errors import EvaluationGateError
    from model_build.evaluation import check_artifact, check_gate, load_evaluation
    from model_build.registry import register_model

    config = aws.config
    thresholds = {None: config.min_recall_at_10, "text": config.min_text_recall_at_10,
                  "image": config.min_image_recall_at_10}
    evaluation = None
    if config.evaluation:
        config.require("model_data")
        evaluation = load_evaluation(aws, config.evaluation)
        check_artifact(aws, evaluation[1], echo=click.echo)
        for line in check_gate(evaluation[1], thresholds):
            click.echo(f"evaluation gate: {line}")
    elif any(value is not None for value in thresholds.values()):
        given = ", ".join(f"--min-{kind + '-' if kind else ''}recall-at-10 {value:g}"
                          for kind, value in thresholds.items() if value is not None)
        raise EvaluationGateError(f"evaluation gate: not registered: {given} given but there is no evaluation "
                                  "(run `publish evaluate` or give --evaluation)")
    arn = register_model(aws, evaluation, echo=click.echo)
    # A re-run (or endpoint/transform) needs the image and artifact too, however they were given.
    state.record(model_package_arn=arn, image_uri=config.image_uri, model_data=config.model_data,
                 evaluation=evaluation[0] if evaluation else None)
    click.echo(f"model_package_arn={arn}")


@publish.command("approve")
@click.option("--status", type=click.Choice(["Approved", "Rejected", "PendingManualApproval"]), default="Approved",
              show_default=True)
@click.option("--force", is_flag=True, help="Approve a package that carries no evaluation (ModelMetrics).")
@settings("model_package_arn")
def approve_command(status, force, aws, state):
    """Set a model package's approval status (default: Approved; refused without an evaluation)."""
    from model_build.registry import approve

    aws.config.require("model_package_arn")
    approved = approve(aws, aws.config.model_package_arn, status, force=force, echo=click.echo)
    click.echo(f"approval_status={approved}")


@publish.command("endpoint")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the endpoint is InService.")
@settings("model_package_arn", "image_uri", "model_data", "package_group", "role_arn", "endpoint_name",
          "memory_mb", "max_concurrency", "poll_seconds")
def endpoint_command(wait, aws, state):
    """Step 4: create or update the serverless endpoint from the approved package."""
    from model_build.endpoint import deploy_serverless

    result = deploy_serverless(aws, wait=wait, echo=click.echo)
    state.record(endpoint=result["endpoint"])
    click.echo(f"endpoint={result['endpoint']}  (clip-search encode --endpoint {result['endpoint']} \"red apples\")")


@publish.command("transform")
@click.option("--catalogue", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Catalogue (.jsonl/.csv) to encode: written to S3 as JSON Lines shards.")
@click.option("--images-prefix", help="Instead: an s3:// prefix of raw images (one request and one .out per image).")
@click.option("--input-uri", help="Where the JSON Lines input goes [default: s3://BUCKET/PREFIX/transform/input/].")
@click.option("--output-uri", help="Where the .out files go [default: s3://BUCKET/PREFIX/transform/output/JOB/].")
@click.option("--download", "download_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Download the .out files here for `clip-search index --embeddings`.")
@click.option("--job-name", help="Transform job name [default: derived from the model and the input's contents].")
@click.option("--wait/--no-wait", default=True, show_default=True)
@settings("bucket", "prefix", "model_package_arn", "image_uri", "model_data", "package_group", "role_arn",
          "transform_instance_type", "transform_instance_count", "max_payload_mb", "max_concurrent_transforms",
          "poll_seconds")
def transform_command(catalogue, images_prefix, input_uri, output_uri, download_dir, job_name, wait, aws, state):
    """Step 5: Batch Transform a catalogue (or raw images) into .out embedding files."""
    from model_build.endpoint import ensure_model
    from model_build.transform import collect_outputs, job_name_for, run_transform, upload_jsonl_input

    if bool(catalogue) == bool(images_prefix):
        raise click.UsageError("give exactly one of --catalogue FILE or --images-prefix s3://...")
    config = aws.config
    config.require("bucket")
    aws.check_bucket(config.bucket)
    model_name = ensure_model(aws, echo=click.echo)
    base = f"s3://{config.bucket}/{config.prefix.strip('/')}/transform"
    if catalogue:
        input_uri = input_uri or f"{base}/input/{catalogue.stem}/"
        upload_jsonl_input(aws, catalogue, input_uri, echo=click.echo)
    else:
        input_uri = images_prefix
    job_name = job_name or job_name_for(aws, model_name, input_uri)
    output_uri = output_uri or f"{base}/output/{job_name}/"
    run_transform(aws, model_name, input_uri, output_uri, raw_images=bool(images_prefix), job_name=job_name,
                  wait=wait, echo=click.echo)
    state.record(transform_output=output_uri)
    if wait and download_dir:
        collect_outputs(aws, output_uri, download_dir, raw_images=bool(images_prefix), echo=click.echo)
    click.echo(f"transform_output={output_uri}")


# Steps in their own modules; they import `settings` from here, so they are added last.
from model_build import stack as _stack  # noqa: E402
from model_build.pipelines.cli import pipeline_command  # noqa: E402

_stack.add_commands(publish, settings)  # publish stack, publish teardown
publish.add_command(pipeline_command)
