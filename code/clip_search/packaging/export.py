"""Export the torch weights of an artifact to a faster runtime, at packaging time only.

`export_runtime(model_dir, manifest, runtime)` reads the safetensors weights already written in
`model_dir`, writes the exported graphs beside them, records them (checksummed) in the manifest,
then runs the accuracy guard (`guard.py`) against torch fp32 and records its figures. When the guard
fails it raises `AccuracyGuardError`, and `package_model` writes no artifact.

Runtimes (names are what `--runtime` and CLIP_SEARCH_RUNTIME take):
    onnx        ONNX Runtime, fp32 graphs: exact
    onnx-int8   ONNX Runtime, int8 weights in blocks (MatMulNBits) with activations quantized per row
                at run time: batch invariant (see quantize_onnx)
    openvino    OpenVINO IR; precision hint "auto" = bf16 where the CPU has it, else f32

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

from clip_search.packaging.manifest import add_file_to_manifest
from clip_search.artifact import WEIGHTS_FILE, read_config
from clip_search.packaging.torch_runtime import _encode_text_trimmed, build_model

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
OPENVINO_DIR = "openvino"
IMAGE_GRAPH = "image_encoder"
TEXT_GRAPH = "text_encoder"
OPSET = 18
AUTO = "auto"
# Fastest first (benchmarks: onnx-int8 5.0x torch eager at batch 32 on AVX-512 VNNI, 2.0x on AVX2;
# OpenVINO 4.4x with bf16, 1.2x in f32). int8 may drift past the guard with some weights; OpenVINO
# is exact in f32 and 0.99995 in bf16, so it is the one that passes when int8 does not.
AUTO_CANDIDATES = ("onnx-int8", "openvino")
_OUTPUT_DIRS = {"onnx": ONNX_DIR, "onnx-int8": ONNX_DIR, "openvino": OPENVINO_DIR}


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
    from clip_search.runtimes import RUNTIMES
    from clip_search.packaging.guard import run_guard

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
        else:  # registered but not exportable (a runtime added without an exporter)
            raise ValueError(f"no exporter for runtime {runtime!r}")
    for path in files:
        add_file_to_manifest(model_dir, manifest, path.relative_to(model_dir).as_posix())
    runtime_manifest["graphs"] = {kind: path.relative_to(model_dir).as_posix()
                                  for kind, path in zip((IMAGE_GRAPH, TEXT_GRAPH), files[::_stride(files)])}
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


QUANTIZATION = ("int8 weights only, blockwise (MatMulNBits, 8 bits, block 128, symmetric, accuracy level 4: "
                "activations quantized per row and block at run time); token embedding int8 per row")
BLOCK_SIZE = 128


def quantize_onnx(fp32_files: list[Path], out_dir: Path, model_dir: Path | None = None,
                  calibration=None) -> tuple[list[Path], dict]:
    """int8 graphs whose result for one input does not depend on the rest of its batch.

    Dynamic quantization (what onnx-int8 was first) takes one activation scale per batch, so an
    input's embedding changed with its batch mates (max abs 3e-3..8e-3). Static QDQ quantization
    (fixed per-tensor activation scales calibrated on real product photos and titles) is batch
    invariant but lost too much on the text tower: min text cosine 0.940 to fp32 with the test model
    (the image tower kept 0.9997). So the weights are quantized here, to int8 in blocks of 128 along
    the input dimension (MatMulNBits), and ONNX Runtime quantizes the activations at run time per row
    and per block (accuracy level 4): each row's scales come from that row alone, so the result is
    the same alone or in any batch, and the int8 kernels still do the multiplications. The token
    embedding table (a Gather, 101 MB in fp32 for ViT-B-32) is stored int8 with one scale per row.

    (On CPUs without VNNI the U8S8 path of the old dynamic int8 saturated at 16 bits: min image
    cosine 0.971 with ViT-B-32 on AVX2 unless weights used 7 bits; the blockwise kernels do not
    use that instruction. The guard still records the CPU it ran on: package on the kind you serve.)
    Returns (files, quantization details for the manifest).
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for source in fp32_files:
        target = out_dir / source.name.replace(".onnx", ".int8.onnx")
        quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), bits=8, block_size=BLOCK_SIZE,
                                         is_symmetric=True, accuracy_level=4)
        quantizer.process()
        model = quantizer.model.model
        _quantize_embedding_tables(model)
        onnx.save(model, str(target))
        outputs.append(target)
    return outputs, {"bits": 8, "block_size": BLOCK_SIZE, "accuracy_level": 4}


def _quantize_embedding_tables(model) -> None:
    """Gather from a float 2-D initializer -> Gather from DequantizeLinear(int8 table, per-row scale)."""
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
        name = node.input[0]
        graph.initializer.remove(initializers[name])
        graph.initializer.extend([numpy_helper.from_array(quantized, f"{name}_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale")])
        dequantize = helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale"], [f"{name}_dequantized"],
                                      axis=0, name=f"{name}_DequantizeLinear")
        graph.node.insert(list(graph.node).index(node), dequantize)
        node.input[0] = f"{name}_dequantized"


# --- OpenVINO -----------------------------------------------------------------------------------
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
