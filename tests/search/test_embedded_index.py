"""Embedded index: persistence, exact -> HNSW switch, tombstones, crash safety."""

import numpy as np
import pytest

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


def test_switches_to_hnsw_above_threshold_and_keeps_recall(tmp_path):
    rng = np.random.default_rng(1)
    centres = unit(rng.standard_normal((30, DIM)))  # clustered like real embeddings
    vectors = unit(centres[rng.integers(0, 30, 3000)] + 0.3 * rng.standard_normal((3000, DIM)) / np.sqrt(DIM))
    index = EmbeddedIndex(tmp_path / "ix", exact_max_rows_=1000)
    index.ensure(DIM, "m")
    index.upsert(_items(vectors[:800]))
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
    # A selective filter (750 candidates, under the exact threshold) is answered exactly.
    hits = index.search(queries[0], k=10, filters={"group": "2"}, fields=("image",))
    members = [i for i in range(3000) if i % 4 == 2]
    truth = [f"p{members[j]}" for j in np.argsort(-(vectors[members] @ queries[0]))[:10]]
    assert [hit.id for hit in hits] == truth


def test_replaced_rows_are_tombstoned_then_compacted(tmp_path):
    vectors = unit(np.random.default_rng(2).standard_normal((40, DIM)))
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    index.upsert(_items(vectors[:20]))
    index.upsert([EmbeddedProduct(Product("p0", "moved"), vectors[30], None)])
    assert index.count() == 20 and len(index._rows) == 21  # old p0 row kept, dead
    assert index.search(vectors[0], k=1, fields=("image",))[0].id != "p0"
    index.upsert(_items(vectors[20:30], start=0))  # replace p0..p9: dead rows pass a quarter -> compaction
    assert index.count() == 20 and len(index._rows) == 20
    assert index.search(vectors[25], k=1, fields=("image",))[0].id == "p5"


def test_a_crash_mid_save_keeps_the_previous_state(tmp_path, monkeypatch):
    vectors = unit(np.random.default_rng(3).standard_normal((10, DIM)))
    index = EmbeddedIndex(tmp_path / "ix")
    index.ensure(DIM, "m")
    index.upsert(_items(vectors[:5]))
    index.refresh()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    index.upsert(_items(vectors[5:], start=5))
    with pytest.raises(OSError):
        index.refresh()
    monkeypatch.undo()
    reopened = EmbeddedIndex(tmp_path / "ix")
    assert reopened.count() == 5
    assert reopened.search(vectors[2], k=1, fields=("image",))[0].id == "p2"


def test_refuses_a_folder_that_is_not_an_index(tmp_path):
    from clip_search.search.errors import SearchError

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(SearchError, match="not an embedded clip-search index"):
        EmbeddedIndex(tmp_path / "photos").ensure(DIM, "m")
