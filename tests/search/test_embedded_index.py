"""Embedded index (LanceDB): persistence, exact -> ANN switch, deletes, filters, hybrid, old format."""

import json

import numpy as np
import pytest

from clip_search.search.errors import SearchError
from clip_search.search.index.embedded import EmbeddedIndex
from clip_search.search.records import EmbeddedProduct, Product
from tests.search.conftest import unit

DIM = 32


def _items(vectors, start=0, prefix="p"):
    return [EmbeddedProduct(Product(f"{prefix}{start + i}", f"t{start + i}", None, {"group": str((start + i) % 4)}), v, None)
            for i, v in enumerate(vectors)]


def test_survives_a_restart(tmp_path):
    vectors = unit(np.random.default_rng(0).standard_normal((50, DIM)))
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m", {"model": "/m.tar.gz"})
    index.upsert(_items(vectors))
    before = index.search(vectors[9], k=5, filters={"group": "1"})
    index.close()
    reopened = EmbeddedIndex(tmp_path / "ix")
    assert reopened.info().model_id == "m" and reopened.info().extra["encoder"] == {"model": "/m.tar.gz"}
    assert reopened.count() == 50
    assert reopened.search(vectors[9], k=5, filters={"group": "1"}) == before
    assert [hit.id for hit in before][0] == "p9"


def test_switches_to_ann_above_threshold_and_keeps_recall(tmp_path):
    rng = np.random.default_rng(1)
    centres = unit(rng.standard_normal((30, DIM)))  # clustered like real embeddings
    vectors = unit(centres[rng.integers(0, 30, 3000)] + 0.3 * rng.standard_normal((3000, DIM)) / np.sqrt(DIM))
    index = EmbeddedIndex(tmp_path / "ix", exact_max_rows_=1000)
    index.ensure(DIM, "m")
    index.upsert(_items(vectors[:800]))
    index.refresh()
    assert not index.is_approximate
    index.upsert(_items(vectors[800:], start=800))
    index.refresh()
    assert index.is_approximate and EmbeddedIndex(tmp_path / "ix").is_approximate
    queries = unit(vectors[:50] + 0.1 * rng.standard_normal((50, DIM)) / np.sqrt(DIM))
    found = 0
    for query in queries:
        truth = {f"p{i}" for i in np.argsort(-(vectors @ query))[:10]}
        found += len(truth & {hit.id for hit in index.search(query, k=10, fields=("image",))})
    assert found / 500 >= 0.95
    # A selective filter (750 candidates) keeps the exact answer.
    hits = index.search(queries[0], k=10, filters={"group": "2"}, fields=("image",))
    members = [i for i in range(3000) if i % 4 == 2]
    truth = [f"p{members[j]}" for j in np.argsort(-(vectors[members] @ queries[0]))[:10]]
    assert len(set(hit.id for hit in hits) & set(truth)) >= 9
    # Products added after the ANN index was built are found at once (searched exactly until optimised).
    late = unit(rng.standard_normal((1, DIM)))
    index.upsert(_items(late, start=5000))
    assert index.search(late[0], k=1, fields=("image",))[0].id == "p5000"


def test_replaced_rows_leave_one_row_per_id(tmp_path):
    vectors = unit(np.random.default_rng(2).standard_normal((40, DIM)))
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    index.upsert(_items(vectors[:20]))
    index.refresh()
    index.upsert([EmbeddedProduct(Product("p0", "moved"), vectors[30], None)])
    assert index.count() == 20
    assert index.search(vectors[0], k=1, fields=("image",))[0].id != "p0"
    assert index.search(vectors[30], k=1, fields=("image",))[0].title == "moved"
    index.upsert(_items(vectors[20:30], start=0))
    assert index.count() == 20
    assert index.search(vectors[25], k=1, fields=("image",))[0].id == "p5"


def test_delete_by_id(tmp_path):
    vectors = unit(np.random.default_rng(4).standard_normal((10, DIM)))
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    index.upsert(_items(vectors))
    assert index.delete(["p3", "p4", "nope"]) == 2
    assert index.count() == 8
    assert "p3" not in {hit.id for hit in index.search(vectors[3], k=10, fields=("image",))}
    assert EmbeddedIndex(tmp_path / "ix").count() == 8
    assert index.delete(["it's", "x' OR '1'='1"]) == 0 and index.count() == 8


HOSTILE = ["it's", "a'--", "x'; DROP TABLE products; --", "' OR 1=1 OR '", "back\\slash", 'double "quoted"', "100%_"]


def test_filter_values_match_literally_and_never_change_the_query(tmp_path):
    vectors = unit(np.random.default_rng(5).standard_normal((len(HOSTILE) + 3, DIM)))
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    values = HOSTILE + ["plain", "plain", "other"]
    index.upsert([EmbeddedProduct(Product(f"id{v}" if i < len(HOSTILE) else f"q{i}", f"title {v}", None, {"brand": v}), vectors[i])
                  for i, v in enumerate(values)])
    for value in HOSTILE:
        hits = index.search(vectors[0], k=20, filters={"brand": value}, fields=("image",))
        assert [hit.metadata["brand"] for hit in hits] == [value]
        assert [hit.id for hit in index.search(vectors[0], k=20, filters={"id": f"id{value}"})] == [f"id{value}"]
        assert [hit.title for hit in index.search(vectors[0], k=20, filters={"title": f"title {value}"})] == [f"title {value}"]
    assert index.search(vectors[0], k=20, filters={"brand": "' OR '1'='1"}) == []
    assert index.count() == len(values)  # nothing was dropped either


