"""ClipTokenizer's smaller contracts against open_clip's own SimpleTokenizer: `encode` (ids without
framing), one string as one row, a given context length; and a tokenizer.json that is not a CLIP
one is refused at load, naming the file."""
import numpy as np
import pytest

from clip_search.errors import ModelLoadError
from clip_search.tokenizer import ClipTokenizer

TEXTS = ["oat milk", "Äpfel, grüne  & rote!", "a carton of ORANGE juice 1.5l", ""]


@pytest.fixture(scope="module")
def reference():
    from clip_search.packaging.torchvision_compat import import_open_clip

    return import_open_clip().tokenizer.SimpleTokenizer()


@pytest.fixture(scope="module")
def tokenizer(test_model_dir):
    return ClipTokenizer.from_model_dir(test_model_dir)


@pytest.mark.parametrize("text", TEXTS)
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
