"""The contract every backend keeps (embedded, OpenSearch via the stand-in or live, pgvector)."""
import itertools

import numpy as np
import pytest

from clip_search.search.errors import ModelMismatchError, UnsupportedQuery
from clip_search.search.records import EmbeddedProduct, Product
from tests.search.conftest import unit

DIM = 8


@pytest.fixture
def vectors():
    return unit(np.random.default_rng(7).standard_normal((20, DIM)))


def products(vectors, titles=None):
    items = []
    for i, vector in enumerate(vectors):
        colour = ["red", "blue"][i % 2]
        items.append(EmbeddedProduct(Product(f"p{i}", f"{colour} shoe {i}", f"/img/{i}.jpg",
                                             {"colour": colour, "size": i % 3}),
                                     vector, None if titles is None else titles[i]))
    return items


def test_nearest_first_with_cosine_scores(index_at, vectors):
    index = index_at()
    index.ensure(DIM, "model-a")
    assert index.upsert(products(vectors)).indexed == 20
    index.refresh()
    query = unit(vectors[3] + 0.05 * vectors[4])
    hits = index.search(query, k=5, fields=("image",))
    expected = np.argsort(-(vectors @ query))[:5]
    assert [hit.id for hit in hits] == [f"p{i}" for i in expected]
    assert hits[0].score == pytest.approx(float(vectors[expected[0]] @ query), abs=1e-4)
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    assert hits[0].title == f"{['red', 'blue'][expected[0] % 2]} shoe {expected[0]}"
    assert hits[0].metadata["image"] == f"/img/{expected[0]}.jpg"


def test_metadata_filters(index_at, vectors):
    index = index_at()
    index.ensure(DIM, "model-a")
    index.upsert(products(vectors))
    index.refresh()
    hits = index.search(vectors[0], k=10, filters={"colour": "blue"}, fields=("image",))
    assert hits and all(hit.metadata["colour"] == "blue" for hit in hits)
    assert "p0" not in [hit.id for hit in hits]  # p0 is red: filtered out although it is the best match
    both = index.search(vectors[0], k=20, filters={"colour": ["blue"], "size": ["1"]}, fields=("image",))
    assert {hit.id for hit in both} == {f"p{i}" for i in range(20) if i % 2 == 1 and i % 3 == 1}


def test_upsert_by_id_is_idempotent_and_replaces(index_at, vectors):
    index = index_at()
    index.ensure(DIM, "model-a")
    index.upsert(products(vectors))
    index.upsert(products(vectors))  # re-indexing the same catalogue adds nothing
    index.refresh()
    assert index.count() == 20
    moved = EmbeddedProduct(Product("p0", "green boot", None, {"colour": "green"}), vectors[5], None)
    index.upsert([moved])
    index.refresh()
    assert index.count() == 20
    hits = index.search(vectors[5], k=2, fields=("image",))
    assert {hit.id for hit in hits} == {"p0", "p5"}
    p0 = next(hit for hit in hits if hit.id == "p0")
    assert p0.title == "green boot" and p0.metadata["colour"] == "green"
    assert index.search(vectors[0], k=1, fields=("image",))[0].id != "p0" or index.search(vectors[0], k=1, fields=("image",))[0].score < 0.99


def test_best_of_image_and_title_counts(index_at, vectors):
    index = index_at()
    index.ensure(DIM, "model-a")
    titles = np.roll(vectors, 1, axis=0)  # product i's title embedding = vector i-1
    index.upsert(products(vectors, titles))
    index.refresh()
    hits = index.search(vectors[7], k=2)  # matches p7's image and p8's title equally
    assert {hit.id for hit in hits} == {"p7", "p8"}
    assert all(hit.score == pytest.approx(1.0, abs=1e-4) for hit in hits)
    title_only = index.search(vectors[7], k=1, fields=("title",))
    assert title_only[0].id == "p8"


def test_remembers_model_and_refuses_another(index_at, vectors):
    index = index_at()
    index.ensure(DIM, "model-a", {"model": "/models/a.tar.gz"})
    info = index.info()
    assert (info.model_id, info.dim) == ("model-a", DIM)
    assert info.extra["encoder"] == {"model": "/models/a.tar.gz"}
    with pytest.raises(ModelMismatchError, match="model-a"):
        index.ensure(DIM, "model-b")
    with pytest.raises(ModelMismatchError):
        index.ensure(DIM + 1, "model-a")


def test_wrong_dimension_is_reported_per_product(index_at, vectors):
    index = index_at()
    index.ensure(DIM, "model-a")
    bad = EmbeddedProduct(Product("bad", "x"), np.ones(DIM - 1, np.float32) / 3, None)
    good = products(vectors[:2])
    report = index.upsert([good[0], bad, good[1]])
    index.refresh()
    assert report.indexed == 2
    assert [product_id for product_id, _ in report.errors] == ["bad"]
    assert index.count() == 2


