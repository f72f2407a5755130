"""`make bench`: measure training and inference side by side on this machine, write BENCHMARKS.md.

    python -m benchmarks.bench [--out BENCHMARKS.md] [--work runs/bench] [--smoke]

Every figure is the median of several repeats with the min–max range. ``--smoke`` runs a few
iterations of everything (for `make test`); its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.markdown import OTHER_TARGETS_SECTIONS, carry_sections, write_atomically

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Stat:
    """Median and range of repeated measurements."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def fmt(self, digits: int = 0, unit: str = "") -> str:
        lo, hi = min(self.values), max(self.values)
        return f"{self.median:,.{digits}f}{unit} ({lo:,.{digits}f}–{hi:,.{digits}f})"


def repeat(fn: Callable[[], float], times: int) -> Stat:
    return Stat([fn() for _ in range(times)])


def machine_info() -> dict[str, str]:
    import onnxruntime
    import torch

    model = "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": model,
        "cores": str(os.cpu_count()),
        "instruction sets": ", ".join(f for f in wanted if f in flags) or "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "torch threads": str(torch.get_num_threads()),
    }


# --------------------------------------------------------------------------- artifacts


def prepare_models(work: Path, smoke: bool) -> dict[str, Path]:
    """A trained run with fp32 folded, fp32 unfolded and int8 ONNX exports."""
    from pipeline.export import QUICK_THRESHOLD_VALIDATION, export_model
    from pipeline.train import TrainConfig, train

    run = work / "run"
    if not (run / "checkpoint.pt").is_file():
        # a smoke run trains 5 steps: 400 generated images keep its 11 classes, without drawing the default 6,500 (10 s)
        cfg = TrainConfig(epochs=3, device="cpu")
        if smoke:
            cfg = dataclasses.replace(cfg, max_steps=5, stroke_digits=200, non_digits=200)
        train(cfg, run, progress=False)
    # a smoke run's exports calibrate the refusal threshold on a tenth of the images (1 s instead of 10)
    validation = QUICK_THRESHOLD_VALIDATION if smoke else None
    export_model(run, run / "model.onnx", threshold_validation=validation)
    export_model(run, run / "model-unfolded.onnx", fold=False, threshold_validation=validation)
    # quantized directly: `export --quantize` also gates on accuracy, which a smoke run's model may miss
    from pipeline.data import load_dataset, model_input
    from pipeline.quantize import CALIBRATION_IMAGES, quantize_int8

    calibration = model_input(load_dataset("sample").train_images[:CALIBRATION_IMAGES])
    quantize_int8(run / "model.onnx", run / "model-int8.onnx", calibration)
    return {"run": run, "folded": run / "model.onnx", "unfolded": run / "model-unfolded.onnx",
            "int8": run / "model-int8.onnx"}


# --------------------------------------------------------------------------- training


def minimal_training_loop(model, optimizer, images, labels, batch_size: int, steps: int, seed: int,
                          bf16: bool = False, channels_last: bool = False) -> float:
    """The plain PyTorch loop a user would write: same data, augmentation, model and optimizer. Returns seconds."""
    import torch
    from torch.nn import functional as F

    from pipeline.train import augment_batch, epoch_permutation

    gen = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    per_epoch = len(images) // batch_size
    start = time.perf_counter()
    for step in range(steps):
        epoch, b = divmod(step, per_epoch)
        idx = epoch_permutation(len(images), seed, epoch, images.device)[b * batch_size:(b + 1) * batch_size]
        x = augment_batch(images[idx], gen).contiguous(memory_format=fmt)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        F.cross_entropy(logits.float(), labels[idx]).backward()
        optimizer.step()
    return time.perf_counter() - start


