"""`make bench-peers`: foldserve's `serve http` against other model servers serving the same model.onnx.

    python -m benchmarks.peers [--model runs/default/model.onnx] [--out BENCHMARKS.md] [--work runs/peers]
                               [--peers NAME,...] [--rounds 3] [--duration 5] [--warmup 2]
                               [--connections 1,16,64] [--no-install]

Each peer is pip-installed (with onnxruntime and numpy) into its own virtual environment under --work,
never into the project's. One server runs at a time, on 127.0.0.1 (two side by side bias the second by
15-25% here); it is started, polled until its health endpoint answers, then driven by wrk at each
connection count (a warm-up run, then the measured run), and stopped with its whole process group.
foldserve's OIP v2 over gRPC (`serve http --grpc-port`) is driven by h2load instead, over HTTP/2, one
ModelInfer call in flight per connection: h2load sees HTTP statuses, not gRPC's, so those answers are
checked by the Python client only. All
servers form a round, in a fixed order; the rounds repeat, and each figure is the median over rounds with
the range. Every answer is checked: wrk's Lua hook on every response (status 200, argmax of the logits),
and after every run a Python client sends a few different digits and compares each answer with
onnxruntime run here. The table goes into its own section of --out; the rest of the file is kept.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType

import numpy as np

from benchmarks.bench import Stat
from benchmarks.markdown import PEERS_HEADING, replace_section, write_atomically
from serve.model import DigitModel
from serve.protocol import HEADER_LENGTH, ProtocolError, split_body

REPO = Path(__file__).resolve().parents[2]
LUA = Path(__file__).with_name("oip.lua")
MODEL_NAME = "digits"  # every server serves the model under this name (adapters/common.py)
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"
OUTPUT = "logits"
CHECK_DIGITS = 8  # different test digits the Python client sends after every run
LOGIT_TOLERANCE = 1e-3  # float32 logits of the same graph, batched differently, differ by ~1e-5


@dataclasses.dataclass(frozen=True)
class Peer:
    name: str  # the key in --peers, and its virtual environment's directory
    title: str
    package: str | None  # the distribution whose version is reported; None: foldserve itself
    adapter: str | None  # the module run with the peer's Python; None: `serve http`
    health_path: str
    settings: str  # what "its best settings" are, for the table
    request: str = "json"  # "json", "binary" (the binary tensor extension) or "grpc" (OIP v2 over gRPC, h2load)

    @property
    def binary(self) -> bool:
        return self.request == "binary"

    @property
    def grpc(self) -> bool:
        return self.request == "grpc"


PEERS = (
    Peer("foldserve", "foldserve `serve http`", None, None, "/v2/health/ready",
         "defaults (dynamic batching: up to 64 images, no wait window); JSON requests"),
    Peer("foldserve-binary", "foldserve `serve http`, binary tensors", None, None, "/v2/health/ready",
         "defaults; the tensor as raw bytes after the JSON (binary tensor extension), JSON answer", request="binary"),
    Peer("foldserve-grpc", "foldserve `serve http`, gRPC", None, None, "/v2/health/ready",
         "defaults and `--grpc-port`; OIP v2 ModelInfer with the tensor in `raw_input_contents`, driven by h2load "
         "(HTTP/2, one call in flight per connection)", request="grpc"),
    Peer("kserve", "KServe ModelServer", "kserve", "benchmarks.peers.adapters.kserve_peer", "/v2/health/ready",
         "custom `kserve.Model`, 1 process (2: slower), gRPC off, no per-request log lines (ModelServer has no "
         "batcher)"),
    Peer("mlserver", "MLServer", "mlserver", "benchmarks.peers.adapters.mlserver_peer",
         f"/v2/models/{MODEL_NAME}/ready",
         "custom runtime, adaptive batching 64 / 2 ms, 1 inference worker process (the default), metrics and "
         "gzip off"),
    Peer("litserve", "LitServe", "litserve", "benchmarks.peers.adapters.litserve_peer", "/health",
         "batching 64 / 2 ms, 1 inference worker, 2 API server processes, ZeroMQ queue (`fast_queue`)"),
    Peer("rayserve", "Ray Serve", "ray", "benchmarks.peers.adapters.rayserve_peer", f"/v2/models/{MODEL_NAME}/ready",
         "`@serve.batch` 64 / 2 ms, 1 replica, max_ongoing_requests 256, no dashboard, no access log"),
)
# The versions measured; onnxruntime (foldserve's version) and numpy come with each.
PIP_PACKAGES = {"kserve": ("kserve==0.21.0",),
                # uvloop 0.22 broke MLServer's inference workers (SeldonIO/MLServer#2286, unfixed in 1.7.1)
                "mlserver": ("mlserver==1.7.1", "uvloop<0.22"),
                "litserve": ("litserve==0.2.19",),
                "rayserve": ("ray[serve]==2.60.0",)}


class PeerError(Exception):
    """A peer that cannot be installed, started or asked: its one-line reason goes into the table."""


# --------------------------------------------------------------------------- requests and answers


@dataclasses.dataclass(frozen=True)
class Probe:
    """The digits sent and the answers onnxruntime gives here: the standard every server is held to."""

    input_name: str
    images: np.ndarray  # float32 [N, *input shape]; images[0] is the one wrk sends
    logits: np.ndarray  # float32 [N, classes], onnxruntime run directly
    classes: int

    @property
    def expected(self) -> np.ndarray:
        return self.logits.argmax(axis=1)


def request_body(input_name: str, images: np.ndarray, binary: bool) -> tuple[bytes, str | None]:
    """An OIP v2 request for ``images`` (float32, batch first) asking for the logits only: the body and,
    with the binary tensor extension, the value of its Inference-Header-Content-Length header."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    spec: dict = {"name": input_name, "datatype": "FP32", "shape": list(images.shape)}
    if binary:
        spec["parameters"] = {"binary_data_size": images.nbytes}
    else:
        spec["data"] = images.ravel().tolist()  # float32 → float: exact, so every server parses the same pixels
    header = json.dumps({"inputs": [spec], "outputs": [{"name": OUTPUT}]}, separators=(",", ":")).encode()
    if not binary:
        return header, None
    return header + images.tobytes(), str(len(header))


