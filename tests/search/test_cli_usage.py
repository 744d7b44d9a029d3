"""Usage errors and exit codes of `clip-search index` / `search`, through the real CLI (click's runner
in-process, the packaged test model, the embedded index). One `Error: ...` line naming what was wrong
and exit status 2 for usage, 1 for a run that indexed nothing."""
import json

import pytest
from click.testing import CliRunner

from clip_search.cli import main
from clip_search.demo_data import GROCERY

PRODUCTS = [json.loads(line) for line in (GROCERY / "products.jsonl").read_text().splitlines()[:4]]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def small_catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("usage")
    path = root / "products.jsonl"
    path.write_text("".join(json.dumps({**p, "image": str(GROCERY / p["image"])}) + "\n" for p in PRODUCTS))
    return path


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, small_catalogue, test_model_tar):
    location = tmp_path_factory.mktemp("usage-index") / "index"
    result = run("index", "--catalogue", small_catalogue, "--index", location, "--model", test_model_tar)
    assert result.exit_code == 0, result.output
    assert "indexed 4 of 4 products" in result.output
    return location


# --- search ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [[], ["apple", "--image", GROCERY / "images" / "Kiwi.jpg"]])
def test_search_needs_exactly_one_of_query_and_image(small_index, extra):
    result = run("search", "--index", small_index, *extra)
    assert result.exit_code == 2
    assert error_line(result) == "Error: give a text QUERY or --image PATH (one of them)"


def test_hybrid_is_refused_for_images(small_index):
    result = run("search", "--index", small_index, "--image", GROCERY / "images" / "Kiwi.jpg", "--hybrid")
    assert result.exit_code == 2
    assert error_line(result) == "Error: --hybrid is a text search: give a QUERY, not --image"


def test_hybrid_text_search_on_the_embedded_index_finds_the_title(small_index):
    # The test model's vectors are random: the keyword half of the fusion is what finds it.
    result = run("search", "--index", small_index, "Granny Smith Apple", "--hybrid", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("["):])[0]["id"] == "Granny-Smith"


def test_hybrid_on_pgvector_is_refused_by_the_backend_not_run_without_keywords(small_catalogue, test_model_tar,
                                                                              pg_dsn, pg_index_method):
    location = f"{pg_dsn}?table=usage_hybrid&index_method={pg_index_method}"
    indexed = run("index", "--catalogue", small_catalogue, "--index", location, "--model", test_model_tar)
    assert indexed.exit_code == 0, indexed.output
    try:
        plain = run("search", "--index", location, "Granny Smith Apple", "--json")
        assert plain.exit_code == 0, plain.output
        result = run("search", "--index", location, "Granny Smith Apple", "--hybrid")
        assert result.exit_code == 1
        assert error_line(result) == ("Error: hybrid (keyword) search is not available on a pgvector index; use an "
                                      "embedded or OpenSearch index, or search without it")
    finally:
        from clip_search.search.index import open_index

        with open_index(location) as index:
            index.drop()


def test_the_api_form_of_a_filter_works_in_the_cli(small_index):
    def ids(spec):
        result = run("search", "--index", small_index, "apple", "--filter", spec, "--json")
        assert result.exit_code == 0, result.output
        return [hit["id"] for hit in json.loads(result.output[result.output.index("["):])]

    assert ids("class_id=1") == ids("class_id:1") == ["Granny-Smith"]  # numbers compare as strings
    assert ids("class_id:1:x") == []


@pytest.mark.parametrize("spec", ["department", "=Fruit"])
def test_a_malformed_filter_is_a_usage_error(small_index, spec):
    result = run("search", "--index", small_index, "apple", "--filter", spec)
    assert result.exit_code == 2
    assert error_line(result) == (f"Error: Invalid value for '--filter': filter {spec!r} is not of the form "
                                  "field=value (or field:value)")


