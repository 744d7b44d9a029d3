"""A command whose optional extra is missing: `Error: ...` naming the extra, exit status 2, no traceback."""
import click
from click.testing import CliRunner

from clip_search import cli, extras


@click.command("needs-opensearch")
def needs_opensearch():
    extras.require("opensearch", what="indexing into OpenSearch")
    click.echo("ran")  # only reached when the extra is there


def test_missing_extra_is_one_error_line_and_exit_2(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "needs-opensearch", (f"{__name__}:needs_opensearch", "test command"))
    real_find_spec = extras.importlib.util.find_spec
    monkeypatch.setattr(extras.importlib.util, "find_spec",
                        lambda name, *a: None if name == "opensearchpy" else real_find_spec(name, *a))
    result = CliRunner().invoke(cli.main, ["needs-opensearch"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "Error: indexing into OpenSearch needs the 'opensearch' extra (opensearchpy is not installed): "
        "pip install 'clip-search[opensearch]'"]


def test_commands_with_their_extra_installed_still_run(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "needs-opensearch", (f"{__name__}:needs_opensearch", "test command"))
    result = CliRunner().invoke(cli.main, ["needs-opensearch"])
    assert (result.exit_code, result.stdout) == (0, "ran\n")
