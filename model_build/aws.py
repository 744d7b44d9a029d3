"""Sessions and clients for one configuration, and the checks that turn AWS errors into clear ones.

boto3 and the SageMaker SDK both honour AWS_ENDPOINT_URL (tests point it at moto on 127.0.0.1).
The SDK's telemetry is switched off unless the user gave their own SDK config file.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import urllib.parse
from functools import cached_property
from pathlib import Path

from clip_search.aws_region import HINT, resolve_region
from model_build.config import PublishConfig
from model_build.errors import PublishError

SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"

_SDK_CONFIG = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"


def quiet_sdk() -> None:
    """Before importing `sagemaker`: no v3 upgrade banner, no telemetry calls; then the SDK imported
    with its config validated without re-checking the SDK's own schema every time (_validate_once)."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)  # "Fetched defaults config..." per call
    if "SAGEMAKER_USER_CONFIG_OVERRIDE" not in os.environ:
        path = Path(tempfile.gettempdir()) / "clip-search-sagemaker-config.yaml"
        path.write_text(_SDK_CONFIG)
        os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(path)
    _validate_once()


def _validate_once() -> None:
    """The SDK validates its config (ours holds TelemetryOptOut, so it is never empty) on every
    setting it looks up - hundreds while a pipeline is defined, tens per publish step - with
    `jsonschema.validate`, which first checks the SDK's own constant schema against the JSON Schema
    meta-schema: 0.1-0.3 s each, most of `publish pipeline upsert`'s time. Here the schema is checked
    once and the config is validated by the same rules, raising the same error (best_match) as before."""
    import sys

    import sagemaker.config.config as sdk_config

    original = sdk_config.validate_sagemaker_config
    if getattr(original, "schema_checked_once", False):
        return
    import jsonschema
    from jsonschema.exceptions import best_match

    schema = sdk_config.SAGEMAKER_PYTHON_SDK_CONFIG_SCHEMA
    validators = []  # checked and built at the first validation: a process may look nothing up

    def validate_sagemaker_config(sagemaker_config: dict = None):
        if not validators:
            validator_class = jsonschema.validators.validator_for(schema)
            validator_class.check_schema(schema)
            validators.append(validator_class(schema))
        error = best_match(validators[0].iter_errors(sagemaker_config))
        if error is not None:
            raise error

    validate_sagemaker_config.schema_checked_once = True
    # Every SDK module that imported the function by name (sagemaker.utils, .session, .local...).
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "sagemaker" and getattr(module, "validate_sagemaker_config", None) is original:
            module.validate_sagemaker_config = validate_sagemaker_config


def client_error_code(error) -> str:
    return getattr(error, "response", {}).get("Error", {}).get("Code", "")


