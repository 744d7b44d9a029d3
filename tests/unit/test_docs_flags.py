"""Every `--flag` README.md and docs/*.md tell a user to give clip-search is a real option.

The real options come from the click command tree under clip_search.cli's main group, lazily
loaded subcommands included. Which flags belong to clip-search (and not to docker, pip, curl,
pytest, build.sh...) is decided by where they are written, not by a list of other tools' flags:

1. A command: a line of a fenced or indented code block, a line of text that starts with
   `clip-search `, or an inline code span. It is split into simple commands at `|`, `&&`, `||`,
   `;`, `&`, `(` and `)`; a simple command whose program (after `VAR=value` assignments and the
   `nice`/`time`/`exec`/`env`/`flock LOCK` prefixes) is `clip-search` or `python -m model_build`
   has each of its flags checked against the exact (sub)command it follows, group options at the
   group's place, a value-taking option's value skipped. Any other program's flags are that
   program's.
2. A table whose header names a `flag` column: every `--flag` in that column documents a
   clip-search setting and must be an option of some clip-search command.

Abbreviations (`--min-text-…`) and placeholders (`clip-search publish STEP`, a subcommand that
does not exist) end the check of that command rather than guess.
"""
import re
import shlex
from pathlib import Path

import click
import pytest

from clip_search.cli import main

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PREFIXES = {"nice", "time", "exec", "env", "command", "sudo"}
OPERATORS = {"|", "||", "&&", ";", "&", "(", ")", ";;", "|&"}
FLAG = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*(?![\w…-])", re.I)


def _context(command, parent=None, name="clip-search"):
    return click.Context(command, parent=parent, info_name=name)


def _options(command) -> dict[str, click.Parameter]:
    names = {}
    for param in command.get_params(_context(command)):
        for opt in [*param.opts, *param.secondary_opts]:
            if opt.startswith("-"):
                names[opt] = param
    return names


def all_options() -> set[str]:
    found = set()

    def walk(command, ctx):
        found.update(_options(command))
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                walk(sub, _context(sub, ctx, name))

    walk(main, _context(main))
    return found


def check_invocation(command: click.Command, args: list[str]) -> list[str]:
    """Flags in args that `command` (walking into its subcommands) does not take."""
    problems, ctx, path = [], _context(command), ["clip-search" if command is main else command.name]
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            break
        if token.startswith("-") and len(token) > 1 and not token[1].isdigit():
            name = token.split("=", 1)[0]
            if "…" in name or "..." in name:
                break
            options = _options(command)
            param = options.get(name)
            if param is None:
                problems.append(f"{' '.join(path)} has no option {name}")
            elif not (getattr(param, "is_flag", False) or getattr(param, "count", False)) and "=" not in token \
                    and name not in param.secondary_opts:
                i += 1  # its value
        elif isinstance(command, click.Group):
            sub = command.get_command(ctx, token)
            if sub is None:
                break  # a placeholder (STEP) or a command of another branch
            command, ctx = sub, _context(sub, ctx, token)
            path.append(token)
        i += 1
    return problems


def simple_commands(line: str) -> list[list[str]]:
    line = re.sub(r"(^|\s)#.*$", "", line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: prose, not a command
        tokens = line.split()
    commands, current = [], []
    for token in tokens:
        if token in OPERATORS or token == "$":
            commands.append(current)
            current = []
        else:
            current.append(token.removeprefix("$"))
    return [c for c in [*commands, current] if c]


def clip_search_args(words: list[str]) -> tuple[click.Command, list[str]] | None:
    """(the command tree to check against, its arguments) when `words` runs clip-search."""
    words = list(words)
    while words and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]) or words[0] in PREFIXES or words[0] == "flock"):
        words = words[2:] if words[0] == "flock" else words[1:]
    if not words:
        return None
    program = words[0].rsplit("/", 1)[-1]
    if program == "clip-search":
        return main, words[1:]
    if re.fullmatch(r"python[0-9.]*", program) and words[1:3] in (["-m", "model_build"], ["-m", "clip_search.cli"]):
        return (main.get_command(_context(main), "publish") if words[2] == "model_build" else main), words[3:]
    return None


