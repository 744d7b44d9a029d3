"""The artifact served the way a stock SageMaker image serves it: the toolkit's own handler
service importing code/inference.py (SAGEMAKER_PROGRAM=inference.py) from the artifact."""
import json
import shutil

import pytest
import requests

from clip_search.serving.server import ModelServer

pytestmark = pytest.mark.server


def test_stock_toolkit_handler_serves_the_artifact_code(test_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(test_model_dir, model_dir)
    env = {"SAGEMAKER_PROGRAM": "inference.py", "PYTHONPATH": str(model_dir / "code")}
    with ModelServer(model_dir, env=env, handler="sagemaker_inference.default_handler_service") as server:
        response = requests.post(server.url + "/invocations", data=json.dumps({"texts": ["milk", "apple"]}),
                                 headers={"Content-Type": "application/json"}, timeout=60)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["dim"] == 64 and len(answer["embeddings"]) == 2
        # The stock Transformer renders our errors with their status (its own text body).
        bad = requests.post(server.url + "/invocations", data=b"x", headers={"Content-Type": "video/mp4"},
                            timeout=60)
        assert bad.status_code == 415
