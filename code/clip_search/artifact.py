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
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
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


def extract_artifact(path: Path, shared: bool = False) -> Path:
    """An artifact directory as is, or a model.tar.gz extracted.

    `shared=False`: into a private temp dir, removed at exit (the caller may move or change it).
    `shared=True`, for callers that only read it: into the model cache (CLIP_SEARCH_MODEL_CACHE), where
    the next command finds it while the file is unchanged, instead of spending ~1.3 s on a ViT-B-32
    artifact's 135 MB (docs/performance.md, CLI start-up). The cache is checked like any extracted
    artifact: verify_artifact hashes every file at load."""
    path = Path(path)
    if path.is_dir():
        return path
    if not path.is_file():
        raise ModelLoadError(f"model artifact not found: {path}")
    root = model_cache_root() if shared else None
    if root is not None:
        try:
            return _cached_extraction(path, root)
        except OSError as error:  # e.g. a read-only home (Lambda): the private extraction still works
            logger.warning("model cache %s not usable (%s); extracting %s into a temporary folder", root, error, path)
    target = Path(tempfile.mkdtemp(prefix="clip-search-model-"))
    atexit.register(shutil.rmtree, target, True)
    _extract(path, target)
    return target


def _extract(path: Path, target: Path) -> None:
    try:
        with tarfile.open(path, "r:*") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(target, filter="data")  # refuses absolute paths, links out, devices
            else:  # a Python without PEP 706 (e.g. 3.11.2): the same refusals, made here
                tar.extractall(target, members=_plain_members(tar))
    except (tarfile.TarError, OSError, EOFError) as error:
        shutil.rmtree(target, ignore_errors=True)
        raise ModelLoadError(f"model artifact {path} is not a readable tar.gz: {error}") from error


# --- the model cache ------------------------------------------------------------------------------
CACHE_ENTRIES = 4  # extracted artifacts kept; the least recently used go first
# An entry used (or a scratch folder made) this recently is never removed: another process may be
# loading it. So the cache may hold more than CACHE_ENTRIES for a while.
CACHE_KEEP_SECONDS = 3600
CACHE_COMPLETE = ".clip-search-complete"  # written last: an entry without it is not used


def model_cache_root() -> Path | None:
    """The model cache folder, or None when CLIP_SEARCH_MODEL_CACHE says off."""
    value = settings.current().model_cache  # None: off
    if value is None:
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clip-search" / "models"


def _cached_extraction(path: Path, root: Path) -> Path:
    """The cache entry of `path`: found by the file's identity (resolved path, size, mtime, ctime,
    inode; a rewritten or replaced file is a new entry), else extracted beside it into a scratch
    folder and renamed into place, so a reader never sees half an entry and two processes
    extracting the same file at once both end up with one whole entry."""
    stat = path.stat()
    identity = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\0{stat.st_ino}"
    entry = root / hashlib.sha256(identity.encode()).hexdigest()[:32]
    marker = entry / CACHE_COMPLETE
    if marker.is_file():
        try:
            os.utime(marker)  # its last use, for eviction
        except OSError:  # a cache this user may read but not write: still the same files
            pass
        return entry
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=root))
    try:
        _extract(path, scratch)
        (scratch / CACHE_COMPLETE).write_text(f"{path.resolve()}\n")
        try:
            os.rename(scratch, entry)
        except OSError:
            if not marker.is_file():  # not another process's whole entry: give up on the cache
                raise
            shutil.rmtree(scratch, ignore_errors=True)  # another process's is the same: use it
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    _evict(root, keep=entry)
    return entry


def _evict(root: Path, keep: Path) -> None:
    """Remove entries beyond CACHE_ENTRIES, least recently used first, and scratch folders left
    by killed processes; never anything used within CACHE_KEEP_SECONDS."""
    now, entries, leftovers = time.time(), [], []
    for child in root.iterdir():
        if child == keep:
            continue
        try:
            if child.name.startswith("."):  # a scratch folder, or what an eviction left
                leftovers.append((child.stat().st_mtime, child))
            elif (child / CACHE_COMPLETE).is_file():
                entries.append(((child / CACHE_COMPLETE).stat().st_mtime, child))
        except OSError:
            continue
    entries.sort(reverse=True)
    for used, child in entries[CACHE_ENTRIES - 1:] + leftovers:
        if now - used <= CACHE_KEEP_SECONDS:
            continue
        if not child.name.startswith("."):
            trash = root / f".evicted-{child.name}-{os.getpid()}"
            try:
                os.rename(child, trash)  # gone from its name at once, then removed
            except OSError:
                continue
            child = trash
        shutil.rmtree(child, ignore_errors=True)


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
