"""Step 1b, the evaluation gate: measure the packaged artifact's retrieval quality, keep the report in
S3 next to the artifact, and register only a model that retrieves well.

- `evaluate_artifact`: the artifact that `publish artifact` uploaded (downloaded from S3, its sha256
  checked against the upload's) is evaluated in process on a labelled catalogue
  (clip_search.search.evaluation); the report goes to `.../models/SHA16/evaluation/C12-Q12.json`
  (C12, Q12: the first 12 hex digits of the catalogue's and the query set's sha256), so evaluating
  the same artifact on the same data again writes the same key.
- `check_gate`: thresholds on recall@10, for every query kind or for one kind; any figure below its
  threshold refuses the registration (exit status 3).
- `model_metrics` / `customer_metadata`: how the report is attached to the model package, in the
  shapes of SageMaker's CreateModelPackage: ModelMetrics.ModelQuality.Statistics (S3 URI,
  application/json, sha256 digest) and the headline figures as CustomerMetadataProperties.
"""
from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path

from model_build.aws import Aws, client_error_code, parse_s3_uri
from model_build.errors import EvaluationGateError, PublishError

CONTENT_TYPE = "application/json"
METADATA_PREFIX = "clip-search:eval:"
_METADATA_VALUE = re.compile(r"[^\w .:/=+\-@]")  # what CustomerMetadataValue's pattern accepts


def evaluation_key(model_data: str, report: dict) -> str:
    bucket, key = parse_s3_uri(model_data)
    folder = key.rsplit("/", 1)[0] if "/" in key else ""
    name = f"{report['catalogue']['sha256'][:12]}-{report['query_set']['sha256'][:12]}.json"
    return f"s3://{bucket}/{folder + '/' if folder else ''}evaluation/{name}"


def _artifact_sha(aws: Aws, model_data: str) -> str | None:
    """The sha256 `publish artifact` recorded on the uploaded object (None when not ours)."""
    bucket, key = parse_s3_uri(model_data)
    try:
        head = aws.client("s3").head_object(Bucket=bucket, Key=key)
    except Exception as error:
        if client_error_code(error) in ("404", "NoSuchKey", "NotFound"):
            raise PublishError(f"model artifact {model_data} does not exist (run `publish artifact`)") from None
        raise
    return head.get("Metadata", {}).get("sha256")


def evaluate_artifact(aws: Aws, catalogue: Path, queries: Path, model_path: Path | None = None,
                      compare_runtime: str | None = None, echo=print) -> tuple[str, dict]:
    """Evaluate the artifact at config.model_data (or the same file, local) and upload the report."""
    from clip_search.search.errors import SearchError
    from clip_search.search.evaluation import evaluate_model, format_report

    config = aws.config
    config.require("model_data")
    expected = _artifact_sha(aws, config.model_data)
    with tempfile.TemporaryDirectory(prefix="clip-search-evaluate-") as scratch:
        if model_path is None:
            model_path = Path(scratch) / "model.tar.gz"
            bucket, key = parse_s3_uri(config.model_data)
            echo(f"downloading {config.model_data}")
            aws.client("s3").download_file(bucket, key, str(model_path))
        model_path = Path(model_path)
        if not model_path.is_file():
            raise PublishError(f"model artifact {model_path} does not exist")
        from clip_search.files import sha256_file

        actual = sha256_file(model_path)
        if expected and actual != expected:
            raise PublishError(f"{model_path} (sha256 {actual}) is not the artifact at {config.model_data} "
                               f"(sha256 {expected})")
        try:
            report = evaluate_model(catalogue, queries, model=model_path, compare_runtime=compare_runtime)
        except SearchError as error:
            raise PublishError(str(error)) from None
    report["model_data"] = config.model_data
    echo(format_report(report))
    uri = evaluation_key(config.model_data, report)
    upload_report(aws, report, uri)
    echo(f"uploaded evaluation: {uri}")
    return uri, report


def _report_bytes(report: dict) -> bytes:
    return (json.dumps(report, indent=2) + "\n").encode("utf-8")


def upload_report(aws: Aws, report: dict | bytes, uri: str) -> str:
    body = report if isinstance(report, bytes) else _report_bytes(report)
    bucket, key = parse_s3_uri(uri)
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType=CONTENT_TYPE,
                                Metadata={"sha256": hashlib.sha256(body).hexdigest()})
    return uri