class Aws:
    def __init__(self, config: PublishConfig, boto_session=None):
        self.config = config
        # config.region is --region, AWS_REGION, AWS_DEFAULT_REGION or the config file (load_config);
        # the profile's region comes last.
        region, self.region_source = resolve_region(config.region, given_by=config.sources.get("region", "--region"))
        if boto_session is None:
            if not region:
                raise PublishError(f"no AWS region: {HINT}")
            import boto3

            boto_session = boto3.Session(region_name=region)
        elif not boto_session.region_name:
            raise PublishError(f"no AWS region: {HINT}")
        self.session = boto_session
        self._clients = {}

    @property
    def region(self) -> str:
        return self.session.region_name

    def client(self, name: str):
        if name not in self._clients:
            self._clients[name] = self.session.client(name)
        return self._clients[name]

    @cached_property
    def account_id(self) -> str:
        return self.client("sts").get_caller_identity()["Account"]

    @cached_property
    def sagemaker_session(self):
        quiet_sdk()
        import sagemaker

        return sagemaker.Session(boto_session=self.session, default_bucket=self.config.bucket)

    # --- checks: fail before creating anything, naming what is missing ------------------------
    def check_account(self) -> None:
        expected = self.config.account_id
        if expected and str(expected) != self.account_id:
            where = self.config.sources.get("account_id", "CLIP_SEARCH_ACCOUNT_ID")
            raise PublishError(f"credentials are for account {self.account_id}, not {where}={expected}")

    def check_bucket(self, bucket: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client("s3").head_bucket(Bucket=bucket)
        except ClientError as error:
            code = client_error_code(error)
            if code in ("404", "NoSuchBucket"):
                raise PublishError(f"S3 bucket {bucket!r} does not exist (create it, or set CLIP_SEARCH_BUCKET)") from None
            raise PublishError(f"S3 bucket {bucket!r} is not accessible ({code}): check s3:ListBucket on it") from None

    def check_role(self, role_arn: str) -> None:
        """The SageMaker execution role, checked whole: an IAM role ARN of the caller's account, a
        role that exists under that exact ARN, and a trust policy that lets SageMaker assume it."""
        from botocore.exceptions import ClientError

        parts = role_arn.split(":", 5)
        if len(parts) != 6 or parts[0] != "arn" or parts[2] != "iam" or not parts[5].startswith("role/"):
            raise PublishError(f"{role_arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
        account, name = parts[4], parts[5].rsplit("/", 1)[-1]
        if account != self.account_id:
            raise PublishError(f"IAM role {role_arn} is in account {account or '(none)'}, but the credentials are for "
                               f"account {self.account_id}: give a role of account {self.account_id} "
                               "(`clip-search publish stack` creates one)")
        try:
            role = self.client("iam").get_role(RoleName=name)["Role"]
        except ClientError as error:
            if client_error_code(error) == "NoSuchEntity":
                raise PublishError(f"IAM role {role_arn} does not exist in account {account} (create it with "
                                   "`clip-search publish stack`, or set CLIP_SEARCH_ROLE_ARN)") from None
            raise PublishError(f"cannot read IAM role {role_arn} ({client_error_code(error)}): "
                               "grant iam:GetRole on it") from None
        if role["Arn"] != role_arn:
            raise PublishError(f"IAM role {role_arn} does not exist: the role named {name} is {role['Arn']} "
                               "(its path differs)")
        if not trusts(role.get("AssumeRolePolicyDocument"), SAGEMAKER_PRINCIPAL):
            raise PublishError(f"IAM role {role_arn} cannot be assumed by SageMaker: its trust policy does not allow "
                               f"sts:AssumeRole for the service {SAGEMAKER_PRINCIPAL}")

    def check_arn_region(self, arn: str, what: str, setting: str) -> None:
        """A regional ARN used in another region is "not found" there: say so before asking."""
        parts = arn.split(":", 5)
        where = self.config.sources.get(setting, "--" + setting.replace("_", "-"))
        if len(parts) == 6 and parts[3] and parts[3] != self.region:
            raise PublishError(f"{what} {arn} is in region {parts[3]}, but this step searched region {self.region} "
                               f"(from {self.region_source}); the ARN was recorded in {where}: run with "
                               f"--region {parts[3]}")

    def not_found(self, what: str, name: str, setting: str) -> PublishError:
        where = self.config.sources.get(setting, "--" + setting.replace("_", "-"))
        return PublishError(f"{what} {name} does not exist in region {self.region} (searched there, from "
                            f"{self.region_source}; it was recorded in {where})")


def _policy(document) -> dict:
    # boto3 decodes IAM's URL-encoded JSON into a dict; other clients (and moto) may leave a string.
    if isinstance(document, str):
        document = json.loads(urllib.parse.unquote(document)) if document.strip() else {}
    return document or {}


def trusts(document, service: str) -> bool:
    """Whether a trust policy has an Allow of sts:AssumeRole (or sts:*, *) for the service principal."""
    statements = _policy(document).get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        if statement.get("Effect") != "Allow":
            continue
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if not any(action in ("sts:AssumeRole", "sts:*", "*") for action in actions):
            continue
        principal = statement.get("Principal") or {}
        if principal == "*":
            return True
        services = principal.get("Service", []) if isinstance(principal, dict) else []
        services = [services] if isinstance(services, str) else services
        if service in services:
            return True
    return False


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise PublishError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key
