from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from models import DigitNetConfig
from pipeline.checkpoint import load_checkpoint, model_from_checkpoint
from pipeline.cli import cli
from pipeline.data import load_dataset
from pipeline.errors import PipelineError
from pipeline.export import export_model, verify_model
from tests.conftest import make_run
from tests.helpers import assert_one_line_error


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def sample_test_split() -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("sample")
    return ds.test_images.astype(np.float32)[:, None] / 255.0, ds.test_labels


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_folded_export_has_no_batchnorm_and_passes_parity(exported_run: Path) -> None:
    model_path = exported_run / "model.onnx"
    assert "BatchNormalization" not in op_types(model_path)
    assert "Conv" in op_types(model_path)
    onnx.checker.check_model(str(model_path), full_check=True)
    parity = json.loads((exported_run / "parity.json").read_text())
    assert parity["passed"] and parity["failures"] == []
    assert parity["max_abs_diff"] <= 1e-4
    assert parity["real"]["big_batch"]["batch_size"] >= 1000 and parity["real"]["batch_1"]["batch_size"] == 1
    assert parity["real"]["batch_1"]["argmax_agreement"] == 1.0
    assert parity["folding"]["max_abs_diff"] <= 1e-5
    assert not [p for p in exported_run.iterdir() if p.name.endswith(".tmp")]


def test_onnxruntime_matches_torch_eval_independently_of_the_report(exported_run: Path) -> None:
    images, labels = sample_test_split()
    model = model_from_checkpoint(load_checkpoint(exported_run))
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    sess = session(exported_run / "model.onnx")
    logits, probs = sess.run(["logits", "probabilities"], {"image": images})
    assert np.abs(logits - ref).max() <= 1e-4
    assert (logits.argmax(1) == ref.argmax(1)).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # batch-size independence: one at a time gives the same logits as the whole batch
    one_by_one = np.concatenate([sess.run(["logits"], {"image": images[i:i + 1]})[0] for i in range(0, 1000, 37)])
    np.testing.assert_allclose(one_by_one, logits[::37], rtol=0, atol=1e-5)
    # and a different batch composition around an image does not change its logits
    mixed = np.concatenate([images[:5], np.random.default_rng(0).random((20, 1, 28, 28), dtype=np.float32)])
    np.testing.assert_allclose(sess.run(["logits"], {"image": mixed})[0][:5], logits[:5], rtol=0, atol=1e-5)


def test_metadata_is_present_and_correct(exported_run: Path) -> None:
    props = {p.key: p.value for p in onnx.load(str(exported_run / "model.onnx")).metadata_props}
    ckpt = load_checkpoint(exported_run)
    cfg = DigitNetConfig.from_dict(ckpt["config"])
    assert json.loads(props["labels"]) == [str(d) for d in range(10)] + ["not a digit"]
    assert props["reject_label"] == "not a digit"
    assert json.loads(props["field"]) == {"size": 28, "box": 20, "centre": 14.0}
    assert float(props["normalize_mean"]) == cfg.normalize_mean and float(props["normalize_std"]) == cfg.normalize_std
    assert float(props["bn_eps"]) == cfg.bn_eps and props["bn_folded"] == "true"
    assert props["checkpoint_sha256"] == hashlib.sha256((exported_run / "checkpoint.pt").read_bytes()).hexdigest()
    assert json.loads(props["training_config"]) == ckpt["train_config"]
    assert json.loads(props["model_config"]) == ckpt["config"]
    # the recorded accuracy is the checkpoint's own accuracy on the test split
    images, labels = sample_test_split()
    with torch.no_grad():
        acc = float((model_from_checkpoint(ckpt)(torch.from_numpy(images)).argmax(1).numpy() == labels).mean())
    assert float(props["test_accuracy"]) == pytest.approx(acc)
    spec = json.loads(props["input"])
    assert spec["shape"] == [-1, 1, 28, 28] and spec["pixel_range"] == [0, 1] and "white" in spec["polarity"]
    assert {"torch", "onnx", "onnxruntime"} <= set(json.loads(props["versions"]))
    sess = session(exported_run / "model.onnx")
    assert sess.get_inputs()[0].name == "image" and isinstance(sess.get_inputs()[0].shape[0], str)  # dynamic batch
    assert [o.name for o in sess.get_outputs()] == ["logits", "probabilities"]


