"""Publishing settings from flags, environment variables or one config file (YAML or JSON).

Precedence: a flag beats an environment variable, which beats the config file, which beats the
default. Nothing account-specific has a default: bucket, role and region must be given.
Outputs of earlier steps (artifact URI, image URI, evaluation, model package ARN) are remembered in
a state file, so `publish register` after `publish artifact` and `publish image` needs no copying;
they fill only what the user gave nowhere, and `config.sources` says where each setting came from.
The region follows clip_search.aws_region's rule (flag, AWS_REGION, AWS_DEFAULT_REGION, config
file, profile).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import ClassVar

from clip_search import content_types as ct
from clip_search.aws_region import region_from_environment
from model_build.errors import PublishError

CONFIG_ENV = "CLIP_SEARCH_PUBLISH_CONFIG"
STATE_ENV = "CLIP_SEARCH_PUBLISH_STATE"
DEFAULT_STATE = ".clip-search-publish.json"

# What the handler accepts and answers, as the model package declares them.
CONTENT_TYPES = list(ct.REQUEST_TYPES)
RESPONSE_TYPES = list(ct.RESPONSE_TYPES)
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
# The step whose output a setting is: what to run first when it is missing.
PRODUCED_BY = {"model_data": "artifact", "image_uri": "image", "evaluation": "evaluate",
               "model_package_arn": "register"}
# Prerequisites made once per account: `publish stack` creates them.
PREREQUISITES = ("bucket", "role_arn")
# Names with a default that `publish stack` records from the stack's outputs (its Name, Prefix and
# PackageGroupName parameters): the stack's value beats the default, a value the user gives beats both.
STACK_NAMES = ("prefix", "repository", "package_group")


def _field(env: str, default=None, help: str = "", kind=str):
    return dataclasses.field(default=default, metadata={"env": env, "help": help, "kind": kind})


@dataclasses.dataclass
class PublishConfig:
    region: str | None = _field("AWS_REGION", None, "AWS region (else AWS_DEFAULT_REGION, else the profile's).")
    account_id: str | None = _field("CLIP_SEARCH_ACCOUNT_ID", None, "Expected AWS account: refuse to publish with credentials of another.")
    bucket: str | None = _field("CLIP_SEARCH_BUCKET", None, "S3 bucket for the model artifact and Batch Transform data.")
    prefix: str = _field("CLIP_SEARCH_S3_PREFIX", "clip-search", "S3 key prefix under the bucket.")
    role_arn: str | None = _field("CLIP_SEARCH_ROLE_ARN", None, "SageMaker execution role ARN (endpoint, transform).")
    repository: str = _field("CLIP_SEARCH_ECR_REPOSITORY", "clip-search", "ECR repository name.")
    image_tag: str | None = _field("CLIP_SEARCH_IMAGE_TAG", None, "Image tag (default: the package version).")
    local_image: str | None = _field("CLIP_SEARCH_LOCAL_IMAGE", None, "Push this local image instead of building one.")
    registry: str | None = _field("CLIP_SEARCH_REGISTRY", None, "Registry host to push to (default: the ECR registry).")
    model_data: str | None = _field("CLIP_SEARCH_MODEL_DATA", None, "s3:// URI of model.tar.gz (default: from `publish artifact`).")
    image_uri: str | None = _field("CLIP_SEARCH_IMAGE_URI", None, "Serving image URI (default: from `publish image`).")
    package_group: str = _field("CLIP_SEARCH_PACKAGE_GROUP", "clip-search", "Model package group name.")
    approval_status: str = _field("CLIP_SEARCH_APPROVAL_STATUS", "PendingManualApproval", "Approval status of a new model package.")
    model_package_arn: str | None = _field("CLIP_SEARCH_MODEL_PACKAGE_ARN", None, "Model package ARN (default: from `publish register`).")
    evaluation: str | None = _field("CLIP_SEARCH_EVALUATION", None, "Evaluation report (s3:// URI or local JSON) to attach "
                                    "(default: from `publish evaluate`).")
    min_recall_at_10: float | None = _field("CLIP_SEARCH_MIN_RECALL_AT_10", None, "Refuse to register (exit 3) when "
                                            "recall@10 of any query kind is below this.", float)
    min_text_recall_at_10: float | None = _field("CLIP_SEARCH_MIN_TEXT_RECALL_AT_10", None, "Refuse to register (exit 3) "
                                                 "when text -> product recall@10 is below this.", float)
    min_image_recall_at_10: float | None = _field("CLIP_SEARCH_MIN_IMAGE_RECALL_AT_10", None, "Refuse to register (exit 3) "
                                                  "when photo -> product recall@10 is below this.", float)
    inference_instances: str = _field("CLIP_SEARCH_INFERENCE_INSTANCES", "ml.m5.large,ml.m5.xlarge,ml.c5.xlarge,ml.c5.2xlarge",
                                      "Comma-separated real-time instance types the package supports.")
    transform_instances: str = _field("CLIP_SEARCH_TRANSFORM_INSTANCES", "ml.m5.xlarge,ml.c5.2xlarge,ml.c5.4xlarge",
                                      "Comma-separated transform instance types the package supports.")
    endpoint_name: str = _field("CLIP_SEARCH_ENDPOINT", "clip-search", "Serverless endpoint name.")
    memory_mb: int = _field("CLIP_SEARCH_SERVERLESS_MEMORY_MB", 3072, "Serverless memory, 1024-6144 MB in 1024 steps.", int)
    max_concurrency: int = _field("CLIP_SEARCH_SERVERLESS_MAX_CONCURRENCY", 5, "Serverless max concurrency (1-200).", int)
    transform_instance_type: str = _field("CLIP_SEARCH_TRANSFORM_INSTANCE_TYPE", "ml.m5.xlarge", "Batch Transform instance type.")
    transform_instance_count: int = _field("CLIP_SEARCH_TRANSFORM_INSTANCE_COUNT", 1, "Batch Transform instance count.", int)
    max_payload_mb: int = _field("CLIP_SEARCH_MAX_PAYLOAD_MB", 6, "Batch Transform MaxPayloadInMB (1-100).", int)
    max_concurrent_transforms: int = _field("CLIP_SEARCH_MAX_CONCURRENT_TRANSFORMS", 2, "Batch Transform requests in flight per instance.", int)
    poll_seconds: int = _field("CLIP_SEARCH_POLL_SECONDS", 15, "Seconds between status polls while waiting.", int)

    # Where each setting came from ("--bucket", "CLIP_SEARCH_BUCKET", "config file X", "state file X");
    # load_config and State.fill set it on the instance.
    sources: ClassVar[dict] = {}

    def require(self, *names: str) -> None:
        """Fail with every missing setting named, with its flag and environment variable, and the
        step to run first when it is an earlier step's output."""
        missing = [name for name in names if getattr(self, name) in (None, "")]
        if not missing:
            return
        hints = ", ".join(f"--{n.replace('_', '-')} / {FIELDS[n].metadata['env']}" for n in missing)
        steps = [PRODUCED_BY[n] for n in missing if n in PRODUCED_BY]
        if steps:
            raise PublishError(f"missing {hints}: run {' and '.join(f'`clip-search publish {s}`' for s in steps)} "
                               "first (or give the setting)")
        if any(n in PREREQUISITES for n in missing):
            raise PublishError(f"missing setting(s): {hints} (create the bucket and the SageMaker execution role "
                               "with `clip-search publish stack`, or put them in the config file)")
        raise PublishError(f"missing setting(s): {hints} (or put them in the config file)")

    def validate(self) -> "PublishConfig":
        if self.memory_mb not in SERVERLESS_MEMORY_MB:
            raise PublishError(f"serverless memory {self.memory_mb} MB: must be one of {SERVERLESS_MEMORY_MB}")
        if not 1 <= self.max_concurrency <= 200:
            raise PublishError(f"serverless max concurrency {self.max_concurrency}: must be 1-200")
        if self.approval_status not in APPROVAL_STATUSES:
            raise PublishError(f"approval status {self.approval_status!r}: must be one of {APPROVAL_STATUSES}")
        for name in ("min_recall_at_10", "min_text_recall_at_10", "min_image_recall_at_10"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise PublishError(f"--{name.replace('_', '-')} {value:g}: must be between 0 and 1")
        if not 1 <= self.max_payload_mb <= 100:
            raise PublishError(f"MaxPayloadInMB {self.max_payload_mb}: must be 1-100")
        return self

    @staticmethod
    def split(value: str) -> list[str]:
        return [item.strip() for item in value.split(",") if item.strip()]


FIELDS = {f.name: f for f in dataclasses.fields(PublishConfig)}


def read_config_file(path: str | Path | None) -> dict:
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return {}
    path = Path(path)
    if not path.is_file():
        raise PublishError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise PublishError(f"config file {path}: unknown setting(s) {unknown}; known: {sorted(FIELDS)}")
    return data


def load_config(flags: dict | None = None, config_file: str | Path | None = None,
                environ: dict | None = None) -> PublishConfig:
    environ = os.environ if environ is None else environ
    values = read_config_file(config_file)
    where = config_file or environ.get(CONFIG_ENV)
    sources = {name: f"config file {where}" for name in values}
    for name, field in FIELDS.items():
        variable = field.metadata["env"]
        if name == "region":
            env_value, variable = region_from_environment(environ)
        else:
            env_value = environ.get(variable)
        if env_value not in (None, ""):
            values[name], sources[name] = env_value, variable
    for name, value in (flags or {}).items():
        if value is not None:
            values[name], sources[name] = value, f"--{name.replace('_', '-')}"
    try:
        values = {k: FIELDS[k].metadata["kind"](v) if v is not None else None for k, v in values.items()}
    except ValueError as error:
        raise PublishError(f"bad setting value: {error}") from None
    config = PublishConfig(**values).validate()
    config.sources = sources
    return config


class State:
    """Outputs of earlier steps, kept in a small JSON file (path: CLIP_SEARCH_PUBLISH_STATE)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path or os.environ.get(STATE_ENV) or DEFAULT_STATE)
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key: str):
        return self.data.get(key)

    def record(self, **values) -> None:
        """Remember outputs; the file is replaced whole, so a killed step leaves the old one."""
        self.data.update(values)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        scratch.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
        os.replace(scratch, self.path)

    def fill(self, config: PublishConfig) -> PublishConfig:
        """Settings the user gave nowhere default to what earlier steps (and `publish stack`) produced."""
        for key in (*PRODUCED_BY, *PREREQUISITES, *STACK_NAMES):
            unset = key not in config.sources if key in STACK_NAMES else getattr(config, key) in (None, "")
            if unset and self.get(key):
                setattr(config, key, self.get(key))
                config.sources = {**config.sources, key: f"state file {self.path}"}
        return config

    @staticmethod
    def remembered(config: PublishConfig, key: str) -> bool:
        """Whether the setting came from this file rather than from the user."""
        return config.sources.get(key, "").startswith("state file ")
