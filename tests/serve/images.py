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
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + chunk(b"IEND", b""))


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


def upscale_digit(digit: np.ndarray, size: int) -> np.ndarray:
    """A 28x28 white-on-black digit as a smooth pen stroke of ``size`` px: ink in [0, 1]."""
    from PIL import ImageFilter

    big = Image.fromarray(digit).resize((size, size),
                                        Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(size / 60))
    return np.clip((np.asarray(big, np.float32) / 255 - 0.35) * 3, 0, 1)


def paper(height: int, width: int, colour: tuple[float, float, float] = (0.93, 0.92, 0.88),
          rng: np.random.Generator | None = None) -> np.ndarray:
    """float32 RGB paper with a little texture."""
    rng = rng or np.random.default_rng(0)
    texture = rng.normal(0, 0.01, (height, width, 1)).astype(np.float32)
    return np.ones((height, width, 3), np.float32) * np.array(colour, np.float32) + texture


def put_ink(canvas: np.ndarray, ink: np.ndarray, top: int, left: int,
            colour: tuple[float, float, float] = (0.1, 0.1, 0.15)) -> np.ndarray:
    """Draw ``ink`` (alpha in [0, 1]) in ``colour`` onto the RGB ``canvas`` at (top, left), in place."""
    h, w = ink.shape
    alpha = ink[..., None]
    region = canvas[top:top + h, left:left + w]
    canvas[top:top + h, left:left + w] = region * (1 - alpha) + np.array(colour, np.float32) * alpha
    return canvas


def rgb_bytes(rgb: np.ndarray, fmt: str = "PNG", **params) -> bytes:
    return encode(Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB"), fmt, **params)


# Digits as pen strokes: polylines in a unit box (x to the right, y down), big and plain.
DIGIT_STROKES: dict[str, list[list[tuple[float, float]]]] = {
    "1": [[(0.5, 0.0), (0.5, 1.0)]],
    "7": [[(0.0, 0.0), (1.0, 0.0), (0.3, 1.0)]],
}


def number_strokes(text: str, left: int, top: int, height: int, pitch: int) -> list[list[tuple[int, int]]]:
    """The strokes writing ``text`` (digits of DIGIT_STROKES): each digit ``height`` tall and 0.6 of that
    wide, one every ``pitch`` pixels from ``left``."""
    width = 0.6 * height
    return [[(round(left + i * pitch + x * width), round(top + y * height)) for x, y in stroke]
            for i, digit in enumerate(text) for stroke in DIGIT_STROKES[digit]]


def written(strokes: list[list[tuple[int, int]]], size: tuple[int, int], pen: int = 18) -> Image.Image:
    """Black strokes ``pen`` pixels wide, round ends, on a white RGB page of ``size`` (width, height)."""
    from PIL import ImageDraw

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        draw.line(stroke, fill="black", width=pen, joint="curve")
        for x, y in (stroke[0], stroke[-1]):
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill="black")
    return image
