"""Evaluation figures against a hand computation, with the tiny test model and real grocery photos.

The small case is built so that every rank is known without the model: a query is a catalogue
photo itself (or a catalogue title), which scores 1 against its own product, and duplicate products
(the same photo and title under several ids) make ties of known size. Ties count pessimistically:
a relevant product tied with n other products is at rank n + 1.
"""
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from clip_search.cli import main
from clip_search.search.evaluation import KINDS, METRICS, first_relevant_rank

# The catalogue: id -> (photo number, title). B, C, D are groups of duplicates.
GROUPS = {"A": 1, "B": 2, "C": 6, "D": 11}
TITLES = {"A": "alpha apple", "B": "bravo banana", "C": "charlie cherry", "D": "delta date"}
DISTRACTORS = 6


def _catalogue_rows(photos):
    rows = []
    for number, (group, size) in enumerate(GROUPS.items()):
        ids = [group] if size == 1 else [f"{group}{i}" for i in range(1, size + 1)]
        rows += [{"id": i, "title": TITLES[group], "image": str(photos[number])} for i in ids]
    for i in range(DISTRACTORS):
        rows.append({"id": f"X{i}", "title": f"xray item {i}", "image": str(photos[len(GROUPS) + i])})
    return rows


# (query, relevant ids, rank worked out by hand); None = no relevant product in the catalogue.
TEXT_CASES = [
    ("alpha apple", ["A"], 1),             # alone at the top
    ("bravo banana", ["B1"], 2),           # tied with its duplicate B2: pessimistic
    ("charlie cherry", [f"C{i}" for i in range(1, 7)], 1),  # ties among relevant products do not count
    ("charlie cherry", ["C1", "C6"], 5),   # ... but C2-C5, not relevant, tie ahead of them
    ("delta date", ["D11"], 11),           # tied with 10 duplicates: beyond recall@10
    ("nothing like it", ["Z-missing"], None),
]
IMAGE_CASES = [  # photo number, relevant, rank
    (0, ["A"], 1),
    (1, ["B2"], 2),
    (2, ["C6"], 6),
    (3, ["D11"], 11),
    (4, ["Z-missing", "also-missing"], None),  # X0's photo, but X0 is not relevant: unanswerable
    (len(GROUPS) + 1, ["X1", "X1"], 1),      # a relevant id listed twice counts once
]


def _by_hand(ranks):
    counted = [r for r in ranks if r is not None]
    return {"recall@1": sum(r <= 1 for r in counted) / len(counted),
            "recall@5": sum(r <= 5 for r in counted) / len(counted),
            "recall@10": sum(r <= 10 for r in counted) / len(counted),
            "mrr": sum(1 / r for r in counted) / len(counted),
            "queries": len(counted), "unanswerable": len(ranks) - len(counted)}


@pytest.fixture(scope="module")
def small_case(tmp_path_factory, catalogue_photos):
    folder = tmp_path_factory.mktemp("eval-case")
    photos = catalogue_photos[: len(GROUPS) + DISTRACTORS]
    catalogue = folder / "products.jsonl"
    catalogue.write_text("".join(json.dumps(row) + "\n" for row in _catalogue_rows(photos)))
    queries = folder / "queries.jsonl"
    lines = [{"text": text, "relevant": relevant} for text, relevant, _ in TEXT_CASES]
    lines += [{"image": str(photos[n]), "relevant": relevant} for n, relevant, _ in IMAGE_CASES]
    queries.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {"catalogue": catalogue, "queries": queries, "photos": photos}


