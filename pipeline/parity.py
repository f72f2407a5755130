"""Parity: the ONNX graph in onnxruntime (the served path) against the unfolded PyTorch model in eval mode."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from models import DigitNet

MAX_ABS_LOGIT_DIFF = 1e-4
BIG_BATCH_MIN = 1000
BIG_BATCH_MAX = 4096  # larger real sets are run as consecutive batches of this size


def stress_inputs(n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs far from the training data: the graph must agree there too, not only on digits."""
    rng = np.random.default_rng(seed)
    shape = (n, 1, 28, 28)
    return {
        "uniform noise": rng.random(shape, dtype=np.float32),
        "all zeros": np.zeros((1, 1, 28, 28), np.float32),
        "all ones": np.ones((1, 1, 28, 28), np.float32),
        "saturated 0/1": (rng.random(shape) < 0.5).astype(np.float32),
    }


def torch_logits(model: "DigitNet", images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(images[i:i + batch_size])).numpy()
                               for i in range(0, len(images), batch_size)])


def diff_stats(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max absolute logit difference, and the same relative to max(|reference|, 1)."""
    delta = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    return {
        "max_abs_diff": float(delta.max(initial=0.0)),
        "max_rel_diff": float((delta / np.maximum(np.abs(reference), 1.0)).max(initial=0.0)),
        "argmax_agreement": float(np.mean(candidate.argmax(1) == reference.argmax(1))) if len(reference) else 1.0,
    }


@dataclass
class Report:
    """A check's result: ``data`` is what parity.json holds; ``table()`` the human summary."""

    data: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.data["passed"])

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2)

    def table(self) -> str:
        raise NotImplementedError


class ParityReport(Report):
    def table(self) -> str:
        d = self.data
        rows = [("", "max |Δlogit|", "max rel", "argmax agree", "accuracy")]
        real = d["real"]
        for key in ("batch_1", "big_batch"):
            r = real[key]
            rows.append((f"onnxruntime, batch {r['batch_size']}",
                         f"{r['max_abs_diff']:.2e}", f"{r['max_rel_diff']:.2e}",
                         f"{r['argmax_agreement']:.2%}", f"{r['accuracy']:.2%}"))
        rows.append(("torch eval (reference)", "-", "-", "-", f"{real['reference_accuracy']:.2%}"))
        s = d["stress"]
        rows.append((f"stress inputs ({s['n']})", f"{s['max_abs_diff']:.2e}", f"{s['max_rel_diff']:.2e}",
                     f"{s['argmax_agreement']:.2%}", "-"))
        f = d["folding"]
        rows.append(("folding alone (torch)", f"{f['max_abs_diff']:.2e}", f"{f['max_rel_diff']:.2e}",
                     f"{f['argmax_agreement']:.2%}", f"{f['accuracy']:.2%}"))
        rows.append(("batch 1 vs big batch", f"{d['batch_dependence_max_abs_diff']:.2e}", "-", "-", "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
                 for r in rows]
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(d["failures"])
        header = (f"parity {verdict}\n  candidate {d['candidate']} (onnxruntime CPU)\n"
                  f"  reference {d['reference']} (PyTorch, eval mode, BN unfolded)\n"
                  f"  real data: {real['n']} {d['dataset']} test images")
        footer = (f"pass: max |Δlogit| ≤ {d['threshold']:g}, 100% argmax agreement and equal accuracy on real data")
        return "\n".join([header, *("  " + line for line in lines), footer])


def check_parity(onnx_path: Path, reference: "DigitNet", images: np.ndarray, labels: np.ndarray,
                 dataset_name: str = "test", reference_name: str = "checkpoint",
                 threshold: float = MAX_ABS_LOGIT_DIFF) -> ParityReport:
    """Compare onnxruntime on ``onnx_path`` with ``reference`` (eval mode) at batch size 1 and ≥1000.

    ``images``: float32 [N,1,28,28] in [0,1] (the test split); stress inputs are added.
    """
    from models import fold_batchnorm
    from serve.model import ModelError, load_model

    try:
        candidate = load_model(onnx_path)
    except ModelError as exc:
        raise PipelineError(str(exc)) from None
    stress = np.concatenate(list(stress_inputs().values()))
    everything = np.concatenate([images, stress]).astype(np.float32)
    n_real = len(images)

    ref = torch_logits(reference, everything)
    folded = torch_logits(fold_batchnorm(reference), everything)
    big_batch = max(BIG_BATCH_MIN, min(len(everything), BIG_BATCH_MAX))
    ort_big = candidate.logits(everything, batch_size=big_batch)
    ort_one = candidate.logits(everything, batch_size=1)

    def accuracy(logits: np.ndarray) -> float:
        return float(np.mean(logits[:n_real].argmax(1) == labels)) if n_real else 0.0

    real: dict[str, Any] = {"n": n_real, "reference_accuracy": accuracy(ref)}
    for key, out, bs in (("batch_1", ort_one, 1), ("big_batch", ort_big, big_batch)):
        real[key] = {"batch_size": bs, **diff_stats(out[:n_real], ref[:n_real]), "accuracy": accuracy(out)}
    stress_stats = {"n": len(stress), **diff_stats(np.concatenate([ort_one[n_real:], ort_big[n_real:]]),
                                                   np.concatenate([ref[n_real:], ref[n_real:]]))}
    folding = {**diff_stats(folded, ref), "accuracy": accuracy(folded)}

    failures = []
    worst = max(real["batch_1"]["max_abs_diff"], real["big_batch"]["max_abs_diff"], stress_stats["max_abs_diff"])
    if not worst <= threshold:  # also catches NaN
        failures.append(f"max |Δlogit| {worst:.3g} > {threshold:g}")
    for key in ("batch_1", "big_batch"):
        if real[key]["argmax_agreement"] < 1.0:
            failures.append(f"argmax agreement {real[key]['argmax_agreement']:.2%} at batch {real[key]['batch_size']}")
        if real[key]["accuracy"] != real["reference_accuracy"]:
            failures.append(f"accuracy {real[key]['accuracy']:.2%} != reference {real['reference_accuracy']:.2%}")
    data = {
        "passed": not failures, "failures": failures, "threshold": threshold,
        "candidate": str(onnx_path), "reference": reference_name, "dataset": dataset_name,
        "real": real, "stress": stress_stats, "folding": folding,
        "batch_dependence_max_abs_diff": float(np.abs(ort_one.astype(np.float64) - ort_big).max(initial=0.0)),
        "max_abs_diff": worst,
    }
    return ParityReport(data)
