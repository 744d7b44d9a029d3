"""Turn image bytes from a request into an RGB PIL image the preprocessor can take.

Product photos arrive in every shape: palette PNGs, transparent cut-outs, CMYK JPEGs from print
pipelines, 16-bit greyscale, phone photos whose pixels are stored sideways with an EXIF rotation.
All of them become upright RGB here, so the model sees what a person sees.
"""
import base64
import binascii
import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clip_search import settings
from clip_search.errors import BadRequest, PayloadTooLarge

MAX_PIXELS_ENV = "CLIP_SEARCH_MAX_IMAGE_PIXELS"
MAX_ASPECT_ENV = "CLIP_SEARCH_MAX_ASPECT_RATIO"
MAX_RESIZED_ENV = "CLIP_SEARCH_MAX_RESIZED_PIXELS"

# Transparent product cut-outs are shown on white in every shop; black would change the embedding.
BACKGROUND = (255, 255, 255)


def max_pixels() -> int:
    return settings.current().max_image_pixels


def check_size(width: int, height: int, limit: int | None = None, target_size: int | None = None) -> None:
    """Refuse, from the header alone, an image whose decoding or resizing would be unbounded work.

    Three bounds, each with its own message and variable: the source pixels (413), the aspect ratio
    (400: preprocessing scales the short side up to the model input, so a 20000x1 strip would become
    224 x 4,480,000 pixels) and, when the model input `target_size` is known, the pixels after that
    resize (413; a backstop for a raised aspect limit or a large model input).
    """
    limit = limit or max_pixels()
    current = settings.current()
    if width * height > limit:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{limit} pixels ({MAX_PIXELS_ENV})"
        )
    short, long = min(width, height), max(width, height)
    if short < 1:
        raise BadRequest(f"image is {width}x{height}: it has no pixels")
    if long / short > current.max_aspect_ratio:
        raise BadRequest(
            f"image is {width}x{height}, an aspect ratio of {long / short:.0f}:1, over the limit of "
            f"{current.max_aspect_ratio:g}:1 ({MAX_ASPECT_ENV})"
        )
    if target_size:
        resized = target_size * max(target_size, round(long * target_size / short))
        if resized > current.max_resized_pixels:
            raise PayloadTooLarge(
                f"image is {width}x{height}: scaled to the model input of {target_size} px it would be "
                f"{resized} pixels, over the limit of {current.max_resized_pixels} pixels ({MAX_RESIZED_ENV})"
            )


def decode_base64(value, where: str = "image") -> bytes:
    """Image bytes from the base64 string a JSON request carries them in (the model server's
    records, the search app's {"image": ...}); a browser's data: URL is taken as well, blanks around
    it are ignored. Anything else is a BadRequest naming `where`."""
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be a base64 string, got {type(value).__name__}")
    text = value.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadRequest(f"{where} is not valid base64: {error}") from None
    if not data:
        raise BadRequest(f"{where} is empty")
    return data


_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")


def decode_image(data: bytes, limit: int | None = None, draft_size: int | None = None,
                 target_size: int | None = None) -> Image.Image:
    """Decode `data` into an upright RGB image, or raise a 400/413 error that says why.

    `draft_size`: for JPEGs, let libjpeg decode at a reduced scale (a power of two) no smaller than
    this, which is much cheaper than decoding full size and resizing afterwards.
    `target_size`: the model's input size, for the bound on the pixels after resizing (check_size).
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
            check_size(width, height, limit, target_size or draft_size)
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
    except (PayloadTooLarge, BadRequest):
        raise
    except Image.DecompressionBombError as error:
        # Pillow's own guard (2x Image.MAX_IMAGE_PIXELS) fired before ours could: same message as ours.
        found = _BOMB_SIZE.search(str(error))
        size = f"{found.group(1)} pixels" if found else "too many pixels"
        pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise PayloadTooLarge(
            f"image is {size}, over the limit of {min(limit, pillow_limit) if pillow_limit else limit} "
            f"pixels ({MAX_PIXELS_ENV})"
        ) from None
    except UnidentifiedImageError as error:
        raise BadRequest("not a decodable image: the bytes are not in a format PIL can read") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise BadRequest(f"corrupt or truncated image: {error}") from error
    except Exception as error:  # noqa: BLE001 - a decoder bug on hostile bytes is still bad input
        raise BadRequest(f"corrupt image: {type(error).__name__}: {error}") from error
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB: apply EXIF orientation, flatten transparency onto white, map any mode to RGB."""
    try:
        # in place: without it Pillow returns a full copy even of an upright image (2x the memory).
        ImageOps.exif_transpose(image, in_place=True)
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
