"""Optional extras, checked in one place, with the install hint a user needs.

`pip install clip-search` is the run-time core: encode in process with an exported artifact and
search the embedded index. Everything else is an extra. Code that needs one calls
`require("serve")` (or `require("package", "onnx")` for one module of it) before importing it; a
missing extra raises `MissingExtra`, which the CLI prints as one line and exit status 2.
"""
from __future__ import annotations

import importlib.util

# extra -> the top-level modules it brings (the first missing one is named in the error).
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("sagemaker_inference", "mms"),
    "package": ("torch", "open_clip", "safetensors", "onnx", "onnxscript"),
    "openvino": ("openvino",),
    "opensearch": ("opensearchpy", "boto3"),
    "pgvector": ("psycopg", "pgvector"),
    "publish": ("boto3", "sagemaker", "yaml"),
    "app": ("starlette", "uvicorn", "prometheus_client", "python_multipart", "mangum"),
}


class MissingExtra(ImportError):
    """A command needs an optional extra that is not installed. The message says how to install it."""

    def __init__(self, extra: str, module: str, what: str | None = None):
        self.extra, self.module = extra, module
        needs = f"{what} needs" if what else "this needs"
        super().__init__(f"{needs} the '{extra}' extra ({module} is not installed): "
                         f"pip install 'clip-search[{extra}]'")


def missing(extra: str, modules: tuple[str, ...] | None = None) -> str | None:
    """The first module of `extra` (or of `modules`) that cannot be imported, or None."""
    for module in modules or EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            return module
    return None


def require(extra: str, *modules: str, what: str | None = None) -> None:
    """Raise MissingExtra unless every module of `extra` (or the given ones) can be imported."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; known: {', '.join(sorted(EXTRAS))}")
    absent = missing(extra, modules or None)
    if absent is not None:
        raise MissingExtra(extra, absent, what)


def available(extra: str, *modules: str) -> bool:
    return missing(extra, modules or None) is None
