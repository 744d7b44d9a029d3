"""Step 5 against moto: JSON Lines input in S3, transform request settings, and the .out hand-off.

moto records transform jobs (instantly Completed) but runs nothing and writes no .out files, so the
control-plane tests check the request; the server-marked tests produce the .out files the way
Batch Transform does, by posting the same input to the real model server, and read them back
through the indexer's reader.
"""
import base64
import json
import os

import numpy as np
import pytest
import requests

from model_build.aws import Aws
from model_build.config import load_config
from model_build.transform import collect_outputs

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-search:1"


@pytest.fixture
def catalogue(aws, catalogue_photos):
    photos = catalogue_photos[:8]
    big = aws["tmp"] / "huge.jpg"
    big.write_bytes(os.urandom(1_200_000))  # over a 1 MB MaxPayloadInMB once base64-encoded
    rows = [{"id": f"p{i}", "title": photo.stem, "image": str(photo)} for i, photo in enumerate(photos)]
    rows += [{"id": "too-big", "title": "huge", "image": str(big)}, {"id": "no-image", "title": "none"}]
    path = aws["tmp"] / "catalogue.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path, photos


@pytest.fixture
def deployable(aws, monkeypatch):
    monkeypatch.setenv("CLIP_SEARCH_BUCKET", aws["bucket"])
    monkeypatch.setenv("CLIP_SEARCH_ROLE_ARN", aws["role_arn"])
    monkeypatch.setenv("CLIP_SEARCH_IMAGE_URI", IMAGE)
    monkeypatch.setenv("CLIP_SEARCH_MODEL_DATA", f"s3://{aws['bucket']}/m/model.tar.gz")
    return aws


def _read_input(aws, prefix):
    keys = [o["Key"] for o in aws["s3"].list_objects_v2(Bucket=aws["bucket"], Prefix=prefix)["Contents"]]
    return keys, [aws["s3"].get_object(Bucket=aws["bucket"], Key=k)["Body"].read() for k in keys]


def test_catalogue_becomes_jsonl_shards_and_a_multirecord_line_job(deployable, publish_cli, catalogue):
    aws, (path, photos) = deployable, catalogue
    out = publish_cli("transform", "--catalogue", path, "--max-payload-mb", 1, "--max-concurrent-transforms", 4,
                      "--transform-instance-type", "ml.c5.2xlarge")
    assert "skipped too-big:" in out and "over MaxPayloadInMB" in out and "skipped no-image: no image" in out
    keys, bodies = _read_input(aws, "clip-search/transform/input/catalogue/")
    assert keys == ["clip-search/transform/input/catalogue/part-00000.jsonl"]
    records = [json.loads(line) for line in bodies[0].decode().splitlines()]
    assert [r["id"] for r in records] == [f"p{i}" for i in range(8)]
    assert all(base64.b64decode(r["image"]) == p.read_bytes() for r, p in zip(records, photos, strict=True))
    assert all(len(line) + 1 <= 1024 * 1024 for line in bodies[0].splitlines())

    [job] = aws["sm"].list_transform_jobs()["TransformJobSummaries"]
    job = aws["sm"].describe_transform_job(TransformJobName=job["TransformJobName"])
    assert job["BatchStrategy"] == "MultiRecord"
    assert job["MaxPayloadInMB"] == 1 and job["MaxConcurrentTransforms"] == 4
    assert job["TransformInput"]["SplitType"] == "Line"
    assert job["TransformInput"]["ContentType"] == "application/jsonlines"
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"].endswith("/transform/input/catalogue/")
    assert job["TransformOutput"]["AssembleWith"] == "Line"
    assert job["TransformOutput"]["Accept"] == "application/jsonlines"
    assert job["TransformResources"] == {"InstanceType": "ml.c5.2xlarge", "InstanceCount": 1}
    model = aws["sm"].describe_model(ModelName=job["ModelName"])
    assert model["PrimaryContainer"]["Image"] == IMAGE

    again = publish_cli("transform", "--catalogue", path, "--max-payload-mb", 1, "--max-concurrent-transforms", 4,
                        "--transform-instance-type", "ml.c5.2xlarge")
    assert "already exists (Completed): not started again" in again
    assert len(aws["sm"].list_transform_jobs()["TransformJobSummaries"]) == 1
    assert len(aws["sm"].list_models()["Models"]) == 1


