"""CLIP tokenisation without torch: Hugging Face `tokenizers` reading the artifact's tokenizer.json.

The tokenizer.json is written at packaging time from open_clip's own BPE vocabulary
(`clip_search.packaging.tokenizer_export`), and packaging refuses the artifact unless its ids equal
open_clip's on a large set of texts. Here we only apply it, as open_clip's `SimpleTokenizer` does:

    clean-up  ftfy.fix_text, html.unescape twice, whitespace collapsed, lower-case (open_clip's
              "lower" clean function; done in Python, before `tokenizers`)
    split     open_clip's regex (contractions, letter runs, single digits, punctuation runs)
    BPE       byte-level, `</w>` marks the end of a word
    frame     <start_of_text> ids <end_of_text>, truncated to the context (77) with the
              end-of-text kept last, zero padding: int64 (n, 77), exactly open_clip's output
"""
import html
from pathlib import Path

import numpy as np

from clip_search.errors import ModelLoadError

TOKENIZER_FILE = "tokenizer.json"
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
CONTEXT_LENGTH = 77


def clean(text: str) -> str:
    """open_clip's `_clean_lower`: basic_clean, then whitespace_clean, then lower()."""
    if not (text.isascii() and text.isprintable() and "&" not in text):
        # ftfy leaves printable ASCII without "&" as it is (tests/unit/test_tokenizer.py holds it to
        # that), and most queries are such text: its import (~0.1 s of a `clip-search search`)
        # waits for a text it could change.
        import ftfy

        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """Texts -> int64 token ids shaped (n, context_length), like open_clip's tokenizer (a tensor there)."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model artifact is missing {TOKENIZER_FILE} (looked for {path})")
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
            # The loaded tokenizer's own copy of the file's "truncation": parsing the 3.6 MB file
            # again for it cost ~0.06 s of every `clip-search search`.
            extra = self._tokenizer.truncation or {}
        except Exception as error:  # noqa: BLE001 - tokenizers raises its own Exception type
            raise ModelLoadError(f"model artifact file {path} is not a readable tokenizer: {error}") from error
        self.context_length = int(extra.get("max_length") or CONTEXT_LENGTH)
        self.sot_token_id = self._tokenizer.token_to_id(START_OF_TEXT)
        self.eot_token_id = self._tokenizer.token_to_id(END_OF_TEXT)
        if self.sot_token_id is None or self.eot_token_id is None:
            raise ModelLoadError(f"{path} has no {START_OF_TEXT}/{END_OF_TEXT} tokens: not a CLIP tokenizer")
        # Framing and truncation are ours (below), so the library only splits and merges.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> "ClipTokenizer":
        return cls(Path(model_dir) / TOKENIZER_FILE)

    def encode(self, text: str) -> list[int]:
        """The BPE ids of one text, without start/end tokens (open_clip's `SimpleTokenizer.encode`)."""
        return self._tokenizer.encode(clean(text), add_special_tokens=False).ids

    def __call__(self, texts, context_length: int | None = None) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        context_length = context_length or self.context_length
        encodings = self._tokenizer.encode_batch([clean(text) for text in texts], add_special_tokens=False)
        result = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, encoding in zip(result, encodings, strict=True):
            ids = [self.sot_token_id, *encoding.ids, self.eot_token_id]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot_token_id  # truncation keeps the end-of-text token last
            row[:len(ids)] = ids
        return result
