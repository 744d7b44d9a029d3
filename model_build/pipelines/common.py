"""What both pipelines share: the session, the processor that runs a `jobs` step in our image, and
retries for SageMaker's transient limits."""
from __future__ import annotations

JOBS = ["python", "-m", "model_build.pipelines.jobs"]


def sdk():
    """Import the SDK quietly (no v3 banner, no telemetry)."""
    from model_build.aws import quiet_sdk

    quiet_sdk()
    import sagemaker

    return sagemaker


def pipeline_session(region: str | None = None, default_bucket: str | None = None, sagemaker_session=None):
    """The given session (a PipelineSession, or LocalPipelineSession to run on this machine), else a
    PipelineSession for `region`: a step's arguments are recorded, not run, while the pipeline is built."""
    if sagemaker_session is not None:
        return sagemaker_session
    sdk()
    import boto3
    from sagemaker.workflow.pipeline_context import PipelineSession

    return PipelineSession(boto_session=boto3.Session(region_name=region), default_bucket=default_bucket)


def job_processor(step: str, image_uri, role, instance_type, session, base_job_name: str, instance_count=1,
                  environment: dict | None = None):
    """A Processor whose entry point is `python -m model_build.pipelines.jobs STEP`: the code is the
    image's own, nothing is uploaded beside it. `environment`: the job's variables (e.g.
    AWS_ENDPOINT_URL for an S3-compatible store, CLIP_SEARCH_* settings)."""
    sdk()
    from sagemaker.processing import Processor

    return Processor(role=role, image_uri=image_uri, instance_count=instance_count, instance_type=instance_type,
                     entrypoint=[*JOBS, step], base_job_name=base_job_name, sagemaker_session=session,
                     env=environment or None)


def retries():
    """Retried: throttling and capacity errors of the service (not the job's own failures)."""
    sdk()
    from sagemaker.workflow.retry import StepExceptionTypeEnum, StepRetryPolicy

    return [StepRetryPolicy(exception_types=[StepExceptionTypeEnum.SERVICE_FAULT, StepExceptionTypeEnum.THROTTLING],
                            interval_seconds=10, backoff_rate=2.0, max_attempts=4)]
