"""Build time: package an open_clip model as `model.tar.gz` (see clip_search.artifact for the layout).

Needs the `package` extra (torch, open_clip, onnx): nothing at run time imports this module.
"""
import datetime
import json
import logging
import shutil
import tarfile
import tempfile
from pathlib import Path

from clip_search import __version__
from clip_search.artifact import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE
from clip_search.errors import ModelDownloadError
from clip_search.files import sha256_file
from clip_search.packaging.manifest import add_file_to_manifest, write_manifest
from clip_search.tokenizer import TOKENIZER_FILE

logger = logging.getLogger(__name__)

DEFAULT_ARCH = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
TEST_ARCH = "clip-search-tiny"
RANDOM_TAG = "random"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the installed clip_search package
BUILTIN_CONFIG_DIR = Path(__file__).parent / "model_configs"
# What a stock SageMaker PyTorch image must add to run code/inference.py. It already has torch,
# torchvision and the sagemaker-inference toolkit: pinning those here would fight its versions.
CODE_REQUIREMENTS = ["open_clip_torch==3.3.0", "safetensors>=0.4", "orjson>=3.9"]
# code/inference.py, shipped inside the package so packaging never reads a source checkout.
INFERENCE_SCRIPT = "from clip_search.serving.handler import input_fn, model_fn, output_fn, predict_fn\n"


def builtin_model_cfg(arch: str) -> dict | None:
    """Our own configs (model_configs/*.json) first, then open_clip's."""
    path = BUILTIN_CONFIG_DIR / f"{arch}.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        cfg.pop("_comment", None)
        return cfg
    from clip_search.packaging.torchvision_compat import import_open_clip

    return import_open_clip().get_model_config(arch)


# --- packaging ----------------------------------------------------------------------------------
def build_open_clip_model(arch: str, pretrained: str | None, seed: int = 0):
    """(model, model_cfg, preprocess_cfg). pretrained=None means random weights (seeded)."""
    from clip_search.packaging.torchvision_compat import import_open_clip

    open_clip = import_open_clip()
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


def write_code_dir(directory: Path) -> None:
    """code/: the SageMaker script-mode entry point and this package, for stock PyTorch images."""
    code = directory / "code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "inference.py").write_text(INFERENCE_SCRIPT)
    shutil.copytree(
        PACKAGE_DIR, code / "clip_search", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    (code / "requirements.txt").write_text("\n".join(CODE_REQUIREMENTS) + "\n")


def base_manifest(arch: str, pretrained: str, embed_dim: int, test_model: bool, random_weights: bool) -> dict:
    from clip_search.packaging.torchvision_compat import import_open_clip

    open_clip = import_open_clip()
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
    keep_weights: bool = False,
) -> Path:
    """Build `model.tar.gz` at `output`. Test model: tiny, random, ~7 MB, no network needed.

    random_weights: the full-size architecture with seeded random weights (benchmarks offline).
    Otherwise the pretrained weights are downloaded through open_clip (needs internet).
    runtime: "torch" (no export), one runtime, or "auto": the fastest the accuracy guard accepts.
    keep_weights: an artifact for a torch-free runtime holds only what that runtime serves (graphs,
    tokenizer.json, config, manifest); with keep_weights it also keeps the fp32 safetensors and
    code/ (so the torch runtime, e.g. a stock SageMaker PyTorch image, can serve it too).
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
        from clip_search.packaging.tokenizer_export import export_tokenizer

        # Proven equal to open_clip's ids here, or TokenizerMismatchError and no artifact.
        export_tokenizer(staging)
        add_file_to_manifest(staging, manifest, TOKENIZER_FILE)
        write_manifest(staging, manifest)
        if runtime != "torch":
            from clip_search.packaging.export import export_runtime

            manifest = export_runtime(staging, manifest, runtime, **(runtime_options or {}))
        slim = manifest["runtime"] != "torch" and not keep_weights
        if slim:
            # The guard has compared the export with these weights; serving the export needs none of them.
            (staging / WEIGHTS_FILE).unlink()
            manifest["files"].pop(WEIGHTS_FILE)
        manifest["weights_included"] = not slim  # weights_sha256 stays: which weights were exported
        write_manifest(staging, manifest)
        if not slim:
            write_code_dir(staging)  # code/ is for stock PyTorch images, which serve the torch runtime
        write_tar(staging, output)
    return output


def write_tar(source: Path, output: Path) -> None:
    partial = output.with_name(output.name + ".partial")
    # Weights barely compress; level 1 keeps packaging fast for the 600 MB fp32 ViT-B-32.
    with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
        for path in sorted(source.iterdir()):
            tar.add(path, arcname=path.name)
    partial.replace(output)  # never leave a half-written model.tar.gz behind
