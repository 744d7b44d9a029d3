"""`clip-search publish teardown`: remove what publishing and the stack made.

Always: the serverless endpoint, its endpoint configs and the models publishing or the deployer
created (named after the model package group or the endpoint), then the stack (which removes the
roles, functions, rule, OpenSearch, VPC, alarms). Kept unless --delete-data: the bucket's data, the
ECR repository and the model registry (the template retains them when the stack goes).
Each deletion is printed; running it again finds nothing left and says so.
"""
from __future__ import annotations

import time

from model_build.aws import Aws, client_error_code
from model_build.errors import PublishError
from model_build.stack import describe, outputs_of


def _gone(error) -> bool:
    code = client_error_code(error)
    return code in ("ValidationException", "ResourceNotFound", "NoSuchBucket", "RepositoryNotFoundException",
                    "404") or "does not exist" in str(error) or "Could not find" in str(error)


def _ours(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + "-") for p in prefixes)


def delete_endpoint_resources(aws: Aws, endpoint: str, prefixes: tuple[str, ...], echo=print) -> None:
    sm = aws.client("sagemaker")
    try:
        sm.describe_endpoint(EndpointName=endpoint)
        sm.delete_endpoint(EndpointName=endpoint)
        echo(f"deleted endpoint {endpoint}")
        _wait_endpoint_gone(sm, endpoint, aws.config.poll_seconds)
    except Exception as error:
        if not _gone(error):
            raise
    for page in sm.get_paginator("list_endpoint_configs").paginate():
        for item in page["EndpointConfigs"]:
            if _ours(item["EndpointConfigName"], prefixes):
                sm.delete_endpoint_config(EndpointConfigName=item["EndpointConfigName"])
                echo(f"deleted endpoint config {item['EndpointConfigName']}")
    for page in sm.get_paginator("list_models").paginate():
        for item in page["Models"]:
            if _ours(item["ModelName"], prefixes):
                sm.delete_model(ModelName=item["ModelName"])
                echo(f"deleted model {item['ModelName']}")


def _wait_endpoint_gone(sm, endpoint: str, poll: int) -> None:
    while True:
        try:
            sm.describe_endpoint(EndpointName=endpoint)
        except Exception as error:
            if _gone(error):
                return
            raise
        time.sleep(poll)


def delete_stack(aws: Aws, stack_name: str, echo=print) -> None:
    cfn = aws.client("cloudformation")
    stack = describe(aws, stack_name)
    if stack is None or stack["StackStatus"] == "DELETE_COMPLETE":
        echo(f"stack {stack_name}: not found (nothing to delete)")
        return
    cfn.delete_stack(StackName=stack_name)
    echo(f"deleting stack {stack_name} (roles, functions, rule, search index service, network, alarms)...")
    while True:
        stack = describe(aws, stack_name)
        if stack is None or stack["StackStatus"] == "DELETE_COMPLETE":
            break
        if stack["StackStatus"] == "DELETE_FAILED":
            raise PublishError(f"stack {stack_name}: DELETE_FAILED: {stack.get('StackStatusReason', '')}")
        time.sleep(max(1, aws.config.poll_seconds // 3))
    echo(f"deleted stack {stack_name}")


def delete_bucket(aws: Aws, bucket: str, echo=print) -> None:
    s3 = aws.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception as error:
        if _gone(error):
            return
        raise
    count = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        keys = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in (page.get("Versions") or []) + (page.get("DeleteMarkers") or [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            count += len(keys)
    s3.delete_bucket(Bucket=bucket)
    echo(f"deleted bucket {bucket} ({count} object versions)")


def delete_repository(aws: Aws, name: str, echo=print) -> None:
    try:
        aws.client("ecr").delete_repository(repositoryName=name, force=True)
        echo(f"deleted ECR repository {name} and its images")
    except Exception as error:
        if not _gone(error):
            raise


def delete_registry(aws: Aws, group: str, echo=print) -> None:
    sm = aws.client("sagemaker")
    try:
        sm.describe_model_package_group(ModelPackageGroupName=group)
    except Exception as error:
        if _gone(error):
            return
        raise
    for page in sm.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group):
        for item in page["ModelPackageSummaryList"]:
            sm.delete_model_package(ModelPackageName=item["ModelPackageArn"])
            echo(f"deleted model package {item['ModelPackageArn']}")
    sm.delete_model_package_group(ModelPackageGroupName=group)
    echo(f"deleted model package group {group}")


def teardown(aws: Aws, stack_name: str, state, delete_data: bool = False, echo=print) -> None:
    config = aws.config
    stack = describe(aws, stack_name)
    outputs = outputs_of(stack or {})
    group = outputs.get("PackageGroupName") or state.get("package_group") or config.package_group
    endpoint = outputs.get("EndpointName") or state.get("endpoint") or config.endpoint_name
    bucket = outputs.get("Bucket") or state.get("bucket") or config.bucket
    repository = outputs.get("RepositoryName") or state.get("repository") or config.repository
    delete_endpoint_resources(aws, endpoint, tuple(sorted({group, endpoint})), echo)
    delete_stack(aws, stack_name, echo)
    if delete_data:
        if bucket:
            delete_bucket(aws, bucket, echo)
        delete_repository(aws, repository, echo)
        delete_registry(aws, group, echo)
    else:
        echo(f"kept: bucket {bucket or '(none)'} and its data, ECR repository {repository}, "
             f"model package group {group} (--delete-data removes them)")
