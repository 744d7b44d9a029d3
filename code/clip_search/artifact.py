"""The model artifact, `model.tar.gz`: what SageMaker downloads to /opt/ml/model.

Layout (top level of the tar):
    open_clip_config.json        {"model_cfg": ..., "preprocess_cfg": ...} (open_clip's hub layout)
    open_clip_model.safetensors  the weights; safetensors only, never pickle
    clip-search-manifest.json    arch, pretrained tag, embedding dim, sha256 of every model file,
                                 package version, whether this is the random-weights test model
    code/                        inference.py + the clip_search package + requirements.txt, so a
                                 stock SageMaker PyTorch image serves it (SAGEMAKER_PROGRAM=inference.py)
"""
import atexit
import datetime
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from clip_search import __version__
from clip_search.errors import ModelDownloadError, ModelLoadError
from clip_search.model_config import CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE, builtin_model_cfg

logger = logging.getLogger(__name__)

DEFAULT_ARCH = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
TEST_ARCH = "clip-search-tiny"
RANDOM_TAG = "random"
FORMAT_VERSION = 1
PACKAGE_DIR = Path(__file__).parent
# What a stock SageMaker PyTorch image must add to run code/inference.py. It already has torch,
# torchvision and the sagemaker-inference toolkit: pinning those here would fight its versions.
CODE_REQUIREMENTS = ["open_clip_torch==3.3.0", "safetensors>=0.4", "orjson>=3.9"]


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --- packaging ----------------------------------------------------------------------------------
def build_open_clip_model(arch: str, pretrained: str | None, seed: int = 0):
    """(model, model_cfg, preprocess_cfg). pretrained=None means random weights (seeded)."""
    from clip_search._torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import open_clip
    import torch
    from open_clip.model import CLIP, CustomTextCLIP

    model_cfg = builtin_model_cfg(arch)
    if model_cfg is None:
        raise ValueError(f"unknown architecture {arch!r}; see open_clip.list_models()")
    if pretrained:
        try:
            model = open_clip.create_model(arch, pretrained=pretrained)
        except Exception as error:  # noqa: BLE001 - hub, network and tag errors all end here
            raise ModelDownloadError(
                f"could not fetch pretrained weights {arch}/{pretrained} through open_clip: {error}"
            ) from error
    else:
        torch.manual_seed(seed)
        cfg = dict(model_cfg)
        custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
        model = (CustomTextCLIP if custom else CLIP)(**cfg)
    preprocess_cfg = open_clip.get_model_preprocess_cfg(model)
    return model.eval(), model_cfg, preprocess_cfg


