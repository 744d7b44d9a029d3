"""Build time: the artifact's tokenizer.json, from open_clip's own BPE vocabulary, proven equal.

`export_tokenizer(model_dir)` reads open_clip's tokenizer for the artifact (its `SimpleTokenizer`:
`bpe_simple_vocab_16e6.txt.gz`), writes the same vocabulary and merges as a Hugging Face
`tokenizers` file (byte-level BPE, `</w>` end-of-word suffix, open_clip's split regex,
<start_of_text>/<end_of_text>), then checks that `clip_search.tokenizer.ClipTokenizer` gives open_clip's
token ids on `check_texts()`: hand-picked hard cases, the calibration titles and seeded random
text from all of Unicode. One differing id raises `TokenizerMismatchError` and no artifact is written.

Models whose text tower uses another tokenizer (a Hugging Face one) get no tokenizer.json: the
encoder then uses open_clip's tokenizer (the `package` extra).
"""
import gzip
import logging
import random
import unicodedata
from pathlib import Path

import numpy as np

from clip_search.packaging.guard import AccuracyGuardError
from clip_search.tokenizer import CONTEXT_LENGTH, END_OF_TEXT, START_OF_TEXT, TOKENIZER_FILE, ClipTokenizer

logger = logging.getLogger(__name__)

# open_clip's SimpleTokenizer pattern, minus its leading special-token alternatives (added tokens
# here); open_clip compiles it with re.IGNORECASE, which only matters for the contractions ('ſ
# folds to 's) since the text is lower-cased before. U+0345 (combining ypogegrammeni, Mn) is the
# one assigned character where the two regex engines differ (found by tokenising "x" + c + "x"
# for every assigned code point): Python's `regex` matches it with no alternative under IGNORECASE
# (it case-folds to iota, so the negated class leaves it out, yet it is no letter) and open_clip
# drops it; so it is left out of the punctuation class here too.
SPLIT_PATTERN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}\u0345]+"
RANDOM_TEXTS = 2000
SEED = 20261201

HARD_CASES = [
    "", " ", "   \t\n  ", "\u3000\u00a0\u2003", "x", "A", "red apple", "Red Running SHOES",
    "Arla Ecological Sour Cream, 300 g", "oat milk " * 60, "a" * 500, "supercalifragilisticexpialidocious" * 8,
    "crème brûlée", "Crème Brûlée façade naïve café", "Ångström Öl Straße Łódź ČŘŽ", "ǅ ǈ ǋ ǲ İstanbul ΣΊΣΥΦΟΣ",
    "東京の寿司 🍣 とラーメン", "北京烤鸭 ", "김치찌개 한국 음식", "Москва молоко 2.5%", "حليب طازج", "שלום עולם",
    "हिन्दी दूध", "ไทย นม", "🍎🍏🍐🍊🍋🍌", "👩‍👩‍👧‍👦 family pack", "🇸🇪 swedish flag", "❤️‍🔥 hot deal",
    "caf\u00e9 vs cafe\u0301", "ﬁne ﬂour ﬀ", "½ litre, ¾ cup, ² ³", "①②③ ⅣⅫ", "٣٤٥ ۷۸۹ १२३",
    "Tom &amp; Jerry", "&lt;b&gt;bold&lt;/b&gt;", "&amp;amp; double", "&#39;quoted&#39; &#x1F600;", "&nbsp;&copy;",
    "schÃ¶n mojibake Ã©tÃ©", "â€œsmart quotesâ€\u009d", "donâ€™t", "ZoÃ« & Ã…ngstrÃ¶m",
    "!!!???...,,,;;;", "--==++**&&^^%%$$##@@", "...hello...world...", "(((nested)))[[[x]]]{{{y}}}", "a-b_c.d/e\\f",
    "I'm you're we've she'll he'd it's don't", "IT'S DON'T WE'VE", "'s 't 're", "rock'n'roll", "’s curly ’t",
    "12345678901234567890", "3.14159 2,718 1e10 0x1F", "ViT-B/32 @ 224px", "100% organic, 0% fat!", "tel: +46-8-123 45 67",
    "<start_of_text>", "<end_of_text>", "milk <end_of_text> more", "<START_OF_TEXT> caps",
    "tab\tseparated\tvalues", "line\nbreaks\r\nand\rreturns", "zero\u200bwidth\u200cjoin\u200d",
    "\u0000null\u0001control\u007f", "\ufeffbom at start", "emoji🙂mid🙂word", "mix中文and English混合",
    "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇ zalgo", "\U0001d573\U0001d586\U0001d593 math bold", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "\u202eright-to-left override", "combining a\u0301\u0300\u0302", "surrogate-free \U00010348 gothic",
    " ".join(["word"] * 100), "🍣" * 100, "東" * 200,
]


class TokenizerMismatchError(AccuracyGuardError):
    """The exported tokenizer.json does not give open_clip's token ids: no artifact is written."""


