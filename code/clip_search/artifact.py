"""The model artifact, `model.tar.gz`, as the run time reads it: what SageMaker puts in /opt/ml/model.

Layout (top level of the tar):
    open_clip_config.json        {"model_cfg": ..., "preprocess_cfg": ...} (open_clip's hub layout)
    open_clip_model.safetensors  the fp32 weights (torch artifacts, or --keep-weights); never pickle
    clip-search-manifest.json    arch, pretrained tag, embedding dim, sha256 of every file, package
                                 version, runtime, whether this is the random-weights test model
    onnx/ or openvino/           the exported graphs of a torch-free runtime
    code/                        inference.py + the clip_search package + requirements.txt, so a
                                 stock SageMaker PyTorch image serves it (SAGEMAKER_PROGRAM=inference.py)

Writing an artifact is build time (`clip_search.packaging.build`); this module only extracts,
reads and verifies one, and needs nothing beyond the standard library.
"""
import atexit
import json
import logging
import shutil
import tarfile
import tempfile
from pathlib import Path

from clip_search import settings
from clip_search.errors import ModelLoadError
from clip_search.files import sha256_file

logger = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
# Not "manifest.json": multi-model-server reads a file of that name as a legacy MXNet model
# archive manifest and refuses to load the model directory.
MANIFEST_FILE = "clip-search-manifest.json"
FORMAT_VERSION = 1


def _plain_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member, if each is a regular file or a folder inside the archive; else a TarError."""
    members = tar.getmembers()
    for member in members:
        name = Path(member.name)
        if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
            raise tarfile.TarError(f"refusing member {member.name!r}: only files and folders inside the archive")
    return members


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
            if hasattr(tarfile, "data_filter"):
                tar.extractall(target, filter="data")  # refuses absolute paths, links out, devices
            else:  # a Python without PEP 706 (e.g. 3.11.2): the same refusals, made here
                tar.extractall(target, members=_plain_members(tar))
    except (tarfile.TarError, OSError, EOFError) as error:
        shutil.rmtree(target, ignore_errors=True)
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


def read_config(model_dir: Path) -> dict:
    """open_clip_config.json: {"model_cfg", "preprocess_cfg"}."""
    path = Path(model_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"model artifact is missing {CONFIG_FILE} (looked in {model_dir})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"model artifact file {path} is not valid JSON: {error}") from error


def read_packed_manifest(tar_path: Path) -> dict:
    """The manifest of a model.tar.gz, read without extracting the weights."""
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            return json.load(tar.extractfile(MANIFEST_FILE))
    except (KeyError, tarfile.TarError, OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read {MANIFEST_FILE} from {tar_path}: {error}") from error


def has_weights(model_dir: Path, manifest: dict) -> bool:
    """Whether the artifact carries the fp32 safetensors (the torch runtime needs them)."""
    return WEIGHTS_FILE in (manifest.get("files") or {}) and (Path(model_dir) / WEIGHTS_FILE).is_file()


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
    already_verified = settings.current().verified_model_dir == str(model_dir.resolve())
    files = manifest.get("files") or {}
    required = [CONFIG_FILE]
    if (manifest.get("runtime") or "torch") == "torch":
        required.append(WEIGHTS_FILE)
    for name in required:
        if name not in files:
            raise ModelLoadError(f"{MANIFEST_FILE} in {model_dir} does not list {name}")
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
