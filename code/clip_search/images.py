"""Turn image bytes from a request into an RGB PIL image the preprocessor can take.

Product photos arrive in every shape: palette PNGs, transparent cut-outs, CMYK JPEGs from print
pipelines, 16-bit greyscale, phone photos whose pixels are stored sideways with an EXIF rotation.
All of them become upright RGB here, so the model sees what a person sees.
"""
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clip_search import settings
from clip_search.errors import BadRequest, PayloadTooLarge

MAX_PIXELS_ENV = "CLIP_SEARCH_MAX_IMAGE_PIXELS"

# Transparent product cut-outs are shown on white in every shop; black would change the embedding.
BACKGROUND = (255, 255, 255)


def max_pixels() -> int:
    return settings.current().max_image_pixels


def decode_image(data: bytes, limit: int | None = None, draft_size: int | None = None) -> Image.Image:
    """Decode `data` into an upright RGB image, or raise a 400/413 error that says why.

    `draft_size`: for JPEGs, let libjpeg decode at a reduced scale (a power of two) no smaller than
    this, which is much cheaper than decoding full size and resizing afterwards.
    """
    if not data:
        raise BadRequest("empty image: the request carried no image bytes")
    limit = limit or max_pixels()
    try:
        with warnings.catch_warnings():
            # We enforce our own limit below with a clear 413; silence PIL's own warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limit:
                raise PayloadTooLarge(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{limit} pixels ({MAX_PIXELS_ENV})"
                )
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
    except PayloadTooLarge:
        raise
    except Image.DecompressionBombError as error:
        raise PayloadTooLarge(f"image rejected as a decompression bomb: {error}") from error
    except UnidentifiedImageError as error:
        raise BadRequest("not a decodable image: the bytes are not in a format PIL can read") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise BadRequest(f"corrupt or truncated image: {error}") from error
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB: apply EXIF orientation, flatten transparency onto white, map any mode to RGB."""
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError):
        pass  # a broken EXIF block must not lose an otherwise good photo
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _high_depth_to_l(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return image


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit greyscale: PIL's convert('L') clips instead of scaling, so scale by hand."""
    pixels = np.asarray(image, dtype=np.float64)
    low, high = float(pixels.min()), float(pixels.max())
    scaled = np.zeros_like(pixels) if high == low else (pixels - low) * (255.0 / (high - low))
    return Image.fromarray(scaled.round().astype(np.uint8), mode="L")