def simple_tokenizer_of(open_clip_tokenizer):
    """open_clip's SimpleTokenizer when it is one we can export exactly ("lower" clean-up, plain
    truncation), else None."""
    from open_clip.tokenizer import SimpleTokenizer, _clean_lower

    if type(open_clip_tokenizer) is not SimpleTokenizer:
        return None
    if open_clip_tokenizer.clean_fn is not _clean_lower or open_clip_tokenizer.reduction_fn is not None:
        return None
    if set(open_clip_tokenizer.all_special_ids) != {open_clip_tokenizer.sot_token_id, open_clip_tokenizer.eot_token_id}:
        return None  # additional special tokens: not the stock CLIP vocabulary
    return open_clip_tokenizer


def build_tokenizer_json(path: Path, bpe_path: str | None = None, context_length: int = CONTEXT_LENGTH) -> Path:
    """Write open_clip's BPE vocabulary (`bpe_simple_vocab_16e6.txt.gz`) as a tokenizers file."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    # Exactly SimpleTokenizer.__init__'s vocabulary: bytes, bytes + </w>, merges, then the specials.
    merges = gzip.open(bpe_path or default_bpe()).read().decode("utf-8").split("\n")
    merges = [tuple(merge.split()) for merge in merges[1:49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [token + "</w>" for token in vocab]
    vocab += ["".join(merge) for merge in merges]
    vocab += [START_OF_TEXT, END_OF_TEXT]
    tokenizer = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(vocab)}, merges=merges,
                                     continuing_subword_prefix="", end_of_word_suffix="</w>", fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.BPEDecoder(suffix="</w>")
    # Typed literally (after lower-casing), open_clip's regex matches these as the special tokens too.
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                  for token in (START_OF_TEXT, END_OF_TEXT)])
    # Not applied by `tokenizers` (ClipTokenizer frames and truncates itself): records the context.
    tokenizer.enable_truncation(max_length=context_length)
    tokenizer.save(str(path))
    return Path(path)


def random_texts(count: int = RANDOM_TEXTS, seed: int = SEED) -> list[str]:
    """Seeded random strings over all of Unicode (weighted to the planes text comes from)."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0xDFF), (0x1E00, 0x1FFF),
              (0x2000, 0x2BFF), (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF),
              (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF), (0x0, 0x1F)]
    texts = []
    for _ in range(count):
        chars = []
        for _ in range(rng.randint(0, 40)):
            low, high = rng.choice(ranges)
            code = rng.randint(low, high)
            if 0xD800 <= code <= 0xDFFF or unicodedata.category(chr(code)) == "Cn":
                # Unassigned code points: `regex` (open_clip's) may already class some as letters
                # from a newer Unicode than the tokenizer's Oniguruma; no real text has them.
                code = 0x20
            chars.append(" " if rng.random() < 0.15 else chr(code))
        texts.append("".join(chars))
    return texts


def check_texts(extra: list[str] = ()) -> list[str]:
    return [*HARD_CASES, *extra, *random_texts()]


def mismatches(ours: ClipTokenizer, reference, texts: list[str], limit: int = 5) -> list[str]:
    """The first `limit` texts whose ids differ, described; empty when every id is equal."""
    found = []
    for start in range(0, len(texts), 256):
        chunk = texts[start:start + 256]
        expected = reference(chunk).numpy().astype(np.int64)
        actual = ours(chunk)
        if actual.shape != expected.shape:
            return [f"shape {actual.shape} != open_clip's {expected.shape}"]
        for i in np.flatnonzero((actual != expected).any(axis=1)):
            found.append(f"{chunk[i]!r}: {actual[i][actual[i] > 0].tolist()} != {expected[i][expected[i] > 0].tolist()}")
            if len(found) >= limit:
                return found
    return found


def export_tokenizer(model_dir: Path, extra_texts: list[str] = ()) -> Path:
    """Write tokenizer.json into `model_dir` and prove it.

    Raises TokenizerMismatchError (and removes the file) when one id differs from open_clip's, or
    when the model's tokenizer is not open_clip's CLIP BPE: the run time tokenises with
    tokenizer.json alone, so such a model cannot be served."""
    from clip_search.packaging.open_clip_io import build_tokenizer

    reference = simple_tokenizer_of(build_tokenizer(model_dir))
    if reference is None:
        raise TokenizerMismatchError(f"this model's tokenizer is not open_clip's CLIP BPE, and clip-search's run time "
                                     f"tokenises with a CLIP BPE {TOKENIZER_FILE} only: no artifact is written")
    path = build_tokenizer_json(Path(model_dir) / TOKENIZER_FILE, context_length=reference.context_length)
    texts = check_texts(list(extra_texts))
    wrong = mismatches(ClipTokenizer(path), reference, texts)
    if wrong:
        path.unlink()
        raise TokenizerMismatchError(f"{TOKENIZER_FILE} does not give open_clip's token ids for "
                                     f"{len(wrong)}+ of {len(texts)} texts, e.g. " + "; ".join(wrong))
    logger.info("%s gives open_clip's token ids on %d texts", TOKENIZER_FILE, len(texts))
    return path
