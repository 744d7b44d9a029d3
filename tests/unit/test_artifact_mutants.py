"""Artifact verification on small hand-made artifact directories (no model build: fast enough for
`make mutants`). The sha256 values are computed here with hashlib, not with the code under test."""
import hashlib
import io
import json
import tarfile

import pytest

from clip_search import artifact
from clip_search.artifact import (
    CONFIG_FILE,
    MANIFEST_FILE,
    VERIFIED_ENV,
    WEIGHTS_FILE,
    extract_artifact,
    has_weights,
    mark_verified,
    read_config,
    read_manifest,
    read_packed_manifest,
    verify_artifact,
)
from clip_search.errors import ModelLoadError


def make_artifact(root, runtime="onnx-int8", files=None, extra_manifest=None):
    root.mkdir(parents=True, exist_ok=True)
    files = files or {CONFIG_FILE: b'{"model_cfg": {"embed_dim": 8}, "preprocess_cfg": {}}', "onnx/text.onnx": b"graph"}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    manifest = {"runtime": runtime, "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
    manifest.update(extra_manifest or {})
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    return root, manifest


def test_a_sound_artifact_returns_its_manifest(tmp_path):
    root, manifest = make_artifact(tmp_path / "m")
    assert verify_artifact(root) == manifest
    assert verify_artifact(str(root)) == manifest
    assert read_manifest(root) == manifest
    assert read_config(root) == {"model_cfg": {"embed_dim": 8}, "preprocess_cfg": {}}


def test_a_changed_byte_of_any_listed_file_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv(VERIFIED_ENV, raising=False)
    root, manifest = make_artifact(tmp_path / "m")
    (root / "onnx/text.onnx").write_bytes(b"grapH")  # same size
    with pytest.raises(ModelLoadError) as raised:
        verify_artifact(root)
    message = str(raised.value)
    assert "onnx/text.onnx is corrupt: sha256 " + hashlib.sha256(b"grapH").hexdigest() in message
    assert f"does not match the manifest's {manifest['files']['onnx/text.onnx']}" in message


def test_the_parents_mark_skips_hashing_for_that_directory_only(tmp_path, monkeypatch):
    """The mutant `already_verified = bool(env var)` trusts every directory once any is marked."""
    trusted, _ = make_artifact(tmp_path / "trusted")
    other, _ = make_artifact(tmp_path / "other")
    for root in (trusted, other):  # corrupt both, keeping every file present
        (root / "onnx/text.onnx").write_bytes(b"GRAPH")
    env = {}
    mark_verified(trusted, env)
    assert env == {VERIFIED_ENV: str(trusted.resolve())}
    monkeypatch.setenv(VERIFIED_ENV, env[VERIFIED_ENV])
    verify_artifact(trusted)  # presence only
    verify_artifact(tmp_path / "other" / ".." / "trusted")  # the same directory, spelled otherwise
    with pytest.raises(ModelLoadError, match="onnx/text.onnx is corrupt"):
        verify_artifact(other)  # every file present: only the hash can catch this
    monkeypatch.setenv(VERIFIED_ENV, "")
    with pytest.raises(ModelLoadError, match="onnx/text.onnx is corrupt"):
        verify_artifact(trusted)
    monkeypatch.setenv(VERIFIED_ENV, str(trusted.resolve()))
    (trusted / "onnx/text.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"model artifact is missing onnx/text.onnx \(looked in "):
        verify_artifact(trusted)  # a trusted directory still needs every file


def test_required_files_depend_on_the_runtime(tmp_path):
    root, _ = make_artifact(tmp_path / "torch", runtime="torch")
    with pytest.raises(ModelLoadError, match=f"{MANIFEST_FILE} in .* does not list {WEIGHTS_FILE}"):
        verify_artifact(root)
    root, _ = make_artifact(tmp_path / "none", runtime=None)  # no runtime recorded: torch
    with pytest.raises(ModelLoadError, match=f"does not list {WEIGHTS_FILE}"):
        verify_artifact(root)
    root, manifest = make_artifact(tmp_path / "t2", runtime="torch",
                                   files={CONFIG_FILE: b"{}", WEIGHTS_FILE: b"w"})
    assert verify_artifact(root) == manifest
    assert has_weights(root, manifest) is True
    root, _ = make_artifact(tmp_path / "noconfig", files={"onnx/text.onnx": b"g"})
    with pytest.raises(ModelLoadError, match=f"does not list {CONFIG_FILE}"):
        verify_artifact(root)
    root, _ = make_artifact(tmp_path / "nofiles", files={"x": b"y"}, extra_manifest={"files": None})
    with pytest.raises(ModelLoadError, match=f"does not list {CONFIG_FILE}"):
        verify_artifact(root)


def test_has_weights_needs_the_manifest_entry_and_the_file(tmp_path):
    root, manifest = make_artifact(tmp_path / "m")
    assert has_weights(root, manifest) is False
    (root / WEIGHTS_FILE).write_bytes(b"w")
    assert has_weights(root, manifest) is False  # present but not listed
    assert has_weights(root, {"files": {WEIGHTS_FILE: "x"}}) is True
    assert has_weights(root, {"files": None}) is False
    (root / WEIGHTS_FILE).unlink()
    assert has_weights(root, {"files": {WEIGHTS_FILE: "x"}}) is False


@pytest.mark.parametrize("name,reader", [(MANIFEST_FILE, read_manifest), (CONFIG_FILE, read_config)])
def test_unreadable_json_files_are_named(tmp_path, name, reader):
    root, _ = make_artifact(tmp_path / "m")
    (root / name).write_bytes(b"{not json")
    with pytest.raises(ModelLoadError, match=f"model artifact file .*{name} is not valid JSON"):
        reader(root)
    (root / name).write_bytes(b"\xff\xfe")
    with pytest.raises(ModelLoadError, match="is not valid JSON"):
        reader(root)
    (root / name).unlink()
    with pytest.raises(ModelLoadError, match=rf"model artifact is missing {name} \(looked in .*m\)"):
        reader(root)


def tar_of(root, path):
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(root.rglob("*")):
            tar.add(item, arcname=str(item.relative_to(root)), recursive=False)
    return path


def test_extract_and_read_packed_manifest(tmp_path):
    root, manifest = make_artifact(tmp_path / "m")
    packed = tar_of(root, tmp_path / "model.tar.gz")
    assert read_packed_manifest(packed) == manifest
    extracted = extract_artifact(packed)
    assert extracted != root and verify_artifact(extracted) == manifest
    assert extracted.name.startswith("clip-search-model-")
    assert extract_artifact(root) == root  # a directory is used as is
    assert extract_artifact(str(root)) == root


def test_packed_manifest_errors(tmp_path):
    root, _ = make_artifact(tmp_path / "m")
    (root / MANIFEST_FILE).unlink()
    with pytest.raises(ModelLoadError, match=f"cannot read {MANIFEST_FILE} from .*nomanifest.tar.gz"):
        read_packed_manifest(tar_of(root, tmp_path / "nomanifest.tar.gz"))
    (tmp_path / "junk.tar.gz").write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="cannot read"):
        read_packed_manifest(tmp_path / "junk.tar.gz")


def test_an_absent_artifact_is_named(tmp_path):
    with pytest.raises(ModelLoadError) as raised:
        extract_artifact(tmp_path / "absent.tar.gz")
    assert str(raised.value) == f"model artifact not found: {tmp_path / 'absent.tar.gz'}"


def test_an_extracted_artifact_is_removed_when_the_process_exits(tmp_path):
    import os
    import subprocess
    import sys

    root, _ = make_artifact(tmp_path / "m")
    packed = tar_of(root, tmp_path / "model.tar.gz")
    assert extract_artifact(packed).is_dir()  # in process too (mutmut picks tests by what they call)
    code = "import sys; from clip_search.artifact import extract_artifact; print(extract_artifact(sys.argv[1]))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), TMPDIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code, str(packed)], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    extracted = result.stdout.strip()
    assert extracted.startswith(str(tmp_path)) and "clip-search-model-" in extracted
    assert not os.path.exists(extracted)


def test_a_failed_extraction_leaves_no_directory(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b junk")
    with pytest.raises(ModelLoadError, match="is not a readable tar.gz"):
        extract_artifact(tmp_path / "junk.tar.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.tar.gz"]


def test_a_tar_escaping_its_directory_is_refused(tmp_path):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ModelLoadError, match="evil.tar.gz is not a readable tar.gz"):
        extract_artifact(path)
    assert not (tmp_path / "escaped.txt").exists()


def test_format_constants_are_the_contract():
    assert (CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE) == (
        "open_clip_config.json", "open_clip_model.safetensors", "clip-search-manifest.json")
    assert VERIFIED_ENV == "CLIP_SEARCH_VERIFIED_MODEL_DIR" and artifact.FORMAT_VERSION == 1
