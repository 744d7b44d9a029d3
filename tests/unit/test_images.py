import io

import numpy as np
import pytest
from PIL import Image

from clip_search.errors import BadRequest, PayloadTooLarge
from clip_search.images import decode_base64, decode_image


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def test_real_product_jpeg_decodes_to_rgb(catalogue_photos):
    data = catalogue_photos[0].read_bytes()
    image = decode_image(data)
    assert image.mode == "RGB"
    assert image.size == Image.open(io.BytesIO(data)).size


def test_transparent_cut_out_is_flattened_on_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    image = decode_image(encode(rgba, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((4, 4)) == (255, 255, 255)
    assert image.getpixel((0, 0)) == (0, 0, 255)


def test_palette_png_with_transparency_is_flattened_on_white():
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.putpixel((1, 1), 1)
    image = decode_image(encode(palette, "PNG", transparency=0))
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 1)) == (200, 10, 10)


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    image = decode_image(encode(cmyk, "JPEG", quality=95))
    red, green, blue = image.getpixel((8, 8))
    assert image.mode == "RGB" and red > 200 and green < 60 and blue < 60


def test_greyscale_and_16_bit_greyscale_become_rgb():
    grey = decode_image(encode(Image.new("L", (4, 4), 128), "PNG"))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (128, 128, 128)
    deep = Image.fromarray(np.array([[0, 65535], [32768, 65535]], dtype=np.uint16))
    image = decode_image(encode(deep, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (0, 0, 0) and image.getpixel((1, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    image = decode_image(encode(wide, "JPEG", exif=exif.tobytes()))
    assert image.size == (20, 40)


def test_webp_decodes():
    image = decode_image(encode(Image.new("RGB", (10, 10), (1, 2, 3)), "WEBP", lossless=True))
    assert image.getpixel((5, 5)) == (1, 2, 3)


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"definitely not an image", "not a decodable image"),
])
def test_undecodable_bytes_are_a_400(data, words):
    with pytest.raises(BadRequest, match=words) as caught:
        decode_image(data)
    assert caught.value.status_code == 400


def test_truncated_jpeg_is_a_400(catalogue_photos):
    data = catalogue_photos[0].read_bytes()
    with pytest.raises(BadRequest, match="corrupt or truncated") as caught:
        decode_image(data[: len(data) // 3])
    assert caught.value.status_code == 400


def test_decompression_bomb_is_a_413_before_decoding():
    # 12000 x 12000 one-bit pixels compress to a few kB but declare 144 MP.
    bomb = encode(Image.new("1", (12000, 12000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge, match="over the limit") as caught:
        decode_image(bomb)
    assert caught.value.status_code == 413


def test_pixel_limit_is_configurable(monkeypatch):
    monkeypatch.setenv("CLIP_SEARCH_MAX_IMAGE_PIXELS", "99")
    with pytest.raises(PayloadTooLarge):
        decode_image(encode(Image.new("RGB", (10, 10)), "PNG"))


def test_decode_base64_takes_plain_base64_and_data_urls():
    assert decode_base64("aGVsbG8=") == b"hello"
    assert decode_base64("  data:image/jpeg;base64,aGVsbG8=\n") == b"hello"  # a browser's data: URL, blanks around


@pytest.mark.parametrize("value, words", [
    (5, "photo must be a base64 string, got int"),
    (None, "photo must be a base64 string, got NoneType"),
    ("***", "photo is not valid base64"),
    ("aGVs bG8=", "photo is not valid base64"),  # blanks inside are not base64
    ("data:image/png;base64,QUJD,QUJD", "photo is not valid base64"),
    ("é", "photo is not valid base64"),
    ("", "photo is empty"),
    ("data:image/png;base64,", "photo is empty"),
])
def test_decode_base64_refuses_what_is_not_base64_naming_where(value, words):
    with pytest.raises(BadRequest) as raised:
        decode_base64(value, "photo")
    assert raised.value.message.startswith(words)
