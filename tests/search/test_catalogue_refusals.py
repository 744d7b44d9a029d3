"""Catalogue files the readers refuse, each with the file (and the line) named: an unknown encoding,
a truncated .gz, a file that is not there or not a catalogue, a JSON line that is not an object, a
CSV field past the csv module's limit, ABO listings that match nothing. And what a good .gz reads."""
import gzip
import json

import pytest

from clip_search.search.catalogue import read_abo, read_catalogue
from clip_search.search.errors import CatalogueError


def test_a_gzipped_catalogue_reads_like_the_plain_one(tmp_path):
    rows = [{"id": "p1", "name": "Äpple", "image_url": "https://img.example/p1.jpg", "brand": "Gröna"},
            {"id": 2, "item_name": "pear", "image_path": "photos/p2.jpg"}]
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    (tmp_path / "products.jsonl").write_text(text, encoding="utf-8")
    with gzip.open(tmp_path / "products.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(text)
    plain = list(read_catalogue(tmp_path / "products.jsonl"))
    assert plain == list(read_catalogue(tmp_path / "products.jsonl.gz"))
    assert [(p.id, p.title, p.image, p.metadata) for p in plain] == [
        ("p1", "Äpple", "https://img.example/p1.jpg", {"brand": "Gröna"}),
        ("2", "pear", str(tmp_path.resolve() / "photos" / "p2.jpg"), {}),
    ]


def test_a_truncated_gz_names_the_file_and_line(tmp_path):
    data = gzip.compress(b"".join(json.dumps({"id": f"p{i}", "title": "x" * 50}).encode() + b"\n" for i in range(2000)))
    path = tmp_path / "products.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogueError, match=rf"^{path}:\d+: cannot read: "):
        list(read_catalogue(path))


def test_an_unknown_encoding_is_refused_with_suggestions(tmp_path):
    path = tmp_path / "products.csv"
    path.write_text("id,title\np1,apple\n")
    with pytest.raises(CatalogueError, match=r"^unknown encoding 'klingon' \(try utf-8, latin-1, cp1252\)$"):
        list(read_catalogue(path, encoding="klingon"))


def test_a_missing_file_or_another_kind_of_file(tmp_path):
    with pytest.raises(CatalogueError, match=f"^catalogue {tmp_path / 'gone.jsonl'} not found$"):
        list(read_catalogue(tmp_path / "gone.jsonl"))
    (tmp_path / "products.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(CatalogueError, match=rf"^catalogue {tmp_path / 'products.xlsx'}: expected a \.jsonl or \.csv"):
        list(read_catalogue(tmp_path / "products.xlsx"))
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(CatalogueError, match="not found"):
        list(read_catalogue(tmp_path / "folder.jsonl"))


def test_a_json_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "products.ndjson"
    path.write_text('{"id": "p1", "title": "apple"}\n["p2", "pear"]\n')
    with pytest.raises(CatalogueError, match=f"^{path}:2: expected a JSON object per line$"):
        list(read_catalogue(path))


def test_a_csv_field_over_the_csv_limit_is_refused(tmp_path):
    path = tmp_path / "products.csv"
    path.write_text('id,title\np1,apple\np2,pear\np3,plum\np4,"' + "x" * 200_000 + '"\n')
    with pytest.raises(CatalogueError, match=rf"^{path}:\d+: not valid CSV \(field larger than field limit"):
        list(read_catalogue(path))


def test_a_csv_error_names_the_line_it_is_on(tmp_path):
    path = tmp_path / "products.csv"
    path.write_text('id,title\np1,apple\np2,pear\np3,plum\np4,"' + "x" * 200_000 + '"\n')
    with pytest.raises(CatalogueError) as error:
        list(read_catalogue(path))
    assert str(error.value).startswith(f"{path}:5: not valid CSV"), str(error.value)


def test_abo_listings_that_match_nothing(tmp_path):
    with pytest.raises(CatalogueError, match=f"^no ABO listings files match {tmp_path}/listings_\\*.json.gz$"):
        list(read_abo(str(tmp_path / "listings_*.json.gz"), tmp_path / "images.csv.gz", "s3://bucket/images/small"))