def test_the_refusal_threshold_is_calibrated_recorded_and_read_by_serve(exported_run: Path) -> None:
    from serve.image.views import READING_VIEWS
    from serve.model import load_model

    props = {p.key: p.value for p in onnx.load(str(exported_run / "model.onnx")).metadata_props}
    calibration = json.loads(props["calibration"])
    threshold = float(props["min_confidence"])
    assert 0.3 <= threshold <= 0.9 and calibration["min_confidence"] == threshold
    assert calibration["validation_digits"] == 3000 and calibration["validation_non_digits"] == 1000
    # what the threshold does on the validation data is recorded (values, not just keys)
    assert 0 <= calibration["digits_refused"] < 0.2 and calibration["non_digits_refused"] > 0.5
    served = load_model(exported_run / "model.onnx")
    assert served.min_confidence == threshold and served.reject_index is not None
    # calibrated on the views serving reads each field in, and those views recorded for serve
    assert calibration["views"] == len(READING_VIEWS) > 1 and served.views == READING_VIEWS
    assert served.labels[served.reject_index] == "not a digit"


@pytest.mark.slow
@pytest.mark.usefixtures("quick_calibration")
def test_no_fold_export_keeps_batchnorm_and_still_passes(trained_run: Path, tmp_path: Path) -> None:
    result = export_model(trained_run, tmp_path / "unfolded.onnx", fold=False)
    assert "BatchNormalization" in op_types(tmp_path / "unfolded.onnx")
    assert result.parity.passed and not result.folded
    assert (tmp_path / "parity.json").is_file()


@pytest.mark.slow
@pytest.mark.usefixtures("quick_calibration")
def test_export_of_a_no_bn_run(tmp_path: Path) -> None:
    run = make_run(tmp_path / "nobn", bn=False, max_steps=10)
    result = export_model(run)
    assert result.parity.passed and "BatchNormalization" not in op_types(run / "model.onnx")
    props = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}
    assert props["bn"] == "false"
    with pytest.raises(PipelineError, match="trained without BN"):
        export_model(run, tmp_path / "x.onnx", recompute_stats=True)


@pytest.mark.slow
@pytest.mark.usefixtures("quick_calibration")
def test_recompute_stats_exports_exact_statistics_and_verify_uses_them(trained_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    result = export_model(run, recompute_stats=True)
    assert result.parity.passed
    exact = load_checkpoint(run / "checkpoint-exact-bn.pt")
    original = load_checkpoint(run / "checkpoint.pt")
    assert not torch.allclose(exact["model"]["bn2.running_var"], original["model"]["bn2.running_var"])
    props = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}
    assert props["checkpoint"] == "checkpoint-exact-bn.pt" and props["bn_statistics"].startswith("exact")
    assert verify_model(run / "model.onnx").passed


@pytest.mark.slow
@pytest.mark.usefixtures("quick_calibration")
def test_failed_parity_leaves_no_model(trained_run: Path, tmp_path: Path, monkeypatch) -> None:
    import pipeline.export as export_module

    real_export = export_module.onnx_export

    def sabotaged(net, path, opset, optimize):
        with torch.no_grad():
            net.fc2.bias[3] += 1e-3  # a tiny error the parity check must catch
        real_export(net, path, opset, optimize)

    monkeypatch.setattr(export_module, "onnx_export", sabotaged)
    out = tmp_path / "model.onnx"
    with pytest.raises(PipelineError, match=r"parity check failed \(max \|Δlogit\|"):
        export_model(trained_run, out)
    assert not out.exists()
    assert json.loads((tmp_path / "parity.json").read_text())["passed"] is False
    assert [p.name for p in tmp_path.iterdir()] == ["parity.json"]


def test_verify_cli_human_and_json(exported_run: Path) -> None:
    result = CliRunner().invoke(cli, ["verify", str(exported_run / "model.onnx")])
    assert result.exit_code == 0, result.output
    assert "parity PASS" in result.output and "folding alone" in result.output
    result = CliRunner().invoke(cli, ["verify", str(exported_run / "model.onnx"), "--json"])
    report = json.loads(result.output)
    assert report["passed"] and report["real"]["n"] == 1000 and report["stress"]["n"] == 130


def test_verify_fails_on_a_tampered_model(exported_run: Path, tmp_path: Path) -> None:
    proto = onnx.load(str(exported_run / "model.onnx"))
    classes = len(json.loads({p.key: p.value for p in proto.metadata_props}["labels"]))
    init = next(i for i in proto.graph.initializer if len(onnx.numpy_helper.to_array(i).shape) == 1
                and onnx.numpy_helper.to_array(i).shape[0] == classes)  # the last layer's bias
    array = onnx.numpy_helper.to_array(init).copy()
    array[0] += 0.01
    init.CopyFrom(onnx.numpy_helper.from_array(array, init.name))
    tampered = tmp_path / "model.onnx"
    onnx.save(proto, str(tampered))
    result = CliRunner().invoke(cli, ["verify", str(tampered), "--run", str(exported_run)])
    assert result.exit_code == 1 and "parity FAIL" in result.output


