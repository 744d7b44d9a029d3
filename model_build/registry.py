"""Step 3: the model package group (created if missing) and a model package naming the image, the
artifact, the handler's content and response types and the supported instance types.

With an evaluation (model_build/evaluation.py) the package carries ModelMetrics (the report in S3)
and the headline figures as CustomerMetadataProperties; `approve` refuses a package without one.
Registering the same image + artifact + evaluation again returns the existing package instead of a
new version.
"""
from __future__ import annotations

from model_build.aws import Aws, client_error_code, quiet_sdk
from model_build.config import CONTENT_TYPES, RESPONSE_TYPES
from model_build.errors import PublishError


def ensure_group(aws: Aws, echo=print) -> str:
    sm = aws.client("sagemaker")
    name = aws.config.package_group
    try:
        arn = sm.describe_model_package_group(ModelPackageGroupName=name)["ModelPackageGroupArn"]
        echo(f"model package group exists: {arn}")
    except Exception as error:
        if client_error_code(error) not in ("ValidationException", "ResourceNotFound"):
            raise
        arn = sm.create_model_package_group(
            ModelPackageGroupName=name,
            ModelPackageGroupDescription="clip-search: open_clip text+image encoder for product search",
        )["ModelPackageGroupArn"]
        echo(f"created model package group: {arn}")
    return arn


def find_package(aws: Aws, image_uri: str, model_data: str, evaluation_uri: str | None = None) -> dict | None:
    from model_build.evaluation import package_evaluation

    sm = aws.client("sagemaker")
    pages = sm.get_paginator("list_model_packages").paginate(ModelPackageGroupName=aws.config.package_group)
    for page in pages:
        for summary in page["ModelPackageSummaryList"]:
            package = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            containers = package.get("InferenceSpecification", {}).get("Containers", [])
            if (containers and containers[0].get("Image") == image_uri and containers[0].get("ModelDataUrl") == model_data
                    and package_evaluation(package) == evaluation_uri):
                return package
    return None


def register_model(aws: Aws, evaluation: tuple[str, dict, str] | None = None, echo=print) -> str:
    """The ARN of the model package for config.image_uri + config.model_data (new or existing).

    evaluation: (S3 URI, report, sha256 of the report) from model_build.evaluation.load_evaluation;
    the caller has checked the gate's thresholds already."""
    config = aws.config
    config.require("image_uri", "model_data")
    if evaluation is None and config.approval_status == "Approved":
        raise PublishError("a model package without an evaluation is not registered as Approved: give --evaluation "
                           "(publish evaluate), or register it PendingManualApproval and `publish approve --force`")
    extra = {}
    if evaluation is None:
        echo("no evaluation: registering without ModelMetrics (`publish approve` will ask for --force)")
    else:
        from model_build.evaluation import customer_metadata, model_metrics

        uri, report, digest = evaluation
        extra = {"model_metrics": model_metrics(uri, digest), "customer_metadata_properties": customer_metadata(report, uri)}
    ensure_group(aws, echo)
    existing = find_package(aws, config.image_uri, config.model_data, evaluation[0] if evaluation else None)
    if existing:
        echo(f"model package already registered: {existing['ModelPackageArn']} ({existing['ModelApprovalStatus']})")
        return existing["ModelPackageArn"]
    quiet_sdk()
    from sagemaker.model import Model

    model = Model(image_uri=config.image_uri, model_data=config.model_data, role=config.role_arn,
                  sagemaker_session=aws.sagemaker_session)
    package = model.register(
        content_types=CONTENT_TYPES,
        response_types=RESPONSE_TYPES,
        inference_instances=config.split(config.inference_instances),
        transform_instances=config.split(config.transform_instances),
        model_package_group_name=config.package_group,
        approval_status=config.approval_status,
        description=f"clip-search image {config.image_uri}",
        **extra,
    )
    echo(f"registered model package: {package.model_package_arn} ({config.approval_status})"
         + (f" with evaluation {evaluation[0]}" if evaluation else " without an evaluation"))
    return package.model_package_arn


def approve(aws: Aws, package_arn: str, status: str = "Approved", force: bool = False, echo=print) -> str:
    """Set the approval status; approving a package that carries no evaluation needs force."""
    from model_build.evaluation import package_evaluation

    sm = aws.client("sagemaker")
    aws.check_arn_region(package_arn, "model package", "model_package_arn")
    try:
        package = sm.describe_model_package(ModelPackageName=package_arn)
    except Exception as error:
        if client_error_code(error) in ("ValidationException", "ResourceNotFound"):
            raise aws.not_found("model package", package_arn, "model_package_arn") from None
        raise PublishError(f"model package {package_arn}: {error}") from None
    current = package["ModelApprovalStatus"]
    if current == status:
        echo(f"model package {package_arn} is already {status}")
        return status
    if status == "Approved" and not package_evaluation(package):
        if not force:
            raise PublishError(f"model package {package_arn} has no evaluation (ModelMetrics.ModelQuality.Statistics): "
                               "run `publish evaluate` and register with it, or approve anyway with --force")
        echo(f"warning: approving {package_arn} without an evaluation (--force)")
    sm.update_model_package(ModelPackageArn=package_arn, ModelApprovalStatus=status,
                            ApprovalDescription="approved with clip-search publish approve")
    echo(f"model package {package_arn}: {current} -> {status}")
    return status
