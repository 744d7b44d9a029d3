"""Streaming ingest of Batch Transform output: .out files parsed a chunk at a time into spill files
(by worker processes for big outputs), looked up a batch at a time, and appended to a fresh table
without losing the upsert-by-id semantics."""
import json

import numpy as np
import pytest

from clip_search.search import embeddings
from clip_search.search.client import SearchClient
from clip_search.search.embeddings import BatchOutput
from clip_search.search.errors import EncodingError
from clip_search.search.index.embedded import EmbeddedIndex
from clip_search.search.records import EmbeddedProduct, Product
from tests.search.conftest import unit

DIM = 16


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.parametrize("parallel", [False, True], ids=["in-process", "worker-processes"])
def test_chunks_files_and_later_lines_win(tmp_path, monkeypatch, parallel):
    monkeypatch.setattr(embeddings, "CHUNK_LINES", 3)  # several chunks per file
    if parallel:
        monkeypatch.setattr(embeddings, "PARALLEL_MIN_BYTES", 0)
    vectors = unit(np.random.default_rng(0).standard_normal((20, DIM)))
    _write(tmp_path / "a.out", [{"id": f"p{i}", "embedding": vectors[i].tolist()} for i in range(10)]
           + [{"id": "p3", "error": "cannot decode image"}])
    _write(tmp_path / "b.out", [{"id": f"p{i}", "embedding": vectors[i].tolist()} for i in range(10, 20)]
           + [{"id": "p0", "embedding": vectors[19].tolist()}, {"id": "p15", "error": "too big"},
              {"id": "short", "embedding": [0.5, 0.5]}])
    with BatchOutput(str(tmp_path)) as output:
        assert output.dim == DIM
        assert sorted(output) == sorted([f"p{i}" for i in range(20)] + ["short"])
        got, reasons = output.take(["p1", "p0", "p3", "p15", "absent", "p19", "short"])
        np.testing.assert_array_equal(got[0], vectors[1].astype(np.float32))
        np.testing.assert_array_equal(got[1], vectors[19].astype(np.float32))  # b.out's later line
        np.testing.assert_array_equal(got[5], vectors[19].astype(np.float32))
        assert reasons[:2] == [None, None] and reasons[5] is None
        assert reasons[2] == "cannot decode image" and reasons[3] == "too big"
        assert reasons[4] == "no embedding in the precomputed output"
        assert "dimension 2" in reasons[6]
        assert not got[2:5].any() and not got[6].any()
        assert output["p3"] == "cannot decode image"
        with pytest.raises(KeyError):
            output["absent"]
        folder = output._folder
    assert not (tmp_path / folder).exists()  # spill files removed on close


def test_a_bad_line_is_named_by_its_line_number_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "CHUNK_LINES", 2)
    lines = [json.dumps({"id": f"p{i}", "embedding": [1.0, 0.0]}) for i in range(5)] + ["{not json"]
    (tmp_path / "x.out").write_text("\n".join(lines) + "\n")
    with pytest.raises(EncodingError, match=r"x\.out line 6 is not JSON"):
        BatchOutput(str(tmp_path))


def test_ingest_from_output_matches_the_vectors_and_reports_by_id(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "PARALLEL_MIN_BYTES", 0)
    vectors = unit(np.random.default_rng(1).standard_normal((300, DIM)))
    _write(tmp_path / "part.out", [{"id": f"p{i}", "embedding": vectors[i].tolist()} for i in range(300) if i != 7])
    products = [Product(f"p{i}", f"title {i}", f"img/{i}.jpg", {"shelf": f"s{i % 10}"}) for i in range(300)]
    index = EmbeddedIndex(tmp_path / "ix")
    with BatchOutput(str(tmp_path)) as output:
        report = SearchClient(index).index_catalogue(products, titles=False, image_embeddings=output,
                                                     model_id="m", progress=False)
    assert (report.products, report.indexed) == (300, 299)
    assert report.errors == [("p7", "no embedding in the precomputed output")]
    assert index.count() == 299
    hits = index.search(vectors[42], k=3, filters={"shelf": "s2"}, fields=("image",))
    assert hits[0].id == "p42" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].metadata == {"shelf": "s2", "image": "img/42.jpg"}


def test_appending_to_a_fresh_table_still_upserts_by_id(tmp_path):
    """Later commits of ids this writer already committed (and ids committed by another writer)
    replace, never duplicate."""
    rng = np.random.default_rng(2)
    first, second = unit(rng.standard_normal((50, DIM))), unit(rng.standard_normal((50, DIM)))
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    index.flush_rows = 20
    index.upsert([EmbeddedProduct(Product(f"p{i}", "old"), first[i]) for i in range(50)])
    index.upsert([EmbeddedProduct(Product(f"p{i}", "new"), second[i]) for i in range(25, 50)])
    other = EmbeddedIndex(tmp_path / "ix")  # another writer, between two of our commits
    other.upsert([EmbeddedProduct(Product("p1", "other"), second[1])])
    other.flush()
    index.upsert([EmbeddedProduct(Product("p2", "again"), second[2]), EmbeddedProduct(Product("p1", "ours"), first[1])])
    index.flush()
    assert index.count() == 50
    rows = {row["id"]: row["title"] for row in index._table.to_arrow().select(["id", "title"]).to_pylist()}
    assert len(rows) == 50
    assert rows["p0"] == "old" and rows["p30"] == "new" and rows["p2"] == "again" and rows["p1"] == "ours"
    assert index.search(second[30], k=1, fields=("image",))[0].id == "p30"
