"""The evaluation gate against moto: `publish evaluate` -> report in S3 next to the artifact ->
`publish register` with ModelMetrics (as the SageMaker API defines it) or refused with exit 3 ->
`publish approve` only with an evaluation. The test model is evaluated for real, in process, on
the demo catalogue with text queries and real store photos."""
import hashlib
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from clip_search.demo_data import GROCERY as DEMO_DATA
from clip_search.files import sha256_file

from .recording_proxy import AwsRecordingProxy

CATALOGUE = DEMO_DATA / "products.jsonl"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search@sha256:" + "ef" * 32


@pytest.fixture(scope="module")
def queries(tmp_path_factory, grocery_dir):
    """The demo's text queries and 12 store photos of val/, labelled by their product."""
    by_class = {str(row["class_id"]): row["id"] for row in map(json.loads, CATALOGUE.read_text().splitlines())}
    lines = (DEMO_DATA / "text-queries.jsonl").read_text().splitlines()
    photos = [line.split(",") for line in (grocery_dir / "val.txt").read_text().splitlines()][::25][:12]
    lines += [json.dumps({"image": str(grocery_dir / path.strip()), "relevant": [by_class[cls.strip()]]})
              for path, cls, *_ in photos]
    path = tmp_path_factory.mktemp("queries") / "queries.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def uploaded(aws, monkeypatch, publish_cli, test_model_tar):
    """`publish artifact` done with the real test model; image URI and role set."""
    monkeypatch.setenv("CLIP_SEARCH_BUCKET", aws["bucket"])
    monkeypatch.setenv("CLIP_SEARCH_IMAGE_URI", IMAGE)
    monkeypatch.setenv("CLIP_SEARCH_ROLE_ARN", aws["role_arn"])
    publish_cli("artifact", "--model", test_model_tar)
    return aws


def _state(aws) -> dict:
    return json.loads(Path(aws["env"]["CLIP_SEARCH_PUBLISH_STATE"]).read_text())


def _s3_body(aws, uri: str) -> bytes:
    bucket, key = uri[5:].split("/", 1)
    return aws["s3"].get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture
def evaluated(uploaded, publish_cli, queries):
    out = publish_cli("evaluate", "--catalogue", CATALOGUE, "--queries", queries)
    uri = _state(uploaded)["evaluation"]
    body = _s3_body(uploaded, uri)
    return {**uploaded, "uri": uri, "body": body, "report": json.loads(body), "out": out}


def _packages(aws, group="clip-search"):
    try:
        return aws["sm"].list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    except aws["sm"].exceptions.ClientError:
        return []


def test_evaluate_puts_the_report_next_to_the_artifact(evaluated, publish_cli, queries, test_model_tar, tmp_path):
    report, uri = evaluated["report"], evaluated["uri"]
    model_data = _state(evaluated)["model_data"]
    assert uri == (model_data.rsplit("/", 1)[0] + "/evaluation/"
                   + f"{report['catalogue']['sha256'][:12]}-{report['query_set']['sha256'][:12]}.json")
    assert f"evaluation={uri}" in evaluated["out"] and "MEANINGLESS" in evaluated["out"]
    bucket, key = uri[5:].split("/", 1)
    assert evaluated["s3"].head_object(Bucket=bucket, Key=key)["ContentType"] == "application/json"
    assert report["artifact_sha256"] == sha256_file(test_model_tar) and report["model_data"] == model_data
    assert report["query_set"]["text"] == 81 and report["query_set"]["image"] == 12
    assert report["catalogue"]["products"] == 81 and report["runtime"] == "torch"

    # The downloaded artifact gives what `clip-search eval` gives on the local file.
    from clip_search.cli import main

    local = tmp_path / "local.json"
    result = CliRunner().invoke(main, ["eval", "--catalogue", str(CATALOGUE), "--queries", str(queries),
                                       "--model", str(test_model_tar), "--report", str(local)])
    assert result.exit_code == 0, result.output
    assert json.loads(local.read_text())["metrics"] == report["metrics"]

    publish_cli("evaluate", "--catalogue", CATALOGUE, "--queries", queries)  # same data: same key
    listed = evaluated["s3"].list_objects_v2(Bucket=bucket, Prefix=key.rsplit("/", 1)[0] + "/")["Contents"]
    assert [item["Key"] for item in listed] == [key]


