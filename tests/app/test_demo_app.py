"""`clip-search demo --app`: the whole demo, then its index in the search app until Ctrl-C.

Tier: server (the demo starts the real model server to encode the catalogue)."""
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import requests

from tests.app.conftest import DEMO
from tests.app.test_cli import start_app

pytestmark = pytest.mark.server


def test_demo_ends_by_serving_its_index_in_the_app(tmp_path):
    # A short TMPDIR of its own: the model server puts unix sockets there (paths of at most 107 bytes).
    scratch = Path(tempfile.mkdtemp(prefix="csd-", dir="/tmp"))
    env = {"CLIP_SEARCH_GROCERY_DIR": str(tmp_path / "no-shared-data"), "TMPDIR": str(scratch)}
    process, url, lines = start_app("--test-model", "--app", "--port", 0, command="demo", env=env, timeout=600)
    try:
        out = "".join(lines)
        assert "indexed 81 products" in out and "recall@1" in out  # the plain demo ran first
        answer = requests.get(url + "/api/search", params={"q": "oat milk", "k": 5}, timeout=60).json()
        assert len(answer["hits"]) == 5 and answer["model"] == "clip-search-tiny/random"
        first = answer["hits"][0]
        photo = requests.get(url + first["image_url"], timeout=60)
        assert photo.status_code == 200 and photo.content == (DEMO / "images" / f"{first['id']}.jpg").read_bytes()
        assert requests.get(url + "/", timeout=60).headers["content-type"].startswith("text/html")
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
        for reader in process.readers:
            reader.join(10)
    assert code == 0, "".join(process.errors)[-3000:]
    leftovers = list(scratch.glob("clip-search-demo-*"))
    shutil.rmtree(scratch, ignore_errors=True)
    assert not leftovers  # the temporary workdir went away on Ctrl-C
