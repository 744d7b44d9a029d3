"""`clip-search publish stack`: create or update the CloudFormation stack of infra/clip-search.yaml
through a change set (shown before it runs), wait for it, print its outputs and record them in the
publish state, so the later steps take their bucket, role, repository and index URL from it.

The query function needs its image in the stack's repository: the first run makes everything else;
after `publish image --variant lambda` the next run passes that image (state key lambda_image_uri)
and adds the function, its URL and its alarms.
"""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from model_build.aws import Aws, client_error_code
from model_build.errors import PublishError

# infra/ in the repository, installed as model_build.infra (setup.py).
TEMPLATE = Path(str(resources.files("model_build.infra") / "clip-search.yaml"))
DEFAULT_STACK = "clip-search"
# Stack outputs -> publish state keys (the names the steps' settings use).
STATE_KEYS = {"Bucket": "bucket", "Prefix": "prefix", "SageMakerRoleArn": "role_arn", "RepositoryName": "repository",
              "RepositoryUri": "repository_uri", "PackageGroupName": "package_group", "IndexUrl": "index",
              "FunctionUrl": "function_url", "QueryFunctionName": "query_function", "QueryRoleArn": "query_role_arn",
              "CodeBuildRoleArn": "codebuild_role_arn", "DeployerRoleArn": "deployer_role_arn",
              "PublisherPolicyArn": "publisher_policy_arn", "DomainEndpoint": "domain_endpoint",
              "CollectionEndpoint": "collection_endpoint"}
# Stacks in these states cannot take a change set; the message says what to do.
STUCK = {"ROLLBACK_COMPLETE": "its creation failed and rolled back: remove it with `clip-search publish teardown`, "
                              "then run `publish stack` again",
         "DELETE_IN_PROGRESS": "it is being deleted: wait, then run `publish stack` again"}


def describe(aws: Aws, name: str) -> dict | None:
    try:
        return aws.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0]
    except Exception as error:
        if client_error_code(error) == "ValidationError" and "does not exist" in str(error):
            return None
        raise


def outputs_of(stack: dict) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []}


def parse_parameters(pairs: list[str]) -> dict[str, str]:
    parameters = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PublishError(f"--parameter {pair!r}: expected KEY=VALUE (a parameter of {TEMPLATE.name})")
        parameters[key] = value
    return parameters


def _wait_change_set(cfn, stack_name: str, change_set: str, poll: float) -> dict:
    while True:
        described = cfn.describe_change_set(StackName=stack_name, ChangeSetName=change_set)
        if described["Status"] in ("CREATE_COMPLETE", "FAILED"):
            return described
        time.sleep(poll)


def _wait_stack(cfn, stack_name: str, poll: float, echo) -> dict:
    seen = set()
    while True:
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        for event in reversed(cfn.describe_stack_events(StackName=stack_name)["StackEvents"][:50]):
            if event["EventId"] not in seen:
                seen.add(event["EventId"])
                if event.get("ResourceStatusReason") and "FAILED" in event["ResourceStatus"]:
                    echo(f"  {event['LogicalResourceId']}: {event['ResourceStatus']}: {event['ResourceStatusReason']}")
        if not stack["StackStatus"].endswith("_IN_PROGRESS"):
            return stack
        time.sleep(poll)


