"""Assertions and small models shared by the test modules."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import Result


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """A CLI failure as users should see it: non-zero exit, one line, no traceback, naming the problem."""
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def tiny_model(path: Path, shape: list, labels: list[str] | None = None,
               metadata: dict[str, Any] | None = None) -> Path:
    """A model with input ``shape`` whose 'logits' are the flattened image's first 10 values; ``labels``
    and other ``metadata`` (JSON-encoded) as `pipeline export` would write them."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [shape[0], 10])
    nodes = [helper.make_node("Flatten", ["image"], ["flat"]),
             helper.make_node("Slice", ["flat", "start", "end", "axis"], ["logits"])]
    constants = [helper.make_tensor(n, TensorProto.INT64, [1], [v])
                 for n, v in (("start", 0), ("end", 10), ("axis", 1))]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    props = {**({"labels": labels} if labels is not None else {}), **(metadata or {})}
    if props:
        helper.set_model_props(model, {key: json.dumps(value) for key, value in props.items()})
    onnx.save(model, str(path))
    return path
