"""Writing the artifact's manifest (clip-search-manifest.json): shared by packaging and export."""
import json
from pathlib import Path

from clip_search.artifact import MANIFEST_FILE
from clip_search.files import sha256_file


def write_manifest(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def add_file_to_manifest(directory: Path, manifest: dict, relative: str) -> None:
    """Record a file another step wrote into the model dir (e.g. an exported runtime graph)."""
    manifest.setdefault("files", {})[relative] = sha256_file(directory / relative)
