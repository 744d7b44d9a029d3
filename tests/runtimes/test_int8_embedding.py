"""The int8 token embedding: rows gathered as int8, then scaled, never the whole table in fp32."""
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from clip_search.packaging.export import _quantize_embedding_tables


def _embedding_model(table: np.ndarray):
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)], "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "length"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", "length", table.shape[1]])],
        [numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_rows_are_their_own_int8_values_times_their_own_scale():
    rng = np.random.default_rng(7)
    # Rows of very different ranges: a row scaled with another row's scale would be far off.
    table = (rng.standard_normal((600, 64)) * np.geomspace(1e-3, 10.0, 600)[:, None]).astype(np.float32)
    model = _embedding_model(table)
    _quantize_embedding_tables(model)
    stored = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    assert stored["table_int8"].dtype == np.int8 and "table" not in stored
    # Nothing in the graph expands the whole table: the only float tensors are gathered rows.
    assert [node.op_type for node in model.graph.node] == ["Gather", "Gather", "Cast", "Mul"]
    ids = np.array([[0, 599, 300, 5], [42, 42, 1, 598]], dtype=np.int64)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = session.run(None, {"ids": ids})[0]
    assert rows.shape == (2, 4, 64)
    # Expected, worked out here: symmetric int8 per row, scale = max |row| / 127.
    scale = np.abs(table).max(axis=1) / 127.0
    expected = (np.round(table / scale[:, None]).clip(-127, 127) * scale[:, None]).astype(np.float32)[ids]
    np.testing.assert_allclose(rows, expected, rtol=1e-6, atol=0)
    # int8 per row: within half a step of each row's own scale.
    assert np.all(np.abs(rows - table[ids]) <= scale[ids][..., None] / 2 + 1e-9)
