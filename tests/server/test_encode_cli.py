"""`clip-search encode` in process and through a running server give the same vectors."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from clip_search.cli import main

pytestmark = pytest.mark.server


def encode(*args):
    result = CliRunner().invoke(main, ["encode", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_encode_in_process_and_via_the_server_agree(test_model_tar, server_url, catalogue_photos):
    photo = str(catalogue_photos[0])
    local = encode("--model", str(test_model_tar), "oat milk", "red apple", "--image", photo)
    remote = encode("--endpoint", server_url, "oat milk", "red apple", "--image", photo)
    assert local["dim"] == remote["dim"] == 64
    assert local["model"] == remote["model"] == "clip-search-tiny/random"
    assert np.allclose(local["embeddings"], remote["embeddings"], atol=1e-5)
    assert len(local["embeddings"]) == 3


def test_encode_needs_exactly_one_source(test_model_tar, server_url):
    result = CliRunner().invoke(main, ["encode", "milk"])
    assert result.exit_code == 2 and "exactly one of --model or --endpoint" in result.output
    result = CliRunner().invoke(main, ["encode", "--model", str(test_model_tar)])
    assert result.exit_code == 2 and "nothing to encode" in result.output


def test_encode_a_corrupt_photo_through_the_server_is_one_error_line(server_url, catalogue_photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(catalogue_photos[0].read_bytes()[:300])  # a truncated JPEG
    result = CliRunner().invoke(main, ["encode", "--endpoint", server_url, "--image", str(broken)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert str(broken) in lines[0] and "truncated" in lines[0]
    assert "Traceback" not in result.output