def _api_shape(operation: str):
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker").operation_model(operation).input_shape


def test_register_sends_model_metrics_as_the_api_defines_them(evaluated, publish_cli, monkeypatch):
    from botocore.validate import validate_parameters

    with AwsRecordingProxy(evaluated["url"]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", proxy.url)
        out = publish_cli("register")
        publish_cli("register")  # again: the same package
    [request] = proxy.calls("CreateModelPackage")
    validate_parameters(request, _api_shape("CreateModelPackage"))  # the API's own types and limits
    digest = hashlib.sha256(evaluated["body"]).hexdigest()
    assert request["ModelMetrics"]["ModelQuality"] == {"Statistics": {
        "ContentType": "application/json", "S3Uri": evaluated["uri"], "ContentDigest": f"sha256:{digest}"}}
    report = evaluated["report"]
    properties = request["CustomerMetadataProperties"]
    for kind in ("text", "image"):
        for metric in ("recall@1", "recall@5", "recall@10", "mrr", "queries"):
            assert properties[f"clip-search:eval:{kind}:{metric}"] == str(report["metrics"][kind][metric])
    assert properties["clip-search:eval:report"] == evaluated["uri"]
    assert properties["clip-search:eval:artifact-sha256"] == report["artifact_sha256"]
    assert properties["clip-search:eval:model-id"] == "clip-search-tiny/random"
    assert properties["clip-search:eval:test-model"] == "true"
    shape = _api_shape("CreateModelPackage").members["CustomerMetadataProperties"]
    assert len(properties) <= shape.metadata["max"]
    allowed = re.compile(r"^[\w .:/=+\-@]+$")  # the API's [\p{L}\p{Z}\p{N}_.:/=+\-@]
    assert all(allowed.match(k) and len(k) <= 128 and allowed.match(v) and len(v) <= 256 for k, v in properties.items())

    [summary] = _packages(evaluated)
    assert f"model_package_arn={summary['ModelPackageArn']}" in out and f"with evaluation {evaluated['uri']}" in out
    package = evaluated["sm"].describe_model_package(ModelPackageName=summary["ModelPackageArn"])
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == evaluated["uri"]
    assert package["CustomerMetadataProperties"] == properties


def test_thresholds_refuse_with_exit_3_naming_figure_and_threshold(evaluated, publish_cli, monkeypatch):
    metrics = evaluated["report"]["metrics"]
    text, image = metrics["text"]["recall@10"], metrics["image"]["recall@10"]
    assert max(text, image) < 0.99  # the random test model: room above its figures
    weaker = min(("text", text), ("image", image), key=lambda item: item[1])

    out = publish_cli("register", "--min-recall-at-10", round(weaker[1] + 0.005, 3), expect=3)
    assert f"{weaker[0]} recall@10 = {weaker[1]:.4f} is below --min-recall-at-10 {round(weaker[1] + 0.005, 3):g}" in out
    out = publish_cli("register", "--min-image-recall-at-10", round(image + 0.005, 3), expect=3)
    assert f"image recall@10 = {image:.4f} is below --min-image-recall-at-10" in out and "text recall@10" not in out
    monkeypatch.setenv("CLIP_SEARCH_MIN_TEXT_RECALL_AT_10", str(round(text + 0.005, 3)))
    out = publish_cli("register", expect=3)
    assert f"text recall@10 = {text:.4f} is below --min-text-recall-at-10" in out
    assert _packages(evaluated) == []
    assert "must be between 0 and 1" in publish_cli("register", "--min-recall-at-10", 1.5, expect=1)

    monkeypatch.delenv("CLIP_SEARCH_MIN_TEXT_RECALL_AT_10")
    out = publish_cli("register", "--min-recall-at-10", min(text, image), "--min-text-recall-at-10", text)
    assert f"evaluation gate: image recall@10 = {image:.4f} >= --min-recall-at-10" in out
    assert len(_packages(evaluated)) == 1


def test_a_local_report_is_uploaded_next_to_the_artifact_and_gated(uploaded, publish_cli, test_model_tar, tmp_path):
    from clip_search.cli import main

    report_path = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", "--catalogue", str(CATALOGUE), "--model", str(test_model_tar),
                                       "--queries", str(DEMO_DATA / "text-queries.jsonl"),
                                       "--report", str(report_path)])
    assert result.exit_code == 0, result.output
    out = publish_cli("register", "--evaluation", report_path, "--min-image-recall-at-10", 0.1, expect=3)
    assert "no image recall@10 in the evaluation (--min-image-recall-at-10 0.1 needs image queries)" in out
    assert _packages(uploaded) == []

    publish_cli("register", "--evaluation", report_path, "--min-text-recall-at-10", 0.0)
    package = uploaded["sm"].describe_model_package(ModelPackageName=_packages(uploaded)[0]["ModelPackageArn"])
    uri = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    digest = sha256_file(report_path)
    assert uri == _state(uploaded)["model_data"].rsplit("/", 1)[0] + f"/evaluation/report-{digest[:16]}.json"
    assert _s3_body(uploaded, uri) == report_path.read_bytes()


