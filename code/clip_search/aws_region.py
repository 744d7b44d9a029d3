"""The one region rule of every command that talks to AWS (publish and its steps, encode, index,
search, eval, app): `--region` where the command takes one, then AWS_REGION, then
AWS_DEFAULT_REGION, then the region of the AWS profile (AWS_PROFILE or `default`).

boto3 alone reads AWS_DEFAULT_REGION and the profile but not AWS_REGION, so a client made without
an explicit region could land in another region than the one the user exported: every client of
this project is made with `region_name=resolve_region(...)`.
"""
from __future__ import annotations

import os
from typing import Mapping

import click

from clip_search.errors import ClipSearchError

ENV_NAMES = ("AWS_REGION", "AWS_DEFAULT_REGION")
HINT = "give --region, or set AWS_REGION or AWS_DEFAULT_REGION, or a region in your AWS profile"


class NoRegionError(ClipSearchError):
    """No region anywhere the rule looks."""


def region_from_environment(environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(region, the variable it came from) from AWS_REGION, else AWS_DEFAULT_REGION."""
    environ = os.environ if environ is None else environ
    for name in ENV_NAMES:
        if environ.get(name):
            return environ[name], name
    return None, None


def profile_region() -> tuple[str | None, str | None]:
    """(region, "profile NAME") from the AWS config file; (None, None) without botocore or a region."""
    try:
        import botocore.session
    except ImportError:  # no AWS SDK installed: nothing here talks to AWS
        return None, None
    session = botocore.session.Session()
    try:
        region = session.get_scoped_config().get("region")
    except Exception:  # noqa: BLE001 - a profile named in AWS_PROFILE that does not exist: no region from it
        return None, None
    return (region, f"profile {session.profile or 'default'}") if region else (None, None)


def resolve_region(given: str | None = None, *, given_by: str = "--region",
                   environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(region, where it came from) by the rule; (None, None) when there is none."""
    if given:
        return given, given_by
    region, source = region_from_environment(environ)
    if region:
        return region, source
    return profile_region()


def require_region(given: str | None = None, **kwargs) -> str:
    region, _ = resolve_region(given, **kwargs)
    if not region:
        raise NoRegionError(f"no AWS region: {HINT}")
    return region


def _apply(ctx, param, value):
    # `--region R` is AWS_REGION=R for this command and whatever it starts: the SageMaker runtime
    # client, LanceDB's S3 store and OpenSearch's SigV4 signer all read AWS_REGION first.
    if value:
        os.environ["AWS_REGION"] = value
    return value


def region_option(function):
    """`--region` for a command that may talk to AWS (a SageMaker endpoint, an s3:// index...)."""
    return click.option("--region", metavar="REGION", expose_value=False, callback=_apply, is_eager=True,
                        help="AWS region [default: AWS_REGION, else AWS_DEFAULT_REGION, else the profile's].")(function)