def deploy_stack(aws: Aws, stack_name: str = DEFAULT_STACK, parameters: dict | None = None,
                 template: Path = TEMPLATE, execute: bool = True, echo=print) -> dict[str, str]:
    """Create or update the stack through a change set; returns the stack's outputs."""
    cfn = aws.client("cloudformation")
    template = Path(template)
    if not template.is_file():
        raise PublishError(f"template {template} not found (give --template)")
    existing = describe(aws, stack_name)
    if existing and existing["StackStatus"] in STUCK:
        raise PublishError(f"stack {stack_name} is {existing['StackStatus']}: {STUCK[existing['StackStatus']]}")
    kind = "UPDATE" if existing else "CREATE"
    previous = {p["ParameterKey"] for p in (existing or {}).get("Parameters") or []}
    given = parameters or {}
    # On update, a parameter not given keeps its current value (not the template's default).
    params = [{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()]
    params += [{"ParameterKey": k, "UsePreviousValue": True} for k in sorted(previous - set(given))]
    change_set = f"clip-search-{time.strftime('%Y%m%d-%H%M%S')}"
    cfn.create_change_set(StackName=stack_name, ChangeSetName=change_set, ChangeSetType=kind,
                          TemplateBody=template.read_text(encoding="utf-8"), Parameters=params,
                          Capabilities=["CAPABILITY_NAMED_IAM"],
                          Description="clip-search publish stack")
    poll = max(1, aws.config.poll_seconds // 3)
    described = _wait_change_set(cfn, stack_name, change_set, poll)
    if described["Status"] == "FAILED":
        reason = described.get("StatusReason", "")
        cfn.delete_change_set(StackName=stack_name, ChangeSetName=change_set)
        if "didn't contain changes" in reason or "No updates" in reason:
            echo(f"stack {stack_name}: no changes")
            return outputs_of(describe(aws, stack_name) or {})
        raise PublishError(f"change set for stack {stack_name} failed: {reason}")
    echo(f"change set {change_set} ({kind.lower()} stack {stack_name}):")
    for change in described.get("Changes", []):
        detail = change.get("ResourceChange", {})
        replacement = detail.get("Replacement")
        echo(f"  {detail.get('Action', '?'):<7} {detail.get('LogicalResourceId', '?'):<28} {detail.get('ResourceType', '')}"
             + (f"  (replacement: {replacement})" if replacement and replacement != "False" else ""))
    if not execute:
        cfn.delete_change_set(StackName=stack_name, ChangeSetName=change_set)
        echo("not executed (--no-execute); change set deleted")
        return outputs_of(existing or {})
    cfn.execute_change_set(StackName=stack_name, ChangeSetName=change_set)
    echo(f"stack {stack_name}: executing change set, waiting...")
    stack = _wait_stack(cfn, stack_name, poll, echo)
    status = stack["StackStatus"]
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise PublishError(f"stack {stack_name} ended {status}: {stack.get('StackStatusReason', 'see the events above')}")
    echo(f"stack {stack_name}: {status}")
    return outputs_of(stack)


def state_values(outputs: dict[str, str | None], stack_name: str) -> dict[str, str | None]:
    """The publish state entries for these stack outputs. An output the stack no longer has (or has
    empty: an update to another SearchBackend) clears its entry, so no later step uses a stale value."""
    values = {"stack": stack_name}
    values.update({key: outputs.get(output) or None for output, key in STATE_KEYS.items()})
    return values


def add_commands(group, settings) -> None:
    """`publish stack` and `publish teardown` on the `publish` click group (model_build/cli.py)."""
    import click

    def caller(aws) -> None:
        """Credentials first: one clear line when there are none or they are refused."""
        click.echo(f"account {aws.account_id}, region {aws.region}")

    @group.command("stack")
    @click.option("--stack-name", default=DEFAULT_STACK, show_default=True)
    @click.option("--template", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=TEMPLATE,
                  show_default="infra/clip-search.yaml")
    @click.option("--parameter", "parameters", multiple=True, metavar="KEY=VALUE",
                  help="A template parameter (repeatable), e.g. SearchBackend=serverless; see docs/deploy.md.")
    @click.option("--query-image", help="The query function's image [default: from `publish image --variant lambda`].")
    @click.option("--execute/--no-execute", default=True, show_default=True,
                  help="--no-execute shows the change set and deletes it.")
    @settings("poll_seconds")
    def stack_command(stack_name, template, parameters, query_image, execute, aws, state):
        """Create or update the AWS stack (infra/) through a change set; record its outputs."""
        caller(aws)
        values = parse_parameters(list(parameters))
        image = query_image or state.get("lambda_image_uri")
        if image and "QueryImageUri" not in values:
            values["QueryImageUri"] = image
        outputs = deploy_stack(aws, stack_name, values, template, execute, echo=click.echo)
        for key, value in outputs.items():
            click.echo(f"{key}={value}")
        if execute:
            state.record(**state_values(outputs, stack_name))

    @group.command("teardown")
    @click.option("--stack-name", default=None, help="[default: the stack `publish stack` made, else clip-search]")
    @click.option("--delete-data", is_flag=True,
                  help="Also delete the bucket and its data, the ECR repository and the model registry.")
    @settings("endpoint_name", "package_group", "bucket", "repository", "poll_seconds")
    def teardown_command(stack_name, delete_data, aws, state):
        """Remove the endpoint, endpoint configs, models and the stack (data kept unless --delete-data)."""
        from model_build.teardown import teardown

        caller(aws)
        teardown(aws, stack_name or state.get("stack") or DEFAULT_STACK, state, delete_data, echo=click.echo)
