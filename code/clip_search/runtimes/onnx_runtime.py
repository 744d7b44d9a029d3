"""ONNX Runtime: the exported fp32 or int8 graphs, no torch needed for the forward passes."""
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# runtime_config["quantization_config"] key: the graphs quantize activations with one scale per
# tensor at run time (dynamic int8), so each input is run on its own (see OnnxRuntime).
ONE_INPUT_PER_RUN = "one_input_per_run"


def runs_one_input_at_a_time(manifest: dict) -> bool:
    """True for int8 graphs whose activation scales are taken per call (dynamic quantization).

    The exporter records it; int8 artifacts packaged before it did are dynamic unless they carry the
    blockwise (MatMulNBits) settings, whose activations are quantized per row and need no split."""
    if manifest.get("runtime") != "onnx-int8":
        return False
    config = manifest.get("runtime_config", {}).get("quantization_config") or {}
    return bool(config.get(ONE_INPUT_PER_RUN, "block_size" not in config))


def session_options(threads: int):
    """The runtime's ONNX Runtime session options (also what benchmarks.layers profiles with)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads spin by default, stealing the CPU from image decoding between calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRuntime:
    name = "onnx"
    # The text graph is exported with a dynamic sequence axis (see export.py).
    trims_text = True

    def __init__(self, image_session, text_session, name: str = "onnx", one_input_per_run: bool = False):
        self.name = name
        self._image = image_session
        self._text = text_session
        # Dynamic int8 takes each activation's scale from the whole tensor it is given: run one input
        # per call (and each text at its own length) and no input depends on its batch mates. On
        # 2 cores this costs no throughput (docs/performance.md): ONNX Runtime's threads split the
        # matrices of a single input as well as those of a batch.
        self.one_input_per_run = one_input_per_run

    @classmethod
    def load(cls, model_dir: Path, manifest: dict, threads: int):
        import onnxruntime as ort

        graphs = manifest["runtime_config"]["graphs"]
        options = session_options(threads)

        def session(kind):
            path = Path(model_dir) / graphs[kind]
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        return cls(session("image_encoder"), session("text_encoder"), manifest.get("runtime", "onnx"),
                   one_input_per_run=runs_one_input_at_a_time(manifest))

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        if self.one_input_per_run and len(pixels) > 1:
            return np.concatenate([self._run_image(pixels[i:i + 1]) for i in range(len(pixels))])
        return self._run_image(pixels)

    def text_features(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        if self.one_input_per_run and len(tokens):
            # Each text at its own length: padding after the end-of-text token (the largest id, so
            # the argmax) would otherwise enter the activation scales.
            ends = tokens.argmax(axis=1) + 1
            return np.concatenate([self._run_text(np.ascontiguousarray(tokens[i:i + 1, :ends[i]]))
                                   for i in range(len(tokens))])
        return self._run_text(tokens)

    def _run_image(self, pixels: np.ndarray) -> np.ndarray:
        return self._image.run(None, {"pixels": pixels})[0].astype(np.float32, copy=False)

    def _run_text(self, tokens: np.ndarray) -> np.ndarray:
        return self._text.run(None, {"tokens": tokens})[0].astype(np.float32, copy=False)