def test_repeated_field_is_or_and_fields_are_and(tmp_path):
    vectors = unit(np.random.default_rng(6).standard_normal((24, DIM)))
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    index.upsert([EmbeddedProduct(Product(f"p{i}", f"t{i}", None, {"colour": ["red", "blue", "green"][i % 3],
                                                                    "size": i % 2, "tags": ["a", "b"] if i < 4 else ["c"]}),
                                  vectors[i]) for i in range(24)])
    either = index.search(vectors[0], k=30, filters={"colour": ["red", "blue"]})
    assert {hit.id for hit in either} == {f"p{i}" for i in range(24) if i % 3 in (0, 1)}
    both = index.search(vectors[0], k=30, filters={"colour": ["red", "blue"], "size": ["1"]})
    assert {hit.id for hit in both} == {f"p{i}" for i in range(24) if i % 3 in (0, 1) and i % 2 == 1}
    listed = index.search(vectors[0], k=30, filters={"tags": "b"})
    assert {hit.id for hit in listed} == {"p0", "p1", "p2", "p3"}


def test_scalar_indexes_are_built_for_filters(tmp_path):
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    index.upsert(_items(unit(np.random.default_rng(8).standard_normal((30, DIM)))))
    index.refresh()
    kinds = {tuple(config.columns): config.index_type for config in index._table.list_indices()}
    assert kinds[("id",)] == "BTree" and kinds[("tags",)] == "LabelList" and kinds[("title",)] == "FTS"


def test_hybrid_fuses_keyword_and_vector_ranks(tmp_path):
    rng = np.random.default_rng(9)
    vectors = unit(rng.standard_normal((40, DIM)))
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    titles = [f"plain item {i}" for i in range(40)]
    titles[17] = "organic banana"
    index.upsert([EmbeddedProduct(Product(f"p{i}", titles[i], None, {"g": str(i % 2)}), vectors[i], None) for i in range(40)])
    index.refresh()
    query = vectors[3]
    vector_only = [hit.id for hit in index.search(query, k=5)]
    assert "p17" not in vector_only and vector_only[0] == "p3"
    hybrid = index.search(query, k=5, keywords="banana")
    ids = [hit.id for hit in hybrid]
    assert ids[:2] == ["p3", "p17"] or ids[:2] == ["p17", "p3"]  # each first in one list: tied RRF
    p17 = next(hit for hit in hybrid if hit.id == "p17")
    assert p17.score == pytest.approx(float(vectors[17] @ query), abs=1e-4)  # scores stay cosine
    assert "p17" not in [hit.id for hit in index.search(query, k=5, keywords="banana", filters={"g": "0"})]


def test_a_title_only_product_is_found_by_title_and_not_by_image(tmp_path):
    vectors = unit(np.random.default_rng(10).standard_normal((5, DIM)))
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    index.upsert([EmbeddedProduct(Product("img", "a"), vectors[0], None),
                  EmbeddedProduct(Product("txt", "b"), None, vectors[1])])
    assert [hit.id for hit in index.search(vectors[1], k=5, fields=("image",))] == ["img"]
    assert [hit.id for hit in index.search(vectors[1], k=5, fields=("title",))] == ["txt"]
    report = index.upsert([EmbeddedProduct(Product("none", "c"), None, None)])
    assert report.indexed == 0 and report.errors[0][0] == "none"


def test_refuses_a_folder_that_is_not_an_index(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(SearchError, match="not an embedded clip-search index"):
        EmbeddedIndex(tmp_path / "photos").ensure(DIM, "m")


def test_an_old_faiss_folder_names_the_command_that_rebuilds_it(tmp_path):
    old = tmp_path / "old"
    (old / "data-1").mkdir(parents=True)
    (old / "index.json").write_text(json.dumps({"format": 1, "backend": "embedded", "model_id": "m", "dim": 8,
                                                "data": "data-1"}))
    with pytest.raises(SearchError, match="old faiss format.*clip-search index --catalogue"):
        EmbeddedIndex(old)


def test_many_small_commits_are_compacted(tmp_path):
    """One product a commit (a `clip-search index` run each) leaves a fragment each; refresh()
    compacts them past COMPACT_FRAGMENTS, and every product is still found, with its latest vector."""
    from clip_search.search.index import embedded

    vectors = unit(np.random.default_rng(4).standard_normal((embedded.COMPACT_FRAGMENTS + 6, DIM)))
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    for item in _items(vectors):
        index.upsert([item])
        index.flush()
    index.upsert(_items(vectors[:1], start=1))  # p1 replaced: a merge, not only appends
    index.flush()
    assert index._table.stats()["fragment_stats"]["num_fragments"] > embedded.COMPACT_FRAGMENTS
    index.refresh()
    assert index._table.stats()["fragment_stats"]["num_fragments"] <= 2
    assert index.count() == len(vectors)
    assert [hit.id for hit in index.search(vectors[0], k=2)] == ["p0", "p1"]
    assert index.search(vectors[len(vectors) - 1], k=1)[0].id == f"p{len(vectors) - 1}"
