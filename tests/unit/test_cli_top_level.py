"""The `clip-search` group itself (clip_search/cli.py): the command list, lazy imports, and the one
`Error: ...` line with its exit status for each kind of failure."""
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from clip_search import cli
from clip_search.cli import main

REPO = Path(__file__).resolve().parents[2]
# The contract: these names, each with its one-line help (`clip-search --help`; README "Commands").
COMMANDS = {
    "app": "Serve the search page and its HTTP API for an index.",
    "delete": "Delete products by id from an index.",
    "demo": "Run the whole path end to end on one machine.",
    "encode": "Encode texts or images (in process or via an endpoint).",
    "eval": "Retrieval recall on a labelled catalogue.",
    "index": "Encode a product catalogue and index it.",
    "opensearch": "Connect an OpenSearch index to the endpoint (ml-commons).",
    "package-model": "Package an open_clip model as model.tar.gz.",
    "publish": "Ship to SageMaker: S3, ECR, registry, endpoint, Batch Transform.",
    "search": "Search an index by text or by image.",
    "serve": "Serve the model natively with multi-model-server.",
}


def run(*args, env=None):
    return CliRunner().invoke(main, [str(arg) for arg in args], env=env)


def stderr_lines(result):
    return [line for line in result.stderr.splitlines() if line.strip() and "indexing:" not in line]


def test_help_lists_every_command_sorted_with_its_line():
    result = run("--help")
    assert result.exit_code == 0
    listed = result.stdout.split("Commands:\n", 1)[1]
    names = [line.split()[0] for line in listed.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert names == sorted(COMMANDS)
    flat = " ".join(listed.split())
    for name, line in COMMANDS.items():
        assert f"{name} {line}" in flat


def test_every_listed_command_loads_and_names_itself():
    for name in COMMANDS:
        command = main.get_command(click.Context(main), name)
        assert isinstance(command, click.Command), name
    assert main.get_command(click.Context(main), "no-such-command") is None


def test_version_is_the_packaged_version():
    result = CliRunner().invoke(main, ["--version"], prog_name="clip-search")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"clip-search, version {(REPO / 'code/clip_search/VERSION').read_text().strip()}"


def test_an_unknown_command_is_a_usage_error():
    result = run("serch", "apple")
    assert result.exit_code == 2
    assert "No such command 'serch'" in result.stderr


def test_help_imports_no_command_module_and_no_heavy_library():
    code = ("import sys; from clip_search.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = {'torch', 'boto3', 'opensearchpy', 'lancedb', 'onnxruntime', 'open_clip', 'psycopg'}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in ("
            "'clip_search.search.cli', 'clip_search.serving.cli', 'clip_search.encode_cli', 'clip_search.app.cli')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.fixture
def embeddings(tmp_path):
    """A one-product catalogue and its Batch Transform output: `index` runs with no model at all."""
    (tmp_path / "products.jsonl").write_text(json.dumps({"id": "a", "title": "apple"}) + "\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "part.out").write_text(json.dumps({"id": "a", "embedding": [1.0, 0.0]}) + "\n")
    return ["index", "--catalogue", tmp_path / "products.jsonl", "--embeddings", tmp_path / "out",
            "--model-id", "m", "--no-titles"]


def test_an_os_error_is_one_line_naming_the_file_and_exit_1(embeddings, tmp_path):
    result = run(*embeddings, "--index", "/dev/null/index")
    assert result.exit_code == 1, result.output
    assert stderr_lines(result) == ["Error: /dev/null/index: Not a directory"]
    assert "Traceback" not in result.output


def test_the_same_command_indexes_where_it_can_write(embeddings, tmp_path):
    result = run(*embeddings, "--index", tmp_path / "index")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"indexed 1 of 1 products into {tmp_path / 'index'} (1 in the index, 0 errors)"


def test_a_bad_debug_setting_is_reported_not_a_crash_of_the_reporter(embeddings):
    result = run(*embeddings, "--index", "/dev/null/index", env={"CLIP_SEARCH_DEBUG": "maybe"})
    assert result.exit_code == 1, result.output
    assert stderr_lines(result) == [
        "Error: CLIP_SEARCH_DEBUG='maybe' is not valid: expected one of 1/0, true/false, yes/no, on/off"]
    assert "Traceback" not in result.output


@click.command("buggy")
def buggy():
    {}["missing"]  # a bug in some command: KeyError


def test_an_unexpected_exception_is_still_one_line_with_the_debug_hint(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "buggy", (f"{__name__}:buggy", "a command with a bug"))
    result = run("buggy")
    assert result.exit_code == 1
    assert stderr_lines(result) == ["Error: KeyError: 'missing' (run with --debug for the traceback)"]
    debug = run("--debug", "buggy")
    assert debug.exit_code == 1
    assert "Traceback" in debug.stderr and 'in buggy\n    {}["missing"]' in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == "Error: KeyError: 'missing' (run with --debug for the traceback)"
