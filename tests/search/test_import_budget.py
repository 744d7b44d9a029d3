"""A `clip-search` command that opens the embedded index imports only what it uses (issue 27): not
the REST client's API classes nor pandas, which were ~1 s of a 2.2 s `clip-search search`. Checked
in a fresh interpreter (this test process has imported everything already); ~2 s."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from clip_search.search.index.embedded import EmbeddedIndex
from clip_search.search.records import EmbeddedProduct, Product

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
import numpy as np
from clip_search.cli import main
from clip_search.search.index.embedded import EmbeddedIndex

location = sys.argv[1]
main(["delete", "--index", location, "gone"], standalone_mode=False)  # the command path: cli.main first
hits = EmbeddedIndex(location).search(np.eye(8, dtype=np.float32)[1], k=1, fields=("image",))
loaded = sorted(sys.modules)
import pyarrow as pa
frame = pa.table({"a": [1, 2]}).to_pandas()  # pyarrow still finds pandas when something converts
import lance_namespace_urllib3_client as client  # and the deferred package is whole when used
import overrides  # the real one: the stand-in served only while LanceDB imported
import pydantic
from lance_namespace_urllib3_client.models import CreateNamespaceRequest
deferred = not CreateNamespaceRequest.__pydantic_complete__  # its schema not built by the import
try:  # and built, validating, on first use
    CreateNamespaceRequest(id=42)
    validates = False
except pydantic.ValidationError:
    validates = True
class Later(pydantic.BaseModel):  # a model made after the import is built as usual
    n: int
print(json.dumps({"hits": [hit.id for hit in hits], "loaded": loaded, "frame_rows": len(frame),
                  "client": client.ApiClient.__name__,
                  "overrides": hasattr(overrides, "enforce"), "deferred": deferred, "validates": validates,
                  "later_built": Later.__pydantic_complete__,
                  "base_config": dict(pydantic.BaseModel.model_config)}))
"""


def test_a_command_on_the_embedded_index_imports_neither_the_rest_client_nor_pandas(tmp_path):
    location = tmp_path / "index"
    index = EmbeddedIndex(location)
    index.create(8, "budget-model")
    index.upsert([EmbeddedProduct(Product(f"p{i}", f"product {i}", None, {}), np.eye(8, dtype=np.float32)[i])
                  for i in range(3)])
    index.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "code"), str(REPO)])}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(location)], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["hits"] == ["p1"]
    assert "lancedb" in answer["loaded"]
    heavy = [name for name in answer["loaded"]
             if name in ("pandas", "overrides") or name.startswith(("pandas.", "lance_namespace_urllib3_client.api"))]
    assert heavy == []
    assert answer["frame_rows"] == 2 and answer["client"] == "ApiClient" and answer["overrides"]
    # pydantic schemas made while LanceDB imported wait for first use, and then validate.
    assert answer["deferred"] and answer["validates"]
    assert answer["later_built"] and "defer_build" not in answer["base_config"]
