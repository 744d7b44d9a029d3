"""Read the open_clip model + preprocess config stored in an artifact, and build the modules it names.

`open_clip_config.json` uses open_clip's own hub layout ({"model_cfg", "preprocess_cfg"}), so an
extracted artifact also loads with `open_clip.create_model_and_transforms("local-dir:DIR")`.
"""
import json
from pathlib import Path

from clip_search._torchvision_compat import ensure_torchvision_importable

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
# Not "manifest.json": multi-model-server reads a file of that name as a legacy MXNet model
# archive manifest and refuses to load the model directory.
MANIFEST_FILE = "clip-search-manifest.json"
BUILTIN_CONFIG_DIR = Path(__file__).parent / "model_configs"


def builtin_model_cfg(arch: str) -> dict | None:
    """Our own configs (model_configs/*.json) first, then open_clip's."""
    path = BUILTIN_CONFIG_DIR / f"{arch}.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        cfg.pop("_comment", None)
        return cfg
    ensure_torchvision_importable()
    import open_clip

    return open_clip.get_model_config(arch)


def read_config(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / CONFIG_FILE).read_text())


def build_preprocess(preprocess_cfg: dict):
    """The eval-time image transform open_clip uses for this model (resize, crop, normalise)."""
    ensure_torchvision_importable()
    from open_clip.transform import PreprocessCfg, image_transform_v2

    known = {k: v for k, v in preprocess_cfg.items() if k in PreprocessCfg.__dataclass_fields__}
    return image_transform_v2(PreprocessCfg(**known), is_train=False)


def build_tokenizer(model_dir: Path):
    ensure_torchvision_importable()
    import open_clip

    return open_clip.get_tokenizer(f"local-dir:{Path(model_dir).resolve()}")
