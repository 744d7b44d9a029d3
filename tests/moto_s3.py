"""moto's S3 (the session `moto_url` server, tests/conftest.py) as the only AWS a test sees: a reset
server, every AWS_* variable replaced by test credentials and AWS_ENDPOINT_URL, and one bucket."""
import os

import boto3
import requests

REGION = "us-east-1"


def use_moto_s3(moto_url: str, monkeypatch, bucket: str):
    """-> an S3 client on moto with `bucket` created; the environment points every AWS client there."""
    requests.post(moto_url + "/moto-api/reset", timeout=10).raise_for_status()
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for key, value in {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=bucket)
    return client
