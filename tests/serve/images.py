"""Helpers that encode test images the ways users' files come."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` followed by a tiny (wrong) data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def user_style(digit: np.ndarray, rng: np.random.Generator, canvas: int | None = None) -> Image.Image:
    """A 28x28 white-on-black digit drawn the way users' images look: dark ink on a light, larger,
    off-centre canvas; sometimes coloured ink, sometimes a transparent background."""
    canvas = canvas or int(rng.integers(100, 201))
    size = int(rng.integers(int(canvas * 0.45), int(canvas * 0.8)))
    ink = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR), np.float64) / 255
    top, left = (int(v) for v in rng.integers(0, canvas - size + 1, 2))
    layer = np.zeros((canvas, canvas))
    layer[top:top + size, left:left + size] = ink
    style = rng.integers(0, 3)
    if style == 0:  # grey pencil on white paper
        paper = 0.92 + 0.06 * rng.random()
        gray = paper - layer * (paper - 0.1)
        return Image.fromarray((gray * 255).astype(np.uint8))
    if style == 1:  # coloured ink on white, RGB
        colour = rng.integers(0, 120, 3)
        rgb = 255 - layer[..., None] * (255 - colour[None, None, :])
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    rgba = np.zeros((canvas, canvas, 4), np.uint8)  # canvas export: dark strokes, transparent elsewhere
    rgba[..., :3] = rng.integers(0, 60, 3)
    rgba[..., 3] = (layer * 255).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")
