"""Random rows and bytes at the catalogue readers: products, or a CatalogueError naming file and line."""
import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clip_search.search.catalogue import read_catalogue
from clip_search.search.errors import CatalogueError
from tests.fuzz.strategies import json_values

pytestmark = pytest.mark.fuzz

FIELDS = ["id", "title", "name", "image", "image_path", "image_url", "brand", "", "id "]
cells = st.one_of(st.text(max_size=20), st.integers().map(str), st.just(""))
rows = st.lists(st.dictionaries(st.sampled_from(FIELDS), st.one_of(json_values, cells), max_size=5), max_size=6)
ENCODINGS = [None, "utf-8", "latin-1", "cp1252", "utf-16", "no-such-encoding"]


def _read(name: str, data: bytes, encoding=None):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            products = list(read_catalogue(path, encoding))
        except CatalogueError as error:
            assert str(path) in str(error) or "encoding" in str(error)
            return None
        assert all(product.id.strip() for product in products)
        return products


@given(rows=rows)
def test_random_jsonl_rows(rows):
    _read("products.jsonl", "".join(json.dumps(row) + "\n" for row in rows).encode())


@given(rows=rows)
def test_random_csv_rows(rows):
    buffer = io.StringIO()
    columns = sorted({key for row in rows for key in row}) or ["id"]
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: value if isinstance(value, str) else json.dumps(value) for key, value in row.items()})
    _read("products.csv", buffer.getvalue().encode())


@given(data=st.binary(max_size=300), name=st.sampled_from(["p.jsonl", "p.csv", "p.jsonl.gz", "p.csv.gz"]),
       encoding=st.sampled_from(ENCODINGS))
def test_random_bytes_in_any_encoding(data, name, encoding):
    _read(name, data, encoding)
