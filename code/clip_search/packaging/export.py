"""Export the torch weights of an artifact to a faster runtime, at packaging time only.

`export_runtime(model_dir, manifest, runtime)` reads the safetensors weights already written in
`model_dir`, writes the exported graphs beside them, records them (checksummed) in the manifest,
then runs the accuracy guard (`guard.py`) against torch fp32 and records its figures. When the guard
fails it raises `AccuracyGuardError`, and `package_model` writes no artifact.

Runtimes (names are what `--runtime` and CLIP_SEARCH_RUNTIME take):
    onnx        ONNX Runtime, fp32 graphs: exact
    onnx-int8   ONNX Runtime, dynamic int8 (MatMulInteger), run one input per call: batch invariant
                (see quantize_onnx)
    openvino    OpenVINO IR; precision hint "auto" = bf16 where the CPU has it, else f32
    openvino-int8  OpenVINO IR with int8 weights (per output channel); activations quantized per
                row at run time, so batches run in one call and stay batch invariant (see
                weight_only_int8)

`--runtime auto` (the packaging default) is `export_first_passing`: the fastest runtime the guard
accepts for these weights, trying AUTO_CANDIDATES in order.
"""
import copy
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

# Third-party warnings that tell our user nothing, silenced at their source (only these messages):
# torch's exporter trips its own pytree deprecation, and ONNX Runtime's dynamic quantizer logs a hint
# on the root logger about a pre-processing step that only matters for static quantization.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


class _DropOrtPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing before quantization")


if not any(isinstance(f, _DropOrtPreprocessHint) for f in logging.getLogger().filters):
    logging.getLogger().addFilter(_DropOrtPreprocessHint())

from clip_search.artifact import WEIGHTS_FILE, read_config
from clip_search.packaging.manifest import add_file_to_manifest
from clip_search.packaging.torch_runtime import _encode_text_trimmed, build_model

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
OPENVINO_DIR = "openvino"
IMAGE_GRAPH = "image_encoder"
TEXT_GRAPH = "text_encoder"
OPSET = 18
AUTO = "auto"
# Fastest first (docs/performance.md, `python -m benchmarks --sections encoder`, on AVX-512 VNNI and
# AVX2 hosts; those figures predate running int8 one input per call, which measured as fast as the
# batched int8 on AVX2). int8 may drift past the guard with some weights; OpenVINO
# is exact in f32 and 0.99995 in bf16, so it is the one that passes when int8 does not.
AUTO_CANDIDATES = ("onnx-int8", "openvino")
_OUTPUT_DIRS = {"onnx": ONNX_DIR, "onnx-int8": ONNX_DIR, "openvino": OPENVINO_DIR, "openvino-int8": OPENVINO_DIR}
# openvino-int8: at most this many values per activation scale along each row. Measured on ViT-B-32
# (docs/performance.md): 256 was faster than 32 and 128 and as accurate; 0 (no activation
# quantization) multiplies dequantized weights in float, 2.5x slower.
DYNAMIC_QUANTIZATION_GROUP = 256


def export_first_passing(model_dir: Path, manifest: dict, candidates=AUTO_CANDIDATES, **options) -> dict:
    """Export the first of `candidates` the accuracy guard accepts; a refused one leaves no trace
    in `model_dir` or the manifest. The manifest records the choice under `runtime_selection`.
    Raises AccuracyGuardError naming every refusal when the guard accepts none."""
    from clip_search.packaging.guard import AccuracyGuardError

    refused = {}
    for runtime in candidates:
        try:
            # Deep copy: exporting adds file checksums to the manifest's nested "files" table.
            chosen = export_runtime(model_dir, copy.deepcopy(manifest), runtime, **options)
        except AccuracyGuardError as error:
            logger.warning("accuracy guard refused %s: %s", runtime, error)
            refused[runtime] = str(error)
            shutil.rmtree(Path(model_dir) / _OUTPUT_DIRS[runtime], ignore_errors=True)
            continue
        chosen["runtime_selection"] = {"requested": AUTO, "candidates": list(candidates), "refused": refused}
        return chosen
    raise AccuracyGuardError("the accuracy guard refused every candidate runtime: "
                             + "; ".join(f"{name}: {message}" for name, message in refused.items()))


