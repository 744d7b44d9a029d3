"""Every run-time setting, read from the environment in one place, validated, and logged at start.

Each `CLIP_SEARCH_*` variable (and the SageMaker variables the serving stack reads) is declared once
below, as data: its name, its type, its default and what it means. `current()` parses and validates
the whole table at once, so a bad value is one clear error at start (`SettingsError` names the
variable, the value and what it accepts), never a surprise at the first request. The parsed
`Settings` are kept; they are parsed again only when one of the variables has changed (tests set
variables per test; a server's environment does not change).

Publishing settings (S3 bucket, role, ...) have their own flag > variable > file resolution in
`model_build/config.py`; OpenSearch connection secrets are read where the client is built, and never
logged.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable

logger = logging.getLogger(__name__)


class SettingsError(ValueError):
    """An environment variable has a value the project cannot use. The message names it."""


def _int(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            raise ValueError("a whole number") from None
        if minimum is not None and value < minimum:
            raise ValueError(f"a whole number >= {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"a whole number <= {maximum}")
        return value

    parse.accepts = ("a whole number" + (f" >= {minimum}" if minimum is not None else "")
                     + (f" and <= {maximum}" if maximum is not None else ""))
    return parse


def _float(minimum: float | None = None) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("a number") from None
        if minimum is not None and value < minimum:
            raise ValueError(f"a number >= {minimum}")
        return value

    return parse


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")
BOOL_WORDS = "one of 1/0, true/false, yes/no, on/off"


def parse_bool(raw) -> bool:
    """The one reading of a yes/no value, for variables, query parameters and JSON fields alike:
    1/true/yes/on or 0/false/no/off (any case, surrounding blanks ignored; empty is no); a bool
    passes through. Anything else is a ValueError saying what is accepted."""
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower() if isinstance(raw, (str, int)) else None
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ValueError(BOOL_WORDS)


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError("one of " + ", ".join(options))
        return value

    return parse


def _text(raw: str) -> str:
    return raw.strip()


def _folder_or_off(raw: str) -> str | None:
    """A folder, or None for one of the words that say no (FALSE_WORDS)."""
    value = raw.strip()
    return None if value.lower() in FALSE_WORDS else value


@dataclasses.dataclass(frozen=True)
class Variable:
    name: str          # the environment variable
    field: str         # the attribute of Settings
    parse: Callable[[str], Any]
    default: Any       # used when the variable is unset or empty
    doc: str
    secret: bool = False


# The one table of variables; scripts/settings_table.py writes the docs' tables (docs/configuration.md) from it.
VARIABLES: tuple[Variable, ...] = (
    Variable("CLIP_SEARCH_THREADS", "threads", _int(0), 0,
             "intra-op threads per worker; 0 = the cores this process may use / workers"),
    Variable("CLIP_SEARCH_RUNTIME", "runtime", _text, "",
             "the run-time runtime to serve with (onnx, onnx-int8, openvino, openvino-int8; must be the artifact's); empty = the manifest's"),
    Variable("CLIP_SEARCH_OPENVINO_PRECISION", "openvino_precision", _choice("auto", "bf16", "f32"), "",
             "OpenVINO INFERENCE_PRECISION_HINT; empty = the manifest's"),
    Variable("CLIP_SEARCH_JPEG_DRAFT", "jpeg_draft", parse_bool, True,
             "decode JPEGs at a reduced scale no smaller than the model input (0: exact full decode)"),
    Variable("CLIP_SEARCH_MAX_IMAGE_PIXELS", "max_image_pixels", _int(1), 50_000_000,
             "decompression-bomb guard: source pixels of one image, 413 above it"),
    Variable("CLIP_SEARCH_MAX_ASPECT_RATIO", "max_aspect_ratio", _float(1.0), 20.0,
             "long side / short side of one image; 400 above it (a 20000x1 strip is not a photo)"),
    Variable("CLIP_SEARCH_MAX_RESIZED_PIXELS", "max_resized_pixels", _int(1), 4_000_000,
             "pixels of one image once its short side is scaled to the model input; 413 above it"),
    Variable("CLIP_SEARCH_MAX_BATCH_ITEMS", "max_batch_items", _int(1), 1024,
             "records per request before a 413"),
    Variable("CLIP_SEARCH_VERIFIED_MODEL_DIR", "verified_model_dir", _text, "",
             "set by the serving entry points for their workers: this directory's checksums were verified"),
    Variable("CLIP_SEARCH_READY_TIMEOUT", "ready_timeout", _float(0.1), 180.0,
             "seconds the native server waits for its first embedding"),
    Variable("CLIP_SEARCH_EXACT_MAX_ROWS", "exact_max_rows", _int(0), 20_000,
             "embedded index: exact search up to this many rows, ANN beyond"),
    Variable("CLIP_SEARCH_FLUSH_ROWS", "flush_rows", _int(1), 20_000,
             "embedded index: upserted products buffered per LanceDB commit"),
    Variable("CLIP_SEARCH_FRESHNESS_MS", "freshness_ms", _int(-1), 500,
             "embedded index: how a long-lived reader (the app, a SearchClient) follows other processes' "
             "writes. A local folder is checked at every read (a stat of its version folder) and fully at "
             "least this often; object storage (s3://) at most this often; -1 = never (a reader stays at "
             "the version it opened)"),
    Variable("CLIP_SEARCH_INDEX", "index", _text, "",
             "search app / Lambda handler: the index to search (folder, OpenSearch URL, postgresql:// DSN)"),
    Variable("CLIP_SEARCH_MODEL", "model", _text, "",
             "search / app CLI: the default for --model (encode queries in process with this artifact)"),
    Variable("CLIP_SEARCH_ENDPOINT", "endpoint", _text, "",
             "search app / Lambda handler: encode queries with this endpoint (SageMaker endpoint name or "
             "URL); empty = the encoder the index recorded"),
    Variable("CLIP_SEARCH_APP_MAX_UPLOAD_MB", "app_max_upload_mb", _float(0.001), 6.0,
             "search app: largest request body (photo upload) in MB, 413 above it"),
    Variable("CLIP_SEARCH_IMAGE_ROOTS", "image_roots", _text, "",
             "search app: folders (separated by the OS path separator) local product images are served "
             "from; empty = the folders the indexed products' images are in"),
    Variable("CLIP_SEARCH_PRESIGN_SECONDS", "presign_seconds", _int(1, 604800), 900,
             "search app: lifetime of the presigned URLs s3:// product images redirect to"),
    Variable("CLIP_SEARCH_MODEL_CACHE", "model_cache", _folder_or_off, "",
             "where commands keep a model.tar.gz extracted, reused while the file is unchanged (the "
             "4 most recently used); empty = $XDG_CACHE_HOME/clip-search/models or "
             "~/.cache/clip-search/models; off (or 0/no/false) = extract into a temporary folder every time"),
    Variable("CLIP_SEARCH_CALIBRATION_DIR", "calibration_dir", _text, "",
             "packaging: photos + titles for the accuracy guard"),
    Variable("CLIP_SEARCH_DEMO_DATA", "demo_data", _text, "",
             "the demo catalogue folder (default: the one shipped in clip_search/demo_data/grocery)"),
    Variable("CLIP_SEARCH_GROCERY_DIR", "grocery_dir", _text, "",
             "the Grocery Store Dataset (store photos for the demo and the accuracy guard)"),
    Variable("CLIP_SEARCH_DEBUG", "debug", parse_bool, False,
             "CLI: show the Python traceback behind an Error: line"),
    Variable("SAGEMAKER_MODEL_SERVER_WORKERS", "workers", _int(1), 1,
             "Python workers of the model server"),
    Variable("SAGEMAKER_MAX_PAYLOAD_IN_MB", "max_payload_mb", _float(0.001), 6.0,
             "request size limit in MB"),
    Variable("SAGEMAKER_MODEL_SERVER_VMARGS", "vmargs", _text,
             "-Xms128m -Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData "
             "-XX:+ExitOnOutOfMemoryError -XX:-UseContainerSupport",
             "JVM options of the model server's Java front end (C1 only: a third less CPU at start)"),
    Variable("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "default_accept", _text, "application/json",
             "answer type when a request has no Accept"),
    Variable("SAGEMAKER_BIND_TO_PORT", "bind_to_port", _int(1, 32767), 8080,
             "container port for /ping and /invocations (the model server takes at most 32767)"),
    Variable("SAGEMAKER_BASE_DIR", "base_dir", _text, "/opt/ml",
             "the container reads the model from $SAGEMAKER_BASE_DIR/model"),
)
NAMES = tuple(variable.name for variable in VARIABLES)

Settings = dataclasses.make_dataclass(
    "Settings", [(variable.field, Any) for variable in VARIABLES], frozen=True,
    namespace={"__doc__": "The parsed value of every variable in VARIABLES, by field name."},
)


def parse(environ=None) -> "Settings":
    """Settings from `environ` (default os.environ); SettingsError names every bad variable."""
    environ = os.environ if environ is None else environ
    values, problems = {}, []
    for variable in VARIABLES:
        raw = environ.get(variable.name)
        if raw is None or raw.strip() == "":
            values[variable.field] = variable.default
            continue
        try:
            values[variable.field] = variable.parse(raw)
        except ValueError as error:
            shown = "<hidden>" if variable.secret else repr(raw)
            problems.append(f"{variable.name}={shown} is not valid: expected {error}")
    if problems:
        raise SettingsError("; ".join(problems))
    return Settings(**values)


_cache: tuple[tuple, Any] | None = None


def current() -> "Settings":
    """The settings of this process's environment, parsed once (again only if a variable changed)."""
    global _cache
    key = tuple(os.environ.get(name) for name in NAMES)
    if _cache is None or _cache[0] != key:
        _cache = (key, parse())
    return _cache[1]


def describe(settings=None) -> dict:
    """The effective settings as {variable: value}, secrets hidden, for the start-up log line."""
    settings = settings or current()
    return {variable.name: ("<hidden>" if variable.secret else getattr(settings, variable.field))
            for variable in VARIABLES}


def log_effective(log: logging.Logger | None = None, settings=None) -> None:
    """One log line at start with every effective setting (the values a user could have changed)."""
    shown = " ".join(f"{name}={value}" for name, value in describe(settings).items())
    (log or logger).info("effective settings: %s", shown)