def bench_training(work: Path, smoke: bool) -> dict:
    import dataclasses as dc

    import torch

    from models import DigitNet, DigitNetConfig
    from pipeline.data import load_dataset
    from pipeline.train import TrainConfig, to_tensors, train

    dataset = load_dataset("sample")
    # a small test split, so that the per-epoch evaluation does not count as loop overhead
    short = dc.replace(dataset, test_images=dataset.test_images[:100], test_labels=dataset.test_labels[:100])
    # 124 steps = 2 epochs: includes epoch ends and checkpoints; a smoke run checks the code paths, once each
    steps, repeats = (6, 1) if smoke else (124, 3)
    batch = 64
    x, y = to_tensors(dataset.train_images, dataset.train_labels, torch.device("cpu"))

    def pipeline_run(**options) -> float:
        # the same work as the minimal loop: fp32, contiguous, the affine augmentation only, the sample as
        # it is (no generated images, no real-world augmentation: those are data, not loop overhead)
        cfg = TrainConfig(max_steps=steps, batch_size=batch, device="cpu", precision="fp32", channels_last=False,
                          augment_real=False, stroke_digits=0, non_digits=0, **options)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            train(cfg, Path(tmp) / "r", progress=True, dataset=short)
            return steps * batch / (time.perf_counter() - start)

    def minimal_run(bf16: bool = False, channels_last: bool = False, compile_: bool = False) -> float:
        torch.manual_seed(0)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # Module.to documents and accepts memory_format=, but torch's overloads for it leave the keyword out
        model = DigitNet(DigitNetConfig()).to(memory_format=memory_format)  # type: ignore[call-overload]
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        forward = torch.compile(model) if compile_ else model
        minimal_training_loop(forward, optimizer, x, y, batch, 3, 1, bf16, channels_last)  # warm-up / compile
        return steps * batch / minimal_training_loop(forward, optimizer, x, y, batch, steps, 0, bf16, channels_last)

    pipeline_run()  # warm-up: first-call costs (allocator, kernels) out of the figures
    results: dict[str, Any] = {"steps": steps, "batch_size": batch}
    results["pipeline"] = repeat(pipeline_run, repeats)
    results["minimal"] = repeat(minimal_run, repeats)
    variants = {"channels_last": dict(channels_last=True), "bf16 autocast": dict(bf16=True),
                "bf16 autocast + channels_last": dict(bf16=True, channels_last=True)}
    if not smoke:  # compiling takes half a minute; the smoke run checks the code path without it
        variants["torch.compile"] = dict(compile_=True)
    results["variants"] = {name: repeat(functools.partial(minimal_run, **opts), repeats)
                           for name, opts in variants.items()}
    return results


def accuracy_check(work: Path, smoke: bool, options: dict[str, dict]) -> dict[str, tuple[float | None, float]]:
    """Full default training per option: (test accuracy, None if the run diverged; seconds)."""
    from pipeline.train import TrainConfig, train

    out = {}
    for name, opts in options.items():
        cfg = TrainConfig(device="cpu", max_steps=5 if smoke else None, **opts)
        start = time.perf_counter()
        result = train(cfg, work / f"acc-{name.replace(' ', '-')}", progress=False, overwrite=True)
        out[name] = (result.test_accuracy, time.perf_counter() - start)
    return out


# --------------------------------------------------------------------------- inference


def bench_inference(models: dict[str, Path], smoke: bool) -> dict:
    import onnxruntime as ort
    import torch

    from pipeline.checkpoint import load_checkpoint, model_from_checkpoint
    from serve.model import load_model

    from pipeline.data import load_dataset, model_input

    test = model_input(load_dataset("sample").test_images)
    batch256 = test[:256]
    single = test[:1]
    n_latency, n_throughput, repeats = (5, 2, 2) if smoke else (300, 20, 5)

    def latency(run: Callable[[], object]) -> dict[str, float]:
        for _ in range(5):
            run()
        times = []
        for _ in range(n_latency):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return {"p50_ms": float(np.percentile(times, 50) * 1e3), "p99_ms": float(np.percentile(times, 99) * 1e3)}

    def throughput(run: Callable[[], object], n: int) -> Stat:
        run()

        def once() -> float:
            start = time.perf_counter()
            for _ in range(n_throughput):
                run()
            return n * n_throughput / (time.perf_counter() - start)

        return repeat(once, repeats)

    def session(path: Path, threads: int = 0) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    results: dict = {"ort": {}, "threads": {}}
    for name in ("folded", "unfolded", "int8"):
        sess = session(models[name])
        results["ort"][name] = {
            "b1": latency(functools.partial(sess.run, ["logits"], {"image": single})),
            "b256": throughput(functools.partial(sess.run, ["logits"], {"image": batch256}), 256),
        }
        for threads in (1, 2):
            sess_t = session(models[name], threads)
            results["threads"][(name, threads)] = throughput(
                functools.partial(sess_t.run, ["logits"], {"image": batch256}), 256)
    model = model_from_checkpoint(load_checkpoint(models["run"]))
    x1, x256 = torch.from_numpy(single), torch.from_numpy(batch256)

    def eager(x: "torch.Tensor") -> object:
        with torch.inference_mode():
            return model(x)

    results["torch"] = {"b1": latency(lambda: eager(x1)), "b256": throughput(lambda: eager(x256), 256)}
    served = load_model(models["folded"])
    bare = served.session
    results["serve_path"] = {
        "bare b256": throughput(lambda: bare.run(["logits"], {"image": batch256}), 256),
        "serve b256": throughput(lambda: served.probabilities(batch256), 256),
        "bare b1": latency(lambda: bare.run(["logits"], {"image": single})),
        "serve b1": latency(lambda: served.probabilities(single)),
    }
    return results