def test_thresholds_without_an_evaluation_refuse(uploaded, publish_cli):
    out = publish_cli("register", "--min-recall-at-10", 0.2, expect=3)
    assert "--min-recall-at-10 0.2 given but there is no evaluation" in out
    assert _packages(uploaded) == []


def test_approve_refuses_a_package_without_an_evaluation(uploaded, publish_cli):
    sm = uploaded["sm"]
    out = publish_cli("register", "--approval-status", "Approved", expect=1)
    assert "without an evaluation is not registered as Approved" in out and _packages(uploaded) == []

    assert "registering without ModelMetrics" in publish_cli("register")
    arn = _packages(uploaded)[0]["ModelPackageArn"]
    out = publish_cli("approve", expect=1)
    assert f"model package {arn} has no evaluation (ModelMetrics.ModelQuality.Statistics)" in out and "--force" in out
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "PendingManualApproval"
    assert "Rejected" in publish_cli("approve", "--status", "Rejected")  # refusing needs no evaluation
    out = publish_cli("approve", "--force")
    assert "without an evaluation (--force)" in out
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Approved"


def test_approve_accepts_an_evaluated_package(evaluated, publish_cli):
    publish_cli("register")
    assert "PendingManualApproval -> Approved" in publish_cli("approve")
    arn = _packages(evaluated)[0]["ModelPackageArn"]
    assert evaluated["sm"].describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Approved"


def test_an_evaluation_of_another_artifact_is_refused(evaluated, publish_cli, test_model_tar, tmp_path):
    other = tmp_path / "other.tar.gz"
    other.write_bytes(test_model_tar.read_bytes() + b"\0" * 1024)  # another file, another sha256
    out = publish_cli("evaluate", "--catalogue", CATALOGUE, "--queries", CATALOGUE.with_name("text-queries.jsonl"),
                      "--model", other, expect=1)
    assert f"is not the artifact at {_state(evaluated)['model_data']}" in out

    publish_cli("artifact", "--model", other)  # a new artifact: the old evaluation is not its
    assert _state(evaluated)["evaluation"] is None
    assert "registering without ModelMetrics" in publish_cli("register")
    out = publish_cli("register", "--evaluation", evaluated["uri"], expect=1)
    assert f"the evaluation is of artifact sha256 {sha256_file(test_model_tar)}" in out