@pytest.mark.slow
@pytest.mark.usefixtures("quick_calibration")
def test_export_cli_prints_the_parity_table(trained_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export", "--run", str(trained_run), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert "parity PASS" in result.output and "onnxruntime, batch 1 " in result.output
    assert (tmp_path / "m.onnx").is_file()


def test_export_bad_input(trained_run: Path, tmp_path: Path) -> None:
    run = lambda *a: CliRunner().invoke(cli, list(a))  # noqa: E731
    assert_one_line_error(run("export", "--run", str(tmp_path / "missing")), "run directory", "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("export", "--run", str(tmp_path / "empty")), "checkpoint.pt not found")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoint.pt").write_bytes(b"PK\x03\x04garbage")
    assert_one_line_error(run("export", "--run", str(corrupt)), "not a readable checkpoint")
    other = tmp_path / "other"
    other.mkdir()
    ckpt = load_checkpoint(trained_run)
    ckpt["config"] = {**ckpt["config"], "conv1_channels": 16}  # weights are for 32 channels
    torch.save(ckpt, other / "checkpoint.pt")
    assert_one_line_error(run("export", "--run", str(other)), "does not match the DigitNet architecture")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_line_error(run("export", "--run", str(trained_run), "--out", str(blocker / "m.onnx")),
                          "cannot write", "does not exist")
    assert_one_line_error(run("export", "--run", str(trained_run), "--opset", "11"), "--opset 11")
    assert_one_line_error(run("export", "--run", str(trained_run), "--out", str(tmp_path / "m.onnx"), "--no-fold",
                              "--quantize", "int8"), "cannot be combined with --no-fold")
    assert not list(tmp_path.glob("m*.onnx"))
    for directory in (tmp_path / "empty", corrupt, other):
        assert not list(directory.glob("*.onnx")) and not list(directory.glob(".*tmp"))


def test_verify_bad_input(exported_run: Path, tmp_path: Path) -> None:
    run = lambda *a: CliRunner().invoke(cli, list(a))  # noqa: E731
    assert_one_line_error(run("verify", str(tmp_path / "none.onnx")), "not found")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n not onnx")
    assert_one_line_error(run("verify", str(junk)), "not an ONNX model")
    copy = tmp_path / "run"
    shutil.copytree(exported_run, copy)
    ckpt = load_checkpoint(copy)
    ckpt["step"] += 1
    torch.save(ckpt, copy / "checkpoint.pt")  # retrained after export: a different checkpoint
    assert_one_line_error(run("verify", str(copy / "model.onnx")), "sha256 differs")


@pytest.mark.slow
@pytest.mark.usefixtures("quick_calibration")
def test_int8_export_loads_predicts_and_agrees_with_fp32(trained_run: Path, tmp_path: Path) -> None:
    from serve.model import load_model

    out = tmp_path / "model.onnx"
    result = export_model(trained_run, out, quantize="int8")
    int8 = tmp_path / "model-int8.onnx"
    assert result.int8_path == int8 and int8.is_file()
    assert result.int8_report is not None and result.int8_report.passed
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types(int8)
    graph = onnx.load(str(int8)).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    conv_weights = [node.input[1] for node in graph.node if node.op_type == "Conv"]
    gemm_weights = [node.input[1] for node in graph.node if node.op_type == "Gemm"]
    # the first conv block stays fp32 (faster there); the second conv and both dense layers are int8
    assert conv_weights[0] not in dequantized and conv_weights[1] in dequantized
    assert all(weight in dequantized for weight in gemm_weights)
    props = {p.key: p.value for p in onnx.load(str(int8)).metadata_props}
    assert props["quantization"].startswith("int8 static QDQ") and "labels" in props
    images, labels = sample_test_split()
    fp32_logits = load_model(out).logits(images)
    int8_logits = load_model(int8).logits(images)
    agreement = float(np.mean(fp32_logits.argmax(1) == int8_logits.argmax(1)))
    assert agreement >= 0.97
    assert np.mean(int8_logits.argmax(1) == labels) >= np.mean(fp32_logits.argmax(1) == labels) - 0.003
    report = json.loads((tmp_path / "parity-int8.json").read_text())
    assert report["argmax_agreement"] == pytest.approx(agreement)
    verified = CliRunner().invoke(cli, ["verify", str(int8), "--run", str(trained_run)])
    assert verified.exit_code == 0 and "int8 check PASS" in verified.output
