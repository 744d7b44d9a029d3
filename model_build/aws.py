"""Sessions and clients for one configuration, and the checks that turn AWS errors into clear ones.

boto3 and the SageMaker SDK both honour AWS_ENDPOINT_URL (tests point it at moto on 127.0.0.1).
The SDK's telemetry is switched off unless the user gave their own SDK config file.
"""
from __future__ import annotations

import logging
import os
import tempfile
from functools import cached_property
from pathlib import Path

from model_build.config import PublishConfig
from model_build.errors import PublishError

_SDK_CONFIG = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"


def quiet_sdk() -> None:
    """Before importing `sagemaker`: no v3 upgrade banner, no telemetry calls."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)  # "Fetched defaults config..." per call
    if "SAGEMAKER_USER_CONFIG_OVERRIDE" not in os.environ:
        path = Path(tempfile.gettempdir()) / "clip-search-sagemaker-config.yaml"
        path.write_text(_SDK_CONFIG)
        os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(path)


def client_error_code(error) -> str:
    return getattr(error, "response", {}).get("Error", {}).get("Code", "")


class Aws:
    def __init__(self, config: PublishConfig, boto_session=None):
        self.config = config
        if boto_session is None:
            import boto3

            boto_session = boto3.Session(region_name=config.region)
        if not boto_session.region_name:
            raise PublishError("no AWS region: set --region, AWS_REGION or AWS_DEFAULT_REGION")
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
            raise PublishError(f"credentials are for account {self.account_id}, not CLIP_SEARCH_ACCOUNT_ID={expected}")

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
        from botocore.exceptions import ClientError

        if ":role/" not in role_arn:
            raise PublishError(f"{role_arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
        name = role_arn.split(":role/", 1)[1].rsplit("/", 1)[-1]
        try:
            self.client("iam").get_role(RoleName=name)
        except ClientError as error:
            if client_error_code(error) == "NoSuchEntity":
                raise PublishError(f"IAM role {role_arn} does not exist (set CLIP_SEARCH_ROLE_ARN)") from None
            raise PublishError(f"cannot read IAM role {role_arn} ({client_error_code(error)}): "
                               "grant iam:GetRole on it") from None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise PublishError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key
