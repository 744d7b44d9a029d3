import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from clip_search.artifact import CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE, extract_artifact, read_packed_manifest, verify_artifact
from clip_search.errors import ModelLoadError
from clip_search.packaging.build import package_model


def test_tar_holds_config_weights_manifest_and_script_mode_code(test_model_tar):
    names = set(tarfile.open(test_model_tar).getnames())
    assert {CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE, "code/inference.py", "code/requirements.txt"} <= names
    assert "code/clip_search/serving/handler.py" in names
    # No pickle anywhere: no torch.save / pickle files in the artifact.
    assert not [n for n in names if n.endswith((".pt", ".pth", ".bin", ".pkl", ".ckpt"))]
    assert test_model_tar.stat().st_size < 15_000_000


def test_manifest_describes_the_test_model(test_model_tar, test_model_dir):
    manifest = read_packed_manifest(test_model_tar)
    assert manifest["test_model"] is True and manifest["random_weights"] is True
    assert manifest["model_id"] == "clip-search-tiny/random"
    assert manifest["embed_dim"] == 64
    assert manifest["weights_sha256"] == manifest["files"][WEIGHTS_FILE]
    assert manifest == verify_artifact(test_model_dir)


def test_weights_round_trip_through_safetensors_exactly(test_model_dir):
    from clip_search.packaging.build import build_open_clip_model

    model, _, _ = build_open_clip_model("clip-search-tiny", None, seed=0)
    stored = load_file(str(test_model_dir / WEIGHTS_FILE))
    for name, tensor in model.state_dict().items():
        assert np.array_equal(stored[name].numpy(), tensor.numpy()), name


def test_open_clip_itself_can_load_the_extracted_artifact(test_model_dir, test_encoder):
    from clip_search.packaging.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import open_clip
    import torch

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{test_model_dir}")
    tokens = open_clip.get_tokenizer(f"local-dir:{test_model_dir}")(["a red apple"])
    with torch.inference_mode():
        expected = model.encode_text(tokens, normalize=True).numpy()
    assert np.allclose(test_encoder.encode_texts(["a red apple"]), expected, atol=1e-5)


def copy_model(test_model_dir, tmp_path):
    import shutil

    target = tmp_path / "model"
    shutil.copytree(test_model_dir, target)
    return target


def test_corrupt_weights_are_refused_naming_the_file(test_model_dir, tmp_path):
    model_dir = copy_model(test_model_dir, tmp_path)
    weights = model_dir / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=f"{WEIGHTS_FILE} is corrupt"):
        verify_artifact(model_dir)


@pytest.mark.parametrize("missing", [WEIGHTS_FILE, CONFIG_FILE, MANIFEST_FILE])
def test_missing_files_are_named(test_model_dir, tmp_path, missing):
    model_dir = copy_model(test_model_dir, tmp_path)
    (model_dir / missing).unlink()
    with pytest.raises(ModelLoadError, match=missing):
        verify_artifact(model_dir)


def test_model_fn_names_the_broken_file(test_model_dir, tmp_path):
    from clip_search.serving.handler import model_fn

    model_dir = copy_model(test_model_dir, tmp_path)
    (model_dir / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match=MANIFEST_FILE):
        model_fn(str(model_dir))


def test_not_a_tar_is_a_clear_error(tmp_path):
    bogus = tmp_path / "model.tar.gz"
    bogus.write_bytes(b"this is not a tarball")
    with pytest.raises(ModelLoadError, match="not a readable tar.gz"):
        extract_artifact(bogus)
    with pytest.raises(ModelLoadError, match="not found"):
        extract_artifact(tmp_path / "absent.tar.gz")


def test_packaging_is_deterministic_in_weights(tmp_path, test_model_tar):
    again = package_model(tmp_path / "again.tar.gz", test_model=True)
    assert read_packed_manifest(again)["weights_sha256"] == read_packed_manifest(test_model_tar)["weights_sha256"]


