"""OpenVINO: the exported IR compiled for this CPU, with an explicit inference precision.

OpenVINO's own default precision depends on the CPU (bf16 on CPUs with AVX-512 BF16 or AMX, f32
elsewhere), so we never rely on it: the manifest records the hint chosen at packaging ("auto", "bf16"
or "f32"), and here it is resolved against what this CPU can do. A bf16 hint on a CPU without bf16
compiles as f32, which is exact, so the result stays within the accuracy guard on any x86-64 CPU.

`openvino-int8` is the same runtime on IR whose weight matrices are stored int8 (one scale per
output channel). OpenVINO quantizes their activations at run time per token row, in groups of
`dynamic_quantization_group_size` values (manifest), and multiplies in int8 (VNNI where the CPU has
it): no scale is shared between rows, so an input's embedding does not depend on its batch mates and
a whole batch runs in one call. The group divides every matrix's inner size (the exporter picks it):
with a larger one OpenVINO skips the quantization and multiplies dequantized weights in bf16, whose
kernels depend on the batch (max abs 7.8e-3 between a photo alone and in a batch of 6, test model).
"""
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

PRECISION_ENV = "CLIP_SEARCH_OPENVINO_PRECISION"


def resolve_precision(hint: str, capabilities: list[str]) -> str:
    """'bf16' or 'f32' for this CPU. 'auto' prefers bf16 where the CPU computes it natively."""
    hint = (hint or "auto").lower()
    has_bf16 = "BF16" in capabilities
    if hint not in ("auto", "bf16", "f32"):
        raise ValueError(f"unknown OpenVINO precision hint {hint!r}; use auto, bf16 or f32")
    if hint == "f32":
        return "f32"
    if not has_bf16:
        if hint == "bf16":
            logger.warning("this CPU has no bf16 support; OpenVINO runs in f32 (exact) instead")
        return "f32"
    return "bf16"


def compile_properties(core, manifest: dict, threads: int, precision_hint: str | None = None) -> dict:
    """The runtime's OpenVINO compile properties for this CPU (also what benchmarks.layers profiles with)."""
    from clip_search import settings

    config = manifest["runtime_config"]
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    hint = precision_hint or settings.current().openvino_precision or config.get("precision_hint", "auto")
    precision = resolve_precision(hint, capabilities)
    properties = {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": max(1, int(threads)),
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    group = config.get("dynamic_quantization_group_size")
    if group is not None:  # int8 weights: per-row activation quantization, never OpenVINO's default
        properties["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = int(group)
    logger.info("OpenVINO: precision %s (hint %s, CPU capabilities %s), %s threads",
                precision, hint, ",".join(capabilities), threads)
    return properties


class OpenVinoRuntime:
    name = "openvino"
    trims_text = True  # the IR keeps the ONNX graph's dynamic sequence axis

    def __init__(self, image_model, text_model, precision: str, name: str = "openvino"):
        self.name = name
        self._image = image_model
        self._text = text_model
        self.precision = precision

    @classmethod
    def load(cls, model_dir: Path, manifest: dict, threads: int, precision_hint: str | None = None):
        import openvino as ov

        config = manifest["runtime_config"]
        core = ov.Core()
        properties = compile_properties(core, manifest, threads, precision_hint)

        def compile_graph(kind):
            return core.compile_model(str(Path(model_dir) / config["graphs"][kind]), "CPU", properties)

        return cls(compile_graph("image_encoder"), compile_graph("text_encoder"), properties["INFERENCE_PRECISION_HINT"],
                   manifest.get("runtime", "openvino"))

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        return np.array(self._image(pixels)[0], dtype=np.float32)

    def text_features(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        return np.array(self._text(tokens)[0], dtype=np.float32)