def grpc_request(input_name: str, images: np.ndarray) -> bytes:
    """A serialized OIP v2 ModelInferRequest for ``images`` (float32, batch first), asking for the logits,
    the tensor as raw little-endian bytes in ``raw_input_contents`` (as tritonclient sends it)."""
    from serve.proto import inference_pb2 as pb

    images = np.ascontiguousarray(images, dtype="<f4")
    tensor = pb.ModelInferRequest.InferInputTensor(name=input_name, datatype="FP32", shape=list(images.shape))
    return pb.ModelInferRequest(
        model_name=MODEL_NAME, inputs=[tensor], outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=OUTPUT)],
        raw_input_contents=[images.tobytes()]).SerializeToString()


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed): what h2load posts as the body of every call."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def make_probe(model: DigitModel, test_images: np.ndarray, test_labels: np.ndarray, count: int = CHECK_DIGITS) -> Probe:
    """The first test digits of ``count`` different classes, shaped as the model's metadata declares its
    input, with onnxruntime's logits for them; wrk sends the first."""
    from serve.image.normalize import fit_to_field

    chosen: list[int] = []
    for i, label in enumerate(test_labels):
        if len(chosen) < count and all(test_labels[j] != label for j in chosen):
            chosen.append(i)
    ink = test_images[chosen].astype(np.float32) / 255.0
    side = model.field_spec.size
    if ink.shape[1:] != (side, side):  # a model with another field: each digit as `serve predict` fits one
        ink = np.stack([fit_to_field(image, model.field_spec) for image in ink])
    images = ink.reshape(len(chosen), *model.input_shape)
    return Probe(model.session.get_inputs()[0].name, images, model.logits(images), len(model.labels))


def logits_from_response(body: bytes, header_length: str | None) -> np.ndarray:
    """The 'logits' output of an OIP v2 response (JSON data, flat or nested, or binary), shaped as it says."""
    try:
        document, binary = split_body(body, header_length)
    except ProtocolError as exc:
        raise ValueError(str(exc)) from None
    outputs = document.get("outputs")
    if not isinstance(outputs, list):
        raise ValueError("the response has no 'outputs' list")
    offset = 0
    for output in outputs:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if output.get("name") == OUTPUT:
            if size is not None:
                data = np.frombuffer(binary[offset:offset + size], dtype="<f4")
            else:
                data = np.asarray(output.get("data"), dtype=np.float32).ravel()
            return data.reshape(output["shape"])
        offset += size or 0
    raise ValueError(f"the response has no {OUTPUT!r} output")


