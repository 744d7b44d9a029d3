"""Catalogue readers (JSON Lines, CSV, ABO) and Batch Transform output."""
import csv
import gzip
import json

import numpy as np
import pytest

from clip_search.search.catalogue import read_abo, read_catalogue
from clip_search.search.embeddings import read_batch_output
from clip_search.search.errors import CatalogueError, EncodingError


def test_jsonl_keeps_extra_fields_as_metadata_and_resolves_images(tmp_path):
    path = tmp_path / "products.jsonl"
    path.write_text(json.dumps({"id": 1, "title": "Red shoe", "image": "img/1.jpg", "brand": "Acme"}) + "\n\n"
                    + json.dumps({"id": "2", "name": "Blue hat", "image_url": "https://x/2.jpg"}) + "\n")
    first, second = read_catalogue(path)
    assert (first.id, first.title, first.image, first.metadata) == ("1", "Red shoe", str(tmp_path / "img/1.jpg"), {"brand": "Acme"})
    assert (second.title, second.image) == ("Blue hat", "https://x/2.jpg")


def test_csv_catalogue(tmp_path):
    path = tmp_path / "products.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "image_path", "colour"])
        writer.writerow(["a", "Lamp", "/abs/a.png", "white"])
    (product,) = read_catalogue(path)
    assert (product.id, product.title, product.image, product.metadata) == ("a", "Lamp", "/abs/a.png", {"colour": "white"})


@pytest.mark.parametrize("content,message", [
    ('{"title": "no id"}\n', "missing product `id`"),
    ('{"id": "a"}\n{"id": "a"}\n', "duplicate product id"),
    ("not json\n", "not valid JSON"),
])
def test_bad_catalogues_name_the_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(CatalogueError, match=message):
        list(read_catalogue(path))


def test_abo_listings_joined_with_images(tmp_path):
    listings = tmp_path / "listings_0.json.gz"
    rows = [
        {"item_id": "B01", "item_name": [{"language_tag": "de_DE", "value": "Stuhl"}, {"language_tag": "en_US", "value": "Chair"}],
         "main_image_id": "img1", "brand": [{"language_tag": "en_US", "value": "Rivet"}],
         "product_type": [{"value": "CHAIR"}], "country": "US"},
        {"item_id": "B02", "item_name": [{"language_tag": "de_DE", "value": "Nur Deutsch"}], "main_image_id": "img2"},
        {"item_id": "B03", "item_name": [{"language_tag": "en_US", "value": "No image"}]},
    ]
    with gzip.open(listings, "wt") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)
    images = tmp_path / "images.csv.gz"
    with gzip.open(images, "wt") as out:
        out.write("image_id,height,width,path\nimg1,100,100,ab/img1.jpg\nimg2,100,100,cd/img2.jpg\n")
    (product,) = read_abo(str(tmp_path / "listings_*.json.gz"), images, "s3://bucket/images/small/")
    assert (product.id, product.title, product.image) == ("B01", "Chair", "s3://bucket/images/small/ab/img1.jpg")
    assert product.metadata == {"brand": "Rivet", "product_type": "CHAIR", "country": "US"}


def test_batch_transform_output_files(tmp_path):
    (tmp_path / "part-0.jsonl.out").write_text('{"id": "a", "embedding": [0.6, 0.8]}\n{"id": "b", "error": "cannot decode image"}')
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "part-1.jsonl.out").write_text('{"id": "c", "embedding": [1.0, 0.0]}\n')
    out = read_batch_output(str(tmp_path))
    assert np.allclose(out["a"], [0.6, 0.8]) and out["b"] == "cannot decode image" and np.allclose(out["c"], [1, 0])
    with pytest.raises(EncodingError):
        read_batch_output(str(tmp_path / "nested" / "missing"))
