"""Run a SageMaker pipeline with the SDK's own local executor (sagemaker.local.pipeline: step order,
argument evaluation, JsonGet on property files read from S3, ConditionStep branches, FailStep
messages), with two steps swapped for their in-process equivalents, and saying so in the step's
properties (`InProcessEquivalent`):

- Processing: the job's entry point (`python -m model_build.pipelines.jobs STEP` + the arguments
  the executor evaluated from the definition) runs in this process, with its inputs downloaded from
  S3 (moto's) into a folder standing for /opt/ml/processing and its outputs uploaded to the S3
  URIs of the definition. Not in the image: these tests run without Docker, in the server tier;
  tests/local_mode/test_local_pipelines.py runs the same pipelines with their jobs in Docker
  (run_in_local_mode below).
- CreateModel: the SDK's local executor calls its local client's signature; the step's arguments
  go to CreateModel (moto's) instead.
- Transform: moto completes a transform job without running it; the real model server on this
  machine answers the job's input, as Batch Transform does (_TransformThroughModelServer).
- RegisterModel: local pipelines cannot run it ("Unsupported step type"); its evaluated arguments
  go to CreateModelPackage (moto's).
"""
import os
from pathlib import Path

from model_build.pipelines.common import JOBS, sdk

sdk()
from sagemaker.local.entities import _LocalPipelineExecution, _LocalPipelineExecutionStep  # noqa: E402
from sagemaker.local.pipeline import (  # noqa: E402 - after sdk(): no banner, no telemetry
    LocalPipelineExecutor,
    _StepExecutor,
    _StepExecutorFactory,
)
from sagemaker.workflow.steps import Step, StepTypeEnum  # noqa: E402

PROCESSING = "/opt/ml/processing"


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


class _InProcessProcessing(_StepExecutor):
    def execute(self):
        from model_build.pipelines import jobs

        arguments = self.pipline_executor.evaluate_step_arguments(self.step)
        s3 = self.pipline_executor.sagemaker_session.boto_session.client("s3")
        root = Path(self.pipline_executor.workdir) / self.step.name
        for item in arguments.get("ProcessingInputs", []):
            source, local = item["S3Input"]["S3Uri"], item["S3Input"]["LocalPath"]
            target = root / os.path.relpath(local, PROCESSING)
            bucket, prefix = _split(source)
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for entry in page.get("Contents", []):
                    relative = entry["Key"][len(prefix):].lstrip("/") or Path(entry["Key"]).name
                    (target / relative).parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, entry["Key"], str(target / relative))
        entry_point = arguments["AppSpecification"]["ContainerEntrypoint"]
        assert entry_point[:len(JOBS)] == JOBS, entry_point
        previous = os.environ.get(jobs.PROCESSING_DIR_ENV)
        os.environ[jobs.PROCESSING_DIR_ENV] = str(root)
        try:
            code = jobs.main(entry_point[len(JOBS):] + arguments["AppSpecification"].get("ContainerArguments", []))
        finally:
            if previous is None:
                os.environ.pop(jobs.PROCESSING_DIR_ENV)
            else:
                os.environ[jobs.PROCESSING_DIR_ENV] = previous
        if code:
            self.pipline_executor.execution.update_step_failure(self.step.name, f"the job exited with status {code}")
        outputs = {}
        for output in arguments.get("ProcessingOutputConfig", {}).get("Outputs", []):
            uri, local = output["S3Output"]["S3Uri"], output["S3Output"]["LocalPath"]
            bucket, prefix = _split(uri)
            folder = root / os.path.relpath(local, PROCESSING)
            for path in sorted(folder.rglob("*")) if folder.exists() else []:
                if path.is_file():
                    s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(folder)}")
            outputs[output["OutputName"]] = {"OutputName": output["OutputName"], "S3Output": {"S3Uri": uri}}
        return {"ProcessingOutputConfig": {"Outputs": outputs}, "ProcessingJobStatus": "Completed",
                "InProcessEquivalent": "processing job run in this process (python -m model_build.pipelines.jobs)"}


class _RegisterThroughApi(_StepExecutor):
    def execute(self):
        arguments = self.pipline_executor.evaluate_step_arguments(self.step)
        client = self.pipline_executor.sagemaker_session.boto_session.client("sagemaker")
        group = arguments["ModelPackageGroupName"]
        try:
            client.describe_model_package_group(ModelPackageGroupName=group)
        except client.exceptions.ClientError:
            client.create_model_package_group(ModelPackageGroupName=group)
        arn = client.create_model_package(**arguments)["ModelPackageArn"]
        return {"ModelPackageArn": arn, "InProcessEquivalent": "CreateModelPackage called with the step's arguments"}


