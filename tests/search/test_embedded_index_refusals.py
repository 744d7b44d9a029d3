"""The embedded index (real LanceDB) refuses what it must not touch and says so: a folder that is
not an index, a LanceDB table that is not ours, a writer that holds the lock too long; and an
index that does not exist yet reads as empty."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from clip_search.search.errors import IndexNotFoundError, SearchError
from clip_search.search.index import embedded
from clip_search.search.index.embedded import EmbeddedIndex
from clip_search.search.records import EmbeddedProduct, Product

DIM = 4


def vector(*values):
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_an_index_that_does_not_exist_yet_reads_as_empty(tmp_path):
    index = EmbeddedIndex(tmp_path / "not-yet")
    assert index.info() is None and index.count() == 0
    assert index.delete(["p1"]) == 0
    for action in (lambda: index.search(vector(1, 0, 0, 0), k=3),
                   lambda: index.upsert([EmbeddedProduct(Product("p1", "apple"), vector(1, 0, 0, 0))])):
        with pytest.raises(IndexNotFoundError, match=f"^no embedded index at {tmp_path / 'not-yet'} "
                                                     r"\(create it with `clip-search index`\)$"):
            action()
    assert not (tmp_path / "not-yet").exists()  # reading made nothing


def test_a_folder_with_other_files_is_never_made_an_index(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "kiwi.jpg").write_bytes(b"jpeg")
    with pytest.raises(SearchError, match=f"^{folder} exists and is not an embedded clip-search index"):
        EmbeddedIndex(folder).ensure(DIM, "m")
    assert sorted(p.name for p in folder.iterdir()) == ["kiwi.jpg"]


def test_a_lancedb_table_that_is_not_a_clip_search_index_is_refused_with_the_rebuild_hint(tmp_path):
    import lancedb

    folder = tmp_path / "foreign"
    lancedb.connect(str(folder)).create_table("products", data=[{"id": "x", "vector": [0.0, 1.0]}])
    with pytest.raises(SearchError) as error:
        EmbeddedIndex(folder)
    message = str(error.value)
    assert message.startswith(f"{folder} holds a LanceDB table that is not a format-2 clip-search index: ")
    assert "clip-search index --catalogue CATALOGUE --index NEW_FOLDER" in message


def test_the_same_model_again_is_idempotent_and_another_is_refused(tmp_path):
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "model-a", {"model": "/a.tar.gz"})
    index.upsert([EmbeddedProduct(Product("p1", "apple", None, {"aisle": "fruit"}), vector(1, 0, 0, 0))])
    index.refresh()
    again = EmbeddedIndex(tmp_path / "ix")
    again.ensure(DIM, "model-a")
    assert again.count() == 1 and again.info().extra["encoder"] == {"model": "/a.tar.gz"}
    with pytest.raises(SearchError, match="model-a.*model-b|model-b.*model-a"):
        again.ensure(DIM, "model-b")
    assert EmbeddedIndex(tmp_path / "ix").count() == 1  # nothing lost


def test_a_writer_holding_the_lock_too_long_is_named(tmp_path, monkeypatch):
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock\n"
         f"lock = FileLock({str(tmp_path / 'ix' / embedded.LOCK_FILE)!r}); lock.acquire()\n"
         "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(embedded, "LOCK_TIMEOUT_SECONDS", 1)
        index.upsert([EmbeddedProduct(Product("p1", "apple"), vector(1, 0, 0, 0))])
        start = time.monotonic()
        with pytest.raises(SearchError, match=f"another clip-search command has been writing to {tmp_path / 'ix'} "
                                              "for 1 s; try again when it is done"):
            index.flush()
        assert time.monotonic() - start < 10
    finally:
        holder.kill()
        holder.wait()
    index.flush()  # the lock is free again: the buffered upsert was kept and now commits
    assert EmbeddedIndex(tmp_path / "ix").count() == 1


def test_a_wrong_sized_vector_is_that_products_error_only(tmp_path):
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    report = index.upsert([EmbeddedProduct(Product("bad", "x"), np.ones(3, np.float32)),
                           EmbeddedProduct(Product("none", "y"), None, None),
                           EmbeddedProduct(Product("good", "z"), vector(0, 1, 0, 0))])
    assert report.indexed == 1
    assert [product_id for product_id, _ in report.errors] == ["bad", "none"]
    assert report.errors[1][1] == "no embedding (neither image nor title)"
    index.refresh()
    assert [hit.id for hit in index.search(vector(0, 1, 0, 0), k=5)] == ["good"]


def test_s3_storage_options_come_from_the_aws_variables(monkeypatch):
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert embedded._storage_options("/local/folder") == {}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example.test")  # the S3-specific one wins
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert embedded._storage_options("s3://bucket/index") == {
        "aws_endpoint": "https://s3.example.test", "aws_access_key_id": "AKIA", "aws_region": "eu-west-1"}
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert embedded._storage_options("s3://bucket/index")["allow_http"] == "true"  # plain http: moto, MinIO


def test_metadata_survives_as_given(tmp_path):
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    metadata = {"brand": "Gröna", "tags": ["organic", "local"], "price": 2.5}
    index.upsert([EmbeddedProduct(Product("p1", "Äpple", "/photos/p1.jpg", metadata), vector(1, 1, 0, 0))])
    index.refresh()
    [hit] = EmbeddedIndex(tmp_path / "ix").search(vector(1, 1, 0, 0), k=1, filters={"tags": "local"})
    assert hit.title == "Äpple" and hit.metadata == {**metadata, "image": "/photos/p1.jpg"}
    assert json.dumps(hit.to_json(), ensure_ascii=False).count("Gröna") == 1