def load_evaluation(aws: Aws, source: str) -> tuple[str, dict, str]:
    """(S3 URI, report, sha256 of its bytes) of a report given as an s3:// URI or a local file; a
    local file is uploaded next to the artifact first (the registry points at S3)."""
    from clip_search.search.errors import SearchError
    from clip_search.search.evaluation import read_report

    if source.startswith("s3://"):
        bucket, key = parse_s3_uri(source)
        try:
            body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as error:
            if client_error_code(error) in ("404", "NoSuchKey"):
                raise PublishError(f"evaluation report {source} does not exist (run `publish evaluate`)") from None
            raise
        uri = source
    else:
        path = Path(source)
        if not path.is_file():
            raise PublishError(f"evaluation report {path} does not exist (clip-search eval --report {path})")
        body, uri = path.read_bytes(), None
    try:
        report = read_report(body.decode("utf-8"))
    except (SearchError, UnicodeDecodeError) as error:
        raise PublishError(f"evaluation report {source}: {error}") from None
    digest = hashlib.sha256(body).hexdigest()
    if uri is None:
        aws.config.require("model_data")
        bucket, key = parse_s3_uri(aws.config.model_data)
        folder = key.rsplit("/", 1)[0] if "/" in key else ""
        uri = f"s3://{bucket}/{folder + '/' if folder else ''}evaluation/report-{digest[:16]}.json"
        upload_report(aws, body, uri)
    return uri, report, digest


def check_artifact(aws: Aws, report: dict, echo=print) -> None:
    """The report must be about the artifact being registered."""
    expected = _artifact_sha(aws, aws.config.model_data)
    measured = report.get("artifact_sha256")
    if expected and measured and expected != measured:
        raise PublishError(f"the evaluation is of artifact sha256 {measured}, not of {aws.config.model_data} "
                           f"(sha256 {expected}): evaluate this artifact (publish evaluate)")
    if not (expected and measured):
        echo("note: cannot tell whether the evaluation is of this artifact (no sha256 on one side)")


def check_gate(report: dict, thresholds: dict[str | None, float | None]) -> list[str]:
    """thresholds: {None: for every query kind, "text": ..., "image": ...} on recall@10.

    Raises EvaluationGateError naming every figure below its threshold (and a threshold for a query
    kind the report has no queries of); returns what passed, for the log."""
    metrics = report["metrics"]
    failures, passed = [], []
    for kind, threshold in thresholds.items():
        if threshold is None:
            continue
        flag = f"--min-{kind + '-' if kind else ''}recall-at-10"
        kinds = [kind] if kind else list(metrics)
        for name in kinds:
            value = (metrics.get(name) or {}).get("recall@10")
            if value is None:
                failures.append(f"no {name} recall@10 in the evaluation ({flag} {threshold:g} needs {name} queries)")
            elif value < threshold:
                failures.append(f"{name} recall@10 = {value:.4f} is below {flag} {threshold:g}")
            else:
                passed.append(f"{name} recall@10 = {value:.4f} >= {flag} {threshold:g}")
    if failures:
        raise EvaluationGateError("evaluation gate: not registered: " + "; ".join(failures))
    return passed


def model_metrics(uri: str, digest: str):
    """sagemaker.model_metrics.ModelMetrics for ModelQuality.Statistics = the report in S3."""
    from model_build.aws import quiet_sdk

    quiet_sdk()
    from sagemaker.model_metrics import MetricsSource, ModelMetrics

    return ModelMetrics(model_statistics=MetricsSource(content_type=CONTENT_TYPE, s3_uri=uri,
                                                       content_digest=f"sha256:{digest}"))


def _value(value) -> str | None:
    if value is None or value == "":
        return None
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return _METADATA_VALUE.sub("_", text)[:256]


def customer_metadata(report: dict, uri: str) -> dict[str, str]:
    """The headline figures and provenance, as CustomerMetadataProperties (at most 50 string pairs)."""
    entries = {
        "report": uri,
        "model-id": report.get("model_id"),
        "test-model": bool(report.get("test_model")),
        "runtime": report.get("runtime"),
        "artifact-sha256": report.get("artifact_sha256"),
        "catalogue-sha256": report.get("catalogue", {}).get("sha256"),
        "catalogue-products": report.get("catalogue", {}).get("products"),
        "queries-sha256": report.get("query_set", {}).get("sha256"),
    }
    for kind, figures in report["metrics"].items():
        for name in ("recall@1", "recall@5", "recall@10", "mrr", "queries"):
            entries[f"{kind}:{name}"] = figures.get(name)
    out = {}
    for key, value in entries.items():
        text = _value(value)
        if text is not None:
            out[METADATA_PREFIX + key] = text
    return dict(list(out.items())[:50])


def package_evaluation(package: dict) -> str | None:
    """The S3 URI of a described model package's evaluation, or None."""
    return (((package.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {}).get("S3Uri")
