from __future__ import annotations

import ast
import json
import os
import re
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from serve.cli import cli
from serve.model import load_model
from serve.predict import predict
from serve.reading import Reading
from tests.helpers import tiny_model
from tests.serve.images import encode, png_header_only, user_style

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digit_dir(tmp_path_factory, sample_dataset) -> Path:
    """The first 120 test digits saved as 8-bit PNG files, named so sorting keeps their order."""
    directory = tmp_path_factory.mktemp("digits")
    for i, digit in enumerate(sample_dataset.test_images[:120]):
        Image.fromarray(digit).save(directory / f"{i:04d}.png")
    return directory


def invoke(*args: str, env: dict | None = None, input: bytes | None = None):
    return CliRunner().invoke(cli, list(args), env=env, input=input)


def test_predictions_from_png_files_equal_predictions_from_the_arrays(model_path, digit_dir, sample_dataset) -> None:
    result = invoke("predict", "--model", str(model_path), "--json", str(digit_dir))
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in records] == [str(digit_dir / f"{i:04d}.png") for i in range(120)]
    arrays = sample_dataset.test_images[:120].astype(np.float32)[:, None] / 255.0
    model = load_model(model_path)
    expected = model.read_fields(arrays[:, 0])  # each field read in the model's views
    digit_columns = [i for i in range(len(model.labels)) if i != model.reject_index]
    best_digit = expected[:, digit_columns].max(1)
    refused = (expected.argmax(1) == model.reject_index) | (best_digit < model.min_confidence)
    assert [r["not_a_digit"] for r in records] == refused.tolist()
    assert refused.mean() < 0.05  # clean test digits are read, not refused
    for r, p, is_refused in zip(records, expected, refused):
        if is_refused:
            assert (r["label"] is None and r["text"] is None
                    and r["best_guess"]["probability"] == pytest.approx(p[digit_columns].max()))
            continue
        assert r["label"] == int(p.argmax()) and r["text"] == str(r["label"]) and len(r["digits"]) == 1
        np.testing.assert_allclose(r["probabilities"], p, rtol=0, atol=1e-6)
        assert {"image", "text", "digits", "not_a_digit", "label", "probability", "probabilities"} <= set(r)
        assert isinstance(r["label"], int) and len(r["probabilities"]) == len(model.labels)
        assert r["probability"] == pytest.approx(max(r["probabilities"]))
        assert sum(r["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_plain_output_and_top_k(model_path, digit_dir) -> None:
    one = digit_dir / "0000.png"
    result = invoke("predict", "--model", str(model_path), str(one))
    assert result.exit_code == 0
    assert re.fullmatch(rf"{re.escape(str(one))}: \d \(probability [01]\.\d{{3}}\)\n", result.stdout)
    result = invoke("predict", "--model", str(model_path), "--top-k", "3", "--json", str(one))
    record = json.loads(result.stdout)
    top = record["top_k"]
    assert len(top) == 3 and top[0]["label"] == record["label"]
    assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert top[1]["probability"] == pytest.approx(sorted(record["probabilities"])[-2])
    assert "top-3:" in invoke("predict", "--model", str(model_path), "--top-k", "3", str(one)).stdout


def test_a_number_is_read_left_to_right(model_path, sample_dataset, tmp_path) -> None:
    model = load_model(model_path)
    digits = sample_dataset.test_images[10:13]
    alone = model.read_fields(digits.astype(np.float32) / 255.0).argmax(1)
    canvas = np.full((200, 520), 250, np.uint8)  # dark ink on white, three digits apart
    for k, digit in enumerate(digits):
        canvas[20:160, 20 + 170 * k:160 + 170 * k] = 255 - np.asarray(Image.fromarray(digit).resize((140, 140)))
    Image.fromarray(canvas).save(tmp_path / "number.png")
    result = invoke("predict", "--model", str(model_path), str(tmp_path / "number.png"))
    text = "".join(model.labels[i] for i in alone)
    assert result.exit_code == 0
    assert re.fullmatch(rf".*number\.png: {text} \(digits {' '.join(text)}, lowest probability [01]\.\d\d\)\n",
                        result.stdout)
    record = json.loads(invoke("predict", "--model", str(model_path), "--json", str(tmp_path / "number.png")).stdout)
    assert record["text"] == text and record["label"] is None and "probabilities" not in record
    for k, d in enumerate(record["digits"]):
        x, y, w, h = d["box"]
        assert 20 + 170 * k <= x and x + w <= 160 + 170 * k and 20 <= y and y + h <= 160


def test_stdin_and_the_serve_model_environment_variable(model_path, digit_dir) -> None:
    data = (digit_dir / "0001.png").read_bytes()
    result = invoke("predict", "-", env={"SERVE_MODEL": str(model_path)}, input=data)
    assert result.exit_code == 0, result.stderr
    from_file = invoke("predict", "--model", str(model_path), str(digit_dir / "0001.png"))
    assert result.stdout.split(":", 1)[1] == from_file.stdout.split(":", 1)[1]
    assert result.stdout.startswith("<stdin>: ")


def test_default_model_missing_is_one_clear_line(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("predict", "x.png", env={"SERVE_MODEL": None})
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and "runs/default/model.onnx not found" in result.stderr


def test_a_blank_image_is_refused_as_an_answer(model_path, tmp_path) -> None:
    Image.new("L", (80, 80), 255).save(tmp_path / "blank.png")
    result = invoke("predict", "--model", str(model_path), str(tmp_path / "blank.png"))
    assert result.exit_code == 0 and result.stdout.strip() == f"{tmp_path / 'blank.png'}: not a digit (no ink found)"
    record = json.loads(invoke("predict", "--model", str(model_path), "--json", str(tmp_path / "blank.png")).stdout)
    assert record["label"] is None and record["text"] is None and record["not_a_digit"] is True
    assert record["reason"] == "no ink found" and record["best_guess"] is None


def test_bad_inputs_are_reported_and_good_ones_still_predicted(model_path, digit_dir, tmp_path) -> None:
    bad = {
        "missing.png": None,
        "notes.png": b"these are my notes, not an image",
        "empty.png": b"",
        "truncated.png": (digit_dir / "0002.png").read_bytes()[:50],
        "bomb.png": png_header_only(30_000, 30_000),
        "dot.png": encode(Image.new("L", (1, 1), 0)),
        "random.jpg": np.random.default_rng(0).bytes(5000),
    }
    args = [str(digit_dir / "0000.png")]
    for name, data in bad.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        args.append(str(tmp_path / name))
    (tmp_path / "no-images").mkdir()
    (tmp_path / "no-images" / "readme.txt").write_text("hi")
    args += [str(tmp_path / "no-images"), str(digit_dir / "0003.png")]
    result = invoke("predict", "--model", str(model_path), *args)
    assert result.exit_code == 2
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [args[0], args[-1]]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.strip().splitlines() if not line.startswith("serve: skipped")]
    skipped = [line for line in result.stderr.strip().splitlines() if line.startswith("serve: skipped")]
    assert len(errors) == len(bad) + 1
    assert skipped == [f"serve: skipped {tmp_path / 'no-images' / 'readme.txt'}: not an image file by its name (.txt)"]
    expected_reasons = {"missing.png": "no such file", "notes.png": "not a recognised image format",
                        "empty.png": "empty file", "truncated.png": "truncated", "bomb.png": "above the limit",
                        "dot.png": "1x1 pixels", "random.jpg": "not a recognised image format",
                        "no-images": "directory has no images"}
    for line, (name, reason) in zip(errors, expected_reasons.items()):
        assert line.startswith(f"serve: error: {tmp_path / name}: ") and reason in line, line
    # --json: a record for every input, with an `error` field for the unreadable ones
    result = invoke("predict", "--model", str(model_path), "--json", *args)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 2
    assert [r["image"] for r in records if "error" in r] == [str(tmp_path / n) for n in expected_reasons]
    assert [r["image"] for r in records if "text" in r] == [args[0], args[-1]]
    assert [r["skipped"] for r in records if "skipped" in r] == ["not an image file by its name (.txt)"]


def test_a_file_pillow_warns_about_is_one_line_without_the_warning(model_path, digit_dir, tmp_path) -> None:
    """Pillow warns as it reads a damaged file ("Truncated File Read"), with its source line; the
    command prints the file's one error line only. A subprocess: pytest turns warnings into errors."""
    tiff = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 255, 255)).save(tiff, "TIFF")
    (tmp_path / "cut.tif").write_bytes(tiff.getvalue()[:100])  # its tags run past the end
    result = subprocess.run([sys.executable, "-m", "serve", "predict", "--model", str(model_path),
                             str(tmp_path / "cut.tif"), str(digit_dir / "0000.png")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout.startswith(f"{digit_dir / '0000.png'}: ")
    assert result.stderr.splitlines() == [f"serve: error: {tmp_path / 'cut.tif'}: corrupt TIFF file "
                                          "(its header cannot be read)"], result.stderr


def test_model_problems_exit_1_with_one_line(tmp_path, digit_dir) -> None:
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01garbage" * 100)
    (tmp_path / "text.onnx").write_text("not a model")
    cases = {
        str(tmp_path / "nope.onnx"): "not found",
        str(tmp_path / "garbage.onnx"): "not a loadable ONNX model",
        str(tmp_path / "text.onnx"): "not a loadable ONNX model",
        str(tiny_model(tmp_path / "rgb.onnx", ["N", 3, 32, 32])): "declares float32 [N, 1, 28, 28]",
        str(tiny_model(tmp_path / "three.onnx", ["N", 1, 28, 28],
                       ["a", "b", "c"])): "names 3 labels but the graph has 10 outputs",
        str(tiny_model(tmp_path / "fixed.onnx", [1, 1, 28, 28])): "fixed batch of 1",
        str(tiny_model(tmp_path / "views.onnx", ["N", 1, 28, 28],
                       metadata={"views": [{"scale": -1}]})): "unreadable preprocessing metadata (views need",
        str(tmp_path): "is a directory; give the .onnx file in it",  # a model error like the others, not usage
    }
    for model, reason in cases.items():
        result = invoke("predict", "--model", model, str(digit_dir / "0000.png"))
        assert result.exit_code == 1, model
        assert len(result.stderr.strip().splitlines()) == 1 and reason in result.stderr, result.stderr
        assert result.stdout == ""


def test_many_images_run_in_batches_of_256(model_path, digit_dir, tmp_path) -> None:
    model = load_model(model_path)
    calls = []

    class CountingSession:
        def __init__(self, inner):
            self.inner = inner

        def run(self, names, feeds):
            calls.append(len(feeds["image"]))
            return self.inner.run(names, feeds)

    model.session = CountingSession(model.session)
    files = [str(p) for p in sorted(digit_dir.glob("*.png"))] * 3  # 360 images
    results = [r for r in predict(model, files) if isinstance(r, Reading)]  # nothing here is skipped
    def calls_of_256(inputs: int) -> list[int]:
        return [256] * (inputs // 256) + ([inputs % 256] if inputs % 256 else [])

    views = len(model.views)  # each field is read in the model's views: views inputs per field
    assert len(results) == 360 and calls == calls_of_256(256 * views) + calls_of_256(104 * views)
    assert [r.text for r in results[:120]] == [r.text for r in results[120:240]]


def imported_modules(nodes) -> set[str]:
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            names.add(node.module.split(".")[0])
    return names


def test_serve_source_imports_only_the_serving_stack() -> None:
    base = {"onnxruntime", "numpy", "PIL", "click", "serve", "__future__"} | set(sys.stdlib_module_names)
    optional = {"pillow_heif"}  # the heif extra, imported only when a HEIF file comes
    http_extra = {"fastapi", "starlette", "uvicorn", "httptools", "prometheus_client", "orjson"}
    grpc_extra = {"grpc", "google"}  # grpcio, protobuf: `serve http --grpc-port` only
    server_modules = {"server.py", "batching.py", "protocol.py", "connection.py",  # the HTTP server: the http extra
                      "grpc_server.py", "inference_pb2.py", "inference_pb2_grpc.py"}  # and gRPC beside it
    for path in (REPO / "serve").rglob("*.py"):
        tree = ast.parse(path.read_text())
        everywhere = imported_modules(ast.walk(tree))
        top_level = imported_modules(tree.body)
        assert not everywhere & {"torch", "pipeline", "models", "onnx"}, path.name
        allowed = base | http_extra | grpc_extra | optional
        assert everywhere <= allowed, (path.name, everywhere - allowed)
        if path.name not in ("grpc_server.py", "inference_pb2.py", "inference_pb2_grpc.py"):
            assert not everywhere & grpc_extra, path.name  # imported only when --grpc-port is given
        if path.name not in server_modules:  # importable with the base install alone
            assert top_level <= base, (path.name, top_level - base)


def test_serve_predict_works_where_torch_cannot_be_imported(model_path, digit_dir) -> None:
    code = ("import sys; sys.modules['torch'] = None; "  # any `import torch` now raises ImportError
            "from serve.cli import main; main(); ")
    result = subprocess.run([sys.executable, "-c", code, "predict", "--model", str(model_path), "--json",
                             str(digit_dir / "0000.png"), str(REPO / "examples")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    labels = {Path(r["image"]).name: r.get("label") for r in map(json.loads, result.stdout.splitlines())}
    assert labels["seven-photo.jpg"] == 7 and labels["three-canvas.png"] == 3 and labels["four-scan.png"] == 4
    check = subprocess.run([sys.executable, "-c", "import serve.cli, serve.predict, serve.model, serve.preprocess, "
                            "sys; print('torch' in sys.modules)"], cwd=REPO, capture_output=True, text=True)
    assert check.stdout.strip() == "False"


def test_base_dependencies_are_the_serving_stack() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in project["dependencies"]}
    assert base == {"onnxruntime", "numpy", "pillow", "click"}
    train = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in project["optional-dependencies"]["train"]}
    assert {"torch", "onnx", "onnxscript"} <= train


@pytest.mark.slow
def test_user_style_images_are_as_accurate_as_the_arrays(model_path, sample_dataset, tmp_path) -> None:
    """The test split drawn the way users' images look (dark ink on light, 100-200 px canvases, off-centre,
    coloured ink, transparent backgrounds, PNG and JPEG) loses at most 2 points against the 28x28 arrays
    themselves, both read as served (refusals count as misses)."""
    rng = np.random.default_rng(0)
    files, arrays = [], []
    for i, digit in enumerate(sample_dataset.test_images):
        image = user_style(digit, rng)
        if i % 4 == 3 and image.mode != "RGBA":
            path = tmp_path / f"{i:04d}.jpg"
            image.save(path, quality=90)
        else:
            path = tmp_path / f"{i:04d}.png"
            image.save(path)
        files.append(str(path))
        Image.fromarray(digit).save(tmp_path / f"array-{i:04d}.png")
        arrays.append(str(tmp_path / f"array-{i:04d}.png"))
    model = load_model(model_path)
    labels = [str(label) for label in sample_dataset.test_labels]

    def accuracy(paths: list[str]) -> float:
        return float(np.mean([isinstance(r, Reading) and r.text == label
                              for r, label in zip(predict(model, paths), labels)]))

    array_accuracy, user_accuracy = accuracy(arrays), accuracy(files)
    assert array_accuracy > 0.9
    assert user_accuracy >= array_accuracy - 0.02, (user_accuracy, array_accuracy)


@pytest.mark.install
def test_base_install_serves_without_torch_and_pipeline_names_the_extra(tmp_path, model_path) -> None:
    """A fresh virtual environment with only `pip install foldserve` (no extras)."""
    import shutil

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(REPO / name, source / name)
    for package in ("pipeline", "models", "serve"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c",
                          str(source / "constraints.txt"), str(source)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    has_torch = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True, env=env)
    assert has_torch.returncode != 0  # the base install did not pull torch in
    result = subprocess.run([str(venv / "bin" / "serve"), "predict", "--model", str(model_path),
                             str(REPO / "examples" / "seven-photo.jpg")], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{REPO / 'examples' / 'seven-photo.jpg'}: 7 (probability")
    result = subprocess.run([str(venv / "bin" / "pipeline"), "train"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "foldserve[train]" in result.stderr
