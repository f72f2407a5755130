"""Open Inference Protocol (KServe v2) requests and responses, with the binary tensor data extension.

Pure functions over bytes and numpy, independent of the web framework. Every problem with a
request raises ProtocolError with a message for the client (answered as 400 {"error": ...} over HTTP,
INVALID_ARGUMENT over gRPC, which hands its requests to ``infer_request`` as the same document).
"""
from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from serve.errors import RequestError
from serve.image.decode import DEFAULT_MAX_PIXELS
from serve.image.normalize import FieldSpec
from serve.model import INPUT_NAME
from serve.preprocess import ImageError, NoDigitFound, prepare

HEADER_LENGTH = "Inference-Header-Content-Length"
OUTPUTS = ("logits", "probabilities")
MAX_IMAGES_PER_REQUEST = 4096


class ProtocolError(RequestError, ValueError):
    """A malformed or invalid inference request."""


@dataclass
class InferRequest:
    images: np.ndarray  # float32 [N,1,28,28], validated
    outputs: list[tuple[str, bool]]  # (name, as binary)
    request_id: str | None


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON part and the binary part of a request body."""
    if header_length is None:
        json_part, binary = body, b""
    else:
        if not re.fullmatch(r"[0-9]{1,12}", header_length.strip()):  # int() would take "1_3", "+13", "١٣"
            raise ProtocolError(f"{HEADER_LENGTH} must be a decimal integer, got {header_length[:40]!r}")
        n = int(header_length)
        if not 0 <= n <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {n} is outside the body of {len(body)} bytes")
        json_part, binary = body[:n], body[n:]
    try:
        document = orjson.loads(json_part)  # strict JSON: NaN, numbers beyond float range, bad UTF-8 are refused
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON: {str(exc)[:200]}") from None
    if not isinstance(document, dict):
        raise ProtocolError("the request body must be a JSON object")
    return document, binary


def _shape(value: Any) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise ProtocolError(f"'shape' must be a list of non-negative integers, got {value!r}")
    return value


def _fp32_tensor(spec: dict[str, Any], binary: bytes | None, input_shape: tuple[int, ...]) -> np.ndarray:
    shape = _shape(spec.get("shape"))
    if len(shape) != 1 + len(input_shape) or tuple(shape[1:]) != input_shape or shape[0] < 1:
        expected = ", ".join(["N", *map(str, input_shape)])
        raise ProtocolError(f"input {INPUT_NAME!r} must have shape [{expected}] with N >= 1, got {shape}")
    if shape[0] > MAX_IMAGES_PER_REQUEST:
        raise ProtocolError(f"at most {MAX_IMAGES_PER_REQUEST} images per request, got {shape[0]}")
    count = int(np.prod(shape))
    if binary is not None:
        if len(binary) != 4 * count:
            raise ProtocolError(f"binary data of {len(binary)} bytes does not hold {count} FP32 values")
        array = np.frombuffer(binary, dtype="<f4").astype(np.float32)
    else:
        data = spec.get("data")
        if not isinstance(data, list):
            raise ProtocolError(f"input {INPUT_NAME!r} needs a 'data' list")
        array = numbers_only(data)
        if array.size != count:
            raise ProtocolError(f"'data' has {array.size} elements, shape {shape} needs {count}")
        array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ProtocolError("'data' contains NaN or infinite values")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        # the model's contract; 0-255 pixels are the usual mistake, and give confident nonsense
        raise ProtocolError(f"pixel values must be in [0, 1] (white ink on black), got {array.min():g} to "
                            f"{array.max():g}; divide 8-bit pixels by 255, or send the image files as BYTES")
    return array.reshape(shape)


def numbers_only(data: list[Any]) -> np.ndarray:
    """float64 array of a flat or evenly nested list of JSON numbers; strings ("0.5"), booleans, nulls,
    ragged nesting and numbers beyond float range are refused rather than converted."""
    if set(map(type, data)) <= {int, float}:  # a flat list of numbers, the common case: 2.5x faster
        return np.array(data, dtype=np.float64)
    try:
        elements = np.asarray(data, dtype=object)
        if elements.dtype != object or elements.ndim == 0:
            raise ValueError
        flat = elements.ravel()
        if not set(map(type, flat)) <= {int, float}:
            raise ValueError
        return flat.astype(np.float64).reshape(elements.shape)
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError("'data' must hold JSON numbers only, in a flat or evenly nested list") from None


def parameters(owner: dict[str, Any], where: str) -> dict[str, Any]:
    """The optional ``parameters`` object of ``owner`` (a request, an input or an output)."""
    value = owner.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"'parameters' of {where} must be a JSON object, got {type(value).__name__}")
    return value


def _bytes_elements(spec: dict[str, Any], binary: bytes | None) -> list[bytes]:
    shape = _shape(spec.get("shape"))
    if len(shape) != 1 or not 1 <= shape[0] <= MAX_IMAGES_PER_REQUEST:
        raise ProtocolError(f"a BYTES input must have shape [N] (1 <= N <= {MAX_IMAGES_PER_REQUEST}), got {shape}")
    if binary is not None:  # each element: 4-byte little-endian length, then the bytes
        elements, offset = [], 0
        while offset < len(binary):
            if offset + 4 > len(binary):
                raise ProtocolError("truncated BYTES element length in the binary data")
            (length,) = struct.unpack_from("<I", binary, offset)
            offset += 4
            if offset + length > len(binary):
                raise ProtocolError("BYTES element runs past the end of the binary data")
            elements.append(binary[offset:offset + length])
            offset += length
    else:
        data = spec.get("data")
        if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
            raise ProtocolError("a BYTES input in JSON needs 'data' as a list of base64 strings")
        try:
            elements = [base64.b64decode(d, validate=True) for d in data]
        except (binascii.Error, ValueError):
            raise ProtocolError("BYTES 'data' elements must be base64-encoded image files") from None
    if len(elements) != shape[0]:
        raise ProtocolError(f"BYTES input has {len(elements)} elements, shape {shape} says {shape[0]}")
    return elements


def images_from_files(files: list[bytes], field: FieldSpec = FieldSpec(),
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    rows = []
    for i, data in enumerate(files):
        try:
            rows.append(prepare(data, max_pixels, field))
        except NoDigitFound:
            raise ProtocolError(f"image {i}: no digit found") from None
        except ImageError as exc:
            raise ProtocolError(f"image {i}: {exc}") from None
    return np.stack(rows)[:, None]


def parse_infer_request(body: bytes, header_length: str | None, field: FieldSpec = FieldSpec(),
                        max_pixels: int = DEFAULT_MAX_PIXELS) -> InferRequest:
    """The request's images, validated against the model's input (``field``: its size, from the
    model's metadata); BYTES image files are prepared as `serve predict` prepares them (largest glyph)."""
    document, binary = split_body(body, header_length)
    return infer_request(document, binary, field, max_pixels)


def holds_files(document: dict[str, Any]) -> bool:
    """Whether a request ``document`` sends image files (a BYTES input), which take decoding."""
    inputs = document.get("inputs")
    return isinstance(inputs, list) and any(isinstance(i, dict) and i.get("datatype") == "BYTES" for i in inputs)


def infer_request(document: dict[str, Any], binary: bytes, field: FieldSpec = FieldSpec(),
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> InferRequest:
    """The request of a parsed JSON ``document``; ``binary``: the tensor data that follows it (the binary
    tensor extension; for gRPC, raw_input_contents), which an input claims with ``binary_data_size``."""
    input_shape = (1, field.size, field.size)
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError("'inputs' must be a list with exactly one input: "
                            f"{INPUT_NAME!r} (FP32 [N,1,{field.size},{field.size}]) or image files (BYTES [N])")
    spec = inputs[0]
    params = parameters(spec, "the input")
    binary_part: bytes | None = None
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if type(size) is not int or size != len(binary):
            raise ProtocolError(f"binary_data_size {size!r} does not match the {len(binary)} bytes after the JSON")
        binary_part = binary
    elif binary:
        raise ProtocolError("binary data after the JSON, but no input declares binary_data_size")
    datatype = spec.get("datatype")
    if datatype == "FP32":
        if spec.get("name") != INPUT_NAME:
            raise ProtocolError(f"unknown FP32 input {spec.get('name')!r}; the model's input is {INPUT_NAME!r}")
        images = _fp32_tensor(spec, binary_part, input_shape)
    elif datatype == "BYTES":
        images = images_from_files(_bytes_elements(spec, binary_part), field, max_pixels)
    else:
        raise ProtocolError(f"datatype {datatype!r} is not accepted: send FP32 {INPUT_NAME!r} or BYTES image files")
    all_binary = flag(parameters(document, "the request"), "binary_data_output", False)
    requested = document.get("outputs")
    if requested is None:
        outputs = [(name, all_binary) for name in OUTPUTS]
    else:
        if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
            raise ProtocolError("'outputs' must be a list of objects with a 'name'")
        outputs = []
        for o in requested:
            name = o.get("name")
            if name not in OUTPUTS:
                raise ProtocolError(f"unknown output {str(name)[:40]!r}; outputs are {', '.join(OUTPUTS)}")
            if any(name == seen for seen, _ in outputs):  # a repeated output would multiply the response
                raise ProtocolError(f"output {name!r} is requested more than once")
            outputs.append((name, flag(parameters(o, f"output {name!r}"), "binary_data", all_binary)))
    request_id = document.get("id")
    return InferRequest(images, outputs, request_id if isinstance(request_id, str) else None)


def flag(params: dict[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"parameter {name!r} must be true or false, got {str(value)[:40]!r}")
    return value


def requested_outputs(request: InferRequest, logits: np.ndarray,
                      probabilities: np.ndarray) -> list[tuple[str, np.ndarray, bool]]:
    """The outputs the request asks for, in its order: (name, little-endian float32 tensor, as binary)."""
    tensors = {"logits": logits, "probabilities": probabilities}
    return [(name, np.ascontiguousarray(tensors[name], dtype="<f4"), as_binary) for name, as_binary in request.outputs]


def encode_infer_response(model_name: str, request: InferRequest, logits: np.ndarray,
                          probabilities: np.ndarray, model_version: str = "1") -> tuple[bytes, dict[str, str]]:
    """The response body and extra headers (binary outputs follow the JSON, in order)."""
    outputs, binary = [], []
    for name, tensor, as_binary in requested_outputs(request, logits, probabilities):
        entry: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(tensor.shape)}
        if as_binary:
            raw = tensor.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            entry["data"] = tensor.ravel().tolist()
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    if request.request_id is not None:
        document["id"] = request.request_id
    header = orjson.dumps(document)
    if not binary:
        return header, {}
    return header + b"".join(binary), {HEADER_LENGTH: str(len(header))}