def test_the_case_only_depends_on_identity(small_case, test_encoder):
    """The hand computation assumes that nothing but a product's own photo or title scores ~1."""
    photos = small_case["photos"]
    images = test_encoder.encode_image_bytes([p.read_bytes() for p in photos])
    texts = test_encoder.encode_texts(list(TITLES.values()) + [f"xray item {i}" for i in range(DISTRACTORS)])
    image_scores = images @ images.T
    text_scores = np.maximum(texts @ texts.T, texts @ images.T)  # title or photo, the better
    for scores in (image_scores, text_scores):
        off_diagonal = scores[~np.eye(len(scores), dtype=bool)]
        assert off_diagonal.max() < 1 - 1e-3 and np.diag(scores).min() > 1 - 1e-5


def _eval(*args, expect=0):
    result = CliRunner().invoke(main, ["eval", *map(str, args)])
    assert result.exit_code == expect, result.output
    return result.output


def test_report_figures_equal_the_hand_computation(small_case, test_model_tar, tmp_path):
    report_path = tmp_path / "eval.json"
    out = _eval("--catalogue", small_case["catalogue"], "--queries", small_case["queries"], "--model", test_model_tar,
                "--report", report_path)
    report = json.loads(report_path.read_text())
    expected = {"text": _by_hand([rank for *_, rank in TEXT_CASES]),
                "image": _by_hand([rank for *_, rank in IMAGE_CASES])}
    assert set(report["metrics"]) == set(KINDS)
    for kind in KINDS:
        figures = report["metrics"][kind]
        assert figures["queries"] == expected[kind]["queries"] and figures["unanswerable"] == 1
        for metric in METRICS:
            assert figures[metric] == pytest.approx(expected[kind][metric], abs=1e-6), (kind, metric)
    # image: ranks 1, 2, 6, 11, 1 of 5 -> recall@1 0.4, @5 0.6, @10 0.8, MRR 0.5515...
    assert report["metrics"]["image"]["recall@10"] == pytest.approx(0.8)

    from clip_search.files import sha256_file

    assert report["model_id"] == "clip-search-tiny/random" and report["test_model"] is True
    assert report["artifact_sha256"] == sha256_file(test_model_tar)
    assert report["runtime"] == "torch"
    assert report["catalogue"]["products"] == 1 + 2 + 6 + 11 + DISTRACTORS == report["catalogue"]["indexed"]
    assert len(report["catalogue"]["sha256"]) == 64 and len(report["query_set"]["sha256"]) == 64
    assert report["query_set"] | {"location": None} == {"location": None, "sha256": report["query_set"]["sha256"],
                                                          "queries": 12, "text": 6, "image": 6}
    assert report["ranking"]["ties"] == "pessimistic"
    assert "MEANINGLESS" in report["note"] and "MEANINGLESS" in out
    assert "left out (no relevant product in the catalogue): 1 text query, 1 image query" in out


