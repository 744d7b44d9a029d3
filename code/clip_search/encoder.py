"""ClipEncoder: product images and free text -> L2-normalised float32 vectors in one space.

Preprocessing (PIL -> pixels, text -> token ids) happens here, the forward passes in a runtime
(`clip_search.runtimes`), so every runtime sees exactly the same inputs.
"""
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from clip_search import settings
from clip_search.artifact import extract_artifact, read_config, verify_artifact
from clip_search.errors import ModelLoadError
from clip_search.images import decode_image
from clip_search.preprocess import ImagePreprocess
from clip_search.runtimes import load_runtime
from clip_search.tokenizer import TOKENIZER_FILE, ClipTokenizer

logger = logging.getLogger(__name__)

THREADS_ENV = "CLIP_SEARCH_THREADS"
TEST_MODEL_WARNING = (
    "WARNING: this is the clip-search TEST MODEL (tiny, random weights). Its embeddings are "
    "meaningless: use it for tests and smoke runs only."
)


def available_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_threads(threads: int | None = None) -> int:
    """Intra-op threads: the argument, else CLIP_SEARCH_THREADS, else the cores we may use."""
    return threads or settings.current().threads or available_cores()


def l2_normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, np.finfo(np.float32).tiny)


class ClipEncoder:
    def __init__(self, model_dir: Path, manifest: dict, runtime=None, threads: int | None = None,
                 runtime_name: str | None = None):
        """`runtime`: a loaded runtime object; otherwise one is loaded by `runtime_name`."""
        self.model_dir = Path(model_dir)
        self.manifest = manifest
        self.threads = resolve_threads(threads)
        config = read_config(self.model_dir)
        if not (self.model_dir / TOKENIZER_FILE).is_file():
            # The run time tokenises with tokenizer.json only (tokenizers, no torch); packaging writes it.
            raise ModelLoadError(f"{self.model_dir} has no {TOKENIZER_FILE}: it was packaged by an older clip-search; "
                                 f"repackage it (clip-search package-model, the 'package' extra)")
        self.tokenizer = ClipTokenizer.from_model_dir(self.model_dir)
        self.preprocess = ImagePreprocess(config.get("preprocess_cfg", {}))
        self.runtime = runtime or load_runtime(self.model_dir, manifest, runtime_name, self.threads)
        self.image_size = _image_size(config["model_cfg"])
        # Draft decoding keeps at least image_size pixels on both sides, so the preprocessor still
        # only ever shrinks. ViT-B-32 embeddings stay within cosine 0.99998 of a full decode (the
        # accuracy guard asks 0.999) while 1600 px photos decode 3.5-3.9x faster (docs/performance.md).
        self.draft_size = self.image_size if settings.current().jpeg_draft else None
        if self.is_test_model:
            logger.warning(TEST_MODEL_WARNING)

    @classmethod
    def from_artifact(cls, path, runtime: str | None = None, threads: int | None = None) -> "ClipEncoder":
        """Load a packaged `model.tar.gz` or an extracted artifact directory, checksums verified.

        `runtime` names one (`torch`, `onnx`, ...); None follows CLIP_SEARCH_RUNTIME / the manifest.
        """
        model_dir = extract_artifact(Path(path), shared=True)
        return cls(model_dir, verify_artifact(model_dir), runtime_name=runtime, threads=threads)

    @property
    def dim(self) -> int:
        return int(self.manifest["embed_dim"])

    @property
    def model_id(self) -> str:
        return self.manifest["model_id"]

    @property
    def is_test_model(self) -> bool:
        return bool(self.manifest.get("test_model"))

    # --- text ---------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> np.ndarray:
        """Token ids, truncated to the model's context (77 for CLIP) by the tokenizer."""
        tokens = np.asarray(self.tokenizer(list(texts)), dtype=np.int64)
        if self.runtime.trims_text and len(tokens):
            # Pad only to the longest text in the batch: the end-of-text id is the largest id,
            # so its position is the argmax of each row.
            longest = int(tokens.argmax(axis=1).max()) + 1
            tokens = np.ascontiguousarray(tokens[:, :longest])
        return tokens

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(self.runtime.text_features(self.tokenize(texts)))

    # --- images -------------------------------------------------------------------------------
    def decode(self, data: bytes) -> Image.Image:
        """Image bytes -> upright RGB, the one decode every path from bytes uses (server, CLI,
        search client), so they all give the same embedding. Raises a 400/413 RequestError."""
        return decode_image(data, draft_size=self.draft_size, target_size=self.image_size)

    def encode_image_bytes(self, payloads: list[bytes]) -> np.ndarray:
        return self.encode_images([self.decode(data) for data in payloads])

    def preprocess_images(self, images: list[Image.Image]) -> np.ndarray:
        return np.ascontiguousarray(np.stack([self.preprocess(image) for image in images]), dtype=np.float32)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return l2_normalise(self.runtime.image_features(pixels))

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_pixels(self.preprocess_images(images))


def _image_size(model_cfg: dict) -> int:
    size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    return max(size) if isinstance(size, (list, tuple)) else int(size)
