"""Step 5: Batch Transform over a catalogue.

JSON Lines mode (ours): the catalogue becomes `{"id", "image": base64}` lines in S3 shards; the job
runs with SplitType=Line, BatchStrategy=MultiRecord, AssembleWith=Line, MaxPayloadInMB and
MaxConcurrentTransforms, so each request carries as many records as fit under the payload limit
and every shard yields one `<shard>.out` of `{"id", "embedding"}` lines for `clip-search index
--embeddings`. Raw-image mode (the reference sample's layout): an S3 prefix of images sent one per
request as application/x-image, one `<image>.out` per image.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Iterable

from clip_search import content_types as ct
from model_build.aws import Aws, parse_s3_uri
from model_build.errors import PublishError

JSONLINES = ct.JSONLINES
SHARD_BYTES = 64 * 1024 * 1024  # several shards let several instances share a big catalogue


def jsonl_records(products: Iterable, max_record_bytes: int, echo=print) -> Iterable[bytes]:
    """One JSON line per product; a record too big for one request is reported and left out."""
    from clip_search.search.catalogue import load_image_bytes

    for product in products:
        if not product.image:
            echo(f"skipped {product.id}: no image")
            continue
        line = json.dumps({"id": product.id, "image": base64.b64encode(load_image_bytes(product.image)).decode("ascii")})
        if len(line) + 1 > max_record_bytes:
            echo(f"skipped {product.id}: {len(line)} bytes is over MaxPayloadInMB ({max_record_bytes} bytes)")
            continue
        yield line.encode()


def upload_jsonl_input(aws: Aws, catalogue: Path, input_uri: str, echo=print, shard_bytes: int = SHARD_BYTES) -> dict:
    """Write the catalogue as JSON Lines shards under input_uri; returns {shards, records}."""
    from clip_search.search.catalogue import read_catalogue

    bucket, prefix = parse_s3_uri(input_uri.rstrip("/") + "/")
    s3 = aws.client("s3")
    limit = aws.config.max_payload_mb * 1024 * 1024
    shards, records, buffer = [], 0, []

    def flush():
        if buffer:
            key = f"{prefix}part-{len(shards):05d}.jsonl"
            s3.put_object(Bucket=bucket, Key=key, Body=b"\n".join(buffer) + b"\n", ContentType=JSONLINES)
            shards.append(f"s3://{bucket}/{key}")
            buffer.clear()

    from tqdm import tqdm

    size = 0
    products = tqdm(read_catalogue(catalogue), desc="catalogue -> JSON Lines", unit=" products", leave=False)
    for line in jsonl_records(products, limit, echo):
        if size + len(line) + 1 > shard_bytes:
            flush()
            size = 0
        buffer.append(line)
        size += len(line) + 1
        records += 1
    flush()
    if not records:
        raise PublishError(f"catalogue {catalogue}: no product with a usable image")
    echo(f"wrote {records} records in {len(shards)} JSON Lines shard(s) under s3://{bucket}/{prefix}")
    return {"shards": shards, "records": records}


def job_name_for(aws: Aws, model_name: str, input_uri: str) -> str:
    """Derived from the model and the input's contents (keys + ETags): the same catalogue through
    the same model maps to the same job, which is then not run twice."""
    import hashlib

    bucket, prefix = parse_s3_uri(input_uri)
    digest = hashlib.sha256(f"{model_name}\n{input_uri}".encode())
    for page in aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            digest.update(f"{item['Key']} {item['ETag']}\n".encode())
    return f"{model_name[:48]}-bt-{digest.hexdigest()[:12]}"


def existing_job(aws: Aws, job_name: str) -> dict | None:
    from model_build.aws import client_error_code

    try:
        return aws.client("sagemaker").describe_transform_job(TransformJobName=job_name)
    except Exception as error:
        if client_error_code(error) in ("ValidationException", "ResourceNotFound"):
            return None
        raise


def run_transform(aws: Aws, model_name: str, input_uri: str, output_uri: str, raw_images: bool = False,
                  job_name: str | None = None, wait: bool = True, echo=print) -> dict:
    """Start (and wait for) a transform job; returns its description."""
    from model_build.aws import quiet_sdk

    config = aws.config
    quiet_sdk()
    from sagemaker.transformer import Transformer

    transformer = Transformer(
        model_name=model_name,
        instance_count=config.transform_instance_count,
        instance_type=config.transform_instance_type,
        strategy="SingleRecord" if raw_images else "MultiRecord",
        assemble_with=None if raw_images else "Line",
        output_path=output_uri,
        accept=ct.JSON if raw_images else JSONLINES,
        max_concurrent_transforms=config.max_concurrent_transforms,
        max_payload=config.max_payload_mb,
        sagemaker_session=aws.sagemaker_session,
    )
    job_name = job_name or job_name_for(aws, model_name, input_uri)
    previous = existing_job(aws, job_name)
    if previous and previous["TransformJobStatus"] in ("Completed", "InProgress", "Stopping"):
        echo(f"transform job {job_name} already exists ({previous['TransformJobStatus']}): not started again")
        if wait and previous["TransformJobStatus"] != "Completed":
            aws.sagemaker_session.wait_for_transform_job(job_name, poll=config.poll_seconds)
        return aws.client("sagemaker").describe_transform_job(TransformJobName=job_name)
    if previous:
        raise PublishError(f"transform job {job_name} exists and is {previous['TransformJobStatus']}: "
                           "give a new --job-name to run it again")
    transformer.transform(input_uri, data_type="S3Prefix",
                          content_type=ct.X_IMAGE if raw_images else JSONLINES,
                          split_type=None if raw_images else "Line", job_name=job_name, wait=False, logs=False)
    echo(f"started transform job {job_name}: {input_uri} -> {output_uri}")
    if wait:
        aws.sagemaker_session.wait_for_transform_job(job_name, poll=config.poll_seconds)
    description = aws.client("sagemaker").describe_transform_job(TransformJobName=job_name)
    echo(f"transform job {job_name}: {description['TransformJobStatus']}")
    if description["TransformJobStatus"] == "Failed":
        raise PublishError(f"transform job {job_name} failed: {description.get('FailureReason')}")
    return description


def output_files(aws: Aws, output_uri: str) -> list[str]:
    bucket, prefix = parse_s3_uri(output_uri.rstrip("/") + "/")
    keys = []
    for page in aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(".out")]
    return [f"s3://{bucket}/{key}" for key in sorted(keys)]


def collect_outputs(aws: Aws, output_uri: str, destination: Path, raw_images: bool = False, echo=print) -> Path:
    """Download the `.out` files into destination as JSON Lines the indexer reads.

    Raw-image outputs are one JSON answer per image; they become `{"id": image name, "embedding"}`
    lines (the id is the image's file name without its extension, as in the reference sample).
    """
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    s3 = aws.client("s3")
    files = output_files(aws, output_uri)
    if not files:
        raise PublishError(f"no .out files under {output_uri}")
    if not raw_images:
        for uri in files:
            bucket, key = parse_s3_uri(uri)
            s3.download_file(bucket, key, str(destination / Path(key).name))
    else:
        lines = []
        for uri in files:
            bucket, key = parse_s3_uri(uri)
            answer = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            image_id = Path(Path(key).name[: -len(".out")]).stem
            if "embeddings" in answer:
                lines.append(json.dumps({"id": image_id, "embedding": answer["embeddings"][0]}))
            else:
                lines.append(json.dumps({"id": image_id, "error": answer.get("error", "no embedding")}))
        (destination / "images.out").write_text("\n".join(lines) + "\n")
    echo(f"{len(files)} output file(s) in {destination}: clip-search index --catalogue CATALOGUE "
         f"--embeddings {destination} --model-id MODEL_ID --index INDEX")
    return destination
