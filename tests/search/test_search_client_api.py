"""SearchClient as a library (what the CLI and the app call): the in-process test model and a real
embedded (LanceDB) index on real catalogue photos. Refusals name what is missing; a PIL image, a
path and the bytes of one photo find the same product."""
import pytest
from PIL import Image

from clip_search.search.client import SearchClient
from clip_search.search.errors import IndexNotFoundError, SearchError
from clip_search.search.records import Product


@pytest.fixture(scope="module")
def products(catalogue_photos):
    photos = catalogue_photos[:6]
    return [Product(f"p{i}", path.parent.name.replace("-", " "), str(path), {"shelf": str(i % 2)})
            for i, path in enumerate(photos)]


@pytest.fixture(scope="module")
def client(tmp_path_factory, products, test_model_dir):
    with SearchClient(tmp_path_factory.mktemp("client") / "index", model=str(test_model_dir)) as client:
        report = client.index_catalogue(products, batch_size=4, progress=False)
        assert (report.products, report.indexed, report.errors) == (6, 6, [])
        yield client


def test_a_pil_image_a_path_and_the_bytes_find_the_same_product(client, products):
    photo = products[3].image
    by_path = client.search_image(photo, k=3)
    with open(photo, "rb") as handle:
        by_bytes = client.search_image(handle.read(), k=3)
    with Image.open(photo) as image:
        by_pil = client.search_image(image, k=3)
    assert by_path[0].id == by_bytes[0].id == by_pil[0].id == "p3"
    assert [hit.id for hit in by_path] == [hit.id for hit in by_bytes]
    assert by_path[0].score == pytest.approx(1.0, abs=1e-4)
    assert by_pil[0].score > 0.99  # full decode vs JPEG draft decode: near, not identical


def test_many_queries_in_one_batch_answer_like_one_at_a_time(client, products):
    texts = [products[0].title, products[5].title]
    batched = client.search_texts(texts, k=4)
    assert [[hit.id for hit in hits] for hits in batched] == [[hit.id for hit in client.search_text(text, k=4)]
                                                              for text in texts]
    photos = [open(products[i].image, "rb").read() for i in (1, 4)]
    assert [hits[0].id for hits in client.search_images(photos, k=2)] == ["p1", "p4"]


def test_a_filter_keeps_only_matching_products(client, products):
    hits = client.search_image(products[2].image, k=6, filters={"shelf": "1"})
    assert hits and all(hit.metadata["shelf"] == "1" for hit in hits)
    assert "p2" not in [hit.id for hit in hits]  # p2 is on shelf 0
    # The library takes the CLI's and the API's spelling too: one grammar.
    for spelled in (["shelf=1"], "shelf:1"):
        assert [hit.id for hit in client.search_image(products[2].image, k=6, filters=spelled)] == [hit.id for hit in hits]


def test_delete_returns_how_many_were_there(tmp_path, products, test_model_dir):
    with SearchClient(tmp_path / "index", model=str(test_model_dir)) as client:
        client.index_catalogue(products[:3], titles=False, progress=False)
        assert client.delete(["p1", "no-such-id"]) == 1
        assert client.index.count() == 2
        assert client.search_image(products[1].image, k=3)[0].id != "p1"


def test_empty_text_queries_are_refused(client):
    for query in ("", "   "):
        with pytest.raises(SearchError, match="^empty text query$"):
            client.search_text(query)
    with pytest.raises(SearchError, match="^empty text query$"):
        client.search_texts(["apple", " "])


def test_searching_without_an_encoder_or_an_index_says_which(tmp_path, client, test_model_dir):
    with SearchClient(client.index.location) as bare:
        with pytest.raises(SearchError, match="^no encoder: give a model"):
            bare.search_text("apple")
    with SearchClient(tmp_path / "nothing-here", model=str(test_model_dir)) as empty:
        with pytest.raises(IndexNotFoundError, match=f"^no index at {tmp_path / 'nothing-here'}: build it"):
            empty.search_text("apple")


def test_indexing_without_an_encoder_needs_embeddings_and_a_model_id(tmp_path, products):
    with SearchClient(tmp_path / "index") as client:
        with pytest.raises(SearchError, match="needs an encoder"):
            client.index_catalogue(products[:2], progress=False)
        with pytest.raises(SearchError, match="needs an encoder"):  # titles need one even with embeddings
            client.index_catalogue(products[:2], image_embeddings={"p0": [1.0, 0.0]}, progress=False)
        with pytest.raises(SearchError, match=r"need the model id that made them \(--model-id\)"):
            client.index_catalogue(products[:2], image_embeddings={"p0": [1.0, 0.0]}, titles=False, progress=False)
        report = client.index_catalogue(products[:3], image_embeddings={"p0": [0.6, 0.8], "p2": "corrupt image"},
                                        titles=False, model_id="m", progress=False)
    assert report.indexed == 1
    assert sorted(report.errors) == [("p1", "no embedding in the precomputed output"), ("p2", "corrupt image")]


def test_a_query_photo_that_cannot_be_decoded_names_it(client, tmp_path):
    bad = tmp_path / "query.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(SearchError, match=f"^{bad}: "):
        client.search_image(str(bad))
    with pytest.raises(SearchError, match="^query image: "):
        client.search_image(b"not an image")
    assert client.index.count() == 6  # nothing lost


def test_the_package_exposes_search_client_lazily():
    import subprocess
    import sys

    code = ("import sys, clip_search.search as s\n"
            "before = sorted(m for m in sys.modules if m.split('.')[0] in ('lancedb', 'torch', 'pyarrow', 'opensearchpy'))\n"
            "from clip_search.search import SearchClient\n"
            "from clip_search.search.client import SearchClient as direct\n"
            "try:\n    s.NoSuchThing\nexcept AttributeError as error:\n    missing = str(error)\n"
            "print(before, SearchClient is direct, missing)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "True", "NoSuchThing"]
