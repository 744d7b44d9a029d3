"""`clip-search demo --test-model` end to end: real model server, real /invocations, embedded index."""
import os
import subprocess
import sys

import pytest

from clip_search.demo_data import GROCERY as DEMO_DATA


@pytest.mark.server
def test_demo_runs_the_whole_path_offline_from_the_repo_alone(tmp_path):
    # Without ../shared the photo queries are edited catalogue photos (81, not 296 store photos):
    # the path a fresh clone takes, and a faster test.
    env = {**os.environ, "CLIP_SEARCH_GROCERY_DIR": str(tmp_path / "no-shared-data")}
    result = subprocess.run(
        [sys.executable, "-m", "clip_search.cli", "demo", "--test-model", "--workdir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "TEST MODEL" in out
    assert "serving on http://127.0.0.1:" in out
    assert "indexed 81 products" in out and "0 errors" in out
    assert 'text  "green apple"' in out
    table = out[out.index("recall@1"):]
    assert "description -> product" in table and "edited catalogue photos -> product" in table
    assert "mrr" in table.splitlines()[0]  # the table of clip_search.search.evaluation
    assert "TEST MODEL (tiny, random weights): these figures are MEANINGLESS" in table
    assert (tmp_path / "demo" / "index" / "products.lance").is_dir()  # a LanceDB table


def test_a_missing_demo_catalogue_is_one_error_line_naming_the_variable(tmp_path):
    env = {**os.environ, "CLIP_SEARCH_DEMO_DATA": str(tmp_path / "nowhere")}
    result = subprocess.run([sys.executable, "-m", "clip_search.cli", "demo", "--test-model"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
    assert "NameError" not in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"Error: demo catalogue not found at {tmp_path / 'nowhere' / 'products.jsonl'} "
                                     "(set CLIP_SEARCH_DEMO_DATA)")
    assert not list(tmp_path.glob("clip-search-demo-*"))  # it stops before any work


def test_without_internet_the_demo_falls_back_loudly(tmp_path, monkeypatch, capsys):
    import clip_search.demo as demo_module

    monkeypatch.setattr(demo_module, "WEIGHTS_HOST", "weights.invalid")  # unresolvable, like offline
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model, is_test = demo_module.package(tmp_path, test_model=False)
    assert is_test and model.is_file()
    err = capsys.readouterr().err
    assert "COULD NOT DOWNLOAD THE REAL ViT-B-32 WEIGHTS" in err and "FALLING BACK TO THE TINY TEST MODEL" in err


@pytest.mark.server
def test_cli_index_and_search_through_the_native_server(tmp_path, test_model_tar):
    """`clip-search index --endpoint URL`, then `search` reusing the endpoint the index recorded."""
    import json

    from click.testing import CliRunner

    from clip_search.cli import main
    from clip_search.search.catalogue import read_catalogue
    from clip_search.search.index.embedded import EmbeddedIndex
    from clip_search.serving.server import ModelServer

    products = list(read_catalogue(DEMO_DATA / "products.jsonl"))[:10]
    catalogue = tmp_path / "subset.jsonl"
    catalogue.write_text("".join(json.dumps({"id": p.id, "title": p.title, "image": p.image, **p.metadata}) + "\n"
                                 for p in products))
    index = tmp_path / "index"
    with ModelServer(test_model_tar) as server:
        result = CliRunner().invoke(main, ["index", "--catalogue", str(catalogue), "--index", str(index),
                                           "--endpoint", server.url])
        assert result.exit_code == 0, result.output
        assert "indexed 10 of 10 products" in result.output
        assert EmbeddedIndex(index).info().extra["encoder"] == {"endpoint": server.url}
        result = CliRunner().invoke(main, ["search", "--index", str(index), "--image", products[3].image, "-k", "1", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output[result.output.index("["):])[0]["id"] == products[3].id
