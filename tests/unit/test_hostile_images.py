"""Images built to make the decoder or the resize do unbounded work are refused from the header."""
import io
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from clip_search.errors import BadRequest, PayloadTooLarge
from clip_search.images import decode_image


def png(width: int, height: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 0).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def test_a_strip_is_refused_by_the_aspect_ratio_limit_not_resized_to_gigabytes(test_encoder):
    data = png(20000, 1)
    assert len(data) < 1000
    with pytest.raises(BadRequest) as caught:
        test_encoder.decode(data)
    assert "20000x1" in caught.value.message and "CLIP_SEARCH_MAX_ASPECT_RATIO" in caught.value.message
    assert caught.value.status_code == 400


def test_the_aspect_ratio_limit_is_a_variable(monkeypatch, test_encoder):
    monkeypatch.setenv("CLIP_SEARCH_MAX_ASPECT_RATIO", "2")
    with pytest.raises(BadRequest, match="3:1"):
        test_encoder.decode(png(300, 100))
    monkeypatch.setenv("CLIP_SEARCH_MAX_ASPECT_RATIO", "3")
    assert test_encoder.decode(png(300, 100)).size == (300, 100)


def test_pixels_after_the_resize_are_bounded_with_their_own_413(monkeypatch, test_encoder):
    size = test_encoder.image_size
    monkeypatch.setenv("CLIP_SEARCH_MAX_RESIZED_PIXELS", str(size * size * 5))
    # 10:1 passes the aspect limit, but its short side scaled up to the model input is 10 squares.
    with pytest.raises(PayloadTooLarge) as caught:
        test_encoder.decode(png(100, 10))
    assert "CLIP_SEARCH_MAX_RESIZED_PIXELS" in caught.value.message
    assert caught.value.status_code == 413
    assert test_encoder.decode(png(40, 10)).size == (40, 10)  # 4 squares: under the bound


def test_pillows_own_bomb_guard_answers_with_the_projects_message():
    data = png(20000, 20000, "1")  # 400 M pixels: over Pillow's 2 x 89 M, which fires in open()
    with pytest.raises(PayloadTooLarge) as caught:
        decode_image(data)
    assert "CLIP_SEARCH_MAX_IMAGE_PIXELS" in caught.value.message
    assert "could be decompression bomb" not in caught.value.message


def test_a_normal_strip_still_encodes(test_encoder):
    assert test_encoder.encode_image_bytes([png(200, 20, "RGB")]).shape == (1, test_encoder.dim)


# One process decodes the photo, then the strip, then the big image, printing its peak RSS after
# each: ru_maxrss only grows, so each figure is the peak of everything up to that image, and a
# decode that blows up memory still shows in its own figure. (One fresh interpreter instead of
# three: each one imports the encoder's runtime, which is most of the test's time.)
PEAK = textwrap.dedent("""
    import resource, sys
    from clip_search.encoder import ClipEncoder
    encoder = ClipEncoder.from_artifact(sys.argv[1])
    encoder.encode_texts(["warm up"])
    for path in sys.argv[2:]:
        encoder.encode_image_bytes([open(path, "rb").read()])
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
""")


def _peaks_kb(model_dir, *image_paths) -> list[int]:
    done = subprocess.run([sys.executable, "-c", PEAK, str(model_dir), *map(str, image_paths)],
                          capture_output=True, text=True, timeout=300, check=True)
    return [int(line) for line in done.stdout.split()[-len(image_paths):]]


def test_peak_memory_of_the_largest_image_that_passes_is_under_twice_a_photo(tmp_path, test_model_dir,
                                                                             store_photos):
    big = tmp_path / "big.png"
    Image.new("RGB", (7000, 7000), (200, 30, 30)).save(big)  # 49 M pixels: just under the limit
    strip = tmp_path / "strip.png"
    Image.new("RGB", (20, 1), (200, 30, 30)).save(strip)  # the widest strip that passes
    photo, after_strip, after_big = _peaks_kb(test_model_dir, store_photos[0], strip, big)
    assert after_strip < 1.2 * photo
    assert after_big < 2 * photo
