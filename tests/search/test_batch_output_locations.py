"""Batch Transform output (`*.out` JSON Lines) read from a folder or an S3 prefix (moto's server),
as `clip-search index --embeddings` reads it: every part merged, errors kept per record, and every
failure an EncodingError naming the location."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from clip_search.cli import main
from clip_search.search.embeddings import read_batch_output
from clip_search.search.errors import EncodingError
from tests.moto_s3 import use_moto_s3

BUCKET = "clip-search-transform-bucket"


def out_lines(*records) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


@pytest.fixture
def s3(moto_url, monkeypatch):
    return use_moto_s3(moto_url, monkeypatch, BUCKET)


def test_every_out_part_under_an_s3_prefix_is_merged(s3):
    s3.put_object(Bucket=BUCKET, Key="transform/out/part-0.jsonl.out",
                  Body=out_lines({"id": "a", "embedding": [0.6, 0.8]}, {"id": "b", "error": "not a decodable image"}))
    s3.put_object(Bucket=BUCKET, Key="transform/out/sub/part-1.jsonl.out", Body=out_lines({"id": "c", "embedding": [1, 0]}))
    s3.put_object(Bucket=BUCKET, Key="transform/out/_SUCCESS", Body=b"not json at all")  # not an .out file
    s3.put_object(Bucket=BUCKET, Key="transform/other/part-9.out", Body=out_lines({"id": "z", "embedding": [0, 1]}))
    rows = read_batch_output(f"s3://{BUCKET}/transform/out/")
    assert sorted(rows) == ["a", "b", "c"]
    np.testing.assert_array_equal(rows["a"], np.array([0.6, 0.8], dtype=np.float32))
    assert rows["a"].dtype == np.float32
    assert rows["b"] == "not a decodable image"
    np.testing.assert_array_equal(rows["c"], np.array([1, 0], dtype=np.float32))


def test_a_folder_of_parts_and_an_empty_or_missing_one(tmp_path):
    (tmp_path / "out" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "part-0.out").write_bytes(out_lines({"id": "a", "embedding": [1, 0]}))
    (tmp_path / "out" / "sub" / "part-1.out").write_bytes(out_lines({"id": "b", "embedding": [0, 1]}))
    (tmp_path / "out" / "notes.txt").write_text("ignored")
    assert sorted(read_batch_output(str(tmp_path / "out"))) == ["a", "b"]
    (tmp_path / "empty").mkdir()
    for where in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(EncodingError, match=f"^no embeddings found in Batch Transform output {where} "
                                                r"\(expected \*.out files\)$"):
            read_batch_output(str(where))


def test_a_malformed_part_names_the_file_and_the_line(s3):
    s3.put_object(Bucket=BUCKET, Key="out/part-0.out", Body=out_lines({"id": "a", "embedding": [1, 0]}) + b"{oops\n")
    with pytest.raises(EncodingError, match=f"^s3://{BUCKET}/out/part-0.out line 2 is not JSON: "):
        read_batch_output(f"s3://{BUCKET}/out/")


def test_a_missing_bucket_is_an_encoding_error_naming_the_location(s3):
    with pytest.raises(EncodingError, match="s3://no-such-bucket-18/out/"):
        read_batch_output("s3://no-such-bucket-18/out/")


def test_index_from_s3_batch_output_without_a_model(s3, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="out/part-0.out",
                  Body=out_lines({"id": "p1", "embedding": [0.6, 0.8]}, {"id": "p2", "error": "corrupt image"},
                                 {"id": "p3", "embedding": [0.0, 1.0]}))
    catalogue = tmp_path / "products.jsonl"
    catalogue.write_text("".join(json.dumps({"id": f"p{i}", "title": f"product {i}", "image": f"/photos/{i}.jpg"}) + "\n"
                                 for i in (1, 2, 3)))
    result = CliRunner().invoke(main, ["index", "--catalogue", str(catalogue), "--index", str(tmp_path / "index"),
                                       "--embeddings", f"s3://{BUCKET}/out/", "--model-id", "m", "--no-titles"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == (f"indexed 2 of 3 products into {tmp_path / 'index'} "
                                                      "(2 in the index, 1 errors)")
    assert "not indexed: p2: corrupt image" in result.stderr

    from clip_search.search.index import open_index

    with open_index(str(tmp_path / "index")) as index:
        hits = index.search(np.array([0.6, 0.8], dtype=np.float32), k=2)
    assert [hit.id for hit in hits] == ["p1", "p3"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5) and hits[1].score == pytest.approx(0.8, abs=1e-5)