def test_match_title_finds_the_exact_title_and_match_image_does_not(small_index):
    def hits(match):
        result = run("search", "--index", small_index, "Granny Smith Apple", "--match", match, "-k", "4", "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.output[result.output.index("["):])

    title, image, both = hits("title"), hits("image"), hits("both")
    # The query is the title itself: its text embedding is the indexed one, cosine 1.
    assert title[0]["id"] == "Granny-Smith" and title[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert max(hit["score"] for hit in image) < 0.999  # a text never embeds exactly like a photo
    assert both[0]["id"] == "Granny-Smith" and both[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert {hit["id"] for hit in title} == {p["id"] for p in PRODUCTS} == {hit["id"] for hit in image}
    result = run("search", "--index", small_index, "apple", "--match", "description")
    assert result.exit_code == 2 and "Invalid value for '--match'" in result.output


# --- index -------------------------------------------------------------------------------------------
def test_index_needs_exactly_one_source(tmp_path, small_catalogue, test_model_tar):
    for extra in ([], ["--catalogue", small_catalogue, "--abo-listings", tmp_path / "listings_*.json.gz"]):
        result = run("index", "--index", tmp_path / "i", "--model", test_model_tar, *extra)
        assert result.exit_code == 2, result.output
        assert error_line(result) == ("Error: give --catalogue FILE or --abo-listings GLOB "
                                      "(with --abo-images, --abo-image-root)")
    result = run("index", "--index", tmp_path / "i", "--model", test_model_tar, "--abo-listings", tmp_path / "x")
    assert result.exit_code == 2
    assert error_line(result) == "Error: --abo-listings needs --abo-images and --abo-image-root"
    result = run("index", "--index", tmp_path / "i", "--catalogue", small_catalogue)
    assert result.exit_code == 2
    assert error_line(result) == "Error: give --model or --endpoint (or --embeddings with --model-id and --no-titles)"
    assert not (tmp_path / "i").exists()  # nothing was written by a refused command


def broken_catalogue(path, n):
    path.write_text("".join(json.dumps({"id": f"p{i:02d}", "title": f"product {i}", "image": str(path.parent / f"none{i}.jpg")})
                            + "\n" for i in range(n)))
    return path


def test_all_failed_exits_1_and_lists_the_errors(tmp_path, test_model_tar):
    catalogue = broken_catalogue(tmp_path / "broken.jsonl", 3)
    result = run("index", "--catalogue", catalogue, "--index", tmp_path / "i", "--model", test_model_tar, "--no-titles")
    assert result.exit_code == 1, result.output
    assert [line for line in result.output.splitlines() if line.startswith("  not indexed: ")][0].startswith(
        "  not indexed: p00: ")
    assert sum(line.startswith("  not indexed: ") for line in result.output.splitlines()) == 3
    assert "indexed 0 of 3 products" in result.output and "3 errors)" in result.output
    assert "more" not in result.output


def test_a_long_error_list_is_cut_at_20_with_a_count(tmp_path, test_model_tar):
    catalogue = broken_catalogue(tmp_path / "broken.jsonl", 23)
    result = run("index", "--catalogue", catalogue, "--index", tmp_path / "i", "--model", test_model_tar, "--no-titles")
    assert result.exit_code == 1
    listed = [line for line in result.output.splitlines() if line.startswith("  not indexed: ")]
    assert [line.split(":")[1].strip() for line in listed] == [f"p{i:02d}" for i in range(20)]
    assert "  … and 3 more" in result.output.splitlines()
    assert "indexed 0 of 23 products" in result.output and "23 errors)" in result.output


def test_some_failed_still_exits_0(tmp_path, small_catalogue, test_model_tar):
    catalogue = tmp_path / "mixed.jsonl"
    catalogue.write_text(small_catalogue.read_text() + json.dumps(
        {"id": "gone", "title": "gone", "image": str(tmp_path / "gone.jpg")}) + "\n")
    result = run("index", "--catalogue", catalogue, "--index", tmp_path / "i", "--model", test_model_tar, "--no-titles")
    assert result.exit_code == 0, result.output
    assert "  not indexed: gone: " in result.output
    assert "indexed 4 of 5 products" in result.output and "1 errors)" in result.output
