"""The deployment files: the KServe InferenceService and the Dockerfile of `serve http`, held to the code."""
from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import tiny_model

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "deploy" / "kserve" / "inferenceservice.yaml"
DOCKERFILE = REPO / "Dockerfile"
STORAGE_SCHEMES = ("s3", "gs", "pvc", "https", "hdfs", "webhdfs", "oci")  # what KServe's storage initializer reads


def yaml_mappings(text: str) -> dict[str, Any]:
    """The block mappings of a YAML document: nested ``key: value`` by indentation, plain or quoted
    scalars, comments. (PyYAML is not among the project's dependencies.) Anything beyond that subset,
    such as a list, fails the test rather than being misread."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"\s+#.*$|^\s*#.*$", "", raw).rstrip()
        if not line:
            continue
        indent = len(line) - len(line.lstrip(" "))
        match = re.fullmatch(r"([A-Za-z][\w.-]*):(?: (.+))?", line.strip())
        assert match and "\t" not in raw, f"line {number} is outside the YAML subset checked here: {raw!r}"
        while indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        key, value = match.groups()
        assert key not in parent, f"line {number}: {key} given twice"
        if value is None:
            parent[key] = {}
            stack.append((indent, parent[key]))
        else:
            assert not value.startswith(("[", "{", "-", "|", ">", "&", "*")), f"line {number}: {value!r}"
            parent[key] = value[1:-1] if value[:1] in "\"'" and value[-1:] == value[:1] else value
    return root


def test_the_inferenceservice_serves_the_exported_repository_with_triton() -> None:
    manifest = yaml_mappings(MANIFEST.read_text())
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    assert manifest["metadata"]["name"]
    predictor = manifest["spec"]["predictor"]
    model = predictor["model"]
    assert model["protocolVersion"] == "v2"  # KServe finds no onnx runtime without it
    assert model["modelFormat"] == {"name": "onnx"}
    assert model["runtime"] == "kserve-tritonserver"
    scheme, _, path = model["storageUri"].partition("://")
    assert scheme in STORAGE_SCHEMES and path and not path.endswith(".onnx")  # the repository, not one model
    assert int(predictor["minReplicas"]) >= 1 and int(predictor["maxReplicas"]) > int(predictor["minReplicas"])


def test_the_yaml_check_reads_what_it_claims() -> None:
    assert yaml_mappings("a:\n  b: 'x'  # c\n  d:\n    e: 1\nf: g\n") == {"a": {"b": "x", "d": {"e": "1"}}, "f": "g"}
    with pytest.raises(AssertionError, match="outside the YAML subset"):
        yaml_mappings("args:\n  - --port\n")


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.splitlines()
                                             if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in joined.splitlines() if line.strip()]


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an instruction in exec form (what Docker runs without a shell)."""
    words = json.loads(arguments)
    assert isinstance(words, list) and all(isinstance(w, str) for w in words), arguments
    return words


@pytest.fixture(scope="module")
def docker() -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for instruction, arguments in instructions(DOCKERFILE.read_text()):
        parsed.setdefault(instruction, []).append(arguments)
    return parsed


def test_the_image_is_slim_and_runs_as_a_user_who_is_not_root(docker) -> None:
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", docker["FROM"][0]), docker["FROM"]
    user = docker["USER"][-1].split(":")[0]
    assert user not in ("root", "0") and "HEALTHCHECK" in docker and "CMD" in docker
    assert any(f"--uid {user}" in run for run in docker["RUN"])  # the user exists in the image


def test_the_image_installs_only_serving_extras_that_exist(docker) -> None:
    extras = dict(arg.split("=", 1) for arg in docker["ARG"])["EXTRAS"].split(",")
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) <= set(optional) and "http" in extras
    assert not set(extras) & {"train", "dev"}  # no torch, no test tools
    installs = [run for run in docker["RUN"] if "pip install" in run]
    assert len(installs) == 1 and "[${EXTRAS}]" in installs[0] and "-c " in installs[0]
    copied = [shlex.split(copy)[:-1] for copy in docker["COPY"]]
    assert sorted(name for sources in copied for name in sources) == sorted(
        ["pyproject.toml", "README.md", "constraints.txt", "serve"])  # the serve package only: no pipeline, models


def test_the_healthcheck_and_the_command_fit_the_server(docker) -> None:
    from fastapi.testclient import TestClient

    from serve.cli import cli
    from serve.server import ServerConfig, create_app

    (url,) = re.findall(r"https?://[^'\"\s]+", docker["HEALTHCHECK"][0])
    host_port, path = re.fullmatch(r"https?://([^/]+)(/.*)", url).groups()  # type: ignore[union-attr]
    # answered 200 by the app, before any model is loaded, and without the API key the image may be given
    assert TestClient(create_app(ServerConfig(api_key="secret"))).get(path).status_code == 200
    command = exec_form(docker["CMD"][0])
    assert command[:2] == ["serve", "http"]
    http = cli.commands["http"]
    options = http.make_context("http", command[2:]).params  # every option exists and parses
    assert options["host"] == "0.0.0.0" and options["repository"] is not None
    assert http.make_context("http", []).params["host"] == "127.0.0.1"  # 0.0.0.0 inside the container only
    assert int(host_port.rsplit(":", 1)[1]) == options["port"] == int(docker["EXPOSE"][0])
    assert docker["WORKDIR"][-1] == str(options["repository"])


@pytest.mark.install
def test_the_image_install_serves_a_repository(tmp_path: Path, docker) -> None:
    """What the image's build does (the files it copies, its pip install), in a fresh virtual
    environment, then its command on a repository (on 127.0.0.1 here), asked what its HEALTHCHECK asks."""
    context = tmp_path / "context"
    for copy in docker["COPY"]:
        *sources, destination = shlex.split(copy)
        target = context / destination.lstrip("/")
        for name in sources:
            if (REPO / name).is_dir():
                shutil.copytree(REPO / name, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / name, target / name)
    extras = dict(arg.split("=", 1) for arg in docker["ARG"])["EXTRAS"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    source = context / "tmp" / "foldserve"
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c",
                          str(source / "constraints.txt"), f"{source}[{extras}]"],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    version = tmp_path / "models" / "digits" / "1"
    version.mkdir(parents=True)
    tiny_model(version / "model.onnx", ["N", 1, 28, 28])  # any servable model: the install is what is tested
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    command = exec_form(docker["CMD"][0])
    args = command[2:]
    args[args.index("--repository") + 1] = str(tmp_path / "models")
    args[args.index("--host") + 1] = "127.0.0.1"
    from tests.serve.conftest import free_port

    port = free_port()
    args[args.index("--port") + 1] = str(port)
    server = subprocess.Popen([str(venv / "bin" / command[0]), *command[1:2], *args], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, status = time.monotonic() + 60, 0
        while time.monotonic() < deadline and status != 200:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                connection.request("GET", "/v2/health/ready")
                status = connection.getresponse().status
            except OSError:
                assert server.poll() is None, server.communicate()[1]
                time.sleep(0.2)
            finally:
                connection.close()
        assert status == 200
        has_torch = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True, env=env)
        assert has_torch.returncode != 0
    finally:
        server.terminate()
        server.communicate(timeout=30)