def test_hashes_follow_the_data_not_the_paths(small_case, test_model_tar, tmp_path):
    """The catalogue hash covers image bytes: a changed photo behind the same path changes it."""
    folder = tmp_path / "copy"
    shutil.copytree(small_case["catalogue"].parent, folder)
    rows = [json.loads(line) for line in (folder / "products.jsonl").read_text().splitlines()]
    photo = folder / "photo.jpg"
    shutil.copy(small_case["photos"][-1], photo)
    rows[-1]["image"] = str(photo)
    (folder / "products.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))

    def hashes():
        _eval("--catalogue", folder / "products.jsonl", "--queries", small_case["queries"], "--model", test_model_tar,
              "--report", tmp_path / "r.json")
        report = json.loads((tmp_path / "r.json").read_text())
        return report["catalogue"]["sha256"], report["query_set"]["sha256"]

    before = hashes()
    shutil.copy(small_case["photos"][0], photo)  # same path, other photo
    after = hashes()
    assert before[0] != after[0] and before[1] == after[1]


def test_rank_rules():
    hits = [("x", 0.9), ("x", 0.95), ("y", 0.8), ("r", 0.8 - 1e-7), ("s", 0.5)]
    assert first_relevant_rank(hits, {"r"}) == 3       # x counted once; y ties with r: ahead of it
    assert first_relevant_rank(hits, {"r", "y"}) == 2  # the better relevant product counts
    assert first_relevant_rank(hits, {"s"}) == 4
    assert first_relevant_rank(hits, {"missing"}) is None
    assert first_relevant_rank([("r", 0.7), ("y", 0.7 - 1e-3)], {"r"}) == 1  # 1e-3 apart: not a tie


def test_index_mode_counts_the_same(small_case, test_model_tar, tmp_path):
    """`--index` over an index built from the same catalogue gives the same figures."""
    index = tmp_path / "index"
    result = CliRunner().invoke(main, ["index", "--catalogue", str(small_case["catalogue"]), "--index", str(index),
                                       "--model", str(test_model_tar)])
    assert result.exit_code == 0, result.output
    _eval("--index", index, "--queries", small_case["queries"], "--report", tmp_path / "index.json")
    _eval("--catalogue", small_case["catalogue"], "--queries", small_case["queries"], "--model", test_model_tar,
          "--report", tmp_path / "catalogue.json")
    from_index = json.loads((tmp_path / "index.json").read_text())
    from_catalogue = json.loads((tmp_path / "catalogue.json").read_text())
    assert from_index["metrics"] == from_catalogue["metrics"]
    assert from_index["catalogue"] == {"index": str(index), "sha256": None, "products": 26}


def test_compare_runtime_torch_reports_both_and_the_deltas(small_case, int8_model_dir, test_model_tar, tmp_path):
    """int8_model_dir: the session's int8 test model (tests/conftest.py), its fp32 weights kept."""
    args = ["--catalogue", small_case["catalogue"], "--queries", small_case["queries"]]
    out = _eval(*args, "--model", int8_model_dir, "--compare-runtime", "torch", "--report", tmp_path / "both.json")
    _eval(*args, "--model", test_model_tar, "--report", tmp_path / "torch.json")
    both = json.loads((tmp_path / "both.json").read_text())
    torch_only = json.loads((tmp_path / "torch.json").read_text())
    assert both["runtime"] == "onnx-int8" and both["compare"]["runtime"] == "torch"
    assert both["compare"]["metrics"] == torch_only["metrics"]  # the same weights, fp32
    for kind in KINDS:
        for metric in METRICS:
            assert both["compare"]["delta"][kind][metric] == pytest.approx(
                both["metrics"][kind][metric] - torch_only["metrics"][kind][metric], abs=1e-6)
    assert "onnx-int8" in out and "delta" in out and "image -> product  recall@10" in out


def test_compare_runtime_needs_the_fp32_weights(small_case, test_model_dir, tmp_path):
    stripped = tmp_path / "no-weights"
    shutil.copytree(test_model_dir, stripped, ignore=shutil.ignore_patterns("open_clip_model.safetensors", "code"))
    out = _eval("--catalogue", small_case["catalogue"], "--queries", small_case["queries"], "--model", stripped,
                "--compare-runtime", "torch", expect=1)
    assert "Error: --compare-runtime torch needs the fp32 weights (open_clip_model.safetensors)" in out
    assert "--keep-weights" in out and len(out.strip().splitlines()) == 1


def test_usage_errors(small_case, tmp_path):
    out = _eval("--queries", small_case["queries"], expect=2)
    assert "give --catalogue FILE" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "apple"}\n')
    out = _eval("--catalogue", small_case["catalogue"], "--queries", bad, "--model", "x.tar.gz", expect=1)
    assert f"{bad}:1: query without `relevant` product ids" in out
    out = _eval("--catalogue", small_case["catalogue"], "--queries", small_case["queries"], "--model",
                tmp_path / "missing.tar.gz", expect=1)
    assert out.strip() == f"Error: model artifact not found: {tmp_path / 'missing.tar.gz'}"
    out = _eval("--index", tmp_path / "idx", "--queries", small_case["queries"], "--compare-runtime", "torch", expect=2)
    assert "--compare-runtime needs --catalogue" in out