@dataclasses.dataclass
class Verdicts:
    """What the Python client found: answers checked, failed requests, wrong answers, largest logit gap."""

    checked: int = 0
    errors: int = 0
    wrong: int = 0
    max_difference: float = 0.0
    first_problem: str | None = None

    def add(self, other: Verdicts) -> None:
        self.checked += other.checked
        self.errors += other.errors
        self.wrong += other.wrong
        self.max_difference = max(self.max_difference, other.max_difference)
        self.first_problem = self.first_problem or other.first_problem


def judge(status: int, body: bytes, header_length: str | None, expected: np.ndarray) -> Verdicts:
    """One answer against onnxruntime's logits ``expected`` [classes]: an error unless a 200 with a readable
    'logits' output of the right shape; wrong unless its argmax is onnxruntime's and it is within tolerance."""
    if status != 200:
        return Verdicts(1, errors=1, first_problem=f"HTTP {status}: {body[:120].decode(errors='replace')}")
    try:
        logits = logits_from_response(body, header_length)
    except (ValueError, TypeError, KeyError) as exc:
        return Verdicts(1, errors=1, first_problem=f"unreadable answer: {str(exc)[:120]}")
    return judge_logits(logits, expected)


def judge_logits(logits: np.ndarray, expected: np.ndarray) -> Verdicts:
    """The logits of one answer against onnxruntime's ``expected`` [classes] (``judge`` after parsing)."""
    if logits.size != expected.size:
        return Verdicts(1, errors=1, first_problem=f"unreadable answer: {logits.size} logits, expected {expected.size}")
    logits = logits.ravel()
    difference = float(np.abs(logits - expected).max())
    if int(logits.argmax()) != int(expected.argmax()) or not difference <= LOGIT_TOLERANCE:
        return Verdicts(1, wrong=1, max_difference=difference,
                        first_problem=f"answered class {int(logits.argmax())}, onnxruntime says "
                                      f"{int(expected.argmax())} (largest logit difference {difference:.2g})")
    return Verdicts(1, max_difference=difference)


def check_answers(port: int, probe: Probe, binary: bool, timeout: float = 30.0) -> Verdicts:
    """Send each probe digit as its own request and judge the answers."""
    verdicts = Verdicts()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        for image, expected in zip(probe.images, probe.logits):
            body, header_length = request_body(probe.input_name, image[None], binary)
            headers = {"Content-Type": "application/octet-stream" if binary else "application/json"}
            if header_length is not None:
                headers[HEADER_LENGTH] = header_length
            try:
                connection.request("POST", INFER_PATH, body=body, headers=headers)
                response = connection.getresponse()
                verdicts.add(judge(response.status, response.read(), response.getheader(HEADER_LENGTH), expected))
            except (OSError, http.client.HTTPException) as exc:
                connection.close()  # reconnects on the next request
                verdicts.add(Verdicts(1, errors=1, first_problem=f"request failed: {exc or type(exc).__name__}"))
    finally:
        connection.close()
    return verdicts


def check_grpc_answers(port: int, probe: Probe, timeout: float = 30.0) -> Verdicts:
    """``check_answers`` over gRPC: each probe digit as its own ModelInfer call, the logits read from
    ``raw_output_contents``."""
    import grpc

    from serve.proto import inference_pb2 as pb
    from serve.proto import inference_pb2_grpc as pb_grpc

    verdicts = Verdicts()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for image, expected in zip(probe.images, probe.logits):
            request = pb.ModelInferRequest.FromString(grpc_request(probe.input_name, image[None]))
            try:
                response = stub.ModelInfer(request, timeout=timeout)
            except grpc.RpcError as exc:
                verdicts.add(Verdicts(1, errors=1, first_problem=f"gRPC {exc.code().name}: {exc.details()}"))
                continue
            try:
                logits = grpc_logits(response)
            except ValueError as exc:
                verdicts.add(Verdicts(1, errors=1, first_problem=f"unreadable answer: {str(exc)[:120]}"))
                continue
            verdicts.add(judge_logits(logits, expected))
    return verdicts


