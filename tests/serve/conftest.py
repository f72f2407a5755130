from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serve.model import load_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_path(exported_run: Path) -> Path:
    return exported_run / "model.onnx"


@pytest.fixture(scope="session")
def model(model_path: Path):
    return load_model(model_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_path: Path | None, *options: str) -> tuple[subprocess.Popen, int]:
    """`serve http` as a subprocess on 127.0.0.1 (``model_path`` None: what ``options`` say to serve),
    returned once /v2/health/ready answers 200."""
    port = free_port()
    model = ["--model", str(model_path)] if model_path is not None else []
    process = subprocess.Popen([sys.executable, "-m", "serve", "http", *model, "--port", str(port), *options],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.1)
        finally:
            connection.close()
    process.kill()
    pytest.fail(f"server did not start: {process.communicate()[1]}")


@pytest.fixture(scope="session")
def server(model_path: Path):
    """`serve http` as a subprocess on 127.0.0.1; stopped by its pid with SIGTERM."""
    process, port = start_server(model_path, "--max-batch", "64", "--max-delay-ms", "2")
    yield f"127.0.0.1:{port}", process
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells how it ended
    assert process.returncode in (0, -signal.SIGTERM) and "Traceback" not in stderr, stderr
    assert stderr.count("stopped serving") == 1, stderr  # the operator's shutdown line


