"""The numpy/Pillow preprocessing equals open_clip's own eval transform on real photos."""
import numpy as np
import pytest

from clip_search.images import decode_image
from clip_search.preprocess import ImagePreprocess

# Measured: 0.0 (bit-identical float32) for every configuration and photo below.
TOLERANCE = 1e-6

CONFIGS = [
    {"size": 224},
    {"size": 64},
    {"size": 224, "interpolation": "bilinear"},
    {"size": 224, "resize_mode": "longest"},
    {"size": 224, "resize_mode": "longest", "fill_color": 128},
    {"size": 224, "resize_mode": "squash"},
    {"size": [224, 160]},
    {"size": [160, 224], "resize_mode": "longest"},
    {"size": 256, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"},
]


@pytest.fixture(scope="module")
def photos(catalogue_photos, store_photos):
    images = [decode_image(path.read_bytes()) for path in catalogue_photos[:3] + store_photos[:3]]
    base = images[0]
    # Sizes and aspect ratios a catalogue has: wide banners, tall bottles, exact, off-by-one, tiny.
    return images + [base.resize(size) for size in ((300, 90), (50, 400), (224, 224), (225, 224),
                                                    (20, 30), (1601, 999), (64, 65))]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda cfg: ",".join(f"{k}={v}" for k, v in cfg.items()))
def test_equals_open_clip_transform(photos, cfg):
    from clip_search.packaging.open_clip_io import build_preprocess

    ours, reference = ImagePreprocess(cfg), build_preprocess(cfg)
    for image in photos:
        expected = reference(image).numpy()
        actual = ours(image)
        assert actual.dtype == np.float32 and actual.shape == expected.shape
        assert np.abs(actual - expected).max() <= TOLERANCE, image.size


def test_non_rgb_images_are_converted_like_open_clip(photos):
    from clip_search.packaging.open_clip_io import build_preprocess

    grey = photos[0].convert("L")
    np.testing.assert_allclose(ImagePreprocess({"size": 64})(grey), build_preprocess({"size": 64})(grey).numpy(),
                               atol=TOLERANCE)


def test_batch_is_contiguous_float32(photos):
    batch = ImagePreprocess({"size": 64}).batch(photos[:3])
    assert batch.shape == (3, 3, 64, 64) and batch.dtype == np.float32 and batch.flags.c_contiguous


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="resize_mode"):
        ImagePreprocess({"resize_mode": "stretch"})
    with pytest.raises(ValueError, match="interpolation"):
        ImagePreprocess({"interpolation": "lanczos"})
