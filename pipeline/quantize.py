"""int8 static quantization of the exported model with onnxruntime (QDQ, per-channel weights)."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import PipelineError
from pipeline.parity import Report

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 500
MAX_ACCURACY_DROP = 0.003  # int8 passes when its test accuracy is at most 0.3 points below fp32


def first_block(model: "onnx.ModelProto") -> list["onnx.NodeProto"]:
    """The nodes from the graph input up to and including the first Conv -> Relu -> MaxPool chain."""
    nodes = list(model.graph.node)
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    conv = next((node for node in nodes if node.op_type == "Conv"), None)
    relu = consumers.get(conv.output[0], []) if conv else []
    if len(relu) == 1 and nodes[relu[0]].op_type == "Relu":
        pool = consumers.get(nodes[relu[0]].output[0], [])
        if len(pool) == 1 and nodes[pool[0]].op_type == "MaxPool":
            return nodes[:pool[0] + 1]
    raise PipelineError("int8: the model does not start with Conv -> Relu -> MaxPool; is it a foldserve export?")


def pool_before_relu(model: "onnx.ModelProto") -> None:
    """Rewrite the first block's Conv -> Relu -> MaxPool as Conv -> MaxPool -> Relu (in place).

    The two orders compute the same numbers (ReLU is monotonic, so it commutes with max). The
    reason is onnxruntime: it moves a QuantizeLinear that follows a MaxPool back in front of it,
    turning the pool into a uint8 MaxPool in NCHW that took 45% of the int8 model's time; a ReLU
    between them stops that, and the fp32 pool then runs in onnxruntime's blocked (NCHWc) layout.
    """
    block = first_block(model)
    relu, pool = block[-2], block[-1]
    conv_out, relu_out, pool_out = relu.input[0], relu.output[0], pool.output[0]
    pool.input[0], pool.output[0] = conv_out, relu_out
    relu.input[0], relu.output[0] = relu_out, pool_out
    nodes = list(model.graph.node)
    i, j = nodes.index(relu), nodes.index(pool)
    nodes[i], nodes[j] = nodes[j], nodes[i]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    kept = [info for info in model.graph.value_info if info.name != relu_out]  # its shape changed
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray, batch_size: int = 50) -> None:
    """Write an int8 QDQ model of ``fp32_path``: uint8 activations, int8 per-channel weights, min-max
    calibration on ``calibration`` (float32 [N,1,28,28] training images). Metadata is carried over.

    The first block (normalization, conv 5x5x32 on one input channel, ReLU, max-pool) stays fp32:
    as an int8 QLinearConv with one input channel it took 47% of the int8 model's time, three times
    what onnxruntime's fp32 kernel needs, and it is 3% of the model's FLOPs.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": calibration[i:i + batch_size]}
                                 for i in range(0, len(calibration), batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))  # shape inference and graph clean-up first
        fp32_block = [node.name for node in first_block(onnx.load(str(prepared)))]
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(str(prepared), str(quantized), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=fp32_block)
        fp32 = onnx.load(str(fp32_path), load_external_data=False)
        model = onnx.load(str(quantized))
        pool_before_relu(model)
        del model.metadata_props[:]
        model.metadata_props.extend(fp32.metadata_props)
        entry = model.metadata_props.add()
        entry.key = "quantization"
        entry.value = (f"int8 static QDQ (onnxruntime): uint8 activations, int8 per-channel weights, "
                       f"min-max calibration on {len(calibration)} training images; first conv block in fp32")
        model.producer_name = fp32.producer_name
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(out_path))


class QuantizedReport(Report):
    def table(self) -> str:
        d = self.data
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(d["failures"])
        return (f"int8 check {verdict}\n  candidate {d['candidate']} (onnxruntime CPU)\n"
                f"  reference {d['reference']} (fp32 PyTorch eval)\n"
                f"  {d['n']} {d['dataset']} test images: accuracy int8 {d['int8_accuracy']:.2%}, "
                f"fp32 {d['fp32_accuracy']:.2%}; argmax agreement {d['argmax_agreement']:.2%}; "
                f"max |Δlogit| {d['max_abs_logit_diff']:.3g}\n"
                f"pass: int8 accuracy at most {d['max_accuracy_drop'] * 100:.1f} points below fp32")


def check_quantized(int8_path: Path, reference_logits: np.ndarray, images: np.ndarray, labels: np.ndarray,
                    candidate_name: str, reference_name: str, dataset_name: str) -> QuantizedReport:
    """int8 against fp32: accuracy and argmax agreement instead of a logit bound."""
    from serve.model import ModelError, load_model

    try:
        model = load_model(int8_path)
    except ModelError as exc:
        raise PipelineError(str(exc)) from None
    logits = model.logits(images, batch_size=1000)
    fp32_accuracy = float(np.mean(reference_logits.argmax(1) == labels))
    int8_accuracy = float(np.mean(logits.argmax(1) == labels))
    agreement = float(np.mean(logits.argmax(1) == reference_logits.argmax(1)))
    failures = []
    if int8_accuracy < fp32_accuracy - MAX_ACCURACY_DROP:
        failures.append(f"int8 accuracy {int8_accuracy:.2%} is more than {MAX_ACCURACY_DROP * 100:.1f} points "
                        f"below fp32 {fp32_accuracy:.2%}")
    return QuantizedReport({
        "kind": "int8", "passed": not failures, "failures": failures, "candidate": candidate_name,
        "reference": reference_name, "dataset": dataset_name, "n": len(labels),
        "fp32_accuracy": fp32_accuracy, "int8_accuracy": int8_accuracy, "argmax_agreement": agreement,
        "max_abs_logit_diff": float(np.abs(logits - reference_logits).max(initial=0.0)),
        "max_accuracy_drop": MAX_ACCURACY_DROP,
    })

