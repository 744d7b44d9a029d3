"""Incremental indexing: `clip-search index` encodes only products whose photo bytes, title or model
changed since they were indexed, and `--sync` deletes those no longer in the catalogue. Encodes are
counted by the real encoder (a counting wrapper around ClipEncoder in process), not by a log line;
on every backend (embedded LanceDB, the OpenSearch stand-in, real pgvector) and through the CLI."""
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from clip_search.cli import main
from clip_search.demo_data import GROCERY as DEMO_DATA
from clip_search.search.catalogue import content_hash, read_catalogue
from clip_search.search.client import SearchClient
from clip_search.search.embeddings import LocalEmbedder
from clip_search.search.index import open_index
from clip_search.search.records import Product

CATALOGUE = DEMO_DATA / "products.jsonl"


@pytest.fixture
def counted(monkeypatch):
    """How many images and texts the real encoder encodes (every path into it ends in these two)."""
    from clip_search.encoder import ClipEncoder

    counts = {"images": 0, "texts": 0}
    calls = []  # the size of every image batch the encoder was given
    encode_images, encode_texts = ClipEncoder.encode_images, ClipEncoder.encode_texts

    def images(self, batch, *args, **kwargs):
        counts["images"] += len(batch)
        calls.append(len(batch))
        return encode_images(self, batch, *args, **kwargs)

    def texts(self, batch, *args, **kwargs):
        counts["texts"] += len(batch)
        return encode_texts(self, batch, *args, **kwargs)

    monkeypatch.setattr(ClipEncoder, "encode_images", images)
    monkeypatch.setattr(ClipEncoder, "encode_texts", texts)

    def take():
        taken = dict(counts)
        counts.update(images=0, texts=0)
        return taken

    take.calls = calls
    return take


class Shop:
    """A catalogue of 8 real grocery photos in a folder of its own, so photos can change on disk."""

    def __init__(self, folder):
        self.folder = folder
        (folder / "images").mkdir(parents=True)
        self.spare = list(read_catalogue(CATALOGUE))[8:12]
        self.rows = {}
        for product in list(read_catalogue(CATALOGUE))[:8]:
            self.add(product)
        self.path = folder / "products.jsonl"
        self.write()

    def add(self, product):
        name = f"images/{product.id}.jpg"
        shutil.copyfile(product.image, self.folder / name)
        self.rows[product.id] = {"id": product.id, "title": product.title, "image": name, **product.metadata}

    def write(self):
        self.path.write_text("".join(json.dumps(row) + "\n" for row in self.rows.values()))

    def change_next_day(self):
        """2 changed (one photo's bytes, one title), 1 added, 1 removed -> 3 to encode, 1 to delete."""
        ids = list(self.rows)
        shutil.copyfile(self.spare[0].image, self.folder / self.rows[ids[0]]["image"])  # new photo, same path
        self.rows[ids[1]]["title"] += " (new recipe)"
        del self.rows[ids[2]]
        self.add(self.spare[1])
        self.write()
        return {"changed": ids[:2], "removed": ids[2], "added": self.spare[1].id}


def _index(*args, code=0):
    result = CliRunner().invoke(main, ["index", *map(str, args)])
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture(params=["embedded", "opensearch-standin"])
def location(request, tmp_path):
    if request.param == "embedded":
        return str(tmp_path / "index")
    return f"{request.getfixturevalue('standin').url}/shop"


def test_cli_second_run_encodes_nothing_and_sync_deletes_exactly_what_left(tmp_path, location, counted, test_model_tar):
    shop = Shop(tmp_path / "shop")
    out = _index("--catalogue", shop.path, "--index", location, "--model", test_model_tar)
    assert counted() == {"images": 8, "texts": 8}
    assert "skipped" not in out and "indexed 8 of 8 products" in out  # a new index: nothing to skip

    out = _index("--catalogue", shop.path, "--index", location, "--model", test_model_tar)
    assert counted() == {"images": 0, "texts": 0}
    assert "skipped 8 unchanged products (0 added, 0 updated)" in out
    assert "indexed 0 of 8 products" in out and "(8 in the index, 0 errors)" in out

    day = shop.change_next_day()
    out = _index("--catalogue", shop.path, "--index", location, "--model", test_model_tar, "--sync")
    assert counted() == {"images": 3, "texts": 3}
    assert "skipped 5 unchanged products (1 added, 2 updated)" in out
    assert "deleted 1 products no longer in the catalogue" in out
    assert "indexed 3 of 8 products" in out and "(8 in the index, 0 errors)" in out

    with open_index(location) as index:
        hashes = index.content_hashes()
        assert set(hashes) == set(shop.rows)
        # What the index holds is the new catalogue: the new title is searchable as stored.
        model_id = index.info().model_id
        for product in read_catalogue(shop.path):
            assert hashes[product.id] == content_hash((shop.folder / shop.rows[product.id]["image"]).read_bytes(),
                                                      product.title, model_id)
    assert day["removed"] not in hashes and day["added"] in hashes

    # Unchanged again, and --sync with nothing gone deletes nothing.
    out = _index("--catalogue", shop.path, "--index", location, "--model", test_model_tar, "--sync")
    assert counted() == {"images": 0, "texts": 0}
    assert "deleted 0 products" in out


