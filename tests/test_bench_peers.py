"""`make bench-peers` (benchmarks/peers): the parts that need no peer installed, and one slow smoke run
against foldserve alone."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from benchmarks import bench
from benchmarks.markdown import PEERS_HEADING, replace_section, section_text
from benchmarks.peers import runner
from serve.image.normalize import FieldSpec
from serve.model import load_model
from serve.protocol import parse_infer_request

REPO = Path(__file__).resolve().parents[1]

DOCUMENT = textwrap.dedent("""\
    # Benchmarks

    Written by `make bench`.

    ## 1. Training throughput

    | loop | images/s |
    | --- | --- |

    ### a subsection, part of section 1

    ## Peer model servers (`make bench-peers`)

    old peers table

    ## 4. HTTP

    http table
    """)


# --------------------------------------------------------------------------- BENCHMARKS.md sections


def test_replace_section_changes_that_section_only() -> None:
    new = f"{PEERS_HEADING}\n\nnew peers table\n"
    replaced = replace_section(DOCUMENT, PEERS_HEADING, new)
    assert replaced == DOCUMENT.replace("old peers table", "new peers table")
    assert replace_section(replaced, PEERS_HEADING, new) == replaced  # a rerun writes the same file
    # a ### heading belongs to the section above it; the next ## ends it
    assert section_text(DOCUMENT, "## 1. Training throughput") == textwrap.dedent("""\
        ## 1. Training throughput

        | loop | images/s |
        | --- | --- |

        ### a subsection, part of section 1

        """)


def test_replace_section_appends_a_missing_section_and_checks_the_heading() -> None:
    without = DOCUMENT.replace(section_text(DOCUMENT, PEERS_HEADING) or "", "")
    assert PEERS_HEADING not in without
    appended = replace_section(without, PEERS_HEADING, f"{PEERS_HEADING}\n\ntable\n")
    assert appended == without + f"\n{PEERS_HEADING}\n\ntable\n"
    assert replace_section("", PEERS_HEADING, f"{PEERS_HEADING}\n") == f"{PEERS_HEADING}\n"
    with pytest.raises(ValueError, match="must start with its heading"):
        replace_section(DOCUMENT, PEERS_HEADING, "## Something else\n")


def test_make_bench_rewrites_its_sections_and_keeps_the_peers_section(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    out.write_text(DOCUMENT)
    bench.write_report(out, "# Benchmarks\n\n## 1. Training throughput\n\nnew figures\n\n## 4. HTTP\n\nnew http\n")
    text = out.read_text()
    assert "new figures" in text and "new http" in text
    assert "http table" not in text and "| loop |" not in text
    assert section_text(text, PEERS_HEADING) == f"{PEERS_HEADING}\n\nold peers table\n"
    bench.write_report(tmp_path / "fresh.md", "# Benchmarks\n")  # no file yet: nothing to carry
    assert (tmp_path / "fresh.md").read_text() == "# Benchmarks\n"


# --------------------------------------------------------------------------- requests from the model's metadata


def field_model(path: Path, side: int, classes: int = 11) -> Path:
    """A model whose metadata declares a side x side input field; logits = flattened image @ fixed weights."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, side, side])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])
    weights = np.random.default_rng(0).normal(size=(side * side, classes)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "g", [x], [y], initializer=[helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    field = {"size": side, "box": side - 6, "centre": side / 2}
    helper.set_model_props(model, {"labels": json.dumps([str(i) for i in range(classes)]),
                                   "input": json.dumps({"name": "image", "shape": [-1, 1, side, side]}),
                                   "field": json.dumps(field)})
    onnx.save(model, str(path))
    return path


def test_requests_take_their_shape_from_the_models_metadata(tmp_path: Path, sample_dataset) -> None:
    model = load_model(field_model(tmp_path / "m.onnx", side=20))
    probe = runner.make_probe(model, sample_dataset.test_images, sample_dataset.test_labels)
    assert probe.images.shape == (runner.CHECK_DIGITS, 1, 20, 20) and probe.classes == 11
    assert probe.input_name == "image"
    assert len({image.tobytes() for image in probe.images}) == runner.CHECK_DIGITS  # different digits
    np.testing.assert_array_equal(probe.logits, model.logits(probe.images))
    field = FieldSpec(size=20, box=14, centre=10.0)
    body, header_length = runner.request_body(probe.input_name, probe.images[:1], binary=False)
    document = json.loads(body)
    assert header_length is None
    assert document["inputs"][0]["shape"] == [1, 1, 20, 20] and len(document["inputs"][0]["data"]) == 400
    assert document["outputs"] == [{"name": "logits"}]
    # foldserve's own parser reads exactly the pixels sent, from JSON and from the binary extension
    np.testing.assert_array_equal(parse_infer_request(body, None, field).images, probe.images[:1])
    binary, header_length = runner.request_body(probe.input_name, probe.images[:1], binary=True)
    assert header_length is not None and len(binary) == int(header_length) + 400 * 4
    np.testing.assert_array_equal(parse_infer_request(binary, header_length, field).images, probe.images[:1])
    # gRPC: one length-prefixed, uncompressed ModelInferRequest with the pixels as raw bytes, made in a
    # process of its own (serve's message classes and tritonclient's cannot share one) and read here with
    # tritonclient's
    from tritonclient.grpc import service_pb2

    np.save(tmp_path / "images.npy", probe.images[:1])
    script = ("import sys, numpy as np; from benchmarks.peers import runner; sys.stdout.buffer.write("
              "runner.grpc_frame(runner.grpc_request('image', np.load(sys.argv[1]))))")
    framed = subprocess.run([sys.executable, "-c", script, str(tmp_path / "images.npy")], cwd=REPO,
                            capture_output=True, check=True, timeout=60).stdout
    assert framed[0] == 0 and int.from_bytes(framed[1:5], "big") == len(framed) - 5
    request = service_pb2.ModelInferRequest.FromString(framed[5:])
    assert request.model_name == runner.MODEL_NAME and [o.name for o in request.outputs] == ["logits"]
    assert list(request.inputs[0].shape) == [1, 1, 20, 20] and request.inputs[0].datatype == "FP32"
    np.testing.assert_array_equal(np.frombuffer(request.raw_input_contents[0], "<f4"), probe.images[0].ravel())


# --------------------------------------------------------------------------- checking answers


EXPECTED = np.array([0.5, 3.0, -1.0], np.float32)  # onnxruntime's logits: class 1


def json_answer(data: object, name: str = "logits", shape: list[int] | None = None) -> bytes:
    return json.dumps({"outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [1, 3],
                                    "data": [0.1, 0.1, 0.8]},
                                   {"name": name, "datatype": "FP32", "shape": shape or [1, 3],
                                    "data": data}]}).encode()


