from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from pipeline.errors import PipelineError
from pipeline.quantize import first_block, pool_before_relu


def run(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": images})[0]


def test_first_block_is_normalization_conv_relu_pool(exported_run: Path) -> None:
    model = onnx.load(str(exported_run / "model.onnx"))
    assert [node.op_type for node in first_block(model)] == ["Sub", "Div", "Conv", "Relu", "MaxPool"]


def test_pool_before_relu_computes_the_same_numbers(exported_run: Path) -> None:
    model = onnx.load(str(exported_run / "model.onnx"))
    images = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    before = run(model, images)
    pool_before_relu(model)
    onnx.checker.check_model(model, full_check=True)
    assert [node.op_type for node in model.graph.node][2:5] == ["Conv", "MaxPool", "Relu"]
    np.testing.assert_array_equal(run(model, images), before)  # max and ReLU commute exactly


def test_a_graph_of_another_shape_is_refused() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["image"], ["logits"])], "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])])
    with pytest.raises(PipelineError, match="Conv -> Relu -> MaxPool"):
        first_block(helper.make_model(graph))