def test_package_model_cli_writes_the_test_model(tmp_path, test_model_fp32_onnx):
    from click.testing import CliRunner

    from clip_search.cli import main
    from tests.model_exports import reusing_fp32_export

    output = tmp_path / "m.tar.gz"
    # The chosen runtime is exported from the session's fp32 ONNX export of these same seeded weights.
    with reusing_fp32_export(test_model_fp32_onnx) as served:
        result = CliRunner().invoke(main, ["package-model", "--test-model", "-o", str(output)])
    assert served
    assert result.exit_code == 0, result.output
    assert "clip-search-tiny/random, dim 64, runtime " in result.output
    assert "accuracy guard passed" in result.output  # the default, auto, exports and guards
    assert "TEST MODEL" in result.output
    manifest = json.loads(tarfile.open(output).extractfile(MANIFEST_FILE).read())
    assert manifest["test_model"] is True and manifest["runtime"] in ("onnx-int8", "openvino")


def test_package_model_without_network_fails_clearly(tmp_path):
    # A process of its own: huggingface_hub reads HF_HUB_OFFLINE when it is first imported, and in a
    # test process that already imported it, the download waits on network time-outs instead (~45 s).
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # no hub here either way; make it fail fast
    result = subprocess.run([sys.executable, "-m", "clip_search.cli", "package-model", "--arch", "RN50",
                             "--pretrained", "openai", "-o", str(tmp_path / "x.tar.gz")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "could not fetch pretrained weights RN50/openai" in result.stderr
    assert not (tmp_path / "x.tar.gz").exists()


def test_a_directory_verified_by_the_parent_is_not_hashed_again(test_model_dir, tmp_path, monkeypatch):
    from clip_search.artifact import mark_verified

    model_dir = copy_model(test_model_dir, tmp_path)
    weights = model_dir / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")  # same size, different bytes
    env = {}
    mark_verified(model_dir, env)
    monkeypatch.setenv("CLIP_SEARCH_VERIFIED_MODEL_DIR", env["CLIP_SEARCH_VERIFIED_MODEL_DIR"])
    verify_artifact(model_dir)  # trusted: presence only
    monkeypatch.setenv("CLIP_SEARCH_VERIFIED_MODEL_DIR", str(tmp_path / "elsewhere"))
    # Any other directory is hashed as before: every file is present, so only the hash fails.
    with pytest.raises(ModelLoadError, match=f"{WEIGHTS_FILE} is corrupt"):
        verify_artifact(model_dir)
    monkeypatch.setenv("CLIP_SEARCH_VERIFIED_MODEL_DIR", env["CLIP_SEARCH_VERIFIED_MODEL_DIR"])
    (model_dir / CONFIG_FILE).unlink()
    with pytest.raises(ModelLoadError, match=f"model artifact is missing {CONFIG_FILE}"):
        verify_artifact(model_dir)  # a missing file is still named


@pytest.mark.parametrize("has_data_filter", [True, False])
def test_extraction_refuses_links_and_paths_out_of_the_archive_with_or_without_pep_706(
        tmp_path, monkeypatch, has_data_filter):
    """Pythons before PEP 706 (e.g. Debian's 3.11.2) have no tar filters: the same refusals hold."""
    import io
    import tarfile

    if not has_data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        data = b'{"a": 1}'
        info = tarfile.TarInfo("sub/config.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert (extract_artifact(good) / "sub" / "config.json").read_bytes() == b'{"a": 1}'
    for name, kind in (("../escape.txt", tarfile.REGTYPE), ("link", tarfile.SYMTYPE)):
        bad = tmp_path / "bad.tar.gz"
        with tarfile.open(bad, "w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = 1
                tar.addfile(info, io.BytesIO(b"x"))
        with pytest.raises(ModelLoadError, match="not a readable tar.gz"):
            extract_artifact(bad)
    assert not (tmp_path.parent / "escape.txt").exists()
    absolute = tmp_path / "absolute.tar.gz"  # PEP 706 extracts it inside the target, the fallback refuses it
    with tarfile.open(absolute, "w:gz") as tar:
        info = tarfile.TarInfo("/clip-search-absolute-test.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    try:
        assert (extract_artifact(absolute) / "clip-search-absolute-test.txt").is_file()
    except ModelLoadError:
        assert not has_data_filter
    assert not Path("/clip-search-absolute-test.txt").exists()
