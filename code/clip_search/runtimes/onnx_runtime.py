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

        def session(kind, spin: bool):
            options = ort.SessionOptions()
            options.intra_op_num_threads = max(1, int(threads))
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            path = Path(model_dir) / graphs[kind]
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        # Idle intra-op threads spin between the graph's many small ops. For image batches that
        # only steals the CPU from image decoding (overlapped with the model), so the image session
        # never spins. A text query is a chain of tiny ops where waking a sleeping thread per op
        # dominates: spinning measured 2.3 vs 3.1 ms per query at 2 threads (docs/performance.md).
        return cls(session("image_encoder", spin=False), session("text_encoder", spin=True),
                   manifest.get("runtime", "onnx"))

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        return self._image.run(None, {"pixels": pixels})[0].astype(np.float32, copy=False)

    def text_features(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        return self._text.run(None, {"tokens": tokens})[0].astype(np.float32, copy=False)
