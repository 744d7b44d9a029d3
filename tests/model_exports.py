"""The test model's fp32 ONNX export, made once per session and reused by every packaging of it.

package-model's exporters all start from export_onnx's fp32 graphs (onnx ships them, onnx-int8
quantizes them, OpenVINO converts them), and the torch exporter is most of a packaging's time. The
test model's weights are seeded, so every packaging of it exports the same graphs: inside
`reusing_fp32_export` they are copied from the session's export instead. Weights that differ
(another architecture, other weights) are exported as before."""
import contextlib
import json
import shutil
from pathlib import Path

import pytest


def weights_key(model_dir: Path):
    """What export_onnx's graphs are a function of: the model config and the weights."""
    from clip_search.artifact import CONFIG_FILE, WEIGHTS_FILE
    from clip_search.files import sha256_file

    model_dir = Path(model_dir)
    return json.loads((model_dir / CONFIG_FILE).read_text())["model_cfg"], sha256_file(model_dir / WEIGHTS_FILE)


@contextlib.contextmanager
def reusing_fp32_export(fp32_export):
    """`fp32_export`: (folder of export_onnx's graphs, weights_key of the model they came from).
    Yields the list of folders served from the copy, so a caller can show it was used."""
    from clip_search.packaging import export

    folder, key = fp32_export
    real, served = export.export_onnx, []

    def export_onnx(model_dir, out_dir):
        if weights_key(model_dir) != key:
            return real(model_dir, out_dir)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = [out_dir / f"{export.IMAGE_GRAPH}.onnx", out_dir / f"{export.TEXT_GRAPH}.onnx"]
        for path in files:
            shutil.copyfile(folder / path.name, path)
        served.append(out_dir)
        return files

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "export_onnx", export_onnx)
        yield served
