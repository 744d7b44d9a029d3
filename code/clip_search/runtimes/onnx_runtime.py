"""ONNX Runtime: the exported fp32 or int8 graphs, no torch needed for the forward passes."""
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


class OnnxRuntime:
    name = "onnx"
    # The text graph is exported with a dynamic sequence axis (see export.py).
    trims_text = True

    def __init__(self, image_session, text_session, name: str = "onnx"):
        self.name = name
        self._image = image_session
        self._text = text_session

    @classmethod
    def load(cls, model_dir: Path, manifest: dict, threads: int):
        import onnxruntime as ort

        graphs = manifest["runtime_config"]["graphs"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads spin by default, stealing the CPU from image decoding between calls.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")

        def session(kind):
            path = Path(model_dir) / graphs[kind]
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        return cls(session("image_encoder"), session("text_encoder"), manifest.get("runtime", "onnx"))

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        return self._image.run(None, {"pixels": pixels})[0].astype(np.float32, copy=False)

    def text_features(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        return self._text.run(None, {"tokens": tokens})[0].astype(np.float32, copy=False)
