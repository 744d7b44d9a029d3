"""delete(ids) on every backend (embedded LanceDB, OpenSearch via the stand-in, pgvector): the same contract."""
import numpy as np

from clip_search.search.records import EmbeddedProduct, Product
from tests.search.conftest import unit

DIM = 8


def test_delete_removes_only_the_named_products(index_at):
    vectors = unit(np.random.default_rng(3).standard_normal((6, DIM)))
    index = index_at()
    index.ensure(DIM, "model-a")
    index.upsert([EmbeddedProduct(Product(f"p{i}", f"item {i}", None, {"g": "x"}), v) for i, v in enumerate(vectors)])
    index.refresh()
    assert index.delete(["p1", "p4", "never-indexed", "it's"]) == 2
    index.refresh()
    assert index.count() == 4
    remaining = {hit.id for hit in index.search(vectors[1], k=10, fields=("image",))}
    assert remaining == {"p0", "p2", "p3", "p5"}
    assert index.delete([]) == 0 and index.count() == 4
