"""Inference runtimes: what turns preprocessed pixels and token ids into (unnormalised) features.

Every runtime implements the same two calls, so the encoder, the handler and the server do not know
which one runs. Runtimes are registered here by name ("module:class", imported only when chosen) and
chosen per artifact (manifest "runtime"), or by the CLIP_SEARCH_RUNTIME variable. The exported ones
(onnx, onnx-int8, openvino) need no torch. `torch` (the fp32 eager reference) lives with the build
time code in `clip_search.packaging` because it needs the `package` extra (torch + open_clip) and the
artifact's safetensors. When a chosen runtime cannot load and the artifact can serve torch, we fall
back to torch with a warning rather than fail to serve.
"""
import importlib
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from clip_search import settings
from clip_search.errors import ModelLoadError
from clip_search.extras import require

RUNTIME_ENV = "CLIP_SEARCH_RUNTIME"
DEFAULT_RUNTIME = "torch"  # at serving, for a manifest that names none
# What `package-model` and `publish artifact` export unless told otherwise: "auto", the fastest
# runtime the accuracy guard accepts for the weights (runtimes/export.py, AUTO_CANDIDATES).
PACKAGING_DEFAULT = "auto"

# name -> "module:class". Each class has `load(model_dir, manifest, threads) -> Runtime`.
RUNTIMES = {
    "torch": "clip_search.packaging.torch_runtime:TorchRuntime",
    "onnx": "clip_search.runtimes.onnx_runtime:OnnxRuntime",
    "onnx-int8": "clip_search.runtimes.onnx_runtime:OnnxRuntime",
    "openvino": "clip_search.runtimes.openvino_runtime:OpenVinoRuntime",
}
# name -> (extra, modules) for runtimes outside the core install (ONNX Runtime is core).
REQUIRES = {
    "torch": ("package", "torch", "open_clip", "safetensors"),
    "openvino": ("openvino", "openvino"),
}
# What `--runtime` takes at packaging: one runtime, or "auto".
PACKAGING_CHOICES = [PACKAGING_DEFAULT, *RUNTIMES]

logger = logging.getLogger(__name__)


class Runtime(Protocol):
    name: str
    # True when text tokens may be cut to the longest real text in the batch (exact for causal
    # text towers pooled at the end-of-text token); False means always pass the full context.
    trims_text: bool

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 3, H, W) float32 preprocessed pixels -> (n, dim) float32 features."""

    def text_features(self, tokens: np.ndarray) -> np.ndarray:
        """(n, L) int64 token ids -> (n, dim) float32 features."""


def resolve_name(requested: str | None, manifest: dict) -> str:
    return requested or settings.current().runtime or manifest.get("runtime") or DEFAULT_RUNTIME


def load_runtime(model_dir: Path, manifest: dict, requested: str | None = None, threads: int = 1):
    name = resolve_name(requested, manifest)
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(sorted(RUNTIMES))}")
    try:
        packaged = manifest.get("runtime") or DEFAULT_RUNTIME
        if name != DEFAULT_RUNTIME and name != packaged:
            # Exported graphs are made at packaging time only; never export at serving start.
            raise RuntimeError(f"this artifact was packaged for runtime {packaged!r}, not {name!r}")
        return _runtime_class(name).load(Path(model_dir), manifest, threads)
    except Exception as error:  # noqa: BLE001 - any failure of an optional runtime falls back
        if name == DEFAULT_RUNTIME:
            raise
        logger.warning("runtime %r could not load (%s); falling back to %r", name, error, DEFAULT_RUNTIME)
        try:
            return _runtime_class(DEFAULT_RUNTIME).load(Path(model_dir), manifest, threads)
        except Exception as fallback:  # noqa: BLE001 - say both reasons
            raise ModelLoadError(f"runtime {name!r} could not load ({error}), and neither could the "
                                 f"{DEFAULT_RUNTIME!r} fallback ({fallback})") from fallback


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