def bench_cold_start(models: dict[str, Path], smoke: bool) -> dict:
    image = REPO / "examples" / "seven-photo.jpg"
    serve_bin = Path(sys.executable).with_name("serve")
    serve_cmd = [str(serve_bin), "predict", "--model", str(models["folded"]), str(image)]
    torch_script = (
        "import sys, numpy as np, torch\n"
        "from PIL import Image\n"
        "from pipeline.checkpoint import load_checkpoint, model_from_checkpoint\n"
        "from serve.preprocess import prepare\n"
        "model = model_from_checkpoint(load_checkpoint(sys.argv[1]))\n"
        "x = torch.from_numpy(prepare(open(sys.argv[2], 'rb').read()))[None, None]\n"
        "with torch.inference_mode():\n"
        "    p = torch.softmax(model(x), 1)[0]\n"
        "print(int(p.argmax()), float(p.max()))\n"
    )
    torch_cmd = [sys.executable, "-c", torch_script, str(models["run"] / "checkpoint.pt"), str(image)]

    def wall(cmd: list[str]) -> float:
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {done.stderr[-500:]}")
        return elapsed

    runs = 2 if smoke else 10
    wall(serve_cmd)  # page cache warm: we measure process start, not the disk
    wall(torch_cmd)
    return {"serve": repeat(lambda: wall(serve_cmd), runs), "torch": repeat(lambda: wall(torch_cmd), runs)}


