"""The tables of environment variables in README.md and docs/*.md are the ones
scripts/settings_table.py writes from clip_search.settings.VARIABLES, so they cannot drift."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clip_search.settings import NAMES

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "settings_table.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("settings_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


settings_table = _load_script()


def _run(*args: str) -> subprocess.CompletedProcess:
    # The script imports clip_search: the child gets this process's import path.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_every_committed_table_is_the_generated_one():
    differing = [str(path.relative_to(REPO)) for path in settings_table.stale(REPO)]
    assert not differing, (f"tables of variables differ from clip_search.settings.VARIABLES in {differing}; "
                           f"regenerate them: {settings_table.COMMAND}")


def test_every_variable_is_documented_in_a_generated_table():
    covered = set()
    for path in settings_table.documents(REPO):
        covered |= settings_table.marked_names(path.read_text(encoding="utf-8"))
    assert set(NAMES) <= covered, f"no generated table lists {sorted(set(NAMES) - covered)}"


def test_the_table_shows_defaults_as_a_user_would_set_them():
    rows = {line.split(" | ")[0].strip("| `"): line for line in settings_table.render().splitlines()[2:]}
    assert list(rows) == list(NAMES)
    assert rows["CLIP_SEARCH_JPEG_DRAFT"].split(" | ")[1] == "`1`"
    assert rows["CLIP_SEARCH_DEBUG"].split(" | ")[1] == "`0`"
    assert rows["CLIP_SEARCH_MAX_ASPECT_RATIO"].split(" | ")[1] == "`20`"
    assert rows["CLIP_SEARCH_MAX_BATCH_ITEMS"].split(" | ")[1] == "`1024`"
    assert rows["SAGEMAKER_BASE_DIR"].split(" | ")[1] == "`/opt/ml`"
    assert rows["CLIP_SEARCH_RUNTIME"].split(" | ")[1] == "(empty)"


def test_a_named_table_lists_only_its_variables_in_the_order_of_the_settings():
    table = settings_table.render(["SAGEMAKER_BASE_DIR", "CLIP_SEARCH_THREADS"])
    names = [line.split(" | ")[0].strip("| `") for line in table.splitlines()[2:]]
    assert names == ["CLIP_SEARCH_THREADS", "SAGEMAKER_BASE_DIR"]


def test_an_edited_table_fails_the_check_names_the_command_and_is_rewritten(tmp_path):
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "configuration.md"
    shutil.copy(REPO / "docs" / "configuration.md", doc)
    committed = doc.read_text(encoding="utf-8")
    row = next(line for line in committed.splitlines() if line.startswith("| `CLIP_SEARCH_MAX_BATCH_ITEMS` |"))
    edited = committed.replace(row, row.replace("records per request", "records per batch"))
    assert edited != committed
    doc.write_text(edited, encoding="utf-8")

    check = _run("--check", "--root", str(tmp_path))
    assert check.returncode == 1
    assert "configuration.md" in check.stderr and "python scripts/settings_table.py" in check.stderr

    assert _run("--root", str(tmp_path)).returncode == 0
    assert doc.read_text(encoding="utf-8") == committed
    assert _run("--check", "--root", str(tmp_path)).returncode == 0


def test_text_outside_the_markers_is_left_alone():
    text = "before\n<!-- settings:begin CLIP_SEARCH_DEBUG -->\nstale\n<!-- settings:end -->\nafter | x\n"
    rewritten = settings_table.rewrite(text)
    assert rewritten.startswith("before\n<!-- settings:begin CLIP_SEARCH_DEBUG -->\n| variable |")
    assert rewritten.endswith("| CLI: show the Python traceback behind an Error: line |\n<!-- settings:end -->\nafter | x\n")
    assert "stale" not in rewritten


@pytest.mark.parametrize("text, expected", [
    ("<!-- settings:begin CLIP_SEARCH_NOPE -->\n<!-- settings:end -->\n", "CLIP_SEARCH_NOPE"),
    ("<!-- settings:begin -->\nno end\n", "settings:end"),
])
def test_a_bad_marker_is_refused_with_its_file(text, expected):
    with pytest.raises(ValueError, match=expected) as raised:
        settings_table.rewrite(text, "docs/x.md")
    assert "docs/x.md" in str(raised.value)
