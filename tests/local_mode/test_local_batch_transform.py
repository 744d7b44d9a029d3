"""SageMaker SDK local mode: a Batch Transform over JSON Lines with the built image (SplitType=Line,
MultiRecord, AssembleWith=Line), as the catalogue is encoded in production.

Its own module: the endpoint of test_local_endpoint.py is torn down at the end of that module, and
local mode publishes both on the same local.serving_port.
"""
import base64
import json

import pytest

from tests.local_mode.test_local_endpoint import assert_unit_vectors

pytestmark = pytest.mark.local_mode


@pytest.fixture
def catalogue_jsonl(tmp_path, store_photos):
    """Texts and real store photos as one JSON Lines file, ~2.5 MB: several 1 MB mini-batches."""
    records = [{"id": f"text-{n}", "text": f"product number {n}"} for n in range(60)]
    records += [{"id": f"photo-{n}", "image": base64.b64encode(path.read_bytes()).decode()}
                for n, path in enumerate(store_photos[:90])]
    folder = tmp_path / "input"
    folder.mkdir()
    (folder / "catalogue.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return folder, [r["id"] for r in records]


def test_batch_transform_one_line_per_record(local_model, catalogue_jsonl, tmp_path):
    folder, ids = catalogue_jsonl
    output = tmp_path / "output"
    transformer = local_model.transformer(
        instance_count=1, instance_type="local", strategy="MultiRecord", assemble_with="Line",
        accept="application/jsonlines", output_path=f"file://{output}", max_payload=1)
    transformer.transform(f"file://{folder}", content_type="application/jsonlines",
                          split_type="Line", wait=True, logs=False)

    lines = (output / "catalogue.jsonl.out").read_text().splitlines()
    assert len(lines) == len(ids)
    answers = [json.loads(line) for line in lines]
    assert [a["id"] for a in answers] == ids  # one line per record, in order, across mini-batches
    assert all("error" not in a for a in answers), [a for a in answers if "error" in a][:3]
    assert_unit_vectors([a["embedding"] for a in answers], len(ids))