def test_force_encodes_everything_again(tmp_path, counted, test_model_tar):
    shop = Shop(tmp_path / "shop")
    _index("--catalogue", shop.path, "--index", tmp_path / "index", "--model", test_model_tar)
    counted()
    out = _index("--catalogue", shop.path, "--index", tmp_path / "index", "--model", test_model_tar, "--force")
    assert counted() == {"images": 8, "texts": 8}
    assert "indexed 8 of 8 products" in out


def test_changed_products_far_apart_are_encoded_in_whole_batches(tmp_path, counted, test_model_tar):
    """1 changed product in every catalogue batch must not mean one encoder call per product."""
    shop = Shop(tmp_path / "shop")
    _index("--catalogue", shop.path, "--index", tmp_path / "index", "--model", test_model_tar, "--batch-size", "2")
    counted()
    counted.calls.clear()
    for product_id in list(shop.rows)[::2]:  # one in each batch of 2
        shop.rows[product_id]["title"] += " v2"
    shop.write()
    _index("--catalogue", shop.path, "--index", tmp_path / "index", "--model", test_model_tar, "--batch-size", "2")
    assert counted() == {"images": 4, "texts": 4} and counted.calls == [2, 2]


def test_a_product_whose_photo_cannot_be_read_is_an_error_not_unchanged(tmp_path, counted, test_model_tar):
    shop = Shop(tmp_path / "shop")
    _index("--catalogue", shop.path, "--index", tmp_path / "index", "--model", test_model_tar)
    counted()
    first = next(iter(shop.rows.values()))
    (shop.folder / first["image"]).unlink()
    out = _index("--catalogue", shop.path, "--index", tmp_path / "index", "--model", test_model_tar, "--sync")
    assert counted() == {"images": 0, "texts": 0}
    assert f"not indexed: {first['id']}" in out and "skipped 7 unchanged" in out
    # Still in the catalogue: --sync keeps its last good version.
    assert "deleted 0 products" in out and "(8 in the index, 1 errors)" in out


def _drop_hashes(index, kind):
    """Make `index` look like one built before content hashes were kept."""
    if kind == "embedded":
        index._table.drop_columns(["content_hash"])
        index._open()
    elif kind.startswith("opensearch"):  # documents as an older clip-search wrote them: no content_hash field
        from clip_search.search.records import EmbeddedProduct

        vector = np.zeros(index.info().dim, np.float32)
        vector[0] = 1
        index.upsert([EmbeddedProduct(Product(product_id), vector) for product_id in index.content_hashes()])
        index.refresh()
    else:
        index.connection.execute(index._sql("ALTER TABLE {table} DROP COLUMN content_hash"))
        index._has_hash = None


class CountingEmbedder(LocalEmbedder):
    def __init__(self, encoder):
        super().__init__(encoder)
        self.images = 0

    def encode_image_records(self, records):
        self.images += len(records)
        return super().encode_image_records(records)


def test_every_backend_holds_the_hash_and_old_indexes_count_as_changed(index_at, test_encoder, tmp_path):
    shop = Shop(tmp_path / "shop")
    index = index_at()
    embedder = CountingEmbedder(test_encoder)
    client = SearchClient(index, embedder)
    report = client.index_catalogue(shop.path, progress=False)
    assert (report.added, report.updated, report.unchanged, embedder.images) == (8, 0, 0, 8)
    hashes = index.content_hashes()
    assert set(hashes) == set(shop.rows) and all(len(value) == 64 for value in hashes.values())

    _drop_hashes(index, index_at.kind)
    assert index.content_hashes() == dict.fromkeys(shop.rows)
    report = client.index_catalogue(shop.path, progress=False)
    assert (report.added, report.updated, report.unchanged, embedder.images) == (0, 8, 0, 16)
    assert index.content_hashes() == hashes  # the hashes are kept from now on

    day = shop.change_next_day()
    report = client.index_catalogue(shop.path, progress=False, sync=True)
    assert (report.added, report.updated, report.unchanged, report.deleted) == (1, 2, 5, 1)
    assert set(index.content_hashes()) == set(shop.rows) and index.count() == 8
    assert day["removed"] not in index.content_hashes()


def test_opensearch_hashes_page_past_one_request(standin, test_encoder, monkeypatch):
    """content_hashes pages with search_after: more products than one page still all come back."""
    from clip_search.search.index import opensearch
    from clip_search.search.records import EmbeddedProduct

    monkeypatch.setattr(opensearch, "HASHES_PAGE", 3)
    index = opensearch.OpenSearchIndex.from_url(f"{standin.url}/paged", initial_backoff=0.01)
    index.create(test_encoder.dim, test_encoder.model_id)
    vector = test_encoder.encode_texts(["a"])[0]
    index.upsert([EmbeddedProduct(Product(f"p{i}", content_hash=f"h{i}"), vector) for i in range(10)])
    assert index.content_hashes() == {f"p{i}": f"h{i}" for i in range(10)}
    searches = [body for body in standin.bodies("POST", "/_search") if "search_after" in body]
    assert len(searches) == 3  # pages 2, 3 and the last, short one