def test_judge_accepts_right_answers_in_every_form() -> None:
    for body in (json_answer([0.5, 3.0, -1.0]), json_answer([[0.5, 3.0000005, -1.0]])):
        verdict = runner.judge(200, body, None, EXPECTED)
        assert (verdict.checked, verdict.errors, verdict.wrong) == (1, 0, 0), verdict.first_problem
    # binary outputs: 'logits' comes after the 12 bytes of 'probabilities'
    header = json.dumps({"outputs": [
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}},
        {"name": "logits", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}}]}).encode()
    body = header + np.array([0.1, 0.8, 0.1], "<f4").tobytes() + EXPECTED.astype("<f4").tobytes()
    assert runner.judge(200, body, str(len(header)), EXPECTED).wrong == 0
    assert runner.judge(200, body, str(len(header)), EXPECTED).max_difference == 0.0


@pytest.mark.parametrize("status, body, kind, problem", [
    (200, json_answer([3.0, 0.5, -1.0]), "wrong", "answered class 0, onnxruntime says 1"),
    (200, json_answer([0.5, 3.1, -1.0]), "wrong", "largest logit difference 0.1"),  # same class, other logits
    (503, b'{"error": "overloaded"}', "error", "HTTP 503: {\"error\": \"overloaded\"}"),
    (200, json_answer([0.5, 3.0, -1.0], name="scores"), "error", "no 'logits' output"),
    (200, json_answer([0.5, 3.0], shape=[1, 2]), "error", "2 logits, expected 3"),
    (200, b"<html>not json</html>", "error", "unreadable answer: malformed JSON"),
])
def test_judge_counts_errors_and_wrong_answers(status: int, body: bytes, kind: str, problem: str) -> None:
    verdict = runner.judge(status, body, None, EXPECTED)
    assert (verdict.checked, verdict.errors, verdict.wrong) == ((1, 0, 1) if kind == "wrong" else (1, 1, 0))
    assert verdict.first_problem is not None and problem in verdict.first_problem, verdict.first_problem


