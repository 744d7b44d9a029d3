"""Step 4: a serverless endpoint from an approved model package (or an image + artifact).

Names are derived from what is deployed (package version or image+artifact hash, memory,
concurrency), so re-running with the same inputs finds everything in place and changes nothing;
a new package or new serverless settings create a new endpoint config and update the endpoint.
"""
from __future__ import annotations

import hashlib

from model_build.aws import Aws, client_error_code
from model_build.config import State
from model_build.errors import PublishError

IN_SERVICE = "InService"


def _exists(call, **kwargs) -> dict | None:
    try:
        return call(**kwargs)
    except Exception as error:
        if client_error_code(error) in ("ValidationException", "ResourceNotFound"):
            return None
        raise


def model_source(aws: Aws) -> tuple[str, dict]:
    """(model name, container definition) for the approved package, else image + artifact.

    What the user types wins over the state file: --image-uri and --model-data on the command line
    deploy that image and artifact even when the state file remembers a package. Values from the
    environment or the config file stand for every step (CodeBuild sets CLIP_SEARCH_IMAGE_URI for
    register too), so they do not displace the package registered from them."""
    config = aws.config
    typed = all(config.sources.get(key, "").startswith("--") for key in ("image_uri", "model_data"))
    use_package = config.model_package_arn and not (State.remembered(config, "model_package_arn") and typed)
    if use_package:
        arn = config.model_package_arn
        aws.check_arn_region(arn, "model package", "model_package_arn")
        package = _exists(aws.client("sagemaker").describe_model_package, ModelPackageName=arn)
        if package is None:
            raise aws.not_found("model package", arn, "model_package_arn")
        if package["ModelApprovalStatus"] != "Approved":
            raise PublishError(f"model package {arn} is {package['ModelApprovalStatus']}: "
                               "run `clip-search publish approve` first")
        version = package.get("ModelPackageVersion") or arn.rsplit("/", 1)[-1]
        name = f"{config.package_group}-v{version}"
        return name[:63], {"ModelPackageName": arn}
    if config.image_uri and config.model_data:
        digest = hashlib.sha256(f"{config.image_uri}\n{config.model_data}".encode()).hexdigest()[:10]
        return f"{config.endpoint_name[:52]}-{digest}", {"Image": config.image_uri, "ModelDataUrl": config.model_data}
    raise PublishError("nothing to deploy: run `clip-search publish register` and `approve` first "
                       "(or give --model-package-arn, or --image-uri and --model-data)")


def serverless_variant(model_name: str, memory_mb: int, max_concurrency: int) -> dict:
    return {"VariantName": "AllTraffic", "ModelName": model_name,
            "ServerlessConfig": {"MemorySizeInMB": memory_mb, "MaxConcurrency": max_concurrency}}


def ensure_model(aws: Aws, echo=print) -> str:
    """The SageMaker model for the configured package (or image + artifact), created if missing."""
    config = aws.config
    config.require("role_arn")
    aws.check_role(config.role_arn)
    model_name, container = model_source(aws)
    if _exists(aws.client("sagemaker").describe_model, ModelName=model_name) is None:
        aws.sagemaker_session.create_model(model_name, role=config.role_arn, container_defs=container)
        echo(f"created model: {model_name}")
    else:
        echo(f"model exists: {model_name}")
    return model_name


def deploy_serverless(aws: Aws, wait: bool = True, echo=print) -> dict:
    """Create or update the endpoint; returns {endpoint, endpoint_config, model, action}."""
    config = aws.config
    sm, session = aws.client("sagemaker"), aws.sagemaker_session
    model_name = ensure_model(aws, echo)
    config_name = f"{model_name[:46]}-{config.memory_mb}mb-c{config.max_concurrency}"
    if _exists(sm.describe_endpoint_config, EndpointConfigName=config_name) is None:
        session.create_endpoint_config(name=config_name, model_name=model_name, production_variants=[
            serverless_variant(model_name, config.memory_mb, config.max_concurrency)])
        echo(f"created endpoint config: {config_name} ({config.memory_mb} MB, max concurrency {config.max_concurrency})")
    endpoint = _exists(sm.describe_endpoint, EndpointName=config.endpoint_name)
    if endpoint is None:
        session.create_endpoint(config.endpoint_name, config_name, wait=False)
        action = "created"
    elif endpoint["EndpointConfigName"] != config_name:
        # moto does not implement UpdateEndpoint; the tests check this request's shape.
        session.update_endpoint(config.endpoint_name, config_name, wait=False)
        action = "updated"
    else:
        action = "unchanged"
    echo(f"endpoint {config.endpoint_name}: {action} (config {config_name})")
    settled = action == "unchanged" and endpoint["EndpointStatus"] == IN_SERVICE
    if wait and not settled:
        status = session.wait_for_endpoint(config.endpoint_name, poll=config.poll_seconds)["EndpointStatus"]
        echo(f"endpoint {config.endpoint_name}: {status}")
    return {"endpoint": config.endpoint_name, "endpoint_config": config_name, "model": model_name, "action": action}