def export_runtime(model_dir: Path, manifest: dict, runtime: str, calibration=None,
                   guard: bool = True, precision: str | None = None, **options) -> dict:
    """Export, record, guard. Returns the updated manifest; raises AccuracyGuardError on failure.
    `runtime` "auto": the first of AUTO_CANDIDATES the guard accepts (export_first_passing)."""
    from clip_search.packaging.guard import run_guard
    from clip_search.runtimes import RUNTIMES

    if runtime == AUTO:
        if not guard:
            raise ValueError("--runtime auto chooses by the accuracy guard; it cannot run without it")
        return export_first_passing(model_dir, manifest, calibration=calibration, precision=precision, **options)
    model_dir = Path(model_dir)
    manifest = dict(manifest)
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(sorted(RUNTIMES))}")
    if runtime == "torch":
        return manifest
    with tempfile.TemporaryDirectory(prefix="clip-search-export-") as scratch:
        scratch = Path(scratch)
        if runtime == "onnx":
            files, runtime_manifest = export_onnx(model_dir, model_dir / ONNX_DIR), {"precision": "fp32"}
        elif runtime == "onnx-int8":
            fp32 = export_onnx(model_dir, scratch / "fp32")
            files, details = quantize_onnx(fp32, model_dir / ONNX_DIR)
            runtime_manifest = {"precision": "int8", "quantization": QUANTIZATION, "quantization_config": details}
        elif runtime == "openvino":
            fp32 = export_onnx(model_dir, scratch / "fp32")
            files = convert_openvino(fp32, model_dir / OPENVINO_DIR)
            runtime_manifest = {"precision_hint": precision or "auto"}
        elif runtime == "openvino-int8":
            fp32 = export_onnx(model_dir, scratch / "fp32")
            int8, inner = weight_only_int8(fp32, scratch / "int8")
            files = convert_openvino(int8, model_dir / OPENVINO_DIR)
            runtime_manifest = {"precision_hint": precision or "auto", "precision": "int8",
                                "quantization": WEIGHT_ONLY,
                                "dynamic_quantization_group_size": quantization_group(inner)}
        else:  # registered but not exportable (a runtime added without an exporter)
            raise ValueError(f"no exporter for runtime {runtime!r}")
    for path in files:
        add_file_to_manifest(model_dir, manifest, path.relative_to(model_dir).as_posix())
    runtime_manifest["graphs"] = {kind: path.relative_to(model_dir).as_posix()
                                  for kind, path in zip((IMAGE_GRAPH, TEXT_GRAPH), files[::_stride(files)], strict=True)}
    manifest["runtime"] = runtime
    manifest["runtime_config"] = runtime_manifest
    if guard:
        manifest["accuracy_guard"] = run_guard(model_dir, manifest, runtime, calibration=calibration)
    return manifest


def _stride(files: list[Path]) -> int:
    # OpenVINO writes .xml + .bin per graph; ONNX one file per graph.
    return 2 if files and files[0].suffix == ".xml" else 1


# --- ONNX ---------------------------------------------------------------------------------------
def export_onnx(model_dir: Path, out_dir: Path) -> list[Path]:
    """fp32 ONNX graphs [image, text] with dynamic batch (and text sequence) axes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(read_config(model_dir)["model_cfg"], Path(model_dir) / WEIGHTS_FILE)
    _patch_embedding_as_matmul(model.visual)
    image_size = model.visual.image_size
    image_size = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size, image_size)
    image_path, text_path = out_dir / f"{IMAGE_GRAPH}.onnx", out_dir / f"{TEXT_GRAPH}.onnx"
    # The fused multi-head-attention fast path has no ONNX symbolic; the plain path is the same math.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.inference_mode(False), torch.no_grad():
            pixels = torch.zeros((2, 3, *image_size), dtype=torch.float32)
            torch.onnx.export(
                _ImageTower(model).eval(), (pixels,), str(image_path), dynamo=False, opset_version=OPSET,
                input_names=["pixels"], output_names=["features"],
                dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
            )
            # dynamo=True keeps the sequence axis symbolic (the legacy tracer freezes it at 77), so
            # texts are padded only to the longest one in the batch, as with torch.
            tokens = torch.zeros((2, 12), dtype=torch.int64)
            tokens[:, 0], tokens[:, 11] = 49406, 49407
            batch, length = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("length", min=2, max=model.context_length)
            program = torch.onnx.export(
                _TextTower(model).eval(), (tokens,), dynamo=True, opset_version=OPSET,
                input_names=["tokens"], output_names=["features"],
                dynamic_shapes={"tokens": {0: batch, 1: length}}, verbose=False,
            )
            program.save(str(text_path), external_data=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return [image_path, text_path]


def _patch_embedding_as_matmul(visual) -> None:
    """A ViT's patch embedding (a convolution whose kernel is its stride) becomes patches @ weights.

    The products are the same, but as a MatMul with a constant weight the int8 exporters quantize
    it like every other matrix: OpenVINO ran the convolution in bf16 at 14.5% of ViT-B-32's time,
    and the MatMul int8 (batch 32: 59 -> 72 images/s; docs/performance.md). Only where a patch's
    size divides into OpenVINO's activation groups (3 x 32 x 32 does, ViT-L-14's 3 x 14 x 14 does
    not): otherwise the whole graph's group would shrink to fit it (quantization_group)."""
    conv = getattr(visual, "conv1", None)
    image_size = getattr(visual, "image_size", None)
    image_size = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size, image_size)
    if (isinstance(conv, torch.nn.Conv2d) and conv.bias is None and conv.groups == 1
            and conv.kernel_size == conv.stride and conv.padding == (0, 0) and conv.dilation == (1, 1)
            and all(isinstance(size, int) and size % kernel == 0 for size, kernel in zip(image_size, conv.kernel_size, strict=True))
            and conv.weight[0].numel() % DYNAMIC_QUANTIZATION_GROUP == 0):
        visual.conv1 = _PatchEmbedding(conv)