class CannedAnswers(BaseHTTPRequestHandler):
    """Answers in turn: right, wrong class, 503, right (nested data), too few classes."""

    protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms wait between them
    answers = [(200, json_answer([0.5, 3.0, -1.0])), (200, json_answer([3.0, 0.5, -1.0])), (503, b"{}"),
               (200, json_answer([[0.5, 3.0, -1.0]])), (200, json_answer([0.5, 3.0], shape=[1, 2]))]
    served = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            status, body = self.answers[CannedAnswers.served % len(self.answers)]
            CannedAnswers.served += 1
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def canned_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), CannedAnswers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (Debian package wrk)")
def test_wrk_lua_hook_counts_every_wrong_answer_and_error(canned_server: int, tmp_path: Path) -> None:
    probe = runner.Probe("image", np.zeros((1, 1, 2, 2), np.float32), EXPECTED[None], classes=3)
    body = tmp_path / "body"
    body.write_bytes(b'{"inputs": []}')
    run = runner.run_wrk(canned_server, body, None, probe, connections=1, seconds=1, threads=1)
    assert run.checked == run.requests > 20
    # every fifth answer is a 503; two in five are wrong (class 0; 2 logits instead of 3)
    assert abs(run.non200 - run.checked / 5) <= 1, run
    assert abs(run.wrong - 2 * run.checked / 5) <= 2, run
    assert run.socket_errors == 0 and run.p50_ms > 0


def test_wrk_output_without_a_result_line_is_an_error() -> None:
    assert runner.parse_wrk_output('x\nWRK_RESULT {"requests": 10, "duration_us": 2000000, "p50_us": 1500, '
                                   '"p99_us": 9000, "socket_errors": 1, "non200": 2, "wrong": 3, "checked": 10}\n'
                                   ) == runner.WrkRun(10, 2.0, 1.5, 9.0, 1, 2, 3, 10)
    with pytest.raises(runner.PeerError, match="wrk printed no result"):
        runner.parse_wrk_output("Running 1s test @ http://127.0.0.1:1/\n")


H2LOAD_OUTPUT = """starting benchmark...
Application protocol: h2c

finished in 2.00s, 471.50 req/s, 65.42KB/s
requests: 950 total, 954 started, 950 done, 943 succeeded, 7 failed, 2 errored, 1 timeout
status codes: 943 2xx, 0 3xx, 3 4xx, 1 5xx
traffic: 130.84KB (133981) total, 3.06KB (3129) headers (space savings 95.90%), 75.51KB (77326) data
"""


