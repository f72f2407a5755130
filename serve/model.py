"""The exported digit model in onnxruntime: one session, its metadata, batched inference.

Everything serving needs (input format, labels) comes from the model file's metadata, written by
`pipeline export`. Torch-free by design.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from serve.image.normalize import FieldSpec
from serve.image.views import AS_DRAWN, View, combine, expand, views_from_json

if TYPE_CHECKING:  # imported when a model is loaded, not when this module is
    import onnxruntime

INPUT_NAME = "image"
INPUT_SHAPE = (1, 28, 28)  # after the batch dimension, for models exported before metadata declared it
MAX_BATCH = 256
DEFAULT_MIN_CONFIDENCE = 0.5  # for models whose metadata has no calibrated threshold


class ModelError(Exception):
    """The model file cannot be served (missing, not ONNX, unexpected interface)."""


@dataclass
class DigitModel:
    path: Path
    session: onnxruntime.InferenceSession
    labels: list[str]
    metadata: dict[str, str] = field(default_factory=dict)
    output_names: list[str] = field(default_factory=list)
    reject_index: int | None = None  # the "not a digit" class, if the model has one
    min_confidence: float = DEFAULT_MIN_CONFIDENCE  # below this a digit is refused (calibrated at export)
    field_spec: FieldSpec = FieldSpec()
    views: tuple[View, ...] = AS_DRAWN  # each glyph's field is read in these (the threshold is calibrated on them)

    def logits(self, images: np.ndarray, batch_size: int = MAX_BATCH) -> np.ndarray:
        """images float32 [N,1,S,S] in [0,1] → logits float32 [N, classes], in batches of ``batch_size``."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != self.input_shape:
            raise ValueError(f"expected images of shape [N, {', '.join(map(str, self.input_shape))}], "
                             f"got {list(images.shape)}")
        if len(images) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        chunks = [self.session.run(["logits"], {INPUT_NAME: images[i:i + batch_size]})[0]
                  for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.field_spec.size, self.field_spec.size)

    def probabilities(self, images: np.ndarray, batch_size: int = MAX_BATCH) -> np.ndarray:
        return softmax(self.logits(images, batch_size))

    def view_fields(self, fields: np.ndarray) -> np.ndarray:
        """float32 [k, S, S] glyph fields → [k · views, 1, S, S]: the model's input for reading them."""
        return expand(fields, self.views, self.field_spec.centre)[:, None]

    def read_fields(self, fields: np.ndarray, batch_size: int = MAX_BATCH) -> np.ndarray:
        """float32 [k, S, S] glyph fields → [k, classes]: each field's probabilities, the mean over its views."""
        return combine(self.probabilities(self.view_fields(fields), batch_size), len(self.views))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def declared_input_shape(metadata: dict[str, str]) -> tuple[int, ...]:
    """The input shape after the batch dimension, as the model's metadata declares it."""
    try:
        shape = json.loads(metadata["input"])["shape"]
        return tuple(int(d) for d in shape[1:])
    except (KeyError, ValueError, TypeError, IndexError):
        return INPUT_SHAPE


def load_model(path: Path, intra_op_threads: int = 0) -> DigitModel:
    """Open ``path`` in onnxruntime (CPU) and check it has the digit model's interface."""
    import onnxruntime as ort

    path = Path(path)
    if path.is_dir():
        raise ModelError(f"model {path} is a directory; give the .onnx file in it (e.g. {path / 'model.onnx'})")
    if not path.is_file():
        raise ModelError(f"model {path} not found (export one with `pipeline export`)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a loadable ONNX model ({first[:200]})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise ModelError(f"{path}: expected one input named {INPUT_NAME!r}, found {[i.name for i in inputs]}")
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    shape = inputs[0].shape
    expected = declared_input_shape(metadata)
    if len(shape) != 4 or tuple(shape[1:]) != expected or inputs[0].type != "tensor(float)":
        raise ModelError(f"{path}: input {INPUT_NAME!r} is {inputs[0].type} {shape}; "
                         f"its metadata declares float32 [N, {', '.join(map(str, expected))}]")
    if isinstance(shape[0], int):
        raise ModelError(f"{path}: input {INPUT_NAME!r} has a fixed batch of {shape[0]}; "
                         "serving needs a dynamic batch dimension (export with `pipeline export`)")
    output_names = [o.name for o in session.get_outputs()]
    if "logits" not in output_names:
        raise ModelError(f"{path}: model has no 'logits' output (outputs: {output_names})")
    n_classes = session.get_outputs()[output_names.index("logits")].shape[-1]
    try:
        labels = [str(label) for label in json.loads(metadata["labels"])]
    except (KeyError, ValueError, TypeError):
        labels = [str(i) for i in range(n_classes if isinstance(n_classes, int) else 10)]
    if isinstance(n_classes, int) and len(labels) != n_classes:
        raise ModelError(f"{path}: metadata names {len(labels)} labels but the graph has {n_classes} outputs")
    reject_label = metadata.get("reject_label")
    reject_index = labels.index(reject_label) if reject_label in labels else None
    try:
        min_confidence = float(metadata.get("min_confidence", DEFAULT_MIN_CONFIDENCE))
        field_spec = FieldSpec(**json.loads(metadata["field"])) if "field" in metadata else FieldSpec(size=expected[-1])
        views = views_from_json(metadata["views"]) if "views" in metadata else AS_DRAWN
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path}: unreadable preprocessing metadata ({exc})") from None
    if (1, field_spec.size, field_spec.size) != expected:
        raise ModelError(f"{path}: metadata's field of {field_spec.size}x{field_spec.size} does not match the input "
                         f"{list(expected)}")
    return DigitModel(path, session, labels, metadata, output_names, reject_index, min_confidence, field_spec,
                      views)
