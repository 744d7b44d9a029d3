"""index / search / eval through the real CLI, in-process, with the tiny test model."""
import json

import pytest
from click.testing import CliRunner

from clip_search.cli import main
from clip_search.demo_data import GROCERY as DEMO_DATA

CATALOGUE = DEMO_DATA / "products.jsonl"


@pytest.fixture(scope="module")
def built_index(tmp_path_factory, test_model_tar):
    location = tmp_path_factory.mktemp("cli") / "grocery-index"
    result = CliRunner().invoke(main, ["index", "--catalogue", str(CATALOGUE), "--index", str(location),
                                       "--model", str(test_model_tar)])
    assert result.exit_code == 0, result.output
    assert "indexed 81 of 81 products" in result.output
    return location


def _search(*args):
    result = CliRunner().invoke(main, ["search", *args])
    assert result.exit_code == 0, result.output
    return result


def test_text_search_json_with_filter_uses_the_recorded_model(built_index):
    result = _search("--index", str(built_index), "green apple", "-k", "5", "--filter", "department=Fruit", "--json")
    hits = json.loads(result.output[result.output.index("["):])
    assert len(hits) == 5
    assert all({"id", "score", "title"} <= set(hit) and hit["department"] == "Fruit" for hit in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_image_search_finds_the_catalogue_photo(built_index):
    photo = DEMO_DATA / "images" / "Kiwi.jpg"
    result = _search("--index", str(built_index), "--image", str(photo), "-k", "3", "--json")
    hits = json.loads(result.output[result.output.index("["):])
    assert hits[0]["id"] == "Kiwi" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_reindexing_is_idempotent(built_index, test_model_tar):
    result = CliRunner().invoke(main, ["index", "--catalogue", str(CATALOGUE), "--index", str(built_index),
                                       "--model", str(test_model_tar)])
    assert result.exit_code == 0 and "(81 in the index, 0 errors)" in result.output


def test_a_query_from_another_model_is_refused(built_index, tmp_path, test_model_tar):
    import numpy as np

    from clip_search.search.index.embedded import EmbeddedIndex
    from clip_search.search.records import EmbeddedProduct, Product

    # An index of the same dimension as if ViT-B-32 had built it; the query is encoded by the test model.
    other = tmp_path / "other-index"
    dim = EmbeddedIndex(built_index).dim
    with EmbeddedIndex(other) as index:
        index.ensure(dim, "ViT-B-32/laion2b_s34b_b79k")
        index.upsert([EmbeddedProduct(Product("x", "apple"), np.eye(dim, dtype=np.float32)[0])])
    result = CliRunner().invoke(main, ["search", "--index", str(other), "apple", "--model", str(test_model_tar)])
    assert result.exit_code == 1
    assert "was built with model ViT-B-32/laion2b_s34b_b79k" in result.output


def test_eval_prints_recall_table(built_index, tmp_path):
    queries = tmp_path / "queries.jsonl"
    photo = DEMO_DATA / "images" / "Lime.jpg"
    queries.write_text(json.dumps({"text": "a lime", "relevant": ["Lime"]}) + "\n"
                       + json.dumps({"image": str(photo), "relevant": ["Lime"]}) + "\n")
    result = CliRunner().invoke(main, ["eval", "--index", str(built_index), "--queries", str(queries)])
    assert result.exit_code == 0, result.output
    assert "recall@1" in result.output and "image -> product" in result.output and "text -> product" in result.output
    image_row = next(line for line in result.output.splitlines() if line.startswith("image -> product"))
    assert image_row.split()[-3:] == ["1.000", "1.000", "1.000"]  # the catalogue photo finds itself


def test_usage_errors_are_clear(tmp_path):
    result = CliRunner().invoke(main, ["search", "--index", str(tmp_path / "nothing"), "apple"])
    assert result.exit_code == 1 and "no index at" in result.output and "no encoder recorded" not in result.output
    result = CliRunner().invoke(main, ["index", "--catalogue", str(CATALOGUE), "--index", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--model or --endpoint" in result.output


def test_index_from_batch_transform_output(tmp_path, test_encoder, test_model_tar):
    """Image embeddings from Batch Transform *.out files; queries then encoded by the model."""
    from clip_search.search.catalogue import read_catalogue

    everything = list(read_catalogue(CATALOGUE))
    products, failed = everything[:12], everything[-1]
    vectors = test_encoder.encode_image_bytes([open(p.image, "rb").read() for p in products])
    out_dir = tmp_path / "transform-output"
    out_dir.mkdir()
    lines = [json.dumps({"id": p.id, "embedding": v.tolist()}) for p, v in zip(products, vectors, strict=True)]
    lines.append(json.dumps({"id": failed.id, "error": "cannot decode image"}))
    (out_dir / "products.jsonl.out").write_text("\n".join(lines))
    catalogue = tmp_path / "subset.jsonl"
    catalogue.write_text("".join(json.dumps({"id": p.id, "title": p.title, "image": p.image, **p.metadata}) + "\n"
                                 for p in products + [failed]))
    index = tmp_path / "from-transform"
    result = CliRunner().invoke(main, ["index", "--catalogue", str(catalogue), "--index", str(index),
                                       "--embeddings", str(out_dir), "--model-id", test_encoder.model_id, "--no-titles"])
    assert result.exit_code == 0, result.output
    assert "indexed 12 of 13 products" in result.output and f"{failed.id}: cannot decode image" in result.output
    photo = products[4].image
    result = _search("--index", str(index), "--image", photo, "-k", "1", "--json", "--model", str(test_model_tar))
    assert json.loads(result.output[result.output.index("["):])[0]["id"] == products[4].id
