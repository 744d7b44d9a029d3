"""The reference runtime: open_clip in PyTorch, fp32, eager, weights from safetensors."""
import logging
from pathlib import Path

import numpy as np

from clip_search.artifact import WEIGHTS_FILE, read_config
from clip_search.errors import ModelLoadError
from clip_search.packaging.torchvision_compat import ensure_torchvision_importable

logger = logging.getLogger(__name__)


def build_model(model_cfg: dict, weights_path: Path | None):
    """Build the open_clip model for `model_cfg` and load `weights_path` (safetensors) into it.

    Built on the meta device and loaded with assign=True, so the random initialisation that the
    weights would overwrite is never computed (about half of the load time for ViT-B-32).
    """
    ensure_torchvision_importable()
    import torch
    from open_clip.model import CLIP, CustomTextCLIP
    from safetensors.torch import load_file

    cfg = dict(model_cfg)
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    model_class = CustomTextCLIP if custom_text else CLIP
    if weights_path is None:
        return model_class(**cfg).eval()

    state = load_file(str(weights_path))
    with torch.device("meta"):
        model = model_class(**cfg)
    # Buffers that are not saved in a state dict (CLIP's causal attention mask) stay on meta.
    unsaved = [name for name, _ in model.named_buffers() if name not in state]
    if set(unsaved) - {"attn_mask"}:
        # An architecture with other derived buffers: build it the slow, plain way.
        model = model_class(**cfg)
        model.load_state_dict(state, strict=True)
        return model.eval()
    model.load_state_dict(state, strict=True, assign=True)
    if unsaved:
        context = model.attn_mask.shape[0]
        model.attn_mask = torch.full((context, context), float("-inf")).triu_(1)
    return model.eval()


class TorchRuntime:
    name = "torch"

    def __init__(self, model):
        import torch

        self._torch = torch
        self.model = model
        # Cutting tokens to the longest text is exact only for open_clip's own causal text tower
        # pooled at the end-of-text token (argmax of the ids); HF text towers take the full length.
        self.trims_text = (
            hasattr(model, "positional_embedding")
            and getattr(model, "text_pool_type", "argmax") == "argmax"
        )

    @classmethod
    def load(cls, model_dir: Path, manifest: dict, threads: int):
        import torch

        torch.set_num_threads(max(1, int(threads)))
        weights = Path(model_dir) / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelLoadError(f"the torch runtime needs {WEIGHTS_FILE}, which this artifact leaves out "
                                 f"(package it with --keep-weights, or serve its exported runtime)")
        config = read_config(model_dir)
        return cls(build_model(config["model_cfg"], Path(model_dir) / WEIGHTS_FILE))

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            return self.model.encode_image(torch.from_numpy(pixels)).float().numpy()

    def text_features(self, tokens: np.ndarray) -> np.ndarray:
        torch = self._torch
        text = torch.from_numpy(tokens)
        with torch.inference_mode():
            if not self.trims_text:
                return self.model.encode_text(text).float().numpy()
            return _encode_text_trimmed(self.model, text).float().numpy()


def _encode_text_trimmed(model, text):
    """open_clip's CLIP.encode_text for a sequence shorter than the context length.

    Same operations; the positional embedding and the causal mask are cut to the sequence length.
    Positions up to each text's end-of-text token never attend to later ones, so the result is the
    same as for the full padded sequence, at a fraction of the cost (queries are ~5-15 tokens of 77).
    """
    from open_clip.transformer import text_global_pool
    from torch import nn

    length = text.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, text, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
    return x
