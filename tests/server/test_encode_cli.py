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