def test_a_list_valued_metadata_field_matches_any_of_its_items(index_at, vectors):
    index = index_at()
    index.ensure(DIM, "model-a")
    items = products(vectors[:4])
    for item, labels in zip(items, (["vegan", "organic"], ["organic"], [], "vegan"), strict=True):
        item.product.metadata["labels"] = labels
    index.upsert(items)
    index.refresh()
    def ids(**filters):
        return sorted(hit.id for hit in index.search(vectors[0], k=10, filters=filters, fields=("image",)))
    assert ids(labels="vegan") == ["p0", "p3"]
    assert ids(labels=["organic"]) == ["p0", "p1"]
    assert ids(labels="vegan", colour="blue") == ["p3"]
    assert ids(labels='["organic"]') == []  # the list's JSON text is not one of its items


def test_title_and_id_filters(index_at, vectors):
    """`--filter title=...` matches the exact title and `--filter id=...` the product ids, on every
    backend (OpenSearch: `title.raw` and `product_id`), also together with metadata filters."""
    index = index_at()
    index.ensure(DIM, "model-a")
    index.upsert(products(vectors))
    index.refresh()
    by_title = index.search(vectors[0], k=5, filters={"title": "blue shoe 3"}, fields=("image",))
    assert [hit.id for hit in by_title] == ["p3"]
    assert index.search(vectors[0], k=5, filters={"title": "blue shoe"}, fields=("image",)) == []  # exact, not words
    by_id = index.search(vectors[0], k=5, filters={"id": ["p4", "p7", "p19"]}, fields=("image",))
    assert sorted(hit.id for hit in by_id) == ["p19", "p4", "p7"]
    both = index.search(vectors[0], k=5, filters={"id": ["p1", "p2", "p3"], "colour": "blue"}, fields=("image",))
    assert sorted(hit.id for hit in both) == ["p1", "p3"]


def test_k_hits_when_k_products_match_a_selective_filter(index_at, vectors):
    """The matches are the products farthest from the query: still k of them come back (no backend
    may filter the overall top k afterwards)."""
    index = index_at()
    index.ensure(DIM, "model-a")
    index.upsert(products(vectors))
    index.refresh()
    query = vectors[0]
    farthest = [f"p{i}" for i in np.argsort(vectors @ query)[:4]]
    hits = index.search(query, k=3, filters={"id": farthest}, fields=("image",))
    assert len(hits) == 3 and {hit.id for hit in hits} < set(farthest)


def test_get_returns_the_stored_products_with_their_vectors(index_at, vectors):
    index = index_at()
    index.ensure(DIM, "model-a")
    titles = np.roll(vectors, 1, axis=0)
    stored = products(vectors, titles)
    stored[3] = EmbeddedProduct(stored[3].product, None, titles[3])  # a product known by its title only
    index.upsert(stored)
    index.refresh()
    got = index.get(["p5", "missing", "p3", "p5", "p12"])
    assert [item.product.id for item in got] == ["p5", "p3", "p12"]  # the order asked, once each, unknown ids left out
    p5, p3, p12 = got
    assert p5.product.title == "blue shoe 5" and p5.product.image == "/img/5.jpg"
    assert p5.product.metadata == {"colour": "blue", "size": 2}
    np.testing.assert_allclose(p5.image_embedding, vectors[5], atol=1e-6)
    np.testing.assert_allclose(p5.title_embedding, titles[5], atol=1e-6)
    assert p5.image_embedding.dtype == np.float32
    assert p3.image_embedding is None  # no image vector is not a zero vector
    np.testing.assert_allclose(p3.title_embedding, titles[3], atol=1e-6)
    # A stored vector searches back to its own product at cosine 1.
    assert index.search(p12.image_embedding, k=1, fields=("image",))[0].id == "p12"
    assert index.get([]) == [] and index.get(["nobody"]) == []


def test_get_on_an_index_that_does_not_exist_finds_nothing(index_at):
    assert index_at().get(["p1"]) == []


def test_a_query_the_backend_cannot_run_is_refused_not_cut_short(index_at, vectors):
    index = index_at()
    index.ensure(DIM, "model-a")
    index.upsert(products(vectors))
    index.refresh()
    with pytest.raises(UnsupportedQuery, match="cannot search by 'colour'"):
        index.search(vectors[0], k=3, fields=("colour",))
    with pytest.raises(UnsupportedQuery, match="cannot search by no field"):
        index.search(vectors[0], k=3, fields=())
    if index_at.kind == "pgvector":  # no keyword search: keywords are refused, not dropped
        with pytest.raises(UnsupportedQuery, match="hybrid .keyword. search is not available on a pgvector index") as raised:
            index.search(vectors[0], k=3, keywords="red")
        assert raised.value.status_code == 422
    else:
        assert index.search(vectors[0], k=3, keywords="red")
    # A word where the stored values are numbers: compared as strings (nothing matches) where the
    # backend can, refused by OpenSearch, whose numeric field cannot take it; never ignored.
    if index_at.kind.startswith("opensearch"):
        with pytest.raises(UnsupportedQuery, match="cannot apply the filter size=big"):
            index.search(vectors[0], k=3, filters={"size": "big"}, fields=("image",))
    else:
        assert index.search(vectors[0], k=3, filters={"size": "big"}, fields=("image",)) == []
    if index_at.kind == "embedded":  # a tag "a=b=c" could not tell field a=b from field a
        with pytest.raises(UnsupportedQuery, match="cannot filter on 'a=b'"):
            index.search(vectors[0], k=3, filters={"a=b": "c"}, fields=("image",))
