"""open_clip's eval-time image preprocessing with Pillow and numpy: no torch, no torchvision.

The same steps as `open_clip.transform.image_transform_v2(cfg, is_train=False)`, from the artifact's
`preprocess_cfg` (size, resize_mode, interpolation, mean, std, fill_color), with torchvision's PIL
arithmetic (torchvision's Resize and CenterCrop on a PIL image call PIL's resize and crop):

    shortest  resize the short side to `size` (long side int(size * long / short)), centre crop
              (a non-square size: both sides scaled by the smaller ratio, rounded, then centre crop)
    longest   resize the long side to `size` (sides rounded), centre crop or pad with `fill_color`
    squash    resize to exactly `size`
    then      RGB, pixels / 255 in float32, minus mean, divided by std, channels first

Measured against open_clip's own transform on real grocery photos of many sizes and aspect ratios
(tests/unit/test_preprocess.py): max abs difference 0 (bit-identical float32).
"""
import numpy as np
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
INTERPOLATIONS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "random": Image.BICUBIC}
RESIZE_MODES = ("shortest", "longest", "squash")


def _pair(size) -> tuple[int, int]:
    """(height, width) from an int or a sequence, as open_clip's configs give it."""
    if isinstance(size, (list, tuple)):
        return (int(size[0]), int(size[-1])) if len(size) else (224, 224)
    return int(size), int(size)


def _per_channel(value, default) -> np.ndarray:
    value = default if value is None else value
    if not isinstance(value, (list, tuple)):
        value = (value,) * 3
    return np.asarray(value, dtype=np.float32).reshape(3, 1, 1)


class ImagePreprocess:
    """PIL image -> (3, H, W) float32, open_clip's eval transform for `preprocess_cfg`."""

    def __init__(self, preprocess_cfg: dict | None = None):
        cfg = dict(preprocess_cfg or {})
        self.size = _pair(cfg.get("size", 224))
        self.resize_mode = cfg.get("resize_mode") or "shortest"
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize_mode {self.resize_mode!r}; known: {', '.join(RESIZE_MODES)}")
        interpolation = cfg.get("interpolation") or "bicubic"
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {interpolation!r}; known: {', '.join(INTERPOLATIONS)}")
        self.interpolation = INTERPOLATIONS[interpolation]
        self.mean = _per_channel(cfg.get("mean"), OPENAI_MEAN)
        self.std = _per_channel(cfg.get("std"), OPENAI_STD)
        self.fill = int(cfg.get("fill_color", 0) or 0)

    def __call__(self, image: Image.Image) -> np.ndarray:
        if image.mode != "RGB":
            image = image.convert("RGB")
        height, width = self.size
        if self.resize_mode == "squash":
            image = self._resize(image, (height, width))
        elif self.resize_mode == "longest":
            image = self._resize(image, self._keep_ratio(image, longest=True))
        elif height == width:
            image = self._resize(image, self._shortest_edge(image, height))
        else:
            # open_clip's ResizeKeepRatio(size) with its defaults: the smaller ratio, sides rounded.
            image = self._resize(image, self._keep_ratio(image, longest=False))
        pixels = self._center_crop_or_pad(np.asarray(image, dtype=np.uint8), height, width)
        # torchvision's ToTensor (float32 / 255), then Normalize ((x - mean) / std), in float32.
        pixels = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        return (pixels - self.mean) / self.std

    def _resize(self, image: Image.Image, size: tuple[int, int]) -> Image.Image:
        """torchvision's F.resize on a PIL image: nothing when already that size, else PIL resize."""
        height, width = size
        if (image.height, image.width) == (height, width):
            return image
        return image.resize((width, height), self.interpolation)

    @staticmethod
    def _shortest_edge(image: Image.Image, size: int) -> tuple[int, int]:
        """torchvision's Resize(int): the short side to `size`, the long one int(size * long / short)."""
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size, int(size * long / short)
        new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
        return new_height, new_width

    def _keep_ratio(self, image: Image.Image, longest: bool) -> tuple[int, int]:
        """open_clip's ResizeKeepRatio.get_params without its random (training) factors."""
        height, width = image.height, image.width
        ratio_h, ratio_w = height / self.size[0], width / self.size[1]
        ratio = max(ratio_h, ratio_w) if longest else min(ratio_h, ratio_w)
        return round(height / ratio), round(width / ratio)

    def _center_crop_or_pad(self, pixels: np.ndarray, height: int, width: int) -> np.ndarray:
        """torchvision's CenterCrop / open_clip's CenterCropOrPad: pad (left/top get the floor
        half) with the fill colour where the image is smaller, then crop at round(offset / 2)."""
        image_height, image_width = pixels.shape[:2]
        if height > image_height or width > image_width:
            fill = self.fill if self.resize_mode == "longest" else 0  # torchvision's CenterCrop pads with 0
            top, left = max(height - image_height, 0) // 2, max(width - image_width, 0) // 2
            padded = np.full((max(height, image_height), max(width, image_width), 3), fill, dtype=np.uint8)
            padded[top:top + image_height, left:left + image_width] = pixels
            pixels, image_height, image_width = padded, padded.shape[0], padded.shape[1]
        top = int(round((image_height - height) / 2.0))
        left = int(round((image_width - width) / 2.0))
        return pixels[top:top + height, left:left + width]

    def batch(self, images: list[Image.Image]) -> np.ndarray:
        """(n, 3, H, W) float32, C-contiguous."""
        return np.ascontiguousarray(np.stack([self(image) for image in images]), dtype=np.float32)
