"""Least privilege, checked: recorded AWS API calls -> the IAM actions and resource ARNs they need,
and whether a role's policy allows them. Action expansion, glob matching of actions and ARNs, and
which actions support resource-level permissions come from parliament (its IAM definition: AWS's
Service Authorization Reference); this module only maps a call's parameters to ARNs.

Conditions in a statement are not evaluated (they only narrow an Allow); Deny statements are not
used by the roles in infra/.
"""
from __future__ import annotations

import functools
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # parliament imports pkg_resources
    import parliament

# Calls that need no permission (sts:GetCallerIdentity is always allowed).
FREE = {("sts", "GetCallerIdentity")}
# S3 operations whose IAM action has another name.
S3_ACTIONS = {"HeadObject": "GetObject", "HeadBucket": "ListBucket", "ListObjectsV2": "ListBucket",
              "ListObjects": "ListBucket", "ListObjectVersions": "ListBucketVersions",
              "CreateMultipartUpload": "PutObject", "UploadPart": "PutObject", "CompleteMultipartUpload": "PutObject",
              "DeleteObjects": "DeleteObject"}
# SageMaker parameters that name a resource, and the ARN's resource type.
# The first one a call carries is the resource it acts on (CreateTransformJob names a model too,
# CreateEndpoint an endpoint config).
SAGEMAKER_NAMES = [("TransformJobName", "transform-job"), ("EndpointName", "endpoint"),
                   ("EndpointConfigName", "endpoint-config"), ("ModelName", "model")]


def required(service: str, operation: str, params: dict, region: str, account: str) -> list[tuple[str, str]]:
    """The (action, resource ARN) pairs one API call needs; ARN '*' when it names no resource."""
    if (service, operation) in FREE:
        return []
    sm = f"arn:aws:sagemaker:{region}:{account}"
    if service == "s3":
        action = "s3:" + S3_ACTIONS.get(operation, operation)
        bucket, key = params.get("Bucket", ""), params.get("Key")
        if operation == "DeleteObjects":
            return [(action, f"arn:aws:s3:::{bucket}/{o['Key']}") for o in params["Delete"]["Objects"]]
        return [(action, f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}")]
    if service == "ecr":
        name = params.get("repositoryName") or (params.get("repositoryNames") or [None])[0]
        return [(f"ecr:{operation}", f"arn:aws:ecr:{region}:{account}:repository/{name}" if name else "*")]
    if service == "iam":
        return [(f"iam:{operation}", f"arn:aws:iam::{account}:role/{params['RoleName']}")]
    if service == "es":  # an OpenSearch domain's HTTP API: es:ESHttp<Method> on the domain's path
        return [(f"es:ESHttp{params['method'].title()}",
                 f"arn:aws:es:{region}:{account}:domain/{params['domain']}{params['path']}")]
    if service == "aoss":  # an OpenSearch Serverless collection's data plane: one action, on the collection
        return [("aoss:APIAccessAll", f"arn:aws:aoss:{region}:{account}:collection/{params['collection']}")]
    if service in ("sagemaker", "sagemaker-runtime"):
        needs = []
        if operation == "CreateModel":  # SageMaker assumes the execution role: the caller passes it
            needs.append(("iam:PassRole", params["ExecutionRoleArn"]))
        package = params.get("ModelPackageName") or params.get("ModelPackageArn")
        if package and package.startswith("arn:"):
            arn = package
        elif operation == "CreateModelPackage":
            arn = f"{sm}:model-package/{params['ModelPackageGroupName'].lower()}/1"
        elif operation == "ListModelPackages":
            arn = f"{sm}:model-package/{params.get('ModelPackageGroupName', '*').lower()}/*"
        elif "ModelPackageGroupName" in params:
            arn = f"{sm}:model-package-group/{params['ModelPackageGroupName'].lower()}"
        else:
            arn = next((f"{sm}:{kind}/{params[key].lower()}" for key, kind in SAGEMAKER_NAMES if key in params), "*")
        return needs + [(f"sagemaker:{operation}", arn)]
    raise AssertionError(f"no IAM mapping for {service}:{operation}: add it to tests/infra/iam_check.py")


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def allows(policy: dict, action: str, resource: str) -> bool:
    """Whether an Allow statement of the policy names the action (globs expanded by parliament)
    and a resource matching the ARN."""
    for statement in _as_list(policy.get("Statement", [])):
        if statement.get("Effect") != "Allow":
            continue
        if not any(action.lower() in _expanded(pattern) for pattern in _as_list(statement.get("Action", []))):
            continue
        if any(parliament.is_glob_match(pattern, resource) for pattern in _as_list(statement.get("Resource", []))):
            return True
    return False


@functools.lru_cache(maxsize=None)
def _expanded(pattern: str) -> frozenset[str]:
    return frozenset(f"{a['service']}:{a['action']}".lower() for a in parliament.expand_action(pattern))


def denied(policy: dict, calls, region: str, account: str) -> list[tuple[str, str, str]]:
    """(operation, action, resource) for each recorded call the policy does not allow."""
    missing = []
    for service, operation, params in calls:
        for action, resource in required(service, operation, params, region, account):
            if not allows(policy, action, resource):
                missing.append((operation, action, resource))
    return missing


def supports_resource_level(action: str) -> bool:
    prefix, name = action.split(":", 1)
    for service in parliament.iam_definition:
        if service["prefix"] == prefix:
            for privilege in service["privileges"]:
                if privilege["privilege"].lower() == name.lower():
                    return any(r["resource_type"] for r in privilege["resource_types"])
    raise AssertionError(f"{action}: not in parliament's IAM definition")


def over_broad(policy: dict) -> list[tuple[str, str]]:
    """Statements with Action "*" (or "service:*"), and actions given Resource "*" although they
    support resource-level permissions."""
    problems = []
    for statement in _as_list(policy.get("Statement", [])):
        actions = _as_list(statement.get("Action", []))
        for pattern in actions:
            if pattern == "*" or pattern.endswith(":*"):
                problems.append((pattern, "wildcard action"))
        if "*" in _as_list(statement.get("Resource", [])):
            for pattern in actions:
                for expanded in sorted(_expanded(pattern)):
                    if supports_resource_level(expanded):
                        problems.append((expanded, 'Resource "*" where resource-level permissions exist'))
    return problems
