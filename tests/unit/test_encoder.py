import numpy as np
import pytest
import torch

from clip_search.images import decode_image

TEXTS = [
    "red apple",
    "Arla Ecological Sour Cream, 300 g",
    "a carton of oat milk " * 40,  # far past 77 tokens: the tokenizer truncates it
    "x",
]


@pytest.fixture(scope="module")
def images(catalogue_photos):
    return [decode_image(path.read_bytes()) for path in catalogue_photos[:6]]


def test_text_embeddings_have_the_manifest_dim_and_unit_norm(test_encoder):
    vectors = test_encoder.encode_texts(TEXTS)
    assert vectors.shape == (len(TEXTS), test_encoder.manifest["embed_dim"])
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_image_embeddings_have_the_manifest_dim_and_unit_norm(test_encoder, images):
    vectors = test_encoder.encode_images(images)
    assert vectors.shape == (len(images), 64) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_a_text_batch_equals_the_texts_one_by_one(test_encoder):
    batch = test_encoder.encode_texts(TEXTS)
    single = np.concatenate([test_encoder.encode_texts([text]) for text in TEXTS])
    assert np.abs(batch - single).max() < 1e-5


def test_an_image_batch_equals_the_images_one_by_one(test_encoder, images):
    batch = test_encoder.encode_images(images)
    single = np.concatenate([test_encoder.encode_images([image]) for image in images])
    assert np.abs(batch - single).max() < 1e-5


def test_text_padded_to_the_longest_text_equals_the_full_context(test_encoder):
    trimmed = test_encoder.encode_texts(TEXTS[:2])
    assert test_encoder.tokenize(TEXTS[:2]).shape[1] < 77
    full_tokens = torch.from_numpy(test_encoder.tokenizer(TEXTS[:2]))
    assert full_tokens.shape[1] == 77
    with torch.inference_mode():
        full = test_encoder.runtime.model.encode_text(full_tokens, normalize=True).numpy()
    assert np.abs(trimmed - full).max() < 1e-5


def test_long_text_is_truncated_to_the_context(test_encoder):
    assert test_encoder.tokenize([TEXTS[2]]).shape == (1, 77)
    longer = test_encoder.encode_texts([TEXTS[2] + " and more words"])
    assert np.allclose(longer, test_encoder.encode_texts([TEXTS[2]]), atol=1e-6)


def test_empty_batches_give_empty_arrays(test_encoder):
    assert test_encoder.encode_texts([]).shape == (0, 64)
    assert test_encoder.encode_images([]).shape == (0, 64)


def test_thread_count_is_configurable(test_model_dir, monkeypatch):
    from clip_search.encoder import ClipEncoder, available_cores

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("CLIP_SEARCH_THREADS", "1")
        assert ClipEncoder.from_artifact(test_model_dir).threads == 1
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("CLIP_SEARCH_THREADS")
        assert ClipEncoder.from_artifact(test_model_dir).threads == available_cores()
    finally:
        torch.set_num_threads(before)


def test_test_model_warns_loudly(test_model_dir, caplog):
    from clip_search.encoder import ClipEncoder

    with caplog.at_level("WARNING"):
        encoder = ClipEncoder.from_artifact(test_model_dir)
    assert encoder.is_test_model
    assert "TEST MODEL" in caplog.text and "meaningless" in caplog.text


def test_unknown_runtime_is_refused(test_model_dir):
    from clip_search.encoder import ClipEncoder

    with pytest.raises(ValueError, match="unknown runtime 'nope'"):
        ClipEncoder.from_artifact(test_model_dir, runtime="nope")


# --- JPEG draft decoding (libjpeg scales by 1/2, 1/4, 1/8 while decoding) ----------------------
@pytest.fixture(scope="module")
def large_jpegs(catalogue_photos):
    """Catalogue photos as 1600x1200 JPEGs: the size of real catalogue photos, where draft pays."""
    import io

    from PIL import Image

    out = []
    for path in catalogue_photos[:6]:
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").resize((1600, 1200), Image.LANCZOS).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def _draft_scale(width, height, size):
    return max(s for s in (1, 2, 4, 8) if width // s >= size and height // s >= size)


def test_draft_decodes_large_jpegs_smaller_but_never_below_the_model_input(test_encoder, large_jpegs):
    full, draft = decode_image(large_jpegs[0]), test_encoder.decode(large_jpegs[0])
    assert full.size == (1600, 1200)
    scale = _draft_scale(1600, 1200, test_encoder.image_size)
    assert scale > 1 and draft.size == (1600 // scale, 1200 // scale) and draft.mode == "RGB"
    assert min(draft.size) >= test_encoder.image_size  # the preprocessor still only shrinks


def test_draft_embeddings_stay_within_the_accuracy_guard(test_encoder, large_jpegs):
    from clip_search.packaging.guard import IMAGE_THRESHOLD

    draft = test_encoder.encode_image_bytes(large_jpegs)
    full = test_encoder.encode_images([decode_image(data) for data in large_jpegs])
    assert not np.array_equal(draft, full)  # draft really changed the pixels
    assert np.sum(draft * full, axis=1).min() >= IMAGE_THRESHOLD


def test_draft_leaves_non_jpegs_and_small_jpegs_alone(test_encoder, catalogue_photos):
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.open(catalogue_photos[0]).resize((800, 800)).save(png, "PNG")
    assert test_encoder.decode(png.getvalue()).size == (800, 800)
    small = io.BytesIO()
    Image.open(catalogue_photos[0]).convert("RGB").resize((100, 90)).save(small, "JPEG")
    assert test_encoder.decode(small.getvalue()).size == (100, 90)


def test_draft_can_be_switched_off_for_exact_full_decodes(test_model_dir, large_jpegs, monkeypatch):
    from clip_search.encoder import ClipEncoder

    monkeypatch.setenv("CLIP_SEARCH_JPEG_DRAFT", "0")
    encoder = ClipEncoder.from_artifact(test_model_dir)
    assert encoder.draft_size is None and encoder.decode(large_jpegs[0]).size == (1600, 1200)
    np.testing.assert_array_equal(encoder.encode_image_bytes(large_jpegs[:2]),
                                  encoder.encode_images([decode_image(data) for data in large_jpegs[:2]]))
