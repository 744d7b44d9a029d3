"""Catalogue readers: JSON Lines / CSV product files and Amazon Berkeley Objects (ABO) listings.

A catalogue row needs an `id`; `title` and an image (`image`, `image_path`, `image_url` or
`image_uri`) are expected; every other field is kept as metadata (and can be filtered on).
Relative image paths are resolved against the catalogue file's folder.
"""
import codecs
import csv
import glob
import gzip
import os
import zlib
from pathlib import Path
from typing import Iterator

import orjson

from clip_search.search.errors import CatalogueError
from clip_search.search.records import Product

IMAGE_FIELDS = ("image", "image_path", "image_url", "image_uri")
TITLE_FIELDS = ("title", "name", "item_name")


class _DecodedLines:
    """The lines of a (gzipped) text file decoded with `encoding` (default UTF-8, BOM tolerated);
    bytes that do not decode are refused with the line and the byte offset in the file."""

    def __init__(self, path: Path, encoding: str | None = None):
        self.path, self.encoding = path, encoding or "utf-8-sig"
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise CatalogueError(f"unknown encoding {self.encoding!r} (try utf-8, latin-1, cp1252)") from None
        self.raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.raw.close()

    def __iter__(self):
        decoder = codecs.getincrementaldecoder(self.encoding)()
        offset, number, pending = 0, 0, ""
        while True:
            try:
                line = self.raw.readline()
            except (OSError, EOFError, zlib.error) as error:  # a truncated or corrupt .gz
                raise CatalogueError(f"{self.path}:{number + 1}: cannot read: {error}") from None
            number += 1
            try:
                pending += decoder.decode(line, final=not line)
            except UnicodeError as error:  # UnicodeDecodeError, or UTF-16 without its BOM
                start = getattr(error, "start", 0)
                position = min(start, max(len(line) - 1, 0))
                shown = f" (byte 0x{line[position]:02x})" if line else ""
                raise CatalogueError(
                    f"{self.path}:{number}: byte offset {offset + start}: not valid {self.encoding}"
                    f"{shown}; give the file's encoding with --encoding, e.g. --encoding latin-1"
                ) from None
            # Whole lines only (a UTF-16 line break is two bytes, split by readline).
            lines = pending.splitlines(keepends=True)
            pending = lines.pop() if lines and line and not lines[-1].endswith(("\n", "\r")) else ""
            yield from lines
            if not line:
                return
            offset += len(line)


def _open_text(path: Path, encoding: str | None = None):
    return _DecodedLines(path, encoding)


def _is_uri(value: str) -> bool:
    return "://" in value


def read_catalogue(path, encoding: str | None = None) -> Iterator[Product]:
    """Products from a `.jsonl`/`.json`/`.csv` file (optionally `.gz`), in `encoding` (default UTF-8)."""
    path = Path(path)
    if not path.is_file():
        raise CatalogueError(f"catalogue {path} not found")
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith((".jsonl", ".json", ".ndjson")):
        rows = read_jsonl(path, encoding)
    elif name.endswith(".csv"):
        rows = _csv_rows(path, encoding)
    else:
        raise CatalogueError(f"catalogue {path}: expected a .jsonl or .csv file (optionally .gz)")
    seen = set()  # ids only: the catalogue itself is streamed
    base = path.parent.resolve()
    for number, row in rows:
        product = product_from_row(row, base=base, where=f"{path}:{number}")
        if product.id in seen:
            raise CatalogueError(f"{path}:{number}: duplicate product id {product.id!r}")
        seen.add(product.id)
        yield product


