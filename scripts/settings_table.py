"""Writes the tables of environment variables in the docs from `clip_search.settings.VARIABLES`.

A table is the text between two marker comments in README.md or docs/*.md:

    <!-- settings:begin -->                          every variable, in the order VARIABLES has them
    <!-- settings:begin NAME NAME ... -->             only those variables (still in VARIABLES' order)
    <!-- settings:end -->

Nothing outside the markers is touched. The tables are never edited by hand: change the variable's
entry in code/clip_search/settings.py, then regenerate. tests/unit/test_settings_docs.py fails when
a committed table differs from what this script writes.

    python scripts/settings_table.py            # rewrite the tables that differ
    python scripts/settings_table.py --check    # exit 1 naming each file whose tables differ
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from clip_search.settings import VARIABLES, Variable

REPO = Path(__file__).resolve().parents[1]
COMMAND = "python scripts/settings_table.py"
_BLOCK = re.compile(r"(<!-- settings:begin(?P<names>[^>]*?)-->\n)(?P<body>.*?)(<!-- settings:end -->)", re.DOTALL)
_MARKER = re.compile(r"<!-- settings:(begin|end)")


def documents(root: Path = REPO) -> list[Path]:
    """The Markdown files that may hold tables: README.md and docs/*.md."""
    found = [root / "README.md"] if (root / "README.md").is_file() else []
    return found + sorted((root / "docs").glob("*.md"))


def _default(variable: Variable) -> str:
    value = variable.default
    if isinstance(value, bool):  # before int: a bool is an int
        return "`1`" if value else "`0`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value == "":
        return "(empty)"
    return f"`{value}`"


def render(names: list[str] | None = None) -> str:
    """The Markdown table of `names` (all variables when None); unknown names are a ValueError."""
    known = {variable.name for variable in VARIABLES}
    unknown = [name for name in names or () if name not in known]
    if unknown:
        raise ValueError(f"not in clip_search.settings.VARIABLES: {', '.join(unknown)}")
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for variable in VARIABLES:
        if names and variable.name not in names:
            continue
        meaning = variable.doc.replace("|", "\\|") + (" (secret: never logged)" if variable.secret else "")
        rows.append(f"| `{variable.name}` | {_default(variable)} | {meaning} |")
    return "\n".join(rows) + "\n"


def rewrite(text: str, where: str = "text") -> str:
    """`text` with every marked table regenerated; unbalanced markers are a ValueError naming `where`."""
    blocks = list(_BLOCK.finditer(text))
    if len(_MARKER.findall(text)) != 2 * len(blocks):
        raise ValueError(f"{where}: every '<!-- settings:begin ... -->' needs its own '<!-- settings:end -->'")
    for block in reversed(blocks):
        try:
            table = render(block.group("names").split() or None)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        text = text[:block.start("body")] + table + text[block.end("body"):]
    return text


def marked_names(text: str) -> set[str]:
    """The variables the tables in `text` cover."""
    names = set()
    for block in _BLOCK.finditer(text):
        listed = block.group("names").split()
        names.update(listed or (variable.name for variable in VARIABLES))
    return names


def stale(root: Path = REPO) -> list[Path]:
    """The documents whose tables differ from what `rewrite` makes of them."""
    return [path for path in documents(root)
            if rewrite(text := path.read_text(encoding="utf-8"), str(path)) != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs")
    parser.add_argument("--root", type=Path, default=REPO, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    try:
        differing = stale(args.root)
    except ValueError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    if args.check:
        for path in differing:
            print(f"{path}: its table of variables differs from clip_search.settings.VARIABLES; "
                  f"regenerate it: {COMMAND}", file=sys.stderr)
        return 1 if differing else 0
    for path in differing:
        path.write_text(rewrite(path.read_text(encoding="utf-8"), str(path)), encoding="utf-8")
        print(f"rewrote the table(s) of variables in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
