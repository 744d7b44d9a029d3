"""The embedded index kept in object storage (s3://bucket/prefix), against moto's S3 server on loopback."""
import os

import boto3
import numpy as np
import pytest
import requests

from clip_search.search.index.embedded import EmbeddedIndex
from clip_search.search.records import EmbeddedProduct, Product
from tests.search.conftest import unit

BUCKET = "clip-search-index-bucket"
DIM = 16


@pytest.fixture
def s3_env(moto_url, monkeypatch):
    requests.post(moto_url + "/moto-api/reset", timeout=10).raise_for_status()
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for key, value in {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return moto_url


def test_an_index_under_an_s3_prefix(s3_env):
    location = f"s3://{BUCKET}/indexes/grocery"
    vectors = unit(np.random.default_rng(0).standard_normal((30, DIM)))
    index = EmbeddedIndex(location)
    assert index.info() is None
    index.ensure(DIM, "m", {"model": "/m.tar.gz"})
    index.upsert([EmbeddedProduct(Product(f"p{i}", f"item {i}", None, {"g": str(i % 3)}), v) for i, v in enumerate(vectors)])
    index.refresh()
    assert index.delete(["p1"]) == 1
    index.close()
    keys = [item["Key"] for item in boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="indexes/grocery/")["Contents"]]
    assert any(key.startswith("indexes/grocery/products.lance/") for key in keys)
    reopened = EmbeddedIndex(location)
    assert reopened.info().model_id == "m" and reopened.count() == 29
    hits = reopened.search(vectors[4], k=3, filters={"g": "1"})
    assert hits[0].id == "p4" and all(hit.metadata["g"] == "1" for hit in hits)
    reopened.drop()
    assert EmbeddedIndex(location).info() is None