def grpc_logits(response: object) -> np.ndarray:
    """The 'logits' output of a ModelInferResponse (raw contents, or typed contents), flat."""
    for i, output in enumerate(response.outputs):  # type: ignore[attr-defined]
        if output.name == OUTPUT:
            raw = response.raw_output_contents  # type: ignore[attr-defined]
            return np.frombuffer(raw[i], "<f4") if len(raw) > i else np.asarray(output.contents.fp32_contents)
    raise ValueError(f"the response has no {OUTPUT!r} output")


# --------------------------------------------------------------------------- the load generator


@dataclasses.dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    socket_errors: int  # connect, read, write errors and timeouts
    non200: int
    wrong: int  # 200 answers whose argmax is not the expected class
    checked: int  # answers the Lua hook looked at

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def parse_wrk_output(stdout: str) -> WrkRun:
    match = re.search(r"^WRK_RESULT (\{.*\})$", stdout, re.MULTILINE)
    if match is None:
        raise PeerError(f"wrk printed no result: {stdout.strip()[-200:]!r}")
    r = json.loads(match.group(1))
    return WrkRun(r["requests"], r["duration_us"] / 1e6, r["p50_us"] / 1e3, r["p99_us"] / 1e3, r["socket_errors"],
                  r["non200"], r["wrong"], r["checked"])


def run_wrk(port: int, body_file: Path, header_length: str | None, probe: Probe, connections: int, seconds: int,
            threads: int) -> WrkRun:
    command = ["wrk", "-t", str(min(threads, connections)), "-c", str(connections), "-d", f"{seconds}s",
               "--timeout", "10s", "-s", str(LUA), f"http://127.0.0.1:{port}{INFER_PATH}", "--",
               str(body_file), str(int(probe.expected[0])), str(probe.classes), header_length or ""]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise PeerError(f"wrk failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-200:]}")
    return parse_wrk_output(done.stdout)


GRPC_INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"


def parse_h2load_output(stdout: str, latencies_us: np.ndarray) -> WrkRun:
    """h2load's summary and its per-request log (``--log-file``: the microseconds of each request) as a run.
    h2load sees HTTP statuses, not gRPC's trailers: its answers are checked by the Python client only."""
    finished = re.search(r"^finished in ([\d.]+)(m?s),", stdout, re.MULTILINE)
    counts = re.search(r"^requests: (\d+) total, \d+ started, \d+ done, \d+ succeeded, \d+ failed, (\d+) errored, "
                       r"(\d+) timeout", stdout, re.MULTILINE)
    statuses = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", stdout, re.MULTILINE)
    if finished is None or counts is None or statuses is None:
        raise PeerError(f"h2load printed no summary: {stdout.strip()[-200:]!r}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    ok, *not_ok = (int(statuses.group(i)) for i in range(1, 5))
    p50, p99 = np.percentile(latencies_us, [50, 99]) / 1e3 if len(latencies_us) else (0.0, 0.0)
    return WrkRun(ok, seconds, float(p50), float(p99), int(counts.group(2)) + int(counts.group(3)), sum(not_ok), 0, 0)


def run_h2load(port: int, body_file: Path, connections: int, seconds: int, threads: int, scratch: Path) -> WrkRun:
    """``connections`` HTTP/2 connections, one gRPC ModelInfer call in flight on each, for ``seconds``."""
    log = scratch / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends to its log file: only this run's requests may be in it
    command = ["h2load", "-t", str(min(threads, connections)), "-c", str(connections), "-m", "1", "-D", str(seconds),
               "-d", str(body_file), "-H", "content-type: application/grpc", "-H", "te: trailers",
               "--log-file", str(log), f"http://127.0.0.1:{port}{GRPC_INFER_PATH}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise PeerError(f"h2load failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-200:]}")
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    return parse_h2load_output(done.stdout, np.array([float(row[2]) for row in rows if len(row) == 3]))


# --------------------------------------------------------------------------- installing and running peers


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"


def venv_python(work: Path, peer: Peer) -> Path:
    return work / peer.name / "bin" / "python"