def test_h2load_output_becomes_a_run_with_percentiles_from_its_log() -> None:
    latencies_us = np.array([1000.0] * 98 + [5000.0, 9000.0])
    run = runner.parse_h2load_output(H2LOAD_OUTPUT, latencies_us)
    assert (run.requests, run.seconds, run.socket_errors, run.non200) == (943, 2.0, 3, 4)
    assert run.p50_ms == 1.0 and 5.0 < run.p99_ms < 9.0 and run.rps == 471.5
    assert (run.wrong, run.checked) == (0, 0)  # h2load cannot read gRPC's answers: the Python client checks
    assert runner.parse_h2load_output(H2LOAD_OUTPUT.replace("2.00s", "850.5ms"), latencies_us).seconds == 0.8505
    with pytest.raises(runner.PeerError, match="h2load printed no summary"):
        runner.parse_h2load_output("starting benchmark...\n", latencies_us)


def test_each_h2load_run_reads_only_its_own_requests(tmp_path: Path, monkeypatch) -> None:
    def fake_h2load(command: list[str], **kwargs) -> subprocess.CompletedProcess:
        log = Path(command[command.index("--log-file") + 1])
        latency_us = 1000 * int(command[command.index("-c") + 1])  # 1 ms a request per connection
        with log.open("a") as out:  # as h2load does: it appends
            out.writelines(f"1795747195729599\t200\t{latency_us}\n" for _ in range(10))
        return subprocess.CompletedProcess(command, 0, H2LOAD_OUTPUT, "")

    monkeypatch.setattr(runner.subprocess, "run", fake_h2load)
    assert runner.run_h2load(1, tmp_path / "body", 64, 1, 1, tmp_path).p50_ms == 64.0
    assert runner.run_h2load(1, tmp_path / "body", 1, 1, 1, tmp_path).p50_ms == 1.0


# --------------------------------------------------------------------------- stopping servers


def test_a_server_and_everything_it_started_are_stopped_even_on_failure(tmp_path: Path) -> None:
    # the server starts a helper in a process group of its own (as Ray does) and ignores SIGTERM
    script = textwrap.dedent(f"""\
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], process_group=0)
        open({str(tmp_path / 'helper.pid')!r}, "w").write(str(helper.pid))
        time.sleep(120)
        """)
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="the benchmark failed"):
        with runner.running([sys.executable, "-c", script], tmp_path / "log", tmp_path, grace=0.5) as process:
            deadline = time.monotonic() + 30
            while not (tmp_path / "helper.pid").is_file() and time.monotonic() < deadline:
                time.sleep(0.05)
            pids = [process.pid, int((tmp_path / "helper.pid").read_text())]
            assert sorted(runner.session_members(process.pid)) == sorted(pids)
            raise RuntimeError("the benchmark failed")
    assert process.returncode is not None
    assert runner.session_members(pids[0]) == []


# --------------------------------------------------------------------------- the table


