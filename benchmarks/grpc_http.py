"""Requests/s of one `serve http --grpc-port` server: OIP v2 over gRPC (raw tensor contents) against HTTP
(JSON, and the binary tensor extension), ``--images`` images per request (default 1), on loopback.

    python -m benchmarks.grpc_http [--model runs/default/model.onnx] [--seconds 4] [--rounds 3]
                                   [--clients 1 16 64] [--images 1]

One server answers both protocols (same model, batcher and process), so they are compared on the same
footing. Every client is a thread with its own connection (HTTP: http.client keep-alive; gRPC:
tritonclient.grpc with its own channel) sending requests back to back; "gRPC asyncio" is one
tritonclient.grpc.aio channel with that many calls in flight. Each measurement counts the requests
completed in ``--seconds``; the protocols take turns within a round, in a rotated order each round,
and the table gives medians with min-max over ``--rounds``. Client and server share the machine's
cores, so the numbers include the client's own cost, which differs between the protocols.
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int) -> tuple[subprocess.Popen, int]:
    """The server, once it has logged the port gRPC listens on; then HTTP, bound right after."""
    process = subprocess.Popen([sys.executable, "-m", "serve", "http", "--model", str(model), "--port", str(port),
                                "--grpc-port", "0"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        match = re.search(r"serving gRPC on 127\.0\.0\.1:(\d+)", line)
        if match:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe drained
            break
    else:
        raise SystemExit(f"the server did not start (exit status {process.wait()})")
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, int(match.group(1))
        except ConnectionRefusedError:
            time.sleep(0.02)
    raise SystemExit("HTTP did not come up")


def requests(per_request: int) -> list[np.ndarray]:
    """64 different requests of ``per_request`` test images each."""
    from pipeline.data import load_dataset, model_input

    pixels = model_input(load_dataset("sample").test_images)
    return [pixels[(i * per_request + np.arange(per_request)) % len(pixels)] for i in range(64)]


def triton_inputs(batch: list[np.ndarray]) -> list[list]:
    """The requests as tritonclient.grpc inputs (raw contents), made once."""
    import tritonclient.grpc as grpcclient

    inputs = []
    for b in batch:
        tensor = grpcclient.InferInput("image", list(b.shape), "FP32")
        tensor.set_data_from_numpy(b)
        inputs.append([tensor])
    return inputs


def http_client(port: int, batch: list[np.ndarray], binary: bool) -> Callable[[int], None]:
    """One HTTP client: ``run(i)`` sends request i and reads the answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    if binary:
        header = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": list(batch[0].shape),
                                         "parameters": {"binary_data_size": batch[0].nbytes}}],
                             "parameters": {"binary_data_output": True}}).encode()
        bodies = [header + b.tobytes() for b in batch]
        headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    else:
        bodies = [json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": list(b.shape),
                                          "data": b.ravel().tolist()}]}).encode() for b in batch]
        headers = {"Content-Type": "application/json"}

    def run(i: int) -> None:
        connection.request("POST", "/v2/models/digits/infer", body=bodies[i % len(bodies)], headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")

    return run


def grpc_client(port: int, batch: list[np.ndarray]) -> Callable[[int], None]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = triton_inputs(batch)

    def run(i: int) -> None:
        client.infer("digits", inputs[i % len(inputs)]).as_numpy("logits")

    return run


def threaded(make_client: Callable[[], Callable[[int], None]], clients: int, seconds: float) -> float:
    """Requests/s of ``clients`` threads sending back to back for ``seconds``."""
    runs = [make_client() for _ in range(clients)]
    for run in runs:
        run(0)  # connected and warm
    stop = time.perf_counter() + seconds
    counts = [0] * clients

    def loop(worker: int) -> None:
        run, k = runs[worker], worker
        while time.perf_counter() < stop:
            run(k)
            k += clients
            counts[worker] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(loop, range(clients)))
    return sum(counts) / (time.perf_counter() - start)


def grpc_asyncio(port: int, batch: list[np.ndarray], clients: int, seconds: float) -> float:
    """Requests/s of ``clients`` calls kept in flight on one tritonclient.grpc.aio channel."""
    import tritonclient.grpc.aio as aioclient

    async def main() -> float:
        client = aioclient.InferenceServerClient(f"127.0.0.1:{port}")
        inputs = triton_inputs(batch)
        await client.infer("digits", inputs[0])
        stop = time.perf_counter() + seconds
        count = 0

        async def loop(worker: int) -> None:
            nonlocal count
            k = worker
            while time.perf_counter() < stop:
                (await client.infer("digits", inputs[k % len(inputs)])).as_numpy("logits")
                k += clients
                count += 1

        start = time.perf_counter()
        await asyncio.gather(*(loop(w) for w in range(clients)))
        elapsed = time.perf_counter() - start
        await client.close()
        return count / elapsed

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "runs" / "default" / "model.onnx")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--images", type=int, default=1, help="images per request")
    args = parser.parse_args()
    batch = requests(args.images)
    http_port = free_port()
    server, grpc_port = start_server(args.model, http_port)
    ways: dict[str, Callable[[int], float]] = {
        "HTTP JSON": lambda n: threaded(lambda: http_client(http_port, batch, binary=False), n, args.seconds),
        "HTTP binary": lambda n: threaded(lambda: http_client(http_port, batch, binary=True), n, args.seconds),
        "gRPC": lambda n: threaded(lambda: grpc_client(grpc_port, batch), n, args.seconds),
        "gRPC asyncio": lambda n: grpc_asyncio(grpc_port, batch, n, args.seconds),
    }
    results: dict[tuple[str, int], list[float]] = {}
    try:
        names = list(ways)
        for r in range(args.rounds):
            for clients in args.clients:
                for name in names[r % len(names):] + names[:r % len(names)]:
                    results.setdefault((name, clients), []).append(ways[name](clients))
                    print(f"round {r + 1}, {clients} clients, {name}: {results[(name, clients)][-1]:,.0f} req/s",
                          file=sys.stderr)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True,
                text=True).stdout.splitlines() if line.startswith("Model name")), platform.processor())
    print(f"\n{cpu}, {len(__import__('os').sched_getaffinity(0))} cores; {args.images} image(s) per request, "
          f"the server's defaults (dynamic batching, no wait window); requests/s, median (min-max) of {args.rounds} "
          f"rounds of {args.seconds:g} s\n")
    print("| clients | " + " | ".join(ways) + " |")
    print("| --- |" + " --- |" * len(ways))
    for clients in args.clients:
        cells = []
        for name in ways:
            values = results[(name, clients)]
            cells.append(f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})")
        print(f"| {clients} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
