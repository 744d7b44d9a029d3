"""The accuracy guard: a faster runtime must give (nearly) the embeddings torch fp32 gives.

At packaging, a calibration set of real product photos and titles is encoded with torch fp32 (the
reference) and with the exported runtime, twice:
  - the graphs, on identical pixels and token ids, one at a time and in batches
    ("min_cosine_image" / "min_cosine_text");
  - the serving path ("serving_path"): the photo files and title strings through the core
    ClipEncoder (its decode with JPEG draft, numpy preprocessing, tokenizer.json, the runtime), no
    torch, against torch fp32 fed by open_clip's own transform and tokenizer.
When a minimum cosine of either is below 0.999 (images) or 0.998 (texts) the artifact is refused;
otherwise the figures are recorded in the manifest under "accuracy_guard".

Calibration source, first found: the `calibration` argument (`--calibration DIR`), the
CLIP_SEARCH_CALIBRATION_DIR variable, the demo catalogue shipped in the package
(clip_search/demo_data/grocery: 81 product photos and descriptions). Any folder of photos works; titles come from
titles.txt (one per line), *.jsonl records ("title"/"name"/"text"), or the grocery-store layout
(*_Information.txt "Title:" lines and *_Description.txt).
"""
import json
import logging
from pathlib import Path

import numpy as np

from clip_search import settings
from clip_search.demo_data import GROCERY
from clip_search.runtimes import cpu_flags

logger = logging.getLogger(__name__)

IMAGE_THRESHOLD = 0.999
TEXT_THRESHOLD = 0.998
CALIBRATION_ENV = "CLIP_SEARCH_CALIBRATION_DIR"
DEFAULT_SOURCES = (GROCERY,)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
MAX_IMAGES = 32
MAX_TEXTS = 64
BATCH = 16


class AccuracyGuardError(RuntimeError):
    """The exported runtime's embeddings are too far from torch fp32: no artifact is written."""


def calibration_dir(calibration=None) -> Path:
    candidates = [calibration] if calibration else [settings.current().calibration_dir, *DEFAULT_SOURCES]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir() and _images(Path(candidate)):
            return Path(candidate).resolve()
    raise AccuracyGuardError(
        f"no calibration set of product photos found (looked at {', '.join(str(c) for c in candidates if c)}); "
        f"pass --calibration DIR or set {CALIBRATION_ENV}"
    )


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _spread(items: list, limit: int) -> list:
    """`limit` items evenly spread over a sorted list (every class, not the first folder only)."""
    if len(items) <= limit:
        return items
    return [items[int(i * len(items) / limit)] for i in range(limit)]


def calibration_photos(root: Path, max_images: int = MAX_IMAGES) -> list[Path]:
    return _spread(_images(root), max_images)


def load_calibration(root: Path, max_images: int = MAX_IMAGES, max_texts: int = MAX_TEXTS):
    """(list of PIL images, list of titles) from a calibration folder."""
    from clip_search.images import decode_image

    images = [decode_image(path.read_bytes()) for path in calibration_photos(root, max_images)]
    texts = _spread(sorted(set(_titles(root))), max_texts)
    if not texts:
        raise AccuracyGuardError(f"calibration set {root} has no product titles (titles.txt, *.jsonl, *_Information.txt)")
    return images, texts