def read_jsonl(path, encoding: str | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON Lines file (optionally .gz, in
    `encoding`, default UTF-8): the one reader of catalogues, ABO listings and evaluation queries.
    A line that is not a JSON object is a CatalogueError naming the file and the line."""
    path = Path(path)
    with _open_text(path, encoding) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise CatalogueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise CatalogueError(f"{path}:{number}: expected a JSON object per line")
            yield number, row


def _csv_rows(path: Path, encoding: str | None = None):
    with _open_text(path, encoding) as handle:
        reader = csv.DictReader(handle)
        try:
            for number, row in enumerate(reader, 2):
                yield number, {key.strip(): value for key, value in row.items() if key is not None}
        except csv.Error as error:
            # line_num counts the lines the reader has finished; the error is on the next one.
            raise CatalogueError(f"{path}:{reader.line_num + 1}: not valid CSV ({error})") from None


def product_from_row(row: dict, base: Path | None = None, where: str = "") -> Product:
    row = dict(row)
    product_id = row.pop("id", None)
    if product_id is None or str(product_id).strip() == "":
        raise CatalogueError(f"{where}: missing product `id`")
    title = next((str(row.pop(name)) for name in TITLE_FIELDS if row.get(name) not in (None, "")), "")
    image = next((str(row.pop(name)) for name in IMAGE_FIELDS if row.get(name) not in (None, "")), None)
    for name in TITLE_FIELDS + IMAGE_FIELDS:
        row.pop(name, None)
    if image and base is not None and not _is_uri(image) and not os.path.isabs(image):
        # Lexically (no file-system call per product: a million of them add up); `base` is resolved.
        image = os.path.normpath(os.path.join(base, image))
    return Product(str(product_id), title, image, row)


# --- Amazon Berkeley Objects -----------------------------------------------------------------
def _localised(values, language: str) -> str | None:
    """ABO stores text as [{"language_tag": "en_US", "value": ...}, ...]."""
    for entry in values or []:
        if entry.get("language_tag") == language:
            return entry.get("value")
    return None


def read_abo(listings, images_csv, image_root, language: str = "en_US") -> Iterator[Product]:
    """ABO listings (`listings/metadata/listings_*.json.gz`, a glob or a list of files) joined with
    `images/metadata/images.csv.gz` on `main_image_id`; image paths are under `image_root`
    (`images/small` or `images/original`, a folder or an s3:// prefix). Listings without a name in
    `language` or without a main image are skipped, as the reference sample did."""
    files = sorted(glob.glob(listings)) if isinstance(listings, str) else [str(p) for p in listings]
    if not files:
        raise CatalogueError(f"no ABO listings files match {listings}")
    with _open_text(Path(images_csv)) as handle:
        image_paths = {row["image_id"]: row["path"] for row in csv.DictReader(handle)}
    root = str(image_root).rstrip("/")
    for file in files:
        for _, row in read_jsonl(file):
            name = _localised(row.get("item_name"), language)
            path = image_paths.get(row.get("main_image_id"))
            if not name or not path:
                continue
            metadata = {}
            for field in ("brand", "color", "style", "material"):
                value = _localised(row.get(field), language)
                if value:
                    metadata[field] = value
            if row.get("product_type"):
                metadata["product_type"] = row["product_type"][0].get("value")
            for field in ("country", "marketplace", "domain_name"):
                if row.get(field):
                    metadata[field] = row[field]
            yield Product(row["item_id"], name, f"{root}/{path}", metadata)


# --- content hashes (incremental indexing) ---------------------------------------------------
def content_hash(photo: bytes | None, title: str | None, model_id: str) -> str:
    """sha256 over the photo's bytes, the title and the model id, each length-prefixed (so no two
    different triples hash alike): equal hashes mean re-encoding would give the same vectors."""
    import hashlib

    digest = hashlib.sha256()
    for part in (photo or b"", (title or "").encode("utf-8"), model_id.encode("utf-8")):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


# --- image bytes -----------------------------------------------------------------------------
def load_image_bytes(location: str, timeout: float = 30) -> bytes:
    """Bytes of a product image from a local path, file://, s3:// or http(s):// location."""
    from clip_search import files

    try:
        return files.read_bytes(location, timeout=timeout)
    except files.FileAccessError as error:
        raise CatalogueError(f"cannot read image {error}") from None