def bench_http(models: dict[str, Path], smoke: bool) -> dict:
    """Requests/s and latency of `serve http` on loopback, dynamic batching on (the defaults: up to 64
    images, no wait window) and off (``--max-batch 1``)."""
    import http.client
    import socket
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.data import load_dataset, model_input

    images = model_input(load_dataset("sample").test_images[:256])
    header = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                     "parameters": {"binary_data_size": 28 * 28 * 4}}],
                         "outputs": [{"name": "probabilities"}]}).encode()
    bodies = [header + images[i].tobytes() for i in range(len(images))]
    total = 40 if smoke else 2000
    results: dict = {}
    for label, max_batch in (("batching on", 64), ("batching off", 1)):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "serve", "http", "--model", str(models["folded"]),
                                   "--port", str(port), "--max-batch", str(max_batch)],
                                  cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for _ in range(300):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            for clients in (1, 16, 64):
                per_client = max(1, total // clients)

                def client(worker: int, port: int = port, per_client: int = per_client) -> list[float]:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    latencies = []
                    for k in range(per_client):
                        body = bodies[(worker * per_client + k) % len(bodies)]
                        start = time.perf_counter()
                        connection.request("POST", "/v2/models/digits/infer", body=body,
                                           headers={"Inference-Header-Content-Length": str(len(header)),
                                                    "Content-Type": "application/octet-stream"})
                        response = connection.getresponse()
                        response.read()
                        if response.status != 200:
                            raise RuntimeError(f"HTTP {response.status}")
                        latencies.append(time.perf_counter() - start)
                    return latencies

                client(0)  # warm-up
                start = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    latencies = [t for chunk in pool.map(client, range(clients)) for t in chunk]
                elapsed = time.perf_counter() - start
                results[(label, clients)] = {"rps": len(latencies) / elapsed,
                                             "p50_ms": float(np.percentile(latencies, 50) * 1e3),
                                             "p99_ms": float(np.percentile(latencies, 99) * 1e3),
                                             "n": len(latencies)}
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    return results


def bench_peak(smoke: bool) -> dict[str, Stat]:
    """The fastest large float32 matrix multiply each library runs here, in GFLOP/s."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    n = 512 if smoke else 2048
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    flops = 2 * n ** 3
    repeats = 2 if smoke else 5

    def timed(fn: Callable[[], object]) -> float:
        fn()
        start = time.perf_counter()
        fn()
        return flops / (time.perf_counter() - start) / 1e9

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return {
        "numpy": repeat(lambda: timed(lambda: a @ b), repeats),
        "torch": repeat(lambda: timed(lambda: ta @ tb), repeats),
        "onnxruntime": repeat(lambda: timed(lambda: sess.run(["c"], {"a": a, "b": b})), repeats),
    }


def model_flops() -> int:
    """Multiply-adds ×2 of one forward pass, as the model states it."""
    from models import DigitNetConfig

    return DigitNetConfig().flops()


# --------------------------------------------------------------------------- report


def accuracy_row(name: str, accuracy: float | None, seconds: float) -> str:
    """A row of the accuracy table; a run that diverged or was stopped has no accuracy, and says so
    (rather than failing the whole report after minutes of measuring)."""
    shown = "none: the run diverged or stopped" if accuracy is None else f"{accuracy:.2%}"
    return f"| {name} | {shown} | {seconds:.0f} s |"


def report(info: dict, training: dict, accuracy: dict, inference: dict, cold: dict, peak: dict, http: dict,
           flops: int, elapsed: float, smoke: bool) -> str:
    best_peak_name = max(peak, key=lambda k: peak[k].median)
    best_peak = peak[best_peak_name].median
    bound = best_peak * 1e9 / flops
    lines = ["# Benchmarks", ""]
    if smoke:
        lines += ["**Smoke run: a few iterations each; these numbers mean nothing.**", ""]
    lines += [f"Written by `make bench` (`python -m benchmarks.bench`) in {elapsed:.0f} s. Each figure: median of "
              "repeats, (min–max) in brackets.", "", "| machine | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    pipeline, minimal = training["pipeline"].median, training["minimal"].median
    overhead = (minimal - pipeline) / minimal
    lines += ["", "## 1. Training throughput (images/s, batch 64, embedded sample, fp32 unless named)", "",
              f"{training['steps']} steps (two epochs, so epoch-end checkpoints count) of `pipeline train`'s loop "
              "(progress bar, metrics, checkpoints, LR schedule; test split cut to 100 images so evaluation does "
              "not count) against a minimal PyTorch loop over the same model, augmentation, data order and optimizer.",
              "", "| loop | images/s |", "| --- | --- |",
              f"| `pipeline train` | {training['pipeline'].fmt()} |",
              f"| minimal PyTorch loop | {training['minimal'].fmt()} |"]
    for name, stat in training["variants"].items():
        lines.append(f"| minimal loop, {name} | {stat.fmt()} ({stat.median / minimal:.2f}×) |")
    lines += ["", f"Pipeline overhead: **{overhead:.1%}** (target < 5%).", ""]
    if accuracy:
        from pipeline.train import TrainConfig

        lines += [f"Test accuracy of a full default `pipeline train` ({TrainConfig().epochs} epochs, seed 0) with "
                  "each option:", "", "| option | test accuracy | wall time |", "| --- | --- | --- |"]
        lines += [accuracy_row(name, acc, secs) for name, (acc, secs) in accuracy.items()]
        lines.append("")
    ort_r, torch_r = inference["ort"], inference["torch"]
    lines += ["## 2. Inference", "", "Batch 1 latency and batch 256 throughput, default thread settings.", "",
              "| engine / model | batch 1 p50 | batch 1 p99 | batch 256 images/s | vs PyTorch eager | of fp32 bound |",
              "| --- | --- | --- | --- | --- | --- |"]
    t256 = torch_r["b256"].median
    rows = [("PyTorch eager, eval (BN unfolded)", torch_r), ("onnxruntime fp32, BN folded", ort_r["folded"]),
            ("onnxruntime fp32, BN not folded (`--no-fold`)", ort_r["unfolded"]),
            ("onnxruntime int8 (QDQ)", ort_r["int8"])]
    for name, r in rows:
        lines.append(f"| {name} | {r['b1']['p50_ms']:.3f} ms | {r['b1']['p99_ms']:.3f} ms | {r['b256'].fmt()} "
                     f"| {r['b256'].median / t256:.2f}× | {r['b256'].median / bound:.0%} |")
    int8_speedup = ort_r["int8"]["b256"].median / ort_r["folded"]["b256"].median
    lines += ["", f"int8 vs fp32 (folded) at batch 256: **{int8_speedup:.2f}×** (target ≥ 2×); "
              f"fp32 vs PyTorch eager: **{ort_r['folded']['b256'].median / t256:.2f}×** (target ≥ 1.8×).", "",
              "Intra-op threads (batch 256 images/s):", "", "| model | 1 thread | 2 threads |", "| --- | --- | --- |"]
    for name in ("folded", "unfolded", "int8"):
        lines.append(f"| {name} | {inference['threads'][(name, 1)].fmt()} | {inference['threads'][(name, 2)].fmt()} |")
    sp = inference["serve_path"]
    bare, served = sp["bare b256"].median, sp["serve b256"].median
    lines += ["", "`serve`'s own path (`DigitModel.probabilities`: preprocessed input → probabilities) against a bare "
              "`session.run`:", "", "| path | batch 256 images/s | batch 1 p50 |", "| --- | --- | --- |",
              f"| bare `session.run` | {sp['bare b256'].fmt()} | {sp['bare b1']['p50_ms']:.3f} ms |",
              f"| serve path | {sp['serve b256'].fmt()} | {sp['serve b1']['p50_ms']:.3f} ms |", "",
              f"serve path costs **{(bare - served) / bare:.1%}** of bare throughput (target within 10%).", ""]
    serve_s, torch_s = cold["serve"].median, cold["torch"].median
    lines += ["## 3. Cold start", "",
              "Wall time of one prediction as a fresh process (`examples/seven-photo.jpg`).", "",
              "| command | seconds |", "| --- | --- |",
              f"| `serve predict image.jpg` (onnxruntime) | {cold['serve'].fmt(3)} |",
              f"| Python script loading the PyTorch checkpoint | {cold['torch'].fmt(3)} |", "",
              f"serve is **{torch_s / serve_s:.1f}×** faster (targets: ≤ 0.4 s and ≥ 4×).", ""]
    lines += ["## 5. Roofline", "", f"One forward pass: **{flops / 1e6:.1f} MFLOP** (conv, dense).", "",
              "| library | float32 GEMM GFLOP/s |", "| --- | --- |"]
    lines += [f"| {k} | {v.fmt(1)} |" for k, v in peak.items()]
    lines += ["", f"Peak used: {best_peak_name}, {best_peak:.1f} GFLOP/s, so at most **{bound:,.0f} images/s** in "
              "fp32; the 'of fp32 bound' column above divides by this. int8 runs on integer units (VNNI/AMX) "
              "and can exceed it.", ""]
    lines += ["## 4. HTTP", "", "`serve http` on 127.0.0.1, one image per request (`/v2/models/digits/infer`, "
              "binary tensor extension), fp32 folded model. The Python client threads run on the same 2 cores as "
              "the server, so these are lower bounds for the server alone.", "",
              "| dynamic batching | clients | requests | requests/s | p50 | p99 |",
              "| --- | --- | --- | --- | --- | --- |"]
    for (label, clients), r in http.items():
        lines.append(f"| {label} | {clients} | {r['n']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} ms "
                     f"| {r['p99_ms']:.2f} ms |")
    lines.append("")
    return "\n".join(lines)


def write_report(out: Path, text: str) -> None:
    """Write ``text`` to ``out``, keeping the sections other targets wrote there (`make bench-peers`)."""
    if out.is_file():
        text = carry_sections(text, out.read_text(), OTHER_TARGETS_SECTIONS)
    write_atomically(out, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench")
    parser.add_argument("--smoke", action="store_true", help="a few iterations of everything (for tests)")
    parser.add_argument("--accuracy", action=argparse.BooleanOptionalAction, default=True,
                        help="train full runs with each training option to check accuracy (about 1 min each)")
    args = parser.parse_args()
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    print("preparing models…", file=sys.stderr)
    models = prepare_models(args.work, args.smoke)
    print("training throughput…", file=sys.stderr)
    training = bench_training(args.work, args.smoke)
    accuracy = {}
    if args.accuracy:
        print("accuracy of the training options…", file=sys.stderr)
        accuracy = accuracy_check(args.work, args.smoke, {
            "fp32": {"precision": "fp32", "channels_last": False},
            "bf16 autocast": {"precision": "bf16", "channels_last": False},
            "bf16 + channels_last (the default here)": {"precision": "bf16", "channels_last": True}})
    print("inference…", file=sys.stderr)
    inference = bench_inference(models, args.smoke)
    print("cold start…", file=sys.stderr)
    cold = bench_cold_start(models, args.smoke)
    print("peak GEMM…", file=sys.stderr)
    peak = bench_peak(args.smoke)
    print("HTTP…", file=sys.stderr)
    http = bench_http(models, args.smoke)
    text = report(info, training, accuracy, inference, cold, peak, http, model_flops(), time.perf_counter() - started,
                  args.smoke)
    write_report(args.out, text)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
