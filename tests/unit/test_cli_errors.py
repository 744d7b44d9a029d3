"""Every CLI failure is one `Error: ...` line naming the file and what was wrong; --debug shows why."""
import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from clip_search import cli
from clip_search.cli import main
from clip_search.extras import require


def run(*args, env=None):
    return CliRunner().invoke(main, [str(arg) for arg in args], env=env)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_error(result, status: int, *needles: str):
    lines = error_lines(result)
    assert result.exit_code == status, result.output
    # Progress bars (tqdm, on stderr) may come first; the failure itself is one line, the last.
    errors = [line for line in lines if "Error" in line]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("Error: "), lines
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def corrupt_photo(tmp_path_factory, catalogue_photos):
    path = tmp_path_factory.mktemp("bad") / "broken.jpg"
    path.write_bytes(catalogue_photos[0].read_bytes()[:300])  # a truncated JPEG
    return path


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, catalogue_photos, test_model_tar):
    folder = tmp_path_factory.mktemp("idx")
    catalogue = folder / "products.jsonl"
    catalogue.write_text("".join(json.dumps({"id": f"p{i}", "title": f"product {i}", "image": str(photo)}) + "\n"
                                 for i, photo in enumerate(catalogue_photos[:3])))
    result = run("index", "--catalogue", catalogue, "--index", folder / "index", "--model", test_model_tar)
    assert result.exit_code == 0, result.output
    return folder / "index"


def test_encode_a_corrupt_photo_in_process(corrupt_photo, test_model_tar):
    result = run("encode", "--model", test_model_tar, "--image", corrupt_photo)
    assert_one_error(result, 1, str(corrupt_photo), "truncated")


def test_search_by_a_corrupt_photo(small_index, corrupt_photo):
    result = run("search", "--index", small_index, "--image", corrupt_photo)
    assert_one_error(result, 1, str(corrupt_photo), "truncated")


def test_eval_queries_with_a_corrupt_photo(small_index, corrupt_photo, tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"image": str(corrupt_photo), "relevant": ["p0"]}) + "\n")
    result = run("eval", "--index", small_index, "--queries", queries)
    assert_one_error(result, 1, str(corrupt_photo), "truncated")


def test_eval_queries_file_that_is_not_json_names_the_line(small_index, tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"text": "apple", "relevant": ["p0"]}) + "\n{broken\n")
    result = run("eval", "--index", small_index, "--queries", queries)
    assert_one_error(result, 1, f"{queries}:2")


def test_searching_an_index_that_does_not_exist_says_so(tmp_path):
    result = run("search", "--index", tmp_path / "nothing", "apple")
    assert_one_error(result, 1, "no index at", str(tmp_path / "nothing"))
    assert "--model" not in result.stderr


LATIN1 = "id,title,image\nc1,Crème brûlée,x.jpg\n".encode("latin-1")


def test_a_latin1_catalogue_is_refused_with_line_and_byte_offset(tmp_path, test_model_tar):
    catalogue = tmp_path / "products.csv"
    catalogue.write_bytes(LATIN1)
    result = run("index", "--catalogue", catalogue, "--index", tmp_path / "i", "--model", test_model_tar)
    offset = LATIN1.index("è".encode("latin-1"))
    assert_one_error(result, 1, f"{catalogue}:2", f"byte offset {offset}", "--encoding")


def test_a_latin1_catalogue_reads_with_encoding():
    import tempfile
    from pathlib import Path

    from clip_search.search.catalogue import read_catalogue

    with tempfile.TemporaryDirectory() as folder:
        catalogue = Path(folder) / "products.csv"
        catalogue.write_bytes(LATIN1)
        products = list(read_catalogue(catalogue, encoding="latin-1"))
    assert [product.title for product in products] == ["Crème brûlée"]


def test_index_encoding_flag_reads_a_latin1_catalogue(tmp_path, test_model_tar):
    catalogue = tmp_path / "products.csv"
    catalogue.write_bytes("id,title\nc1,Crème brûlée\nc2,Oat milk\n".encode("latin-1"))
    index = tmp_path / "index"
    result = run("index", "--catalogue", catalogue, "--encoding", "latin-1", "--index", index,
                 "--model", test_model_tar)
    assert result.exit_code == 0, result.output
    found = run("search", "--index", index, "Crème brûlée", "-k", "1")
    assert found.exit_code == 0, found.output
    assert "c1" in found.stdout and "Crème brûlée" in found.stdout  # the title decoded, not mojibake


def test_model_mismatch_while_indexing_names_both_models(tmp_path):
    from clip_search.search.errors import ModelMismatchError
    from clip_search.search.index import open_index

    with open_index(str(tmp_path / "index")) as index:
        index.ensure(4, "model-that-built-it")
        with pytest.raises(ModelMismatchError) as caught:
            index.ensure(8, "model-encoding-now")
    message = str(caught.value)
    assert "model-that-built-it" in message and "model-encoding-now" in message
    assert "query" not in message


@click.command("needs-extra")
def needs_extra():
    require("serve", "clip_search_no_such_module")


def test_a_missing_extra_is_one_line_and_exit_2(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "needs-extra", (f"{__name__}:needs_extra", "test"))
    result = run("needs-extra")
    assert_one_error(result, 2, "pip install 'clip-search[serve]'")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(how, tmp_path):
    args = ["search", "--index", tmp_path / "nothing", "apple"]
    result = run("--debug", *args) if how == "flag" else run(*args, env={"CLIP_SEARCH_DEBUG": "1"})
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("Error: no index at")


def test_serve_port_out_of_range_is_refused_up_front(test_model_tar):
    result = run("serve", "--model", test_model_tar, "--port", "50315")
    assert result.exit_code == 2
    assert "1-32767" in result.stderr and "Invalid port number" not in result.output


def test_serve_a_corrupt_artifact_prints_model_load_failed_and_leaves_no_temp_dir(tmp_path):
    import tarfile

    from clip_search.artifact import extract_artifact  # noqa: F401 - the format lives there
    bad = tmp_path / "model.tar.gz"
    source = tmp_path / "src"
    source.mkdir()
    (source / "manifest.json").write_text(json.dumps({"files": {"config.json": "0" * 64}, "runtime": "onnx"}))
    (source / "config.json").write_text("{}")
    with tarfile.open(bad, "w:gz") as tar:
        for path in source.iterdir():
            tar.add(path, arcname=path.name)
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = subprocess.run([sys.executable, "-m", "clip_search.cli", "serve", "--model", str(bad), "--port", "20001"],
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "TMPDIR": str(temp)})
    assert done.returncode == 1, done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("MODEL LOAD FAILED: ")]
    assert failed and str(bad) in failed[0] and "corrupt" in failed[0], done.stderr
    assert "Traceback" not in done.stderr
    assert list(temp.iterdir()) == []


def test_package_model_warns_once_and_third_party_hints_are_silent(tmp_path):
    done = subprocess.run([sys.executable, "-m", "clip_search.cli", "package-model", "--test-model",
                           "--runtime", "onnx-int8", "-o", str(tmp_path / "m.tar.gz")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("TEST MODEL") == 1, done.stderr
    assert "pre-processing before quantization" not in done.stderr
    assert "FutureWarning" not in done.stderr