class _PatchEmbedding(torch.nn.Module):
    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        out_channels, in_channels, height, width = conv.weight.shape
        self.kernel, self.out_channels = (height, width), out_channels
        self.weight = torch.nn.Parameter(conv.weight.detach().reshape(out_channels, -1).t().contiguous())

    def forward(self, pixels):
        batch, channels, height, width = pixels.shape
        (kh, kw), rows, cols = self.kernel, height // self.kernel[0], width // self.kernel[1]
        patches = (pixels.reshape(batch, channels, rows, kh, cols, kw).permute(0, 2, 4, 1, 3, 5)
                   .reshape(batch, rows * cols, channels * kh * kw))
        # The convolution's output layout, which the tower reshapes and permutes next.
        return (patches @ self.weight).transpose(1, 2).reshape(batch, self.out_channels, rows, cols)


class _ImageTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels):
        return self.model.encode_image(pixels)


class _TextTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens):
        return _encode_text_trimmed(self.model, tokens)


QUANTIZATION = ("dynamic int8: MatMul/Gemm weights int8 per tensor (7-bit range in the image graph), activations "
                "uint8 with one scale per tensor taken at run time, one input per run (batch invariant); "
                "token embedding int8 per row")
# Per graph: quantize_dynamic's weight settings. Signed weights with unsigned activations (U8S8) are
# ONNX Runtime's fast pairing on x86-64 (VNNI where the CPU has it), but without VNNI it multiplies
# with an instruction that saturates at 16 bits: ViT-B-32 lost min image cosine 0.971 at the full
# range on an AVX2 host, 0.9995 with 7-bit weights (reduce_range). The text tower does not saturate
# per tensor (0.9988) and loses at 7 bits (0.9958); per-channel weights saturate more (0.9964).
WEIGHT_SETTINGS = {
    IMAGE_GRAPH: {"weight_type": "QInt8", "per_channel": False, "reduce_range": True},
    TEXT_GRAPH: {"weight_type": "QInt8", "per_channel": False, "reduce_range": False},
}


