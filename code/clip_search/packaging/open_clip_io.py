"""open_clip's own image transform and tokenizer for an artifact: the reference the run time's
torch-free preprocessing and tokenizer are held to (packaging, the accuracy guard, torch artifacts)."""
from pathlib import Path

from clip_search.packaging.torchvision_compat import import_open_clip


def build_preprocess(preprocess_cfg: dict):
    """The eval-time image transform open_clip uses for this model (resize, crop, normalise)."""
    import_open_clip()
    from open_clip.transform import PreprocessCfg, image_transform_v2

    known = {k: v for k, v in preprocess_cfg.items() if k in PreprocessCfg.__dataclass_fields__}
    return image_transform_v2(PreprocessCfg(**known), is_train=False)


def build_tokenizer(model_dir: Path):
    return import_open_clip().get_tokenizer(f"local-dir:{Path(model_dir).resolve()}")
