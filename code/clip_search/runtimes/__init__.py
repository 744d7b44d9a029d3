"""Inference runtimes: what turns preprocessed pixels and token ids into (unnormalised) features.

Every runtime implements the same two calls, so the encoder, the handler and the server do not know
which one runs. Runtimes are registered here by name ("module:class", imported only when chosen).

Run time (RUN_TIME: onnx, onnx-int8, openvino, openvino-int8) are the exported ones, chosen per artifact (manifest
"runtime"); they need no torch. `torch` (the fp32 eager reference) is build time: it lives in
`clip_search.packaging` and needs the `package` extra (torch + open_clip) and the artifact's
safetensors. It runs only where nothing else can: an artifact packaged with torch alone (its
manifest names no exported runtime), or a build-time tool that asks for it by name (the accuracy
guard, `eval --compare-runtime torch`, the benchmarks). It is never a default for an exported
artifact and never a fallback: a runtime that cannot load is a ModelLoadError saying why.
"""
import importlib
from pathlib import Path
from typing import Protocol

import numpy as np

from clip_search import settings
from clip_search.errors import ModelLoadError
from clip_search.extras import MissingExtra, missing, require

RUNTIME_ENV = "CLIP_SEARCH_RUNTIME"
BUILD_TIME = "torch"  # the reference path; what an artifact without an exported runtime holds
RUN_TIME = ("onnx", "onnx-int8", "openvino", "openvino-int8")
# What `package-model` and `publish artifact` export unless told otherwise: "auto", the fastest
# runtime the accuracy guard accepts for the weights (packaging/export.py, AUTO_CANDIDATES).
PACKAGING_DEFAULT = "auto"

# name -> "module:class". Each class has `load(model_dir, manifest, threads) -> Runtime`.
RUNTIMES = {
    "torch": "clip_search.packaging.torch_runtime:TorchRuntime",
    "onnx": "clip_search.runtimes.onnx_runtime:OnnxRuntime",
    "onnx-int8": "clip_search.runtimes.onnx_runtime:OnnxRuntime",
    "openvino": "clip_search.runtimes.openvino_runtime:OpenVinoRuntime",
    "openvino-int8": "clip_search.runtimes.openvino_runtime:OpenVinoRuntime",
}
# name -> (extra, modules) for runtimes outside the core install (ONNX Runtime is core).
REQUIRES = {
    "torch": ("package", "torch", "open_clip", "safetensors"),
    "openvino": ("openvino", "openvino"),
    "openvino-int8": ("openvino", "openvino"),
}
# What `--runtime` takes at packaging: one runtime, or "auto".
PACKAGING_CHOICES = [PACKAGING_DEFAULT, *RUNTIMES]


class Runtime(Protocol):
    name: str
    # True when text tokens may be cut to the longest real text in the batch (exact for causal
    # text towers pooled at the end-of-text token); False means always pass the full context.
    trims_text: bool

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 3, H, W) float32 preprocessed pixels -> (n, dim) float32 features."""

    def text_features(self, tokens: np.ndarray) -> np.ndarray:
        """(n, L) int64 token ids -> (n, dim) float32 features."""


def packaged_name(manifest: dict) -> str:
    """The runtime the artifact was packaged for: an artifact naming none holds only torch weights."""
    return manifest.get("runtime") or BUILD_TIME


def resolve_name(requested: str | None, manifest: dict) -> str:
    """The runtime to load: the argument (a build-time tool may name torch), else CLIP_SEARCH_RUNTIME
    (one of RUN_TIME), else the one the artifact was packaged for."""
    configured = settings.current().runtime
    if not requested and configured and configured not in RUN_TIME:
        raise ModelLoadError(f"{RUNTIME_ENV}={configured!r}: choose one of the run-time runtimes "
                             f"{', '.join(RUN_TIME)} (torch is the build-time reference)")
    return requested or configured or packaged_name(manifest)


def torch_only_error(model_dir: Path, absent: str) -> str:
    """What to do about an artifact with only torch weights where torch is not installed."""
    return (f"the model in {model_dir} was packaged for the build-time 'torch' runtime only, which needs "
            f"the 'package' extra ({absent} is not installed): pip install 'clip-search[package]', or "
            f"package the model for a run-time runtime (clip-search package-model --runtime onnx-int8)")


def load_runtime(model_dir: Path, manifest: dict, requested: str | None = None, threads: int = 1):
    name = resolve_name(requested, manifest)
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(sorted(RUNTIMES))}")
    packaged = packaged_name(manifest)
    if name != packaged and name != BUILD_TIME:
        # Exported graphs are made at packaging time only; never export at serving start.
        raise ModelLoadError(f"runtime {name!r} cannot serve {model_dir}: it was packaged for runtime {packaged!r}")
    if name == BUILD_TIME and packaged == BUILD_TIME:
        extra, *modules = REQUIRES[BUILD_TIME]
        absent = missing(extra, tuple(modules))
        if absent is not None:
            raise ModelLoadError(torch_only_error(model_dir, absent))
    try:
        return _runtime_class(name).load(Path(model_dir), manifest, threads)
    except (ModelLoadError, MissingExtra):
        raise
    except Exception as error:  # noqa: BLE001 - any failure to load is the model's, said once
        raise ModelLoadError(f"runtime {name!r} could not load {model_dir}: {type(error).__name__}: {error}") from error


def _runtime_class(name: str):
    """The runtime's class; its optional packages are checked first (one line naming the extra)."""
    if name in REQUIRES:
        require(*REQUIRES[name], what=f"the {name} runtime")
    module_name, class_name = RUNTIMES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def cpu_flags() -> str:
    """The instruction sets that change int8/bf16 results, of this CPU (recorded by the accuracy guard, printed by the benchmarks)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next(line for line in handle if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return " ".join(flag for flag in wanted if flag in flags) or "no avx2"