class _TransformThroughModelServer(_StepExecutor):
    """Batch Transform (moto completes a transform job without running it): the model the
    CreateModel step registered (its ModelDataUrl) served by the real multi-model-server, every
    input file posted line by line in requests under MaxPayloadInMB (SplitType=Line, MultiRecord),
    the answers assembled by line into `<input file>.out` under the output path."""

    def execute(self):
        import tempfile

        import requests

        from clip_search.endpoint_client import pack_lines
        from clip_search.serving.server import ModelServer

        arguments = self.pipline_executor.evaluate_step_arguments(self.step)
        session = self.pipline_executor.sagemaker_session.boto_session
        s3 = session.client("s3")
        model = session.client("sagemaker").describe_model(ModelName=arguments["ModelName"])
        source = arguments["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        output = arguments["TransformOutput"]["S3OutputPath"].rstrip("/")
        limit = arguments.get("MaxPayloadInMB", 6) * 1024 * 1024
        with tempfile.TemporaryDirectory(prefix="clip-search-transform-") as scratch:
            artifact = Path(scratch) / "model.tar.gz"
            s3.download_file(*_split(model["PrimaryContainer"]["ModelDataUrl"]), str(artifact))
            bucket, prefix = _split(source)
            keys = [entry["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                    for entry in page.get("Contents", [])]
            with ModelServer(artifact) as server:
                for key in keys:
                    lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()
                    answers = []
                    for batch in pack_lines([line for line in lines if line.strip()], limit):
                        self.pipline_executor.records_encoded += len(batch)
                        response = requests.post(server.url + "/invocations", data=b"\n".join(batch) + b"\n",
                                                 headers={"Content-Type": arguments["TransformInput"]["ContentType"],
                                                          "Accept": arguments["TransformOutput"]["Accept"]}, timeout=300)
                        response.raise_for_status()
                        answers.append(response.content.rstrip(b"\n"))
                    out_bucket, out_prefix = _split(f"{output}/{key[len(prefix):].lstrip('/')}.out")
                    s3.put_object(Bucket=out_bucket, Key=out_prefix, Body=b"\n".join(answers) + b"\n")
        return {"TransformOutput": {"S3OutputPath": output}, "TransformJobStatus": "Completed",
                "InProcessEquivalent": "Batch Transform served by the real model server on this machine"}


class _CreateModelThroughApi(_StepExecutor):
    """The SDK's local CreateModel calls its local client's signature (name first); here the step's
    evaluated arguments go to CreateModel (moto's) as the service takes them."""

    def execute(self):
        from sagemaker.utils import unique_name_from_base

        arguments = self.pipline_executor.evaluate_step_arguments(self.step)
        client = self.pipline_executor.sagemaker_session.boto_session.client("sagemaker")
        name = unique_name_from_base(self.step.name)
        client.create_model(ModelName=name, **arguments)
        return {**client.describe_model(ModelName=name),
                "InProcessEquivalent": "CreateModel called with the step's arguments"}


class _Factory(_StepExecutorFactory):
    def get(self, step):
        if step.step_type == StepTypeEnum.PROCESSING:
            return _InProcessProcessing(self.pipeline_executor, step)
        if step.step_type == StepTypeEnum.CREATE_MODEL:
            return _CreateModelThroughApi(self.pipeline_executor, step)
        if step.step_type == StepTypeEnum.TRANSFORM:
            return _TransformThroughModelServer(self.pipeline_executor, step)
        if step.step_type == StepTypeEnum.REGISTER_MODEL:
            return _RegisterThroughApi(self.pipeline_executor, step)
        return super().get(step)


class _Execution(_LocalPipelineExecution):
    """Local executions refuse a pipeline with a register step up front; this one takes it (run by
    _RegisterThroughApi)."""

    def _initialize_step_execution(self, steps):
        steps = list(steps)
        swapped = [s for s in steps if isinstance(s, Step) and s.step_type == StepTypeEnum.REGISTER_MODEL]
        super()._initialize_step_execution([s for s in steps if s not in swapped])
        for step in swapped:
            self.step_execution[step.name] = _LocalPipelineExecutionStep(step.name, step.step_type, step.description,
                                                                         step.display_name)


class _LocalModeFactory(_StepExecutorFactory):
    """SDK local mode (jobs in Docker) for every step but the register step, which local pipelines
    cannot run, and the steps `swapped` names (step name -> factory(executor, step))."""

    def __init__(self, executor, swapped):
        super().__init__(executor)
        self.swapped = dict(swapped)

    def get(self, step):
        if step.name in self.swapped:
            return self.swapped[step.name](self.pipeline_executor, step)
        if step.step_type == StepTypeEnum.REGISTER_MODEL:
            return _RegisterThroughApi(self.pipeline_executor, step)
        return super().get(step)


def run_in_local_mode(pipeline, parameters: dict, workdir, session, execution_id: str = "execution-1",
                      swapped=None):
    """The SDK's local executor as LocalPipelineSession runs it (processing and transform jobs in
    Docker), but RegisterModel through CreateModelPackage and the `swapped` steps by the executors
    given (default: PackageModel in this process, torch being in the `full` image only)."""
    execution = _Execution(execution_id, pipeline, PipelineParameters=parameters, local_session=session)
    executor = LocalPipelineExecutor(execution, session)
    executor.workdir = str(workdir)
    executor._step_executor_factory = _LocalModeFactory(
        executor, swapped if swapped is not None else {"PackageModel": _InProcessProcessing})
    return executor.execute()


def run_pipeline(pipeline, parameters: dict, workdir, session, execution_id: str = "execution-1"):
    """-> the finished execution (status, failure_reason, step_execution: name -> status, properties)."""
    execution = _Execution(execution_id, pipeline, PipelineParameters=parameters, local_session=session)
    executor = LocalPipelineExecutor(execution, session)
    executor.workdir = str(workdir)
    executor.records_encoded = 0  # records the transform equivalent sent to the model server
    executor._step_executor_factory = _Factory(executor)
    execution = executor.execute()
    execution.records_encoded = executor.records_encoded
    return execution
