"""The artifact's tokenizer.json gives open_clip's token ids, without torch at run time."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clip_search.errors import ModelLoadError
from clip_search.tokenizer import TOKENIZER_FILE, ClipTokenizer


@pytest.fixture(scope="module")
def reference():
    from clip_search.packaging.torchvision_compat import import_open_clip

    return import_open_clip().tokenizer.SimpleTokenizer()


@pytest.fixture(scope="module")
def tokenizer(test_model_dir):
    return ClipTokenizer.from_model_dir(test_model_dir)


def _open_clip(reference, texts):
    return reference(texts).numpy().astype(np.int64)


def test_the_packaged_artifact_carries_a_checksummed_tokenizer(test_model_dir):
    from clip_search.artifact import verify_artifact

    assert TOKENIZER_FILE in verify_artifact(test_model_dir)["files"]


def test_hard_cases_and_random_unicode_equal_open_clip(tokenizer, reference):
    from clip_search.packaging.tokenizer_export import check_texts

    texts = check_texts()
    assert len(texts) > 2000
    ours = tokenizer(texts)
    assert ours.dtype == np.int64 and ours.shape == (len(texts), 77)
    np.testing.assert_array_equal(ours, _open_clip(reference, texts))


def test_truncation_keeps_the_end_of_text_last_and_pads_with_zeros(tokenizer, reference):
    ids = tokenizer(["oat milk " * 60, "x", ""])
    assert ids[0, -1] == tokenizer.eot_token_id == 49407 and (ids[0] > 0).all()
    assert ids[1].tolist()[:3] == [49406, 343, 49407] and not ids[1, 3:].any()
    assert ids[2].tolist()[:2] == [49406, 49407] and not ids[2, 2:].any()
    np.testing.assert_array_equal(ids, _open_clip(reference, ["oat milk " * 60, "x", ""]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs", "Cn"]), max_size=120), min_size=1, max_size=4))
def test_any_text_equals_open_clip(tokenizer, reference, texts):
    np.testing.assert_array_equal(tokenizer(texts), _open_clip(reference, texts))


def test_a_tokenizer_that_differs_from_open_clip_refuses_the_artifact(tmp_path, monkeypatch):
    """Packaging proves the ids: a wrong tokenizer.json (here, without its merges' last half) is refused."""
    from clip_search.packaging import tokenizer_export
    from clip_search.packaging.build import package_model

    real = tokenizer_export.build_tokenizer_json

    def broken(path, *args, **kwargs):
        import json

        real(path, *args, **kwargs)
        data = json.loads(open(path).read())
        data["model"]["merges"] = data["model"]["merges"][:20000]
        open(path, "w").write(json.dumps(data))
        return path

    monkeypatch.setattr(tokenizer_export, "build_tokenizer_json", broken)
    with pytest.raises(tokenizer_export.TokenizerMismatchError, match="does not give open_clip's token ids"):
        package_model(tmp_path / "model.tar.gz", test_model=True)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_or_broken_tokenizer_file_is_a_model_load_error(tmp_path):
    from clip_search.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="missing tokenizer.json"):
        ClipTokenizer.from_model_dir(tmp_path)
    (tmp_path / TOKENIZER_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a readable tokenizer"):
        ClipTokenizer.from_model_dir(tmp_path)


def test_an_artifact_without_tokenizer_json_is_refused_with_how_to_repackage(test_model_dir, tmp_path):
    import shutil

    from clip_search.artifact import read_manifest
    from clip_search.encoder import ClipEncoder

    old = tmp_path / "model"
    shutil.copytree(test_model_dir, old)
    (old / TOKENIZER_FILE).unlink()  # as artifacts packaged before clip-search wrote one
    with pytest.raises(ModelLoadError) as error:
        ClipEncoder(old, read_manifest(old))
    assert str(error.value) == (f"{old} has no {TOKENIZER_FILE}: it was packaged by an older clip-search; "
                                "repackage it (clip-search package-model, the 'package' extra)")


# Smaller contracts: `encode` (ids without framing), one string as one row, a given context
# length; a tokenizer.json that is not a CLIP one is refused at load, naming the file.
EDGE_TEXTS = ["oat milk", "Äpfel, grüne  & rote!", "a carton of ORANGE juice 1.5l", ""]


@pytest.mark.parametrize("text", EDGE_TEXTS)
def test_encode_gives_open_clips_bpe_ids(tokenizer, reference, text):
    assert tokenizer.encode(text) == reference.encode(text)


def test_one_string_is_one_row_and_a_context_length_is_honoured(tokenizer, reference):
    np.testing.assert_array_equal(tokenizer("oat milk"), reference(["oat milk"]).numpy())
    short = tokenizer(["oat milk " * 20, "kiwi"], context_length=8)
    np.testing.assert_array_equal(short, reference(["oat milk " * 20, "kiwi"], context_length=8).numpy())
    assert short.shape == (2, 8) and short.dtype == np.int64
    assert short[0, -1] == tokenizer.eot_token_id  # truncated: end-of-text stays last


def test_a_tokenizer_without_clips_start_and_end_tokens_is_refused(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    path = tmp_path / "tokenizer.json"
    Tokenizer(WordLevel({"apple": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(path))
    with pytest.raises(ModelLoadError, match=f"^{path} has no <start_of_text>/<end_of_text> tokens: not a CLIP tokenizer$"):
        ClipTokenizer(path)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="&"), max_size=80))
def test_ftfy_leaves_printable_ascii_without_ampersands_as_it_is(text):
    """The premise of clean()'s shortcut, held against ftfy itself: the text it does not hand to
    ftfy is text that ftfy.fix_text returns unchanged."""
    import ftfy

    assert ftfy.fix_text(text) == text


def test_texts_ftfy_changes_still_go_through_it():
    from clip_search.tokenizer import clean

    # An HTML entity, mojibake, a curly quote, a control character: each needs ftfy (or html).
    assert clean("fish &amp; chips") == "fish & chips"
    assert clean("cafÃ© au lait") == "café au lait"
    assert clean("\u201cfresh\u201d milk") == '"fresh" milk'
    assert clean("oat\x00milk") == "oatmilk"
