"""`clip-search delete`, `--hybrid` on the embedded index and truthful per-product reports, through
the real CLI with the tiny test model (unit tier)."""
import json

import pytest
from click.testing import CliRunner

from clip_search.cli import main
from clip_search.demo_data import GROCERY as DEMO_DATA
from clip_search.search.catalogue import read_catalogue
from clip_search.search.index.embedded import EmbeddedIndex

CATALOGUE = DEMO_DATA / "products.jsonl"


def _invoke(*args, code=0):
    result = CliRunner().invoke(main, list(map(str, args)))
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture
def small_index(tmp_path, test_model_tar):
    products = list(read_catalogue(CATALOGUE))[:8]
    catalogue = tmp_path / "small.jsonl"
    catalogue.write_text("".join(json.dumps({"id": p.id, "title": p.title, "image": p.image, **p.metadata}) + "\n"
                                 for p in products))
    index = tmp_path / "index"
    assert "indexed 8 of 8 products" in _invoke("index", "--catalogue", catalogue, "--index", index, "--model", test_model_tar)
    return index, products


def test_delete_by_ids_and_ids_file(small_index, tmp_path):
    index, products = small_index
    out = _invoke("delete", "--index", index, products[0].id, products[1].id, "not-there")
    assert f"deleted 2 of 3 ids from {index} (6 in the index)" in out
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(f"{products[2].id}\n\n{products[3].id}\n")
    assert "deleted 2 of 2 ids" in _invoke("delete", "--index", index, "--ids", ids_file)
    remaining = {hit.id for hit in EmbeddedIndex(index).search(
        EmbeddedIndex(index)._table.to_arrow()["image_vector"][0].values.to_numpy(), k=20)}
    assert remaining == {p.id for p in products[4:]}
    assert "give product ids" in _invoke("delete", "--index", index, code=2)
    assert "no index at" in _invoke("delete", "--index", tmp_path / "nothing", "x", code=1)


def test_hybrid_search_on_the_embedded_index(small_index):
    index, products = small_index
    target = products[5]
    word = target.title.split()[0]
    out = _invoke("search", "--index", index, word, "--hybrid", "--json", "-k", "3")
    hits = json.loads(out[out.index("["):])
    assert target.id in [hit["id"] for hit in hits]
    assert all(-1.0 <= hit["score"] <= 1.0 for hit in hits)  # scores stay cosine similarities
    assert "--hybrid is a text search" in _invoke("search", "--index", index, "--image", target.image, "--hybrid", code=2)


def test_broken_images_are_errors_by_id_and_not_indexed(tmp_path, test_model_tar):
    good = list(read_catalogue(CATALOGUE))[:3]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg")
    rows = [{"id": p.id, "title": p.title, "image": p.image} for p in good]
    rows += [{"id": "missing-photo", "title": "Missing photo", "image": str(tmp_path / "nope.jpg")},
             {"id": "corrupt-photo", "title": "Corrupt photo", "image": str(corrupt)},
             {"id": "title-only", "title": "Just a title"},
             {"id": "nothing"}]
    catalogue = tmp_path / "mixed.jsonl"
    catalogue.write_text("".join(json.dumps(row) + "\n" for row in rows))
    index = tmp_path / "index"
    result = CliRunner().invoke(main, ["index", "--catalogue", str(catalogue), "--index", str(index),
                                       "--model", str(test_model_tar)])
    assert result.exit_code == 0, result.output
    assert "indexed 4 of 7 products" in result.output and "3 errors" in result.output
    for product_id in ("missing-photo", "corrupt-photo", "nothing"):
        assert f"not indexed: {product_id}: " in result.output
    assert "(" not in result.output.split("not indexed: nothing: ")[1].splitlines()[0]  # a reason, not a tuple
    stored = set(EmbeddedIndex(index)._table.to_arrow()["id"].to_pylist())
    assert stored == {p.id for p in good} | {"title-only"}  # the summary matches what is in the index