def install(peer: Peer, work: Path, python: str, onnxruntime_version: str) -> None:
    """The peer, onnxruntime (the version foldserve runs) and numpy in ``work/<name>``, a fresh virtual
    environment; skipped when one with the same requirements is there."""
    requirements = [*PIP_PACKAGES[peer.name], f"onnxruntime=={onnxruntime_version}", "numpy"]
    venv = work / peer.name
    stamp = venv / ".bench-peers-requirements"
    if stamp.is_file() and stamp.read_text() == " ".join(requirements) and venv_python(work, peer).exists():
        return
    print(f"installing {' '.join(requirements)} into {venv}…", file=sys.stderr)
    for command in ([python, "-m", "venv", "--clear", str(venv)],
                    [str(venv_python(work, peer)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                     *requirements]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise PeerError(f"`{' '.join(command[2:5])} …` failed: {last_line(done.stderr + done.stdout)}")
    stamp.write_text(" ".join(requirements))


def peer_version(peer: Peer, work: Path) -> str:
    if peer.package is None:
        try:
            return version("foldserve")
        except PackageNotFoundError:
            return "unknown"
    code = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
    done = subprocess.run([str(venv_python(work, peer)), "-c", code, peer.package], capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise PeerError(f"not installed in {work / peer.name}: {last_line(done.stderr)}")
    return done.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(peer: Peer, work: Path, model: Path, port: int, grpc_port: int | None = None) -> list[str]:
    if peer.adapter is None:
        grpc = ["--grpc-port", str(grpc_port)] if grpc_port is not None else []
        return [sys.executable, "-m", "serve", "http", "--model", str(model), "--port", str(port), *grpc]
    return [str(venv_python(work, peer)), "-m", peer.adapter, "--model", str(model), "--port", str(port)]


def session_members(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``. A server is started as the leader of its own
    session, and everything it starts stays in it unless it calls setsid() itself: process groups are not
    enough, since Ray puts each of its workers (the HTTP proxy, the replica) in a group of its own."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (command) ": state, ppid, pgrp, session, ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry))
    return members


def stop_session(process: subprocess.Popen, grace: float = 20.0) -> None:
    """Stop the server and everything it started: SIGTERM to the leader first, so that it can shut its
    helpers down in order (Ray's driver stops Serve and the cluster); once it is gone (or after ``grace``
    seconds), SIGTERM and at last SIGKILL to whatever is left in its session."""

    def signal_members(sig: int) -> None:
        for pid in session_members(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def wait_for(done: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not done():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def all_gone() -> bool:
        return process.poll() is not None and not session_members(process.pid)

    process.send_signal(signal.SIGTERM)
    if wait_for(lambda: process.poll() is not None, grace) and wait_for(all_gone, 2.0):
        return
    for sig, seconds in ((signal.SIGTERM, min(grace, 5.0)), (signal.SIGKILL, 5.0)):
        signal_members(sig)
        if wait_for(all_gone, seconds):
            return


@contextlib.contextmanager
def running(command: list[str], log: Path, cwd: Path, grace: float = 20.0) -> Iterator[subprocess.Popen]:
    """``command`` as the leader of a new session (Ctrl-C reaches the harness only, which then stops the
    server), output to ``log``; the session's processes are stopped on the way out, however it goes (the
    server has ``grace`` seconds to stop by itself after SIGTERM)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            yield process
        finally:
            stop_session(process, grace)


def wait_ready(port: int, path: str, process: subprocess.Popen, log: Path, timeout: float) -> float:
    """Poll ``path`` until it answers 200; seconds taken. Fails at once if the server exits."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise PeerError(f"exited with status {process.returncode} while starting: "
                            f"{last_line(log.read_text(errors='replace'))}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return time.monotonic() - started
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    raise PeerError(f"{path} did not answer 200 within {timeout:.0f} s: {last_line(log.read_text(errors='replace'))}")


def listening_beyond_loopback(sid: int) -> list[str]:
    """Listening TCP sockets of the server's session that are not on loopback (they should be none)."""
    pids = set(session_members(sid))
    done = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True)
    found = set()
    for line in done.stdout.splitlines():
        fields = line.split()
        owners = {int(pid) for pid in re.findall(r"pid=(\d+),", line)}
        if len(fields) >= 4 and owners & pids and not fields[3].startswith(("127.", "[::1]", "[::ffff:127.")):
            found.add(fields[3])
    return sorted(found)


# --------------------------------------------------------------------------- the benchmark


@dataclasses.dataclass
class Outcome:
    """A peer's results over all rounds."""

    peer: Peer
    version: str = ""
    runs: dict[int, list[WrkRun]] = dataclasses.field(default_factory=dict)  # connections -> one per round
    verdicts: dict[int, Verdicts] = dataclasses.field(default_factory=dict)  # connections -> the Python checks
    failure: str | None = None  # why it was not (fully) measured
    exposed: list[str] = dataclasses.field(default_factory=list)  # its listening sockets beyond loopback
    start_seconds: list[float] = dataclasses.field(default_factory=list)  # from start to ready, per round


@dataclasses.dataclass(frozen=True)
class Options:
    model: Path
    work: Path
    rounds: int
    duration: int
    warmup: int
    connections: tuple[int, ...]
    threads: int
    start_timeout: float


def measure_round(outcome: Outcome, options: Options, probe: Probe, body_files: dict[str, tuple[Path, str | None]],
                  round_index: int) -> None:
    """Start the peer, measure every connection count, stop it. A failure ends the peer's measurement."""
    peer = outcome.peer
    port = free_port()
    grpc_port = free_port() if peer.grpc else None
    scratch = options.work / "scratch" / peer.name  # where a peer may write its files (MLServer's .metrics)
    scratch.mkdir(parents=True, exist_ok=True)
    log = options.work / "logs" / f"{peer.name}-round{round_index + 1}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    body_file, header_length = body_files[peer.request]

    def check() -> Verdicts:
        if grpc_port is not None:
            return check_grpc_answers(grpc_port, probe)
        return check_answers(port, probe, peer.binary)

    def load(connections: int, seconds: int) -> WrkRun:
        if grpc_port is not None:
            return run_h2load(grpc_port, body_file, connections, seconds, options.threads, scratch)
        return run_wrk(port, body_file, header_length, probe, connections, seconds, options.threads)

    with running(server_command(peer, options.work, options.model, port, grpc_port), log, scratch) as process:
        outcome.start_seconds.append(wait_ready(port, peer.health_path, process, log, options.start_timeout))
        outcome.exposed = listening_beyond_loopback(process.pid)  # ephemeral ports: the last round's
        first = check()
        if first.errors or first.wrong:
            raise PeerError(f"answers wrong before any load: {first.first_problem}")
        for connections in options.connections:
            print(f"  round {round_index + 1}: {peer.name}, {connections} connections", file=sys.stderr)
            load(connections, options.warmup)
            run = load(connections, options.duration)
            outcome.runs.setdefault(connections, []).append(run)
            outcome.verdicts.setdefault(connections, Verdicts()).add(check())
            if process.poll() is not None:
                raise PeerError(f"exited with status {process.returncode} under load: "
                                f"{last_line(log.read_text(errors='replace'))}")


def benchmark(peers: list[Peer], options: Options, probe: Probe, install_missing: bool,
              python: str) -> tuple[list[Outcome], float]:
    """Install what is missing, then measure every peer, round after round: the outcomes, and the 1-minute
    load average when the measurements began (after the installs, whose own load is not another job's)."""
    import onnxruntime

    outcomes = [Outcome(peer) for peer in peers]
    for outcome in outcomes:
        try:
            if outcome.peer.package is not None and install_missing:
                install(outcome.peer, options.work, python, onnxruntime.__version__)
            outcome.version = peer_version(outcome.peer, options.work)
        except (PeerError, subprocess.TimeoutExpired) as exc:
            outcome.failure = f"not installed: {exc}"
        if outcome.peer.grpc and shutil.which("h2load") is None:
            outcome.failure = "h2load is not installed (Debian: apt-get install nghttp2-client)"
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        body_files: dict[str, tuple[Path, str | None]] = {}
        for request in ("json", "binary"):
            body, header_length = request_body(probe.input_name, probe.images[:1], request == "binary")
            body_files[request] = (Path(tmp) / f"body-{request}", header_length)
            body_files[request][0].write_bytes(body)
        body_files["grpc"] = (Path(tmp) / "body-grpc", None)
        body_files["grpc"][0].write_bytes(grpc_frame(grpc_request(probe.input_name, probe.images[:1])))
        for round_index in range(options.rounds):
            for outcome in outcomes:
                if outcome.failure is not None:
                    continue
                try:
                    measure_round(outcome, options, probe, body_files, round_index)
                except (PeerError, subprocess.TimeoutExpired) as exc:
                    outcome.failure = f"round {round_index + 1}: {exc}"
    return outcomes, load_before


# --------------------------------------------------------------------------- the table


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import onnxruntime

    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    h2load = (subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.split()
              if shutil.which("h2load") else [])
    return {"cpu": f"{cpu}, {os.cpu_count()} cores (lscpu)", "date": datetime.date.today().isoformat(),
            "wrk": " ".join(wrk[:2]) or "wrk",  # "wrk debian/4.1.0-3+b2"
            "h2load": " ".join(h2load[:2]) or "h2load not installed",  # "h2load nghttp2/1.52.0"
            "python": sys.version.split()[0], "onnxruntime": onnxruntime.__version__}


def render_section(outcomes: list[Outcome], options: Options, info: dict[str, str], load: tuple[float, float],
                   elapsed: float, probe: Probe) -> str:
    """The BENCHMARKS.md section: settings and versions, then requests/s and latency per server and
    connection count (medians over rounds, min–max), errors and wrong answers, and the peers not measured."""
    shape = list(probe.images.shape[1:])
    lines = [PEERS_HEADING, "",
             f"Written by `make bench-peers` (`python -m benchmarks.peers`) on {info['date']} in {elapsed:.0f} s. The "
             f"same model.onnx ({probe.classes} classes) served by each server on 127.0.0.1, one server at a time; "
             f"every request is one {'×'.join(map(str, shape[1:]))} test digit, FP32 [1, {', '.join(map(str, shape))}] "
             f"(from the model's metadata), as OIP v2 JSON asking for the logits. {options.rounds} rounds: each server "
             f"started afresh in every round, in the same order; per connection count a {options.warmup} s warm-up, "
             f"then {options.duration} s measured. Figures: median over rounds (min–max).", ""]
    before, after = load
    shared = before > 0.5
    lines += ["| machine | |", "| --- | --- |", f"| CPU | {info['cpu']} |",
              f"| load average (1 min) before / after | {before:.2f} / {after:.2f}"
              + (" — **the machine was shared: other jobs ran on the same cores, so these figures are rough** |"
                 if shared else " |"),
              f"| load generators | {info['wrk']}, {options.threads} thread(s), the Lua hook checks every answer; "
              f"for gRPC {info['h2load']}, as many threads, HTTP/2 (it sees HTTP statuses, not gRPC's: its answers "
              f"are checked by the Python client only) |",
              f"| Python, onnxruntime | {info['python']}; onnxruntime {info['onnxruntime']} in every server |", "",
              "| server | version | ready after | settings |", "| --- | --- | --- | --- |"]
    for outcome in outcomes:
        settings = outcome.peer.settings
        if outcome.exposed:  # the serving port is on loopback; a peer's own daemons may not be (Ray's)
            examples = ", ".join(outcome.exposed[:3]) + (", …" if len(outcome.exposed) > 3 else "")
            settings += f"; **{len(outcome.exposed)} other listening sockets not on loopback** ({examples})"
        ready = Stat(outcome.start_seconds).fmt(1, " s") if outcome.start_seconds else "—"
        lines.append(f"| {outcome.peer.title} | {outcome.version or '—'} | {ready} | {settings} |")
    lines += ["", "| server | connections | requests/s | p50 ms | p99 ms | errors | wrong answers |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for outcome in outcomes:
        for connections in options.connections:
            runs = outcome.runs.get(connections)
            if not runs:
                continue
            verdicts = outcome.verdicts.get(connections, Verdicts())
            errors = sum(r.socket_errors + r.non200 for r in runs) + verdicts.errors
            wrong = sum(r.wrong for r in runs) + verdicts.wrong
            rounds = "" if len(runs) == options.rounds else f" ({len(runs)} of {options.rounds} rounds)"
            lines.append(f"| {outcome.peer.title}{rounds} | {connections} | {Stat([r.rps for r in runs]).fmt()} "
                         f"| {Stat([r.p50_ms for r in runs]).fmt(2)} | {Stat([r.p99_ms for r in runs]).fmt(2)} "
                         f"| {errors:,} | {wrong:,} |")
    wrk_checked = sum(r.checked for o in outcomes for runs in o.runs.values() for r in runs)
    python_checked = sum(v.checked for o in outcomes for v in o.verdicts.values())
    largest = max((v.max_difference for o in outcomes for v in o.verdicts.values()), default=0.0)
    lines += ["", f"Errors: socket errors, timeouts (10 s) and non-200 answers in the measured runs, and failed "
              f"check requests. Wrong answers: 200 answers whose logits' argmax is not onnxruntime's. Checked: "
              f"{wrk_checked:,} answers by wrk's Lua hook (every answer of every measured run), and {python_checked:,} "
              f"by a Python client after each run ({len(probe.images)} different digits, compared with onnxruntime "
              f"run directly: largest logit difference {largest:.1g}, tolerance {LOGIT_TOLERANCE:g})."]
    problems = [o for o in outcomes if o.failure is not None]
    if problems:
        lines += ["", "Not measured, or not in every round:", ""]
        lines += [f"- {o.peer.title}: {o.failure}" for o in problems]
    first_problems = [(o.peer.title, c, v.first_problem) for o in outcomes for c, v in o.verdicts.items()
                      if v.first_problem]
    if first_problems:
        lines += ["", "The Python client's first problem with each server that had one:", ""]
        lines += [f"- {title}, after the run at {c} connections: {problem}" for title, c, problem in first_problems]
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the running server's session is stopped on the way out


def connection_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"connection counts must be at least 1, got {text!r}")
    return counts


def peer_names(text: str) -> list[Peer]:
    known = {peer.name: peer for peer in PEERS}
    unknown = [name for name in text.split(",") if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer {unknown[0]!r}; peers: {', '.join(known)}")
    return [known[name] for name in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "runs" / "default" / "model.onnx")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "peers",
                        help="the peers' virtual environments, logs and scratch directories")
    parser.add_argument("--peers", type=peer_names, default=list(PEERS), help="comma-separated, in round order")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds of each measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each measured run")
    parser.add_argument("--connections", type=connection_counts, default=(1, 16, 64))
    parser.add_argument("--threads", type=int, default=1,
                        help="wrk threads (at most one per connection); each takes a core from the servers")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="seconds for a server to become ready")
    parser.add_argument("--python", default="python3", help="the Python that creates the peers' environments")
    parser.add_argument("--install", action=argparse.BooleanOptionalAction, default=True,
                        help="install missing peers (--no-install: measure the ones already there)")
    args = parser.parse_args(argv)
    if min(args.rounds, args.duration, args.warmup, args.threads) < 1:
        parser.error("--rounds, --duration, --warmup and --threads must be at least 1")
    if shutil.which("wrk") is None:
        sys.exit("bench-peers: wrk is not installed (Debian: apt-get install wrk)")
    from pipeline.data import load_dataset
    from serve.model import ModelError, load_model

    try:
        model = load_model(args.model)
    except ModelError as exc:
        sys.exit(f"bench-peers: {exc}")
    signal.signal(signal.SIGTERM, _interrupted)
    started = time.perf_counter()
    test = load_dataset("sample")
    probe = make_probe(model, test.test_images, test.test_labels)
    options = Options(args.model.resolve(), args.work.resolve(), args.rounds, args.duration, args.warmup,
                      args.connections, args.threads, args.start_timeout)
    options.work.mkdir(parents=True, exist_ok=True)
    try:
        outcomes, load_before = benchmark(args.peers, options, probe, args.install, args.python)
    except KeyboardInterrupt:
        print("bench-peers: interrupted; the servers are stopped, nothing was written", file=sys.stderr)
        return 130
    section = render_section(outcomes, options, machine_info(), (load_before, os.getloadavg()[0]),
                             time.perf_counter() - started, probe)
    document = args.out.read_text() if args.out.is_file() else "# Benchmarks\n"
    write_atomically(args.out, replace_section(document, PEERS_HEADING, section))
    print(section)
    print(f"wrote {args.out}", file=sys.stderr)
    wrong = sum(r.wrong for o in outcomes for runs in o.runs.values() for r in runs)
    wrong += sum(v.wrong for o in outcomes for v in o.verdicts.values())
    return 1 if wrong else 0  # a wrong answer is a bug to look at, whoever gave it