def test_table_has_medians_ranges_errors_versions_and_the_peers_not_measured() -> None:
    options = runner.Options(Path("model.onnx"), Path("work"), rounds=3, duration=5, warmup=2, connections=(1, 16),
                             threads=1, start_timeout=60)
    probe = runner.Probe("image", np.zeros((8, 1, 28, 28), np.float32), np.zeros((8, 11), np.float32), 11)
    kserve, foldserve, ray = (next(p for p in runner.PEERS if p.name == n) for n in ("kserve", "foldserve", "rayserve"))

    def run(rps: float, p50: float, non200: int = 0, wrong: int = 0) -> runner.WrkRun:
        return runner.WrkRun(int(rps * 5), 5.0, p50, p50 * 3, 0, non200, wrong, int(rps * 5))

    measured = runner.Outcome(kserve, "0.21.0", exposed=["*:1", "*:2", "0.0.0.0:3", "0.0.0.0:4"],
                              start_seconds=[2.0, 1.0, 4.0])
    measured.runs = {1: [run(300, 3.0), run(200, 4.0), run(250, 3.5)],
                     16: [run(1000, 15.0, non200=2), run(1100, 14.0), run(900, 16.0, wrong=1)]}
    measured.verdicts = {1: runner.Verdicts(24), 16: runner.Verdicts(24, errors=1, wrong=2, max_difference=2e-6,
                                                                    first_problem="HTTP 503: busy")}
    partial = runner.Outcome(foldserve, "0.1.0", failure="round 2: exited with status 1 under load: boom")
    partial.runs = {1: [run(500, 2.0)]}
    missing = runner.Outcome(ray, failure="not installed: `pip install ray[serve]==2.60.0 …` failed: no wheel")
    info = {"cpu": "AMD EPYC, 2 cores (lscpu)", "date": "2026-11-26", "wrk": "wrk 4.1.0",
            "h2load": "h2load nghttp2/1.52.0", "python": "3.11.7", "onnxruntime": "1.32.0"}
    text = runner.render_section([measured, partial, missing], options, info, (1.9, 2.4), 300.0, probe)
    assert text.startswith(PEERS_HEADING + "\n")
    assert "| KServe ModelServer | 0.21.0 | 2.0 s (1.0–4.0) | custom `kserve.Model`" in text
    assert "**4 other listening sockets not on loopback** (*:1, *:2, 0.0.0.0:3, …)" in text
    assert "| Ray Serve | — | — |" in text
    assert "| KServe ModelServer | 1 | 250 (200–300) | 3.50 (3.00–4.00) | 10.50 (9.00–12.00) | 0 | 0 |" in text
    assert "| KServe ModelServer | 16 | 1,000 (900–1,100) | 15.00 (14.00–16.00) | 45.00 (42.00–48.00) | 3 | 3 |" in text
    assert "| foldserve `serve http` (1 of 3 rounds) | 1 | 500 (500–500) |" in text
    assert "- foldserve `serve http`: round 2: exited with status 1 under load: boom" in text
    assert "- Ray Serve: not installed: `pip install ray[serve]==2.60.0 …` failed: no wheel" in text
    assert "- KServe ModelServer, after the run at 16 connections: HTTP 503: busy" in text
    assert "AMD EPYC, 2 cores (lscpu)" in text and "2026-11-26" in text and "3 rounds" in text
    assert "onnxruntime 1.32.0 in every server" in text
    assert "| load generators | wrk 4.1.0, 1 thread(s)" in text and "for gRPC h2load nghttp2/1.52.0" in text
    assert "1.90 / 2.40 — **the machine was shared" in text
    assert "the machine was shared" not in runner.render_section([measured], options, info, (0.1, 2.0), 1.0, probe)


# --------------------------------------------------------------------------- the whole harness


@pytest.mark.slow
def test_harness_against_foldserve_alone_writes_a_table_without_errors(tmp_path: Path, exported_run: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    out.write_text(DOCUMENT)
    command = [sys.executable, "-m", "benchmarks.peers", "--model", str(exported_run / "model.onnx"), "--out", str(out),
               "--work", str(tmp_path / "work"), "--peers", "foldserve,foldserve-binary,foldserve-grpc",
               "--rounds", "1", "--duration", "1", "--warmup", "1", "--connections", "1,4", "--no-install"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert "http table" in text and "| loop | images/s |" in text  # the other sections are kept
    rows = re.findall(r"^\| (foldserve[^|]*) \| (\d+) \| ([\d,]+) \(.*\| ([\d,]+) \| ([\d,]+) \|$", text, re.MULTILINE)
    assert [(name, connections) for name, connections, *_ in rows] == [
        ("foldserve `serve http`", "1"), ("foldserve `serve http`", "4"),
        ("foldserve `serve http`, binary tensors", "1"), ("foldserve `serve http`, binary tensors", "4"),
        ("foldserve `serve http`, gRPC", "1"), ("foldserve `serve http`, gRPC", "4")]
    for name, connections, rps, errors, wrong in rows:
        assert int(rps.replace(",", "")) > 0 and errors == "0" and wrong == "0", (name, connections)
    assert "Not measured" not in text and "old peers table" not in text