def _titles(root: Path) -> list[str]:
    titles = []
    for path in root.rglob("titles.txt"):
        titles += [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    for path in root.rglob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                titles += [str(record[k]) for k in ("title", "name", "text") if isinstance(record.get(k), str)][:1]
    for path in root.rglob("*_Information.txt"):
        for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
            if line.lower().startswith("title:"):
                titles.append(line.split(":", 1)[1].strip())
    for path in root.rglob("*_Description.txt"):
        text = path.read_text(encoding="utf-8-sig", errors="replace").strip()
        if text:
            titles.append(text)
    return [t for t in titles if t]


def min_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    from clip_search.encoder import l2_normalise

    return np.sum(l2_normalise(reference) * l2_normalise(candidate), axis=1)


def compare(reference_runtime, candidate_runtime, pixels: np.ndarray, tokens: np.ndarray) -> dict:
    """Cosines of candidate vs reference, candidate run one at a time and in batches of BATCH."""
    def batched(fn, data):
        return np.concatenate([fn(data[i:i + BATCH]) for i in range(0, len(data), BATCH)])

    def one_by_one(fn, data):
        return np.concatenate([fn(data[i:i + 1]) for i in range(len(data))])

    ref_img = batched(reference_runtime.image_features, pixels)
    ref_txt = np.concatenate([reference_runtime.text_features(t) for t in _token_rows(tokens)])
    img = np.minimum(min_cosines(ref_img, batched(candidate_runtime.image_features, pixels)),
                     min_cosines(ref_img, one_by_one(candidate_runtime.image_features, pixels)))
    txt_batched = np.concatenate([candidate_runtime.text_features(_trim(tokens[i:i + BATCH]))
                                  for i in range(0, len(tokens), BATCH)])
    txt_single = np.concatenate([candidate_runtime.text_features(t) for t in _token_rows(tokens)])
    txt = np.minimum(min_cosines(ref_txt, txt_batched), min_cosines(ref_txt, txt_single))
    return {"image": img, "text": txt}


def _trim(tokens: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(tokens[:, : int(tokens.argmax(axis=1).max()) + 1])


def _token_rows(tokens: np.ndarray):
    return [_trim(tokens[i:i + 1]) for i in range(len(tokens))]


def run_guard(model_dir: Path, manifest: dict, runtime: str, calibration=None, threads: int | None = None,
              image_threshold: float | None = None, text_threshold: float | None = None) -> dict:
    """Encode the calibration set with torch fp32 and `runtime`; figures, or AccuracyGuardError."""
    image_threshold = IMAGE_THRESHOLD if image_threshold is None else image_threshold
    text_threshold = TEXT_THRESHOLD if text_threshold is None else text_threshold
    from clip_search.encoder import ClipEncoder, resolve_threads
    from clip_search.packaging.torch_runtime import TorchRuntime
    from clip_search.runtimes import _runtime_class

    root = calibration_dir(calibration)
    threads = resolve_threads(threads)
    reference = TorchRuntime.load(model_dir, manifest, threads)
    candidate = _runtime_class(runtime).load(model_dir, dict(manifest, runtime=runtime), threads)
    encoder = ClipEncoder(model_dir, manifest, runtime=reference, threads=threads)
    images, texts = load_calibration(root)
    pixels = encoder.preprocess_images(images)
    tokens = np.asarray(encoder.tokenizer(texts), dtype=np.int64)
    cosines = compare(reference, candidate, pixels, tokens)
    path = end_to_end(model_dir, manifest, runtime, candidate, reference, calibration_photos(root), texts, threads)
    figures = {
        "calibration": _describe(root),
        "images": len(images),
        "texts": len(texts),
        "min_cosine_image": round(float(cosines["image"].min()), 6),
        "mean_cosine_image": round(float(cosines["image"].mean()), 6),
        "min_cosine_text": round(float(cosines["text"].min()), 6),
        "mean_cosine_text": round(float(cosines["text"].mean()), 6),
        # The whole serving path: photo files through the artifact's own decode (JPEG draft),
        # numpy preprocessing and tokenizer.json, against open_clip's preprocess + tokenizer + torch.
        "serving_path": path,
        "thresholds": {"image": image_threshold, "text": text_threshold},
        "cpu_flags": cpu_flags(),
        "measured_precision": getattr(candidate, "precision", None) or manifest.get("runtime_config", {}).get("precision"),
    }
    logger.info("accuracy guard for %s: %s", runtime, figures)
    image_min = min(figures["min_cosine_image"], path["min_cosine_image"])
    text_min = min(figures["min_cosine_text"], path["min_cosine_text"])
    if image_min < image_threshold or text_min < text_threshold:
        raise AccuracyGuardError(
            f"runtime {runtime!r} fails the accuracy guard: min cosine to torch fp32 is "
            f"{image_min:.5f} for images (needs >= {image_threshold}) and "
            f"{text_min:.5f} for texts (needs >= {text_threshold}) over {len(images)} "
            f"photos and {len(texts)} titles from {root} (graphs on shared inputs: "
            f"{figures['min_cosine_image']:.5f} / {figures['min_cosine_text']:.5f}; serving path through "
            f"{path['preprocessing']}: {path['min_cosine_image']:.5f} / {path['min_cosine_text']:.5f}); "
            f"no artifact written. Package with --runtime torch, onnx or openvino instead."
        )
    return figures


def end_to_end(model_dir: Path, manifest: dict, runtime: str, candidate, reference, photos: list[Path],
               texts: list[str], threads: int) -> dict:
    """Min/mean cosines of the serving path (the core ClipEncoder with `candidate`: photo bytes ->
    decode -> its preprocessing -> runtime; titles -> its tokenizer -> runtime) to torch fp32 fed
    by open_clip's own transform (full decode) and tokenizer."""
    from clip_search.artifact import read_config
    from clip_search.encoder import ClipEncoder, l2_normalise
    from clip_search.images import decode_image
    from clip_search.packaging.open_clip_io import build_preprocess, build_tokenizer

    encoder = ClipEncoder(model_dir, dict(manifest, runtime=runtime), runtime=candidate, threads=threads)
    payloads = [path.read_bytes() for path in photos]
    served_images = np.concatenate([encoder.encode_image_bytes(payloads[i:i + BATCH])
                                    for i in range(0, len(payloads), BATCH)])
    served_texts = np.concatenate([encoder.encode_texts(texts[i:i + BATCH]) for i in range(0, len(texts), BATCH)])
    transform = build_preprocess(read_config(model_dir).get("preprocess_cfg", {}))
    tokenizer = build_tokenizer(model_dir)
    pixels = np.stack([transform(decode_image(data)).numpy() for data in payloads]).astype(np.float32)
    ref_images = l2_normalise(reference.image_features(pixels))
    ref_texts = l2_normalise(np.concatenate([reference.text_features(row)
                                             for row in _token_rows(tokenizer(texts).numpy().astype(np.int64))]))
    image, text = np.sum(served_images * ref_images, axis=1), np.sum(served_texts * ref_texts, axis=1)
    return {
        "preprocessing": "tokenizer.json + numpy preprocessing",
        "jpeg_draft": encoder.draft_size is not None,
        "min_cosine_image": round(float(image.min()), 6),
        "mean_cosine_image": round(float(image.mean()), 6),
        "min_cosine_text": round(float(text.min()), 6),
        "mean_cosine_text": round(float(text.mean()), 6),
    }


def _describe(root: Path) -> str:
    """The calibration folder without machine paths (artifacts are shared)."""
    if root == GROCERY:
        return "clip_search/demo_data/grocery (packaged demo catalogue)"
    return root.name