def write_model_dir(directory: Path, model, model_cfg: dict, preprocess_cfg: dict, manifest: dict) -> dict:
    """Write config, weights and manifest into `directory`; returns the manifest written."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    manifest = dict(manifest)
    manifest["files"] = {name: sha256_file(directory / name) for name in (CONFIG_FILE, WEIGHTS_FILE)}
    manifest["weights_sha256"] = manifest["files"][WEIGHTS_FILE]
    write_manifest(directory, manifest)
    return manifest


def write_manifest(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def add_file_to_manifest(directory: Path, manifest: dict, relative: str) -> None:
    """Record a file another step wrote into the model dir (e.g. an exported runtime graph)."""
    manifest.setdefault("files", {})[relative] = sha256_file(directory / relative)


def write_code_dir(directory: Path) -> None:
    """code/: the SageMaker script-mode entry point and this package, for stock PyTorch images."""
    code = directory / "code"
    code.mkdir(parents=True, exist_ok=True)
    shutil.copy2(PACKAGE_DIR.parent / "inference.py", code / "inference.py")
    shutil.copytree(
        PACKAGE_DIR, code / "clip_search", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    (code / "requirements.txt").write_text("\n".join(CODE_REQUIREMENTS) + "\n")


def base_manifest(arch: str, pretrained: str, embed_dim: int, test_model: bool, random_weights: bool) -> dict:
    import open_clip
    import torch

    return {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "pretrained": pretrained,
        "model_id": f"{arch}/{pretrained}",
        "embed_dim": embed_dim,
        "test_model": test_model,
        "random_weights": random_weights,
        "runtime": "torch",
        "package_version": __version__,
        "open_clip_version": open_clip.__version__,
        "torch_version": torch.__version__,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def package_model(
    output: Path,
    arch: str = DEFAULT_ARCH,
    pretrained: str | None = DEFAULT_PRETRAINED,
    test_model: bool = False,
    random_weights: bool = False,
    runtime: str = "torch",
    runtime_options: dict | None = None,
) -> Path:
    """Build `model.tar.gz` at `output`. Test model: tiny, random, ~7 MB, no network needed.

    random_weights: the full-size architecture with seeded random weights (benchmarks offline).
    Otherwise the pretrained weights are downloaded through open_clip (needs internet).
    runtime: "torch" (no export), one runtime, or "auto": the fastest the accuracy guard accepts.
    """
    if test_model:
        arch, pretrained, random_weights = TEST_ARCH, RANDOM_TAG, True
    elif random_weights:
        pretrained = RANDOM_TAG
    model, model_cfg, preprocess_cfg = build_open_clip_model(
        arch, None if random_weights else pretrained
    )
    manifest = base_manifest(arch, pretrained, int(model_cfg["embed_dim"]), test_model, random_weights)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clip-search-package-") as staging:
        staging = Path(staging)
        manifest = write_model_dir(staging, model, model_cfg, preprocess_cfg, manifest)
        del model
        if runtime != "torch":
            from clip_search.runtimes.export import export_runtime  # optional extras

            manifest = export_runtime(staging, manifest, runtime, **(runtime_options or {}))
            write_manifest(staging, manifest)
        write_code_dir(staging)
        write_tar(staging, output)
    return output


def write_tar(source: Path, output: Path) -> None:
    partial = output.with_name(output.name + ".partial")
    # Weights barely compress; level 1 keeps packaging fast for the 600 MB fp32 ViT-B-32.
    with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
        for path in sorted(source.iterdir()):
            tar.add(path, arcname=path.name)
    partial.replace(output)  # never leave a half-written model.tar.gz behind


# --- loading ------------------------------------------------------------------------------------
def extract_artifact(path: Path) -> Path:
    """An artifact directory as is, or a model.tar.gz extracted into a private temp dir."""
    path = Path(path)
    if path.is_dir():
        return path
    if not path.is_file():
        raise ModelLoadError(f"model artifact not found: {path}")
    target = Path(tempfile.mkdtemp(prefix="clip-search-model-"))
    atexit.register(shutil.rmtree, target, True)
    try:
        with tarfile.open(path, "r:*") as tar:
            tar.extractall(target, filter="data")  # refuses absolute paths, links out, devices
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ModelLoadError(f"model artifact {path} is not a readable tar.gz: {error}") from error
    return target


def read_manifest(model_dir: Path) -> dict:
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        raise ModelLoadError(f"model artifact is missing {MANIFEST_FILE} (looked in {model_dir})")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"model artifact file {path} is not valid JSON: {error}") from error


def read_packed_manifest(tar_path: Path) -> dict:
    """The manifest of a model.tar.gz, read without extracting the weights."""
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            return json.load(tar.extractfile(MANIFEST_FILE))
    except (KeyError, tarfile.TarError, OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read {MANIFEST_FILE} from {tar_path}: {error}") from error


# Set by a process that has just verified an artifact directory for the workers it starts (the
# serving entry points): hashing 0.6-1.1 GB again in the worker would only add to the cold start.
VERIFIED_ENV = "CLIP_SEARCH_VERIFIED_MODEL_DIR"


def mark_verified(model_dir: Path, env: dict) -> None:
    env[VERIFIED_ENV] = str(Path(model_dir).resolve())


def verify_artifact(model_dir: Path) -> dict:
    """Check that every file the manifest lists exists with its recorded sha256; return the manifest.

    Files of a directory the parent process already verified (VERIFIED_ENV) are checked for
    presence only.
    """
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    already_verified = os.environ.get(VERIFIED_ENV) == str(model_dir.resolve())
    files = manifest.get("files") or {}
    for required in (CONFIG_FILE, WEIGHTS_FILE):
        if required not in files:
            raise ModelLoadError(f"{MANIFEST_FILE} in {model_dir} does not list {required}")
    for name, expected in files.items():
        path = model_dir / name
        if not path.is_file():
            raise ModelLoadError(f"model artifact is missing {name} (looked in {model_dir})")
        if already_verified:
            continue
        actual = sha256_file(path)
        if actual != expected:
            raise ModelLoadError(
                f"model artifact file {path} is corrupt: sha256 {actual} does not match the "
                f"manifest's {expected}"
            )
    return manifest
