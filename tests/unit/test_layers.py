"""The layers hold: every import in code/clip_search and model_build (function-level ones included,
read with `ast`, so lazy imports count too) goes downwards.

    top (cli, demo, encode_cli)   model_build (publishing; may call packaging)
    app                           above search
    serving | search | packaging  serving and search never import each other
    core                          artifact, encoder, images, preprocess, tokenizer, files, settings,
                                  errors, extras, runtimes, endpoint_client, content_types, demo_data

Core imports none of serving, search, app or packaging; nothing below app imports app; the library
never imports model_build; only packaging imports torch, torchvision, open_clip, onnx or onnxscript.
A new module must be placed in LAYERS below before this test passes.
"""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"clip_search": REPO / "code" / "clip_search", "model_build": REPO / "model_build"}

CORE = {"artifact", "encoder", "images", "preprocess", "tokenizer", "files", "settings", "errors", "extras",
        "runtimes", "endpoint_client", "content_types", "demo_data", "aws_region"}
TOP = {"cli", "demo", "encode_cli"}
LAYERS = {**{name: "core" for name in CORE}, **{name: "top" for name in TOP},
          "serving": "serving", "search": "search", "app": "app", "packaging": "packaging"}
BUILD_TIME_PACKAGES = {"torch", "torchvision", "open_clip", "onnx", "onnxscript"}

# layer -> the layers it must not import
FORBIDDEN = {
    "core": {"serving", "search", "app", "packaging", "top", "model_build"},
    "serving": {"search", "app", "top", "model_build"},
    "search": {"serving", "app", "top", "model_build"},
    "packaging": {"app", "top", "model_build"},
    "app": {"top", "model_build"},
    "top": {"model_build"},
    "model_build": set(),
}


def layer_of(module: str) -> str | None:
    """The layer of a module name of ours; None for anything else (the standard library, packages)."""
    parts = module.split(".")
    if parts[0] == "model_build":
        return "model_build"
    if parts[0] != "clip_search":
        return None
    if len(parts) == 1:
        return "core"  # clip_search/__init__.py: the version only
    if parts[1] not in LAYERS:
        raise AssertionError(f"clip_search.{parts[1]} has no layer: place it in LAYERS in {Path(__file__).name}")
    return LAYERS[parts[1]]


def module_name(root_name: str, root: Path, path: Path) -> str:
    parts = [root_name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, name: str, known: set[str]):
    """(line, imported module) for every import statement in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                yield node.lineno, target if target in known else base  # a submodule, else the module


def violations(roots: dict[str, Path]) -> list[str]:
    files = {module_name(root_name, root, path): (root, path)
             for root_name, root in roots.items() for path in sorted(root.rglob("*.py"))}
    known = set(files)
    found = []
    for name, (root, path) in files.items():
        layer = layer_of(name)
        for line, target in imports(path, name, known):
            where = f"{path.relative_to(root.parent)}:{line}"
            top_package = target.split(".")[0]
            if top_package in BUILD_TIME_PACKAGES and layer != "packaging":
                found.append(f"{where} ({layer}) imports {target}: only clip_search.packaging may import "
                             f"{', '.join(sorted(BUILD_TIME_PACKAGES))}")
            target_layer = layer_of(target)
            if target_layer in FORBIDDEN[layer]:
                found.append(f"{where} ({layer}) imports {target} ({target_layer}): {layer} must not import {target_layer}")
    return found


def test_the_import_graph_keeps_the_layers():
    problems = violations(ROOTS)
    assert not problems, "imports across the layers (tests/unit/test_layers.py):\n" + "\n".join(problems)


def test_the_check_sees_a_lazy_import_and_names_the_file_line_and_import(tmp_path):
    root = tmp_path / "clip_search"
    (root / "packaging").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "packaging" / "__init__.py").write_text("")
    (root / "packaging" / "open_clip_io.py").write_text("import open_clip\n")
    (root / "encoder.py").write_text("import numpy\n\n\ndef load():\n    from .packaging import open_clip_io\n"
                                     "    import torch\n")
    (root / "serving").mkdir()
    (root / "serving" / "__init__.py").write_text("from clip_search.search import client\n")
    (root / "search").mkdir()
    (root / "search" / "__init__.py").write_text("")
    (root / "search" / "client.py").write_text("")
    assert violations({"clip_search": root}) == [
        "clip_search/encoder.py:5 (core) imports clip_search.packaging.open_clip_io (packaging): "
        "core must not import packaging",
        "clip_search/encoder.py:6 (core) imports torch: only clip_search.packaging may import "
        "onnx, onnxscript, open_clip, torch, torchvision",
        "clip_search/serving/__init__.py:1 (serving) imports clip_search.search.client (search): "
        "serving must not import search",
    ]
