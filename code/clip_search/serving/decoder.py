"""input_fn's half: request body + Content-Type -> an EncodeRequest of text and image records.

Images stay as bytes here; they are decoded in the batch step (batch.py), where a bad image in a
JSON Lines batch becomes that record's error instead of failing the whole batch.
"""
import codecs
from dataclasses import dataclass, field
from typing import Any

import orjson

from clip_search import content_types as ct
from clip_search import settings
from clip_search.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from clip_search.images import decode_base64

MAX_ITEMS_ENV = "CLIP_SEARCH_MAX_BATCH_ITEMS"


@dataclass
class Record:
    id: Any = None
    text: str | None = None
    image: bytes | None = None
    error: str | None = None  # set when this record (a JSON Lines line) could not be decoded


@dataclass
class EncodeRequest:
    records: list[Record] = field(default_factory=list)
    # JSON Lines answers each record on its own line, errors included; other formats fail whole.
    per_record_errors: bool = False
    # One embedding for all records (an ml-commons request with both text and an image).
    combine: bool = False


def max_items() -> int:
    return settings.current().max_batch_items


def decode_request(body, content_type: str | None) -> EncodeRequest:
    kind = ct.media_type(content_type)
    if isinstance(body, str):  # a stock toolkit Transformer decodes JSON bodies to str
        body = body.encode("utf-8")
    body = bytes(body or b"")
    charset = _charset(content_type)
    if kind == ct.JSON:
        if charset not in ("utf-8", None):
            body = _decode(body, charset).encode("utf-8")
        request = EncodeRequest(_json_records(_parse_json(body, "request body")))
    elif kind == ct.TEXT:
        request = EncodeRequest([Record(text=_text(_decode(body, charset or "utf-8"), "text/plain body"))])
    elif kind in ct.IMAGE_TYPES:
        if not body:
            raise BadRequest(f"empty request body: {kind} needs the image bytes")
        request = EncodeRequest([Record(image=body)])
    elif kind == ct.JSONLINES:
        request = EncodeRequest(_jsonlines_records(body), per_record_errors=True)
    elif kind == ct.ML_COMMONS:
        request = _ml_commons_request(_parse_json(body, "request body"))
    else:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}; supported: {', '.join(ct.REQUEST_TYPES)}"
        )
    if not request.records:
        raise BadRequest("empty input: the request holds no text or image to encode")
    if len(request.records) > max_items():
        raise PayloadTooLarge(
            f"{len(request.records)} items in one request, over the limit of {max_items()} "
            f"({MAX_ITEMS_ENV}); split the batch"
        )
    return request


def _charset(content_type: str | None) -> str | None:
    """The charset parameter of a Content-Type, by its codec's name ('latin-1' -> 'iso8859-1'), or None."""
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            value = value.strip().strip('"').strip()
            try:
                return codecs.lookup(value).name
            except LookupError:
                raise UnsupportedMediaType(f"unknown charset {value!r} in Content-Type {content_type!r}") from None
    return None


def _decode(body: bytes, charset: str) -> str:
    try:
        return body.decode(charset)
    except UnicodeDecodeError as error:
        shown = "UTF-8" if charset == "utf-8" else charset
        raise BadRequest(f"request body is not valid {shown}: {error}") from error
    except LookupError:  # a codec that is not a text encoding (base64, rot13, ...)
        raise UnsupportedMediaType(f"charset {charset!r} is not a text encoding") from None


def _parse_json(data: bytes, what: str):
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"{what} is not valid JSON (UTF-8): {error}") from error


def _text(value, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise BadRequest(f"{where} is empty")
    return value


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise BadRequest(f"{where} must be a list, got {type(value).__name__}")
    if not value:
        raise BadRequest(f"empty input: {where} is an empty list")
    return value


# One key per request; "inputs" is the reference sample's spelling of a list of texts.
_JSON_KEYS = ("text", "texts", "image", "images", "inputs")


def _json_records(payload) -> list[Record]:
    if not isinstance(payload, dict):
        raise BadRequest(f"JSON body must be an object with one of {', '.join(_JSON_KEYS)}")
    present = [key for key in _JSON_KEYS if key in payload]
    if len(present) != 1:
        found = ", ".join(present) or "none"
        raise BadRequest(f"JSON body must have exactly one of {', '.join(_JSON_KEYS)} (found: {found})")
    key = present[0]
    value = payload[key]
    if key == "text":
        return [Record(text=_text(value, "text"))]
    if key == "image":
        return [Record(image=decode_base64(value, "image"))]
    items = _list(value, key)
    if key == "images":
        return [Record(image=decode_base64(item, f"images[{i}]")) for i, item in enumerate(items)]
    return [Record(text=_text(item, f"{key}[{i}]")) for i, item in enumerate(items)]


def _jsonlines_records(body: bytes) -> list[Record]:
    records = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (a trailing newline) are not records
        records.append(_jsonlines_record(line, number))
    return records


def _jsonlines_record(line: bytes, number: int) -> Record:
    where = f"line {number}"
    try:
        payload = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return Record(error=f"{where}: not valid JSON (UTF-8): {error}")
    if not isinstance(payload, dict):
        return Record(error=f"{where}: must be a JSON object with 'text' or 'image'")
    record_id = payload.get("id")
    has_text, has_image = "text" in payload, "image" in payload
    if has_text == has_image:
        return Record(id=record_id, error=f"{where}: needs exactly one of 'text' or 'image'")
    try:
        if has_text:
            return Record(id=record_id, text=_text(payload["text"], f"{where}: text"))
        return Record(id=record_id, image=decode_base64(payload["image"], f"{where}: image"))
    except BadRequest as error:
        return Record(id=record_id, error=error.message)


# ml-commons fills `${parameters.inputText:-null}` with the text, or with `null` when the processor or
# query sent none: inside the template's quotes that is the string "null".
_ML_COMMONS_KEYS = ("inputText", "inputImage")


def _ml_commons_request(payload) -> EncodeRequest:
    """{"inputText": "...", "inputImage": "<base64>"} as an ml-commons connector sends it: one of
    them, or both (then one embedding of the two, see serializer)."""
    if not isinstance(payload, dict):
        raise BadRequest(f"{ct.ML_COMMONS} body must be an object with inputText and/or inputImage")
    unknown = sorted(set(payload) - set(_ML_COMMONS_KEYS))
    if unknown:
        raise BadRequest(f"{ct.ML_COMMONS} body has unknown keys {', '.join(unknown)}; "
                         f"it takes {', '.join(_ML_COMMONS_KEYS)}")
    given = {key: payload.get(key) for key in _ML_COMMONS_KEYS if payload.get(key) not in (None, "null", "")}
    if not given:
        raise BadRequest("empty input: inputText and inputImage are both missing or null")
    records = []
    if "inputText" in given:
        records.append(Record(text=_text(given["inputText"], "inputText")))
    if "inputImage" in given:
        records.append(Record(image=decode_base64(given["inputImage"], "inputImage")))
    return EncodeRequest(records, combine=len(records) > 1)