def test_raw_images_prefix_runs_one_image_per_request(deployable, publish_cli, catalogue):
    aws, (_, photos) = deployable, catalogue
    for photo in photos[:3]:
        aws["s3"].put_object(Bucket=aws["bucket"], Key=f"raw/{photo.name}", Body=photo.read_bytes())
    publish_cli("transform", "--images-prefix", f"s3://{aws['bucket']}/raw/")
    [job] = aws["sm"].list_transform_jobs()["TransformJobSummaries"]
    job = aws["sm"].describe_transform_job(TransformJobName=job["TransformJobName"])
    assert job["BatchStrategy"] == "SingleRecord"
    assert job["TransformInput"]["ContentType"] == "application/x-image"
    assert "SplitType" not in job["TransformInput"] or job["TransformInput"]["SplitType"] == "None"
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{aws['bucket']}/raw/"


def test_missing_bucket_or_role_is_a_clear_error(deployable, publish_cli, catalogue):
    path, _ = catalogue
    out = publish_cli("transform", "--catalogue", path, "--bucket", "absent-bucket", expect=1)
    assert "S3 bucket 'absent-bucket' does not exist" in out
    out = publish_cli("transform", "--catalogue", path, "--role-arn", "arn:aws:iam::123456789012:role/none", expect=1)
    assert "IAM role arn:aws:iam::123456789012:role/none does not exist" in out
    assert deployable["sm"].list_transform_jobs()["TransformJobSummaries"] == []


@pytest.mark.server
def test_jsonl_outputs_reach_the_indexer(deployable, publish_cli, catalogue, model_server, test_encoder, tmp_path):
    """Do what Batch Transform does with SplitType=Line/MultiRecord/AssembleWith=Line on the real
    server: post the shard's lines, write the answer lines (plus the assembling newline) to .out."""
    from clip_search.search.embeddings import read_batch_output

    aws, (path, photos) = deployable, catalogue
    out = publish_cli("transform", "--catalogue", path, "--output-uri", f"s3://{aws['bucket']}/bt-out/")
    keys, bodies = _read_input(aws, "clip-search/transform/input/catalogue/")
    for key, body in zip(keys, bodies, strict=True):
        answer = requests.post(model_server.url + "/invocations", data=body.rstrip(b"\n"), timeout=60, headers={
            "Content-Type": "application/jsonlines", "Accept": "application/jsonlines"})
        assert answer.status_code == 200, answer.text
        aws["s3"].put_object(Bucket=aws["bucket"], Key="bt-out/" + key.rsplit("/", 1)[1] + ".out",
                             Body=answer.content + b"\n")
    assert "transform_output=s3://" in out
    folder = collect_outputs(Aws(load_config()), f"s3://{aws['bucket']}/bt-out/", tmp_path / "out", echo=print)
    embeddings = read_batch_output(str(folder))
    # Under the default 6 MB limit the undecodable 1.2 MB blob is sent, and comes back as an error line.
    assert sorted(embeddings) == sorted([f"p{i}" for i in range(8)] + ["too-big"])
    assert isinstance(embeddings["too-big"], str) and "decodable" in embeddings["too-big"]
    expected = test_encoder.encode_image_bytes([p.read_bytes() for p in photos])
    np.testing.assert_allclose(np.stack([embeddings[f"p{i}"] for i in range(8)]), expected, atol=1e-4)


@pytest.mark.server
def test_raw_image_outputs_become_indexer_lines(deployable, catalogue, model_server, test_encoder, tmp_path):
    from clip_search.search.embeddings import read_batch_output

    aws, (_, photos) = deployable, catalogue
    for photo in photos[:3]:  # the reference sample's layout: one request and one .out per image
        answer = requests.post(model_server.url + "/invocations", data=photo.read_bytes(), timeout=60,
                               headers={"Content-Type": "application/x-image", "Accept": "application/json"})
        assert answer.status_code == 200, answer.text
        aws["s3"].put_object(Bucket=aws["bucket"], Key=f"raw-out/{photo.name}.out", Body=answer.content)
    folder = collect_outputs(Aws(load_config()), f"s3://{aws['bucket']}/raw-out/", tmp_path / "out",
                             raw_images=True, echo=print)
    embeddings = read_batch_output(str(folder))
    assert sorted(embeddings) == sorted(p.stem for p in photos[:3])
    np.testing.assert_allclose(embeddings[photos[0].stem], test_encoder.encode_image_bytes([photos[0].read_bytes()])[0],
                               atol=1e-4)
