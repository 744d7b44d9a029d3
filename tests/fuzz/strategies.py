"""Hypothesis strategies shared by the fuzz tests: bodies, headers, JSON shapes, image headers."""
import base64
import io
import json
import struct
import zlib

from hypothesis import strategies as st
from PIL import Image

CONTENT_TYPES = ["application/json", "text/plain", "image/jpeg", "image/png", "image/webp",
                 "application/x-image", "application/jsonlines", "application/jsonl", "application/x-npy",
                 "text/csv", "", "*/*", "multipart/form-data", "application/vnd.clip-search.ml-commons+json"]
PARAMS = ["", "; charset=utf-8", "; charset=latin-1", "; charset=utf-16", "; charset=nope", "; charset=base64",
          "; charset=", ";;", "; boundary=x", '; charset="utf-8"']
ACCEPTS = ["application/json", "application/jsonlines", "application/x-npy", "*/*", "text/html", "",
           "application/json;q=0", "application/*", "application/x-npy;q=0.5, application/json;q=0.9",
           "application/json;q=abc", ",,,", "text/plain", "application/vnd.clip-search.ml-commons+json"]


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png_bytes()


def png_with_size(width: int, height: int) -> bytes:
    """The small PNG with its IHDR claiming another size (a valid CRC, so only the size lies)."""
    start = PNG.index(b"IHDR")
    ihdr = struct.pack(">II", width, height) + PNG[start + 12:start + 17]
    chunk = b"IHDR" + ihdr
    return PNG[:start - 4] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + PNG[start + 21:]


image_headers = st.builds(png_with_size, st.integers(0, 2 ** 31 - 1), st.integers(0, 2 ** 31 - 1))
mangled_images = st.builds(lambda cut, junk: PNG[:cut] + junk, st.integers(0, len(PNG)), st.binary(max_size=64))
images = st.one_of(image_headers, mangled_images, st.just(PNG), st.binary(max_size=256))

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
KEYS = ["text", "texts", "image", "images", "inputs", "id", "relevant"]
b64_images = images.map(lambda data: base64.b64encode(data).decode())
json_objects = st.dictionaries(st.sampled_from(KEYS),
                               st.one_of(json_values, b64_images, st.lists(b64_images, max_size=3),
                                         st.lists(st.text(max_size=20), max_size=3)), max_size=3)
json_bodies = st.one_of(json_objects, json_values).map(lambda value: json.dumps(value).encode())
jsonlines_bodies = st.lists(st.one_of(json_bodies, st.binary(max_size=40)), max_size=5).map(b"\n".join)
bodies = st.one_of(st.binary(max_size=512), json_bodies, jsonlines_bodies, images,
                   st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")))
content_types = st.builds(lambda kind, param: kind + param, st.sampled_from(CONTENT_TYPES), st.sampled_from(PARAMS))
accepts = st.sampled_from(ACCEPTS)