def quantize_onnx(fp32_files: list[Path], out_dir: Path) -> tuple[list[Path], dict]:
    """Dynamic int8 graphs, run by the onnx-int8 runtime one input per session.run.

    Dynamic quantization takes each activation's scale from the tensor it is given, so in a batch an
    input's embedding depended on its batch mates (max abs 3e-3..8e-3). The runtime therefore runs
    each input alone (each text at its own length; runtimes/onnx_runtime.py, ONE_INPUT_PER_RUN):
    every scale comes from that input only, and the result is the same alone or in any batch
    (measured bitwise). On 2 cores this keeps the throughput of batching (docs/performance.md). The
    alternatives measured: static QDQ (fixed activation scales calibrated on real photos and titles)
    lost the text tower (min text cosine 0.940 with the test model); int8 blockwise weights
    (MatMulNBits, activations quantized per row) were batch invariant but 2-3x slower on AVX2.
    The token embedding table (a Gather, 101 MB in fp32 for ViT-B-32) is stored int8 with one scale
    per row. Returns (files, quantization details for the manifest).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from clip_search.runtimes.onnx_runtime import ONE_INPUT_PER_RUN

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for source in fp32_files:
        target = out_dir / source.name.replace(".onnx", ".int8.onnx")
        weights = WEIGHT_SETTINGS[source.stem]
        quantize_dynamic(str(source), str(target), weight_type=getattr(QuantType, weights["weight_type"]),
                         per_channel=weights["per_channel"], reduce_range=weights["reduce_range"],
                         op_types_to_quantize=["MatMul", "Gemm"])
        model = onnx.load(str(target))
        _quantize_embedding_tables(model)
        onnx.save(model, str(target))
        outputs.append(target)
    return outputs, {"scheme": "dynamic", "activations": "uint8, one scale per tensor per run",
                     "weights": {kind: dict(value) for kind, value in WEIGHT_SETTINGS.items()},
                     ONE_INPUT_PER_RUN: True}


def _quantize_embedding_tables(model) -> None:
    """Gather from a float 2-D initializer -> the int8 rows gathered, then times their per-row scale.

    The rows are picked before they are scaled: dequantizing the whole table first (DequantizeLinear,
    then Gather) made every text run expand ViT-B-32's 49408 x 512 table to 101 MB of fp32 (RSS
    +100 MB, milliseconds per text). The values are the same: int8 x scale in fp32 either way."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    for node in list(graph.node):
        if node.op_type != "Gather" or node.input[0] not in initializers:
            continue
        table = numpy_helper.to_array(initializers[node.input[0]])
        if table.dtype != np.float32 or table.ndim != 2 or table.size < 4096:
            continue
        scale = np.maximum(np.abs(table).max(axis=1), np.finfo(np.float32).tiny) / 127.0
        quantized = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
        name, ids, output = node.input[0], node.input[1], node.output[0]
        graph.initializer.remove(initializers[name])
        graph.initializer.extend([numpy_helper.from_array(quantized, f"{name}_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32)[:, None], f"{name}_scale")])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        assert axis == 0, "an embedding lookup gathers rows"
        replacement = [
            helper.make_node("Gather", [f"{name}_int8", ids], [f"{name}_rows_int8"], axis=0, name=f"{name}_GatherInt8"),
            helper.make_node("Gather", [f"{name}_scale", ids], [f"{name}_rows_scale"], axis=0, name=f"{name}_GatherScale"),
            helper.make_node("Cast", [f"{name}_rows_int8"], [f"{name}_rows_float"], to=1, name=f"{name}_Cast"),
            helper.make_node("Mul", [f"{name}_rows_float", f"{name}_rows_scale"], [output], name=f"{name}_Scale"),
        ]
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new_node in enumerate(replacement):
            graph.node.insert(position + offset, new_node)


# --- OpenVINO -----------------------------------------------------------------------------------
WEIGHT_ONLY = ("int8 weights, one symmetric scale per output channel; activations quantized by OpenVINO at run "
               "time per row in groups of dynamic_quantization_group_size (batch invariant, batches in one call)")


def quantization_group(inner_sizes, largest: int = DYNAMIC_QUANTIZATION_GROUP) -> int:
    """The largest power of two up to `largest` that divides every matrix's inner size: OpenVINO
    quantizes activations only where the group fits (otherwise it falls back to a float path that
    is not batch invariant in bf16)."""
    group = largest
    while group > 1 and any(size % group for size in inner_sizes):
        group //= 2
    return group


def weight_only_int8(fp32_files: list[Path], out_dir: Path) -> tuple[list[Path], set[int]]:
    """The fp32 graphs with every MatMul/Gemm weight stored int8 behind a DequantizeLinear (one
    scale per output channel, symmetric). OpenVINO reads that as compressed weights and, asked for
    DYNAMIC_QUANTIZATION_GROUP_SIZE, quantizes the activations per row: nothing calibrated, no scale
    shared between inputs (static QDQ shares fixed ones and lost the text tower, dynamic int8 in
    ONNX Runtime shares one per call; both in docs/performance.md). Returns the graphs and the
    matrices' inner sizes (what the activation groups must divide)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs, inner = [], set()
    for source in fp32_files:
        model = onnx.load(str(source))
        graph = model.graph
        initializers = {init.name: init for init in graph.initializer}
        done = set()
        for node in list(graph.node):
            name = node.input[1] if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else None
            if name is None or name not in initializers or name in done:
                continue
            weights = numpy_helper.to_array(initializers[name]).astype(np.float32)
            if weights.ndim != 2:
                continue
            transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
            axis = 0 if transposed else 1  # the output channels
            inner.add(int(weights.shape[1 - axis]))
            scale = np.maximum(np.abs(weights).max(axis=1 - axis), np.finfo(np.float32).tiny) / 127.0
            shaped = scale[None, :] if axis == 1 else scale[:, None]
            quantized = np.clip(np.round(weights / shaped), -127, 127).astype(np.int8)
            graph.initializer.remove(initializers[name])
            graph.initializer.extend([numpy_helper.from_array(quantized, f"{name}_int8"),
                                      numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
                                      numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero")])
            graph.node.insert(0, helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero"],
                                                  [name], axis=axis, name=f"{name}_Dequantize"))
            done.add(name)
        target = out_dir / source.name
        onnx.save(model, str(target))
        outputs.append(target)
    return outputs, inner


def convert_openvino(onnx_files: list[Path], out_dir: Path) -> list[Path]:
    """OpenVINO IR (.xml + .bin) from the fp32 ONNX graphs, weights kept fp32 (the precision is
    chosen when the model is compiled, from the CPU's capabilities and the recorded hint)."""
    import openvino as ov

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for source in onnx_files:
        xml = out_dir / source.name.replace(".onnx", ".xml")
        ov.save_model(ov.convert_model(str(source)), str(xml), compress_to_fp16=False)
        outputs += [xml, xml.with_suffix(".bin")]
    return outputs