def check_command_text(text: str) -> list[str]:
    problems = []
    for words in simple_commands(text):
        found = clip_search_args(words)
        if found:
            problems += check_invocation(*found)
    return problems


def flag_table_cells(text: str) -> list[str]:
    """The cells of every table column whose header names a flag."""
    cells, lines = [], text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if not (line.startswith("|") and re.match(r"^\|[\s:|-]+\|$", lines[i + 1].strip())):
            continue
        header = [c.strip().lower() for c in line.strip().strip("|").split("|")]
        columns = [n for n, c in enumerate(header) if re.search(r"\bflag\b", c)]
        for row in lines[i + 2:]:
            if not row.startswith("|"):
                break
            row_cells = row.strip().strip("|").split("|")
            cells += [row_cells[n] for n in columns if n < len(row_cells)]
    return cells


def check_document(text: str) -> list[str]:
    problems, prose, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append("")
            continue
        if fenced or line.startswith("    ") and not line.lstrip().startswith(("-", "*", "|")) \
                or line.lstrip().startswith("clip-search "):
            problems += [f"{p}  <- {line.strip()}" for p in check_command_text(line)]
            prose.append("")
        else:
            prose.append(line)
    # Inline code spans may wrap across lines of a paragraph.
    for span in re.findall(r"`([^`]+)`", "\n".join(prose)):
        problems += [f"{p}  <- `{span}`" for p in check_command_text(" ".join(span.split()))]
    known = all_options()
    for cell in flag_table_cells(text):
        for flag in FLAG.findall(" ".join(re.findall(r"`([^`]+)`", cell))):
            if flag not in known:
                problems.append(f"no clip-search command has the option {flag}  <- table cell {cell.strip()}")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_documented_flag_exists(doc):
    assert check_document(doc.read_text(encoding="utf-8")) == []


def test_the_command_tree_includes_lazily_loaded_subcommands():
    publish = main.get_command(_context(main), "publish")
    assert {"artifact", "register", "approve", "endpoint"} <= set(publish.commands)
    assert {"--region", "--account-id", "--image-uri", "--min-recall-at-10", "--index", "--endpoint"} <= all_options()


@pytest.mark.parametrize("text, problem", [
    ("clip-search publish approve --bucket b", "clip-search publish approve has no option --bucket"),
    ("```bash\nx=1 nice clip-search encode --endpont e 'red'\n```", "clip-search encode has no option --endpont"),
    ("    clip-search search red --index idx --k 5 | jq .", "clip-search search has no option --k"),
    ("Or `python -m model_build register --min-recall 0.8`.", "publish register has no option --min-recall"),
    ("clip-search publish --region eu-west-1 artifact --nope", "clip-search publish artifact has no option --nope"),
    ("| Setting (flag) | Variable |\n|---|---|\n| `--account-idx` | `X` |", "no clip-search command has the option --account-idx"),
])
def test_a_wrong_flag_is_found(text, problem):
    assert [p.split("  <- ")[0] for p in check_document(text)] == [problem]


@pytest.mark.parametrize("text", [
    "clip-search publish --region eu-west-1 artifact --region eu-west-1 --test-model",  # group and step
    "python -m model_build endpoint --memory-mb 3072 --wait",
    "clip-search publish endpoint --no-wait && clip-search encode --endpoint e --region r 'a b'",
    "docker run --rm --network none clip-search:latest serve",  # docker's flags
    "`pip install --no-index clip-search`, `container/build.sh --online`",
    "clip-search publish STEP --anything",  # a placeholder ends the check
    "| `--min-text-…` | an abbreviation |",
    "clip-search encode --endpoint clip-search \"red apples\"  # --not-a-flag in a comment",
])
def test_what_is_not_a_clip_search_flag_is_left_alone(text):
    assert check_document(text) == []
