"""What `clip-search eval` and the publish gate read: the query file (each malformed line named by
file and line number, image paths relative to the file) and an evaluation report (refused unless
it has every figure per query kind); and the recall / MRR arithmetic on hand-made ranks."""
import json

import pytest

from clip_search.search.errors import CatalogueError, SearchError
from clip_search.search.evaluation import Metrics, format_table, read_queries, read_report


def test_queries_text_image_relative_and_absolute_paths(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    path = folder / "queries.jsonl"
    path.write_text("\n".join([
        json.dumps({"text": "red apple", "relevant": ["p1", 2]}),
        "",
        "   ",
        json.dumps({"image": "photos/kiwi.jpg", "relevant": "p3"}),
        json.dumps({"image": "/abs/pear.jpg", "relevant": ["p4"]}),
        json.dumps({"image": "s3://bucket/q.jpg", "relevant": ["p5"]}),
    ]) + "\n")
    queries = read_queries(path)
    assert [(q.kind, q.value, q.relevant) for q in queries] == [
        ("text", "red apple", {"p1", "2"}),
        ("image", str(folder / "photos/kiwi.jpg"), {"p3"}),  # relative to the query file, not the cwd
        ("image", "/abs/pear.jpg", {"p4"}),
        ("image", "s3://bucket/q.jpg", {"p5"}),
    ]


@pytest.mark.parametrize("line, problem", [
    ('{"text": "apple", "relevant": ["p1"]', "not valid JSON ("),
    ('["apple", "p1"]', "expected a JSON object per line"),
    ('{"image": 7, "relevant": ["p1"]}', "`image` must be a non-empty string"),
    ('{"text": "apple", "relevant": []}', "query without `relevant` product ids"),
    ('{"title": "apple", "relevant": ["p1"]}', "a query needs `text` or `image`"),
])
def test_a_bad_query_line_is_named_by_file_and_line(tmp_path, line, problem):
    path = tmp_path / "queries.jsonl"
    path.write_text(json.dumps({"text": "fine", "relevant": ["p0"]}) + "\n\n" + line + "\n")
    with pytest.raises(CatalogueError) as error:
        read_queries(path)
    assert str(error.value).startswith(f"{path}:3: {problem}")


def test_recall_and_mrr_by_hand():
    metrics = Metrics("text")
    for rank in (1, 3, 7, None, 12):
        metrics.add(rank)
    assert metrics.queries == 5
    assert metrics.at(1) == pytest.approx(1 / 5) and metrics.at(5) == pytest.approx(2 / 5)
    assert metrics.at(10) == pytest.approx(3 / 5)
    assert metrics.mrr == pytest.approx((1 + 1 / 3 + 1 / 7 + 1 / 12) / 5)
    assert metrics.to_json() == {"recall@1": 0.2, "recall@5": 0.4, "recall@10": 0.6,
                                 "mrr": round((1 + 1 / 3 + 1 / 7 + 1 / 12) / 5, 6), "queries": 5, "unanswerable": 0}


def test_a_kind_without_queries_has_null_figures():
    assert Metrics("image").to_json() == {"recall@1": None, "recall@5": None, "recall@10": None, "mrr": None,
                                          "queries": 0, "unanswerable": 0}


def test_the_test_models_table_says_it_is_meaningless():
    metrics = Metrics("text")
    metrics.add(1)
    metrics.add(None)
    table = format_table({"text": metrics}, test_model=True).splitlines()
    assert table[0].split() == ["queries", "recall@1", "recall@5", "recall@10", "mrr"]
    assert table[1].split() == ["text", "->", "product", "2", "0.500", "0.500", "0.500", "0.500"]
    assert table[2].startswith("TEST MODEL (tiny, random weights): these figures are MEANINGLESS")
    assert "MEANINGLESS" not in format_table({"text": metrics})


REPORT = {"metrics": {"text": {"recall@1": 0.5, "recall@5": 0.75, "recall@10": 1.0, "mrr": 0.6, "queries": 4}}}


def test_a_report_reads_from_its_json_text_or_its_file(tmp_path):
    assert read_report(json.dumps(REPORT)) == REPORT
    assert read_report("  \n" + json.dumps(REPORT)) == REPORT
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(REPORT), encoding="utf-8")
    assert read_report(path) == REPORT
    assert read_report(str(path)) == REPORT


@pytest.mark.parametrize("text, problem", [
    ("{not json", "evaluation report is not JSON: "),
    ("{}", "not a clip-search evaluation report"),
    ('{"metrics": {}}', "not a clip-search evaluation report"),
    ('{"metrics": {"text": {"recall@1": 0.5, "recall@5": 0.7, "recall@10": 0.9}}}', "not a clip-search evaluation report"),
    ('{"metrics": {"text": [0.5]}}', "not a clip-search evaluation report"),
])
def test_a_report_without_every_figure_is_refused(text, problem):
    with pytest.raises(SearchError) as error:
        read_report(text)
    assert str(error.value).startswith(problem)
    if problem.startswith("not a"):
        assert "recall@1, recall@5, recall@10, mrr" in str(error.value)
