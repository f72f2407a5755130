"""How well the served model reads real images: a generated evaluation set and its report.

Every image is made from the TEST split only (the training split is never touched), encoded as the
file bytes users send (PNG, JPEG, WebP, TIFF, GIF, BMP, 16-bit PNG, EXIF-rotated phone JPEGs), and read
through the served path only (``serve.reading``: decoding, ink, segmentation, onnxruntime), so what is
measured is what ``serve predict`` answers. Each item is generated from its own seed
(``seed``, condition, index), so the set is the same on every run and machine, item by item, whatever
``per_condition`` is or how many processes make it.

Conditions (see ``CONDITIONS``): the 28x28 digits themselves, user-style canvases, phone photos of
digits written on plain, ruled and squared paper, on notes lying on a desk, in a form's printed boxes,
circled, or on a notebook page with punched holes, beside a pen lying on the page, under a
highlighter's band or underlined, in chalk on a blackboard or paint on black card, in a dim room
(grey paper, a high-gain sensor's noise), clean scans with
dust, coloured ink on coloured paper of about the same brightness, strokes from a hairline pen to a
fat marker, distorted "other writers", typeset digits in the fonts shipped inside matplotlib (never
used for training), numbers of 2-4 digits, things that must be refused, and a few 48-megapixel photos.

Nothing here imports torch: numpy, Pillow, matplotlib's font files and onnxruntime via ``serve``.
"""
from __future__ import annotations

import colorsys
import functools
import io
import math
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageOps

from pipeline.errors import PipelineError

CONDITIONS = ("mnist-28", "canvas", "photo", "note", "ruled", "framed", "beside", "board", "dim", "shadow",
              "specks", "colour", "thick-thin", "writers", "small", "cropped", "typeset", "numbers", "not-digits",
              "big")
DEFAULT_PER_CONDITION = 100
BIG_MAX = 3  # 48-megapixel photos are slow to make: at most this many
BIG_SIZE = (8000, 6000)
SAMPLES_PER_CONDITION = 6
MAX_FAILURES_SHOWN = 48
BATCH_PAGES = 48

# The goals of the issue, and the conditions each is measured on here.
GOALS = (
    ("photographed single digits", ("photo", "note", "ruled", "framed", "beside", "board", "dim", "shadow", "big"),
     "accuracy",
     0.95),
    ("handwriting of other writers", ("writers",), "accuracy", 0.95),
    ("typeset digits", ("typeset",), "accuracy", 0.99),
    ("numbers of 2-4 digits, exact", ("numbers",), "accuracy", 0.90),
    ("not-digits refused", ("not-digits",), "accuracy", 0.90),
    ("real digits refused (at most)", None, "false_refusal", 0.02),
)

# Letters that no reader can tell from a digit in most hands and fonts (O/0, I/l/1) are left out.
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz"
WORDS = ("cat", "yes", "no", "OK", "hello", "Name", "Total", "abc", "xyz", "Hi", "the", "pen", "TEXT", "word",
         "Date", "Mon", "Fri", "ON", "UP", "gin", "Tea", "dog", "Sum", "Page", "Box", "end", "YES", "map", "Jan",
         "red", "sky", "why", "hey", "Max", "ZEN", "fax", "Amy", "Bus")
SHAPES = ("circle", "square", "triangle", "star", "arrow", "heart", "hash", "cross", "spiral", "plus", "check",
          "smiley", "wave")


class Item(NamedTuple):
    """One evaluation image: ``expected`` is the digit string, or None when it must be refused."""

    condition: str
    name: str  # "<condition>/<index>-<variant>.<ext>"
    data: bytes
    expected: str | None

    @property
    def variant(self) -> str:
        stem = self.name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return stem.split("-", 1)[1] if "-" in stem else ""


@dataclass(frozen=True)
class Split:
    """The test split the set is made from: uint8 [N, 28, 28] white on black, labels [N]."""

    images: np.ndarray
    labels: np.ndarray

    @classmethod
    def from_dataset(cls, dataset: Any) -> "Split":
        images = np.asarray(dataset.test_images)
        labels = np.asarray(dataset.test_labels)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels) or not len(images):
            raise PipelineError("evaluate needs a non-empty test split of 28x28 digits")
        return cls(images, labels)


# =========================================================================== small image helpers


def _rng(seed: int, condition: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(condition.encode()), index])


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _pick(rng: np.random.Generator, options: Any, p: Any = None) -> Any:
    options = list(options)
    return options[int(rng.choice(len(options), p=p))]


def _to_l(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(mask * 255.0 + 0.5, 0, 255).astype(np.uint8))


def _from_l(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255.0


def _resize_f(array: np.ndarray, size: tuple[int, int], resample=Image.Resampling.BICUBIC) -> np.ndarray:
    """Resize a float32 array (Pillow mode F) to ``size`` = (width, height)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(array, dtype=np.float32)).resize(size, resample))


def _box_blur(array: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1) square window (edges padded with zeros); twice is close to a Gaussian."""
    k = 2 * r + 1
    padded = np.pad(array.astype(np.float32), r)
    c = np.cumsum(np.pad(padded, ((1, 0), (0, 0))), axis=0)
    rows = (c[k:] - c[:-k]) / k
    c = np.cumsum(np.pad(rows, ((0, 0), (1, 0))), axis=1)
    return ((c[:, k:] - c[:, :-k]) / k).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cells: float) -> np.ndarray:
    """Smooth random field of ``size`` (w, h), mean 0, about unit deviation, features ``cells`` px apart."""
    w, h = size
    gw, gh = max(2, int(w / cells) + 2), max(2, int(h / cells) + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    return _resize_f(coarse, (w, h))


def _crop_to_ink(mask: np.ndarray, level: float = 0.05, pad: int = 0) -> np.ndarray:
    rows, cols = np.flatnonzero((mask > level).any(1)), np.flatnonzero((mask > level).any(0))
    if not len(rows):
        return mask
    crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return np.pad(crop, pad) if pad else crop


def _remap(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear sampling of ``image`` at (ys, xs); outside is 0."""
    h, w = image.shape
    padded = np.pad(image, 1)
    ys, xs = np.clip(ys + 1, 0, h + 0.999), np.clip(xs + 1, 0, w + 0.999)
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, h + 1), np.minimum(x0 + 1, w + 1)
    fy, fx = ys - y0, xs - x0
    return ((padded[y0, x0] * (1 - fx) + padded[y0, x1] * fx) * (1 - fy)
            + (padded[y1, x0] * (1 - fx) + padded[y1, x1] * fx) * fy).astype(np.float32)


def luma(rgb: Iterable[float]) -> float:
    """What Pillow's convert("L") gives for an RGB colour (0-255)."""
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


def _relative_luminance(rgb: Iterable[float]) -> float:
    def lin(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (lin(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: Iterable[float], b: Iterable[float]) -> float:
    """WCAG contrast ratio of two colours (1 to 21)."""
    la, lb = _relative_luminance(a), _relative_luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def colour_with_luma(hue: float, saturation: float, target: float) -> tuple[int, int, int]:
    """An RGB colour of ``hue`` whose luma (0-255) is as close to ``target`` as the hue allows."""
    for s in (saturation, saturation * 0.8, saturation * 0.6, saturation * 0.4, 0.2):
        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            if luma(_hsv(hue, s, mid)) < target:
                lo = mid
            else:
                hi = mid
        colour = _hsv(hue, s, hi)
        if abs(luma(colour) - target) <= 3:
            return colour
    return colour


# =========================================================================== marks: ink masks


@dataclass
class Mark:
    """Something drawn: ``render(height)`` gives its ink (float32, 1 = ink) ``height`` px tall."""

    render: Callable[[int], np.ndarray]
    aspect: float  # width / height


def skeletonize(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean mask to one-pixel-wide lines."""
    img = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p2, p3, p4 = img[:-2, 1:-1], img[:-2, 2:], img[1:-1, 2:]
            p5, p6, p7 = img[2:, 2:], img[2:, 1:-1], img[2:, :-2]
            p8, p9 = img[1:-1, :-2], img[:-2, :-2]
            ring = (p2, p3, p4, p5, p6, p7, p8, p9, p2)
            neighbours = p2 + p3 + p4 + p5 + p6 + p7 + p8 + p9
            transitions = sum(((ring[i] == 0) & (ring[i + 1] == 1)).astype(np.uint8) for i in range(8))
            if step == 0:
                side = ((p2 * p4 * p6) == 0) & ((p4 * p6 * p8) == 0)
            else:
                side = ((p2 * p4 * p8) == 0) & ((p2 * p6 * p8) == 0)
            remove = (img[1:-1, 1:-1] == 1) & (neighbours >= 2) & (neighbours <= 6) & (transitions == 1) & side
            if remove.any():
                img[1:-1, 1:-1][remove] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


def _box_sum(array: np.ndarray, r: int) -> np.ndarray:
    return _box_blur(array, r) * (2 * r + 1) ** 2


def skeleton_segments(skeleton: np.ndarray, passes: int = 3) -> list[np.ndarray]:
    """The skeleton as two-point segments between 8-neighbours, with the pixel staircase smoothed out.

    Returns a list of (2, 2) arrays of (x, y) in the skeleton's pixel coordinates."""
    h, w = skeleton.shape
    s = skeleton.astype(np.float32)
    ys, xs = np.indices((h, w), dtype=np.float32)
    # each point moves to the mean of the skeleton points within 2 px: a smooth centre line
    sy, sx = ys, xs
    total = _box_sum(s, 2)
    for _ in range(passes):
        sy = _box_sum(s * sy, 2) / np.maximum(total, 1)
        sx = _box_sum(s * sx, 2) / np.maximum(total, 1)
    segments = []
    padded = np.pad(skeleton, 1)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        neighbour = padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        if dy == 1 and dx != 0:  # skip diagonals already joined through an orthogonal neighbour
            right_or_down = padded[1:1 + h, 1 + dx:1 + dx + w] | padded[2:2 + h, 1:1 + w]
            neighbour = neighbour & ~right_or_down
        for y, x in np.argwhere(skeleton & neighbour):
            segments.append(np.array([[sx[y, x], sy[y, x]], [sx[y + dy, x + dx], sy[y + dy, x + dx]]], np.float32))
    lone = skeleton & (sum(np.roll(np.roll(padded, -a, 0), -b, 1)[1:h + 1, 1:w + 1].astype(np.uint8)
                           for a in (-1, 0, 1) for b in (-1, 0, 1)) == 1)
    for y, x in np.argwhere(lone):
        segments.append(np.array([[x, y], [x, y]], np.float32))
    return segments


def draw_strokes(strokes: list[np.ndarray], size: tuple[int, int], width: float, fill: Sequence[np.ndarray] = ()
                 ) -> np.ndarray:
    """Round-capped pen strokes (polylines of (x, y) in pixels) on a ``size`` = (w, h) mask, anti-aliased."""
    w, h = size
    ss = 3 if max(w, h) <= 700 else 2 if max(w, h) <= 1600 else 1
    image = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(image)
    for polygon in fill:
        draw.polygon([(float(x) * ss, float(y) * ss) for x, y in polygon], fill=255)
    lw = max(1, int(round(width * ss)))
    r = width * ss / 2
    for stroke in strokes:
        points = [(float(x) * ss + ss / 2, float(y) * ss + ss / 2) for x, y in stroke]
        if len(points) > 1:
            draw.line(points, fill=255, width=lw, joint="curve" if lw > 2 else None)
        if r >= 1.0:
            for px, py in (points if lw > 2 and len(points) <= 2 else (points[0], points[-1])):
                draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
    if ss > 1:
        image = image.reduce(ss)
    elif width < 3:
        image = image.filter(ImageFilter.GaussianBlur(0.5))
    return _from_l(image)


def _upscale_natural(small: np.ndarray, height: int, edge: float = 0.5) -> np.ndarray:
    """A smooth ink blob ``height`` px tall from a small ink map: pen-like edges, not pixel art."""
    h, w = small.shape
    width = max(1, round(w * height / h))
    smooth = _resize_f(small, (w * 4, h * 4))  # 4x, then a blur: round strokes, not the pixel lattice
    smooth = _box_blur(_box_blur(smooth, 2), 2)
    big = _resize_f(smooth, (width, height))
    soft = max(0.08, min(0.25, 3.0 * h / height))  # an edge about 1-2 px wide, whatever the scale
    return np.clip((big - edge + soft / 2) / soft, 0, 1).astype(np.float32)


def count_components(mask: np.ndarray, eight: bool = True) -> int:
    """Number of connected components of a small boolean mask (labels spread by neighbourhood minima)."""
    h, w = mask.shape
    none = h * w + 1
    labels = np.where(mask, np.arange(h * w).reshape(h, w), none)
    shifts = [(dy, dx) for dy in (0, 1, 2) for dx in (0, 1, 2) if eight or dy == 1 or dx == 1]
    while True:
        padded = np.pad(labels, 1, constant_values=none)
        spread = labels
        for dy, dx in shifts:
            spread = np.minimum(spread, padded[dy:dy + h, dx:dx + w])
        spread = np.where(mask, spread, none)
        if np.array_equal(spread, labels):
            return len(np.unique(labels[mask]))
        labels = spread


def _holes(mask: np.ndarray) -> int:
    """Enclosed background regions of a boolean mask (the loops of 0, 6, 8, 9, ...)."""
    return count_components(~np.pad(mask, 1), eight=False) - 1


def _stroke_level(work: np.ndarray) -> tuple[float, int]:
    """The ink level whose outline keeps the most loops open without breaking strokes apart: a thick
    writer's 8 often has its loops nearly filled, and thinning a filled loop would lose it."""
    h, w = work.shape
    work = _resize_f(work, (max(4, round(w * 48 / h)), 48))  # loops and breaks show at this size too
    peak = float(work.max())
    best, best_holes = 0.55, -1
    base_parts = count_components(work > 0.45 * peak)
    for level in (0.55, 0.65, 0.45, 0.75, 0.85):  # on a tie, the first
        mask = work > level * peak
        holes = _holes(mask)
        if count_components(mask) <= base_parts and holes > best_holes:
            best, best_holes = level, holes
    return best, best_holes


LOOPS = {"0": 1, "6": 1, "8": 2, "9": 1}  # the loops a digit needs to stay itself when drawn with a thin pen


def loops_survive(digit: np.ndarray, label: str) -> bool:
    """Whether thinning ``digit`` keeps its loops (some writers fill them: a thin pen would lose them)."""
    small = _crop_to_ink(np.asarray(digit, np.float32) / 255.0, 0.1, 1)
    return _stroke_level(small)[1] >= LOOPS.get(label, 0)


def _pen_redraw(small: np.ndarray, height: int, width_px: float, level: float = 0.55) -> np.ndarray:
    """Redraw a small ink map as pen strokes of ``width_px``: thinned to its centre line, then drawn."""
    work_h = int(np.clip(height / 2.5, 72, 180))
    work = _resize_f(small, (max(4, round(small.shape[1] * work_h / small.shape[0])), work_h))
    skeleton = skeletonize(np.pad(work > level * work.max(), 2))
    scale = height / work_h
    pad = width_px / 2 + 2
    out_w = int(math.ceil(skeleton.shape[1] * scale + 2 * pad))
    out_h = int(math.ceil(skeleton.shape[0] * scale + 2 * pad))
    strokes = [(seg - 2) * scale + pad + scale / 2 for seg in skeleton_segments(skeleton)]
    mask = draw_strokes(strokes, (out_w, out_h), width_px)
    return _crop_to_ink(mask)


@dataclass(frozen=True)
class Warp:
    """How another writer differs: slant (shear), aspect, rotation and an elastic field."""

    shear: float = 0.0
    aspect: float = 1.0
    rotate: float = 0.0  # degrees
    elastic: float = 0.0  # displacement as a fraction of the height
    cells: float = 0.3  # elastic smoothness, as a fraction of the height
    seed: int = 0


def _warp(small: np.ndarray, warp: Warp, work_h: int = 96) -> np.ndarray:
    """Apply ``warp`` to an ink map at a working resolution; returns the warped ink, cropped."""
    h, w = small.shape
    scale = work_h / h
    base = np.pad(_resize_f(small, (max(2, round(w * scale)), work_h)), work_h // 3)
    bh, bw = base.shape
    out_h, out_w = bh, int(bw * max(1.0, warp.aspect) + abs(warp.shear) * bh)
    yo, xo = np.indices((out_h, out_w), dtype=np.float32)
    cy, cx = (out_h - 1) / 2, (out_w - 1) / 2
    y, x = yo - cy, xo - cx
    a = math.radians(warp.rotate)
    y, x = y * math.cos(a) - x * math.sin(a), y * math.sin(a) + x * math.cos(a)  # inverse rotation
    x = x + warp.shear * y  # inverse shear (positive shear leans right)
    x = x / warp.aspect
    if warp.elastic:
        rng = np.random.default_rng(warp.seed)
        cells = max(4.0, warp.cells * work_h)
        x = x + _smooth_noise(rng, (out_w, out_h), cells) * warp.elastic * work_h
        y = y + _smooth_noise(rng, (out_w, out_h), cells) * warp.elastic * work_h
    warped = _remap(base, y + (bh - 1) / 2, x + (bw - 1) / 2)
    return _crop_to_ink(warped, 0.05, 1)


def digit_mark(digit: np.ndarray, *, warp: Warp | None = None, pen: float | None = None,
               edge: float = 0.5, label: str | None = None) -> Mark:
    """A test digit (28x28 white on black) as ink: upscaled smoothly (``pen`` None, the writer's own
    stroke), or redrawn along its centre line with a pen ``pen`` x height wide. With ``label``, a digit
    whose loops thinning would close keeps the writer's stroke instead."""
    small = _crop_to_ink(np.asarray(digit, np.float32) / 255.0, 0.1, 1)
    if warp is not None:
        small = _warp(small, warp)
    aspect = small.shape[1] / small.shape[0]
    level, holes = _stroke_level(small) if pen is not None else (0.5, 0)
    if pen is not None and label is not None and holes < LOOPS.get(label, 0):
        pen = None

    def render(height: int) -> np.ndarray:
        height = max(8, int(height))
        if pen is None:
            return _crop_to_ink(_upscale_natural(small, height, edge))
        return _pen_redraw(small, height, max(1.0, pen * height), level)

    return Mark(render, aspect)


def compose_number(marks: list[Mark], rng: np.random.Generator, touching: bool = False) -> Mark:
    """Digits side by side: random spacing (sometimes nearly touching), size and baseline jitter."""
    scales = [float(rng.uniform(0.88, 1.1)) for _ in marks]
    shifts = [float(rng.uniform(-0.06, 0.06)) for _ in marks]
    gaps = [float(rng.uniform(0.015, 0.04) if touching else rng.uniform(0.08, 0.45)) for _ in marks[1:]]
    width = sum(m.aspect * s for m, s in zip(marks, scales)) + sum(gaps)
    aspect = width / (max(scales) + 0.12)

    def render(height: int) -> np.ndarray:
        unit = height / (max(scales) + 0.12)
        pieces = [m.render(max(8, round(unit * s))) for m, s in zip(marks, scales)]
        total_w = sum(p.shape[1] for p in pieces) + sum(max(2, round(g * unit)) for g in gaps) + 2
        canvas = np.zeros((height + 4, total_w), np.float32)
        x = 1
        for i, piece in enumerate(pieces):
            ph, pw = piece.shape
            base = (height + 2) - round(unit * 0.06) + round(shifts[i] * unit)  # bottoms roughly aligned
            top = int(np.clip(base - ph, 0, canvas.shape[0] - ph))
            canvas[top:top + ph, x:x + pw] = np.maximum(canvas[top:top + ph, x:x + pw], piece)
            x += pw + (max(2, round(gaps[i] * unit)) if i < len(gaps) else 0)
        return _crop_to_ink(canvas)

    return Mark(render, aspect)


# --------------------------------------------------------------------------- fonts (evaluation only)


@functools.lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    """The TrueType fonts inside matplotlib that draw all ten digits and letters as text (symbol fonts,
    old-style-figure fonts and the last-resort font are left out). Evaluation only: never for training."""
    try:
        import matplotlib
    except ImportError:
        raise PipelineError("evaluate needs matplotlib's fonts: pip install 'foldserve[train]'") from None
    directory = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    skip = ("STIXNonUni", "STIXSiz", "cmex", "cmsy", "cmmi", "LastResort")
    files = sorted(str(p) for p in directory.glob("*.ttf") if not p.name.startswith(skip))
    usable = []
    for path in files:
        try:
            font = ImageFont.truetype(path, 40)
        except OSError:
            continue
        boxes = [font.getbbox(c) for c in "0123456789Ab"]
        if all(b[2] - b[0] > 3 and b[3] - b[1] > 10 for b in boxes):
            glyphs = {bytes(np.asarray(_text_image(font, c)).tobytes()) for c in "0123456789"}
            if len(glyphs) == 10:
                usable.append(path)
    if not usable:
        raise PipelineError(f"no usable fonts in {directory}")
    return tuple(usable)


def _text_image(font: ImageFont.FreeTypeFont, text: str) -> Image.Image:
    left, top, right, bottom = font.getbbox(text)
    # whole pixels for a FreeType font (Pillow types the box as float)
    image = Image.new("L", (math.ceil(right - left) + 4, math.ceil(bottom - top) + 4), 0)
    ImageDraw.Draw(image).text((2 - left, 2 - top), text, font=font, fill=255)
    return image


@functools.lru_cache(maxsize=512)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def text_mask(path: str, text: str, height: int) -> np.ndarray:
    """``text`` in the font at ``path``, its ink ``height`` px tall (float mask, cropped)."""
    probe = _crop_to_ink(_from_l(_text_image(_font(path, 100), text)), 0.3)
    size = max(4, round(100 * height / max(1, probe.shape[0])))
    return _crop_to_ink(_from_l(_text_image(_font(path, size), text)), 0.02)


def text_mark(path: str, text: str) -> Mark:
    probe = text_mask(path, text, 100)
    return Mark(lambda height: text_mask(path, text, height), probe.shape[1] / probe.shape[0])


def handwritten_text_mark(path: str, text: str, rng: np.random.Generator, pen: float) -> Mark:
    """Text written by hand: a font's letters thinned to their centre lines, distorted, redrawn with a pen."""
    glyph = text_mask(path, text, 60)
    warp = Warp(shear=_u(rng, -0.3, 0.35), aspect=_u(rng, 0.85, 1.2), rotate=_u(rng, -6, 6),
                elastic=_u(rng, 0.02, 0.06), cells=_u(rng, 0.25, 0.5), seed=int(rng.integers(2**31)))
    small = _warp(glyph, warp, work_h=72)
    return Mark(lambda height: _pen_redraw(small, max(8, height), max(1.0, pen * height)),
                small.shape[1] / small.shape[0])


# --------------------------------------------------------------------------- shapes and scribbles


def _jitter(points: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Resample a polyline densely and add a slow hand wobble."""
    points = np.asarray(points, np.float64)
    seg = np.hypot(*np.diff(points, axis=0).T)
    dist = np.concatenate([[0], np.cumsum(seg)])
    if dist[-1] == 0:
        return points
    t = np.linspace(0, dist[-1], max(8, int(dist[-1] * 60)))
    dense = np.stack([np.interp(t, dist, points[:, 0]), np.interp(t, dist, points[:, 1])], 1)
    k = max(3, len(t) // 12)
    for axis in (0, 1):
        knots = rng.normal(0, amount, k)
        dense[:, axis] += np.interp(np.linspace(0, k - 1, len(t)), np.arange(k), knots)
    return dense


def _catmull_rom(points: np.ndarray, per: int = 16) -> np.ndarray:
    p = np.concatenate([points[:1], points, points[-1:]])
    out = []
    for i in range(1, len(p) - 2):
        for t in np.linspace(0, 1, per, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(0.5 * ((2 * p[i]) + (-p[i - 1] + p[i + 1]) * t
                              + (2 * p[i - 1] - 5 * p[i] + 4 * p[i + 1] - p[i + 2]) * t2
                              + (-p[i - 1] + 3 * p[i] - 3 * p[i + 1] + p[i + 2]) * t3))
    out.append(p[-2])
    return np.array(out)


def shape_strokes(kind: str, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Strokes (and filled polygons) of a hand-drawn shape in a unit-high box: (strokes, fills, aspect)."""
    filled = rng.random() < 0.25
    if kind == "circle":
        aspect = _u(rng, 0.88, 1.15)
        over = _u(rng, 0.0, 0.5)
        start = _u(rng, 0, 2 * math.pi)
        t = np.linspace(start, start + 2 * math.pi + over, 90)
        strokes = [np.stack([0.5 * aspect + 0.5 * aspect * np.cos(t), 0.5 + 0.5 * np.sin(t)], 1)]
    elif kind == "square":
        aspect = _u(rng, 0.85, 1.3)
        strokes = [np.array([[0, 0], [aspect, 0], [aspect, 1], [0, 1], [0, 0]], float)]
    elif kind == "triangle":
        aspect = _u(rng, 0.9, 1.3)
        strokes = [np.array([[aspect / 2, 0], [aspect, 1], [0, 1], [aspect / 2, 0]], float)]
    elif kind == "star":
        aspect = 1.0
        angles = -math.pi / 2 + np.arange(11) * math.pi / 5
        radii = np.where(np.arange(11) % 2 == 0, 0.5, _u(rng, 0.18, 0.25))
        strokes = [np.stack([0.5 + radii * np.cos(angles), 0.52 + radii * np.sin(angles)], 1)]
    elif kind == "arrow":
        aspect = _u(rng, 1.6, 2.6)
        head = _u(rng, 0.3, 0.5)
        strokes = [np.array([[0, 0.5], [aspect, 0.5]]), np.array([[aspect - head, 0.5 - head], [aspect, 0.5],
                                                                    [aspect - head, 0.5 + head]])]
        if rng.random() < 0.5:  # pointing left
            strokes = [np.stack([aspect - s[:, 0], s[:, 1]], 1) for s in strokes]
        filled = False
    elif kind == "heart":
        aspect = 1.05
        t = np.linspace(0, 2 * math.pi, 120)
        x = 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        strokes = [np.stack([(x + 17) / 34 * aspect, (12 - y) / 29 + 0.03], 1)]
    elif kind == "hash":
        aspect, filled = _u(rng, 0.8, 1.1), False
        a, b = 0.3, 0.7
        strokes = [np.array([[a * aspect + 0.08, 0], [a * aspect - 0.08, 1]]),
                   np.array([[b * aspect + 0.08, 0], [b * aspect - 0.08, 1]]),
                   np.array([[0, a], [aspect, a]]), np.array([[0, b], [aspect, b]])]
    elif kind == "cross":
        aspect, filled = _u(rng, 0.8, 1.2), False
        strokes = [np.array([[0, 0], [aspect, 1]]), np.array([[aspect, 0], [0, 1]])]
    elif kind == "plus":
        aspect, filled = 1.0, False
        strokes = [np.array([[0.5, 0], [0.5, 1]]), np.array([[0, 0.5], [1, 0.5]])]
    elif kind == "spiral":
        aspect, filled = 1.0, False
        turns = _u(rng, 2, 4)
        t = np.linspace(0, turns * 2 * math.pi, 300)
        r = 0.5 * t / t[-1]
        strokes = [np.stack([0.5 + r * np.cos(t), 0.5 + r * np.sin(t)], 1)]
    elif kind == "check":
        aspect, filled = _u(rng, 1.0, 1.4), False
        strokes = [np.array([[0, 0.55], [0.35 * aspect, 1], [aspect, 0]])]
    elif kind == "smiley":
        aspect, filled = 1.0, False
        t = np.linspace(0, 2 * math.pi, 100)
        smile = np.linspace(0.2 * math.pi, 0.8 * math.pi, 30)
        strokes = [np.stack([0.5 + 0.5 * np.cos(t), 0.5 + 0.5 * np.sin(t)], 1),
                   np.stack([0.5 + 0.28 * np.cos(smile), 0.5 + 0.28 * np.sin(smile)], 1),
                   np.array([[0.35, 0.35], [0.35, 0.37]]), np.array([[0.65, 0.35], [0.65, 0.37]])]
    elif kind == "wave":
        aspect, filled = _u(rng, 2.0, 3.5), False
        t = np.linspace(0, 1, 120)
        strokes = [np.stack([t * aspect, 0.5 + 0.4 * np.sin(t * 2 * math.pi * _u(rng, 1.5, 3))], 1)]
    else:
        raise ValueError(kind)
    fills = [strokes[0]] if filled and kind in ("circle", "square", "triangle", "star", "heart") else []
    return strokes, fills, aspect


def scribble_strokes(rng: np.random.Generator) -> tuple[list[np.ndarray], float]:
    """A scribble that no one would read as a digit: a dense tangle, a zig-zag crossing-out, or a coil
    that travels sideways (loops side by side, never one ring)."""
    style = rng.integers(3)
    if style == 0:  # a tangle through many points
        aspect = _u(rng, 0.9, 2.2)
        n = int(rng.integers(10, 18))
        pts = np.stack([rng.uniform(0, aspect, n), rng.uniform(0, 1, n)], 1)
        return [_catmull_rom(pts)], aspect
    if style == 1:  # crossing out: a zig-zag
        aspect = _u(rng, 1.2, 2.8)
        n = int(rng.integers(6, 12))
        xs = np.linspace(0, aspect, n) + rng.normal(0, 0.03, n)
        ys = np.where(np.arange(n) % 2 == 0, rng.uniform(0, 0.2, n), rng.uniform(0.8, 1, n))
        return [np.stack([xs, ys], 1)], aspect
    turns = int(rng.integers(4, 8))  # a coil
    r = 0.5
    aspect = 2 * r + turns * _u(rng, 0.3, 0.45)
    t = np.linspace(0, turns * 2 * math.pi, 100 * turns)
    return [np.stack([r + t / t[-1] * (aspect - 2 * r) + r * np.cos(t), 0.5 + 0.5 * np.sin(t)], 1)], aspect


def strokes_mark(strokes: list[np.ndarray], fills: list[np.ndarray], aspect: float, rng: np.random.Generator,
                 pen: float, wobble: float = 0.02) -> Mark:
    strokes = [_jitter(s, rng, wobble) for s in strokes]
    fills = [_jitter(f, rng, wobble) for f in fills]

    def render(height: int) -> np.ndarray:
        width = max(1.0, pen * height)
        pad = width / 2 + 2 + 0.1 * height
        scale = height
        w = int(aspect * height + 2 * pad)
        h = int(height + 2 * pad)
        to_px = lambda s: s * scale + pad  # noqa: E731
        return _crop_to_ink(draw_strokes([to_px(s) for s in strokes], (w, h), width, [to_px(f) for f in fills]))

    return Mark(render, aspect + pen)


# =========================================================================== presentations


def _encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "TIFF": "tif", "GIF": "gif", "BMP": "bmp"}


def _phone_jpeg(image: Image.Image, rng: np.random.Generator, quality: tuple[int, int] = (60, 90),
                rotate: float = 0.15, webp: float = 0.08) -> tuple[bytes, str]:
    """A phone's file: JPEG (sometimes WebP), and sometimes stored sideways with an EXIF orientation."""
    q = int(rng.integers(quality[0], quality[1] + 1))
    if rng.random() < webp:
        return _encode(image, "WEBP", quality=q), "webp"
    if rng.random() < rotate:
        orientation, stored = _pick(rng, [(6, image.transpose(Image.Transpose.ROTATE_90)),
                                          (8, image.transpose(Image.Transpose.ROTATE_270)),
                                          (3, image.transpose(Image.Transpose.ROTATE_180))], p=[0.6, 0.3, 0.1])
        exif = Image.Exif()
        exif[0x0112] = orientation
        exif[0x010F] = "Generated"
        return _encode(stored, "JPEG", quality=q, exif=exif.tobytes()), "jpg"
    return _encode(image, "JPEG", quality=q), "jpg"


@dataclass
class InkStyle:
    colour: tuple[int, int, int]
    opacity: float
    grain: float  # pencil tooth: 0 smooth ink, 0.5 grainy graphite
    kind: str = "ink"
    covers: bool = False  # chalk or paint: lays its own colour over the surface instead of darkening it


def pick_ink(rng: np.random.Generator, kinds: tuple[str, ...] = ("pencil", "black", "blue")) -> InkStyle:
    kind = _pick(rng, kinds)
    if kind == "pencil":
        g = int(rng.integers(60, 110))
        return InkStyle((g, g, g + int(rng.integers(0, 8))), _u(rng, 0.6, 0.9), _u(rng, 0.3, 0.55), kind)
    if kind == "black":
        g = int(rng.integers(10, 45))
        return InkStyle((g, g, g + 4), _u(rng, 0.88, 1.0), _u(rng, 0.0, 0.1), kind)
    return InkStyle((int(rng.integers(15, 60)), int(rng.integers(30, 80)), int(rng.integers(110, 175))),
                    _u(rng, 0.8, 0.97), _u(rng, 0.05, 0.2), kind)


# how wide each pen writes, as a fraction of the digit's height, and how often it is a broad felt tip
# that keeps the MNIST writer's own stroke (about 12% of the height)
PEN_WIDTHS = {"pencil": ((0.025, 0.06), 0.15), "blue": ((0.03, 0.07), 0.3), "black": ((0.04, 0.11), 0.5)}


def handwriting(digit: np.ndarray, label: str, rng: np.random.Generator, ink: InkStyle,
                warp: Warp | None = None) -> Mark:
    """A test digit as written with ``ink``: the centre line redrawn at that pen's width, or (felt tips)
    the writer's own stroke."""
    widths, natural = PEN_WIDTHS.get(ink.kind, ((0.04, 0.11), 0.5))
    if rng.random() < natural:
        return digit_mark(digit, warp=warp, edge=_u(rng, 0.4, 0.6))
    return digit_mark(digit, warp=warp, pen=_u(rng, *widths), label=label)


def _photo_size(rng: np.random.Generator, lo: int = 640, hi: int = 3000) -> tuple[int, int]:
    long = int(_logu(rng, lo, hi))
    ratio = _pick(rng, [4 / 3, 3 / 2, 16 / 9, 1.0], p=[0.6, 0.15, 0.15, 0.1])
    short = int(round(long / ratio))
    return (short, long) if rng.random() < 0.6 else (long, short)


def perspective_coeffs(out_pts: Any, in_pts: Any) -> tuple[float, ...]:
    """Pillow PERSPECTIVE data mapping output points to input points."""
    a, b = [], []
    for (x, y), (u, v) in zip(out_pts, in_pts):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        b.append(u)
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.append(v)
    return tuple(float(c) for c in np.linalg.solve(np.array(a, float), np.array(b, float)))


def _apply_perspective(c: tuple[float, ...], x: float, y: float) -> tuple[float, float]:
    d = c[6] * x + c[7] * y + 1
    return (c[0] * x + c[1] * y + c[2]) / d, (c[3] * x + c[4] * y + c[5]) / d


@dataclass
class Paper:
    kind: str = "plain"  # plain, ruled, grid
    colour: tuple[int, int, int] | None = None
    spacing: float = 0.0  # ruled/grid spacing as a fraction of the frame height


def _paper_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    kind = rng.integers(4)
    if kind == 0:  # bright white
        v = int(rng.integers(244, 254))
        return v, v, v - int(rng.integers(0, 4))
    if kind == 1:  # warm off-white
        return int(rng.integers(238, 250)), int(rng.integers(230, 244)), int(rng.integers(212, 232))
    if kind == 2:  # recycled grey
        v = int(rng.integers(222, 238))
        return v, v - 1, v - int(rng.integers(2, 8))
    return int(rng.integers(236, 248)), int(rng.integers(238, 250)), int(rng.integers(235, 250))  # cool


def _paper_texture(rng: np.random.Generator, size: tuple[int, int], strength: float) -> Image.Image:
    """Mottling and fibre grain around 128, as an RGB image (add with offset -128)."""
    w, h = size
    hw, hh = max(8, w // 2), max(8, h // 2)
    mottle = _smooth_noise(rng, (hw, hh), max(hw, hh) / 12) * (2.0 * strength)
    grain = _resize_f(rng.standard_normal((max(4, hh // 2), max(4, hw // 2))).astype(np.float32), (hw, hh),
                      Image.Resampling.BILINEAR) * (2.5 * strength)
    fibres = _resize_f(rng.standard_normal((max(4, hh // 12), max(4, hw // 2))).astype(np.float32), (hw, hh),
                       Image.Resampling.BICUBIC) * (1.5 * strength)
    tex = Image.fromarray(np.clip(128 + mottle + grain + fibres, 0, 255).astype(np.uint8))
    tex = tex.resize((w, h), Image.Resampling.BILINEAR)
    return Image.merge("RGB", (tex, tex, tex))


def _ink_onto(sheet: Image.Image, mask: np.ndarray, at: tuple[int, int], ink: InkStyle,
              rng: np.random.Generator) -> None:
    """Ink into ``sheet`` in place, mask's top-left at ``at``: multiplied, as real ink darkens paper, or
    (chalk, paint) laid over it."""
    x, y = at
    h, w = mask.shape
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(sheet.width, x + w), min(sheet.height, y + h)
    if x1 <= x0 or y1 <= y0:
        return
    m = mask[y0 - y:y1 - y, x0 - x:x1 - x]
    if ink.grain:
        tooth: np.ndarray = rng.random(m.shape).astype(np.float32)
        tooth = 0.6 * tooth + 0.4 * _resize_f(rng.random((max(2, m.shape[0] // 6), max(2, m.shape[1] // 6)))
                                              .astype(np.float32), (m.shape[1], m.shape[0]), Image.Resampling.BILINEAR)
        m = m * (1 - ink.grain * tooth)
    region = np.asarray(sheet.crop((x0, y0, x1, y1)), np.float32)
    colour = np.array(ink.colour, np.float32) / 255
    alpha = (m * ink.opacity)[..., None]
    out = region * (1 - alpha) + 255 * colour * alpha if ink.covers else region * (1 - alpha * (1 - colour))
    sheet.paste(Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8)), (x0, y0))


def _rules(sheet: Image.Image, paper: Paper, frame_h: int, rng: np.random.Generator) -> list[float]:
    """Draw ruled or squared lines on ``sheet``; returns the ruled lines' y (for writing on them)."""
    w, h = sheet.size
    draw = ImageDraw.Draw(sheet)
    spacing = paper.spacing * frame_h
    lw = max(1, int(round(frame_h * _u(rng, 0.0012, 0.0025))))
    if paper.kind == "ruled":
        colour = _pick(rng, [(120, 160, 215), (150, 180, 220), (160, 160, 170), (110, 170, 200)])
    else:
        colour = _pick(rng, [(140, 180, 220), (160, 170, 180), (150, 200, 170), (170, 190, 225)])
        lw = max(1, lw - 1)
    # printed lines, as the paper's colour multiplied by the line colour, part way
    paper_rgb = np.array(sheet.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0)), np.float32)
    strength = _u(rng, 0.55, 0.9)
    fill = tuple(int(v) for v in paper_rgb * (1 - strength * (1 - np.array(colour, np.float32) / 255)))
    ys = list(np.arange(_u(rng, 0, spacing), h, spacing))
    for yy in ys:
        draw.line([(0, yy), (w, yy)], fill=fill, width=lw)
    if paper.kind == "grid":
        for xx in np.arange(_u(rng, 0, spacing), w, spacing):
            draw.line([(xx, 0), (xx, h)], fill=fill, width=lw)
    if paper.kind == "ruled" and rng.random() < 0.5:  # the red margin line
        mx = _u(rng, 0.06, 0.16) * w
        red = paper_rgb * (1 - _u(rng, 0.6, 0.9) * (1 - np.array([225, 110, 120], np.float32) / 255))
        draw.line([(mx, 0), (mx, h)], fill=tuple(int(v) for v in red), width=lw + 1)
    return ys


def _desk(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    kind = rng.integers(5)
    if kind == 0:  # wood
        base = np.array([int(rng.integers(110, 170)), int(rng.integers(70, 115)), int(rng.integers(40, 75))],
                        np.float32)
        streaks = _resize_f(rng.standard_normal((6, max(8, w // 6))).astype(np.float32), (w // 4 + 1, h // 4 + 1))
        if rng.random() < 0.5:
            streaks = _resize_f(rng.standard_normal((max(8, h // 6), 6)).astype(np.float32), (w // 4 + 1, h // 4 + 1))
        var = streaks * 14 + _smooth_noise(rng, (w // 4 + 1, h // 4 + 1), 40) * 8
    else:
        base = np.array(_pick(rng, [(45, 45, 50), (20, 20, 24), (150, 148, 140), (40, 80, 60)]), np.float32)
        var = _smooth_noise(rng, (w // 4 + 1, h // 4 + 1), 30) * 6
    small = np.clip(base[None, None, :] + var[..., None], 0, 255).astype(np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)


def _lighting(rng: np.random.Generator, size: tuple[int, int], shadow: bool | None = None,
              cast_shadow: bool = False) -> tuple[Image.Image, float]:
    """Uneven light: a linear gradient, vignetting (up to 35% at the corners), maybe a soft shadow band,
    a hard-edged shadow if ``cast_shadow``, and a colour cast. Returns an RGB multiplier image (255 = full
    light) and its bright level (0-1)."""
    w, h = size
    lw, lh = max(16, w // 16), max(16, h // 16)
    ys: np.ndarray
    xs: np.ndarray
    ys, xs = np.indices((lh, lw), dtype=np.float32)
    xs, ys = xs / (lw - 1) - 0.5, ys / (lh - 1) - 0.5
    angle = _u(rng, 0, 2 * math.pi)
    t = (xs * math.cos(angle) + ys * math.sin(angle))
    t = (t - t.min()) / max(1e-6, t.max() - t.min())
    light = 1 - _u(rng, 0.08, 0.4) * t
    r2 = (xs ** 2 + ys ** 2) / 0.5
    light *= 1 - _u(rng, 0.1, 0.35) * r2
    if shadow if shadow is not None else rng.random() < 0.45:
        a2 = _u(rng, 0, math.pi)
        d = xs * math.cos(a2) + ys * math.sin(a2) - _u(rng, -0.3, 0.3)
        width, soft = _u(rng, 0.1, 0.5), _u(rng, 0.05, 0.2)
        inside = np.clip((width / 2 - np.abs(d)) / soft + 0.5, 0, 1)
        if rng.random() < 0.5:  # a shadow from one side (a hand or phone) instead of a band
            inside = np.clip(d / soft + 0.5, 0, 1)
        light *= 1 - _u(rng, 0.15, 0.45) * inside
    light = light + _smooth_noise(rng, (lw, lh), max(lw, lh) / 3) * 0.02
    cast = np.float32(_pick(rng, [(1, 1, 1), (1, 0.94, 0.82), (1, 0.97, 0.9), (0.9, 0.96, 1), (0.95, 1, 0.93)],
                            p=[0.3, 0.25, 0.2, 0.15, 0.1]))
    if cast_shadow:  # drawn at the frame's size: its edge is sharper than the low-resolution light allows
        light = _resize_f(light.astype(np.float32), (w, h), Image.Resampling.BILINEAR) * _cast_shadow(rng, (w, h))
    cast = cast / cast.max()
    rgb = np.clip(light[..., None] * cast[None, None, :] * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR), float(np.percentile(light, 90))


def _cast_shadow(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """float32 [h, w] light multiplier: the shadow a phone or a hand casts from a lamp above the page,
    one straight edge or a corner (two edges), the light behind it 30-60% lower, its penumbra
    0.3-2% of the frame."""
    w, h = size
    ys: np.ndarray
    xs: np.ndarray
    ys, xs = np.indices((h, w), dtype=np.float32)
    xs, ys = xs / max(w, h) - 0.5 * w / max(w, h), ys / max(w, h) - 0.5 * h / max(w, h)
    soft = _u(rng, 0.003, 0.02)
    inside = np.ones((h, w), np.float32)
    angle = _u(rng, 0, 2 * math.pi)
    for turn in ((0.0,) if rng.random() < 0.6 else (0.0, _pick(rng, [-1, 1]) * math.pi / 2)):
        a = angle + turn
        d = xs * math.cos(a) + ys * math.sin(a) - _u(rng, -0.25, 0.25)
        inside *= np.clip(d / soft + 0.5, 0, 1)
    return 1 - _u(rng, 0.3, 0.6) * inside


def _camera(scene: Image.Image, rng: np.random.Generator, paper_level: float, shadow: bool | None,
            size: tuple[int, int], noise: tuple[float, float] = (1.5, 5.0),
            exposure: tuple[float, float] = (205, 245), cast_shadow: bool = False) -> Image.Image:
    """Light, exposure, lens blur and sharpening of a phone camera on ``scene``, then the sensor's
    resolution ``size`` (the scene is rendered at most about 1800 px: phone photos are soft at full
    size) and its noise. Auto exposure brings the paper to a grey level drawn from ``exposure``."""
    w, h = scene.size
    light, level = _lighting(rng, (w, h), shadow, cast_shadow)
    image = ImageChops.multiply(scene, light)
    target = _u(rng, *exposure)
    gain = (target / 255) / max(0.05, paper_level * level)  # auto exposure: the paper comes out light
    gamma = _u(rng, 0.85, 1.1)
    lut = [int(round(255 * min(1.0, v / 255 * gain) ** gamma)) for v in range(256)]
    image = image.point(lut * 3)
    W, H = size
    upscale = W / w  # the upscale to the sensor's size blurs by itself
    blur = _u(rng, 0.4, 1.0) if upscale < 1.3 else 0.0
    if rng.random() < 0.12:
        blur = _u(rng, 1.5, 3.0) * max(w, h) / 1000  # out of focus
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.UnsharpMask(radius=2, percent=int(rng.integers(40, 120)), threshold=2))
    sigma = _u(rng, *noise)
    # colour noise is blotchy (demosaicing, denoising): made at the scene's size; grain at the sensor's
    chroma = rng.standard_normal((max(4, h // 3), max(4, w // 3), 3), dtype=np.float32) * np.float32(sigma)
    chroma_img = Image.fromarray(np.clip(128 + chroma, 0, 255).astype(np.uint8)).resize((w, h),
                                                                                        Image.Resampling.BILINEAR)
    image = ImageChops.add(image, chroma_img, 1.0, -128)
    if (W, H) != (w, h):
        image = image.resize((W, H), Image.Resampling.BILINEAR)
    hw, hh = max(8, W // 2), max(8, H // 2)
    grain = rng.standard_normal((hh, hw), dtype=np.float32) * np.float32(sigma * 1.3)
    grain_img = Image.fromarray(np.clip(128 + grain, 0, 255).astype(np.uint8)).resize((W, H), Image.Resampling.BILINEAR)
    return ImageChops.add(image, Image.merge("RGB", (grain_img, grain_img, grain_img)), 1.0, -128)


# draws on a sheet, given the mark's box on it (x, y, width, height), the mark's ink and the item's generator
Decoration = Callable[[Image.Image, tuple[float, float, float, float], InkStyle, np.random.Generator], None]


@dataclass
class PhotoPlan:
    size: tuple[int, int]
    paper: Paper = field(default_factory=Paper)
    ink: InkStyle | None = None
    mark_height: float = 0.3  # as a fraction of the frame's shorter side
    desk: bool | None = None  # None: by chance
    shadow: bool | None = None
    whole_sheet: bool = False  # the sheet lies whole in the frame, desk all around (a note, a card)
    exposure: tuple[float, float] = (205, 245)  # the grey level auto exposure brings the paper to
    noise: tuple[float, float] = (1.5, 5.0)  # the sensor's noise (grey levels, one deviation): see _camera
    cast_shadow: bool = False  # a hard-edged shadow across the sheet (see _cast_shadow)
    # drawn on the sheet before the mark, given the sheet and the mark's box on it (x, y, width, height)
    around: Decoration | None = None


def photograph(mark: Mark | None, rng: np.random.Generator, plan: PhotoPlan, max_internal: int = 1800
               ) -> Image.Image:
    """A phone photo of ``mark`` written on a sheet of paper: the sheet in perspective (sometimes on a
    visible desk), uneven light, blur, noise. Returns the RGB image (not yet encoded).

    The scene is drawn at most ``max_internal`` px on its longer side and the camera scales it to
    ``plan.size``."""
    W0, H0 = plan.size
    k = min(1.0, max_internal / max(W0, H0), 1 / _u(rng, 1.0, 2.0))
    W, H = max(16, round(W0 * k)), max(16, round(H0 * k))
    S = min(W, H)
    desk_sides: list[str] = []
    if plan.whole_sheet:
        desk_sides = ["left", "right", "top", "bottom"]
    elif plan.desk if plan.desk is not None else rng.random() < 0.35:
        sides = ["left", "right", "top", "bottom"]
        desk_sides = [sides[int(rng.integers(4))]]
        if rng.random() < 0.4:
            other = {"left": ["top", "bottom"], "right": ["top", "bottom"], "top": ["left", "right"],
                     "bottom": ["left", "right"]}[desk_sides[0]]
            desk_sides.append(other[int(rng.integers(2))])
    edge = {}
    for side, extent in (("left", W), ("right", W), ("top", H), ("bottom", H)):
        inset = _u(rng, *NOTE_INSET if plan.whole_sheet else (0.04, 0.18)) * extent if side in desk_sides \
            else -_u(rng, 0.06, 0.2) * S
        edge[side] = inset
    quad = np.array([[edge["left"], edge["top"]], [W - edge["right"], edge["top"]],
                     [W - edge["right"], H - edge["bottom"]], [edge["left"], H - edge["bottom"]]], float)
    quad += rng.normal(0, 0.025 * S, quad.shape)  # tilt: keystone
    angle = math.radians(_u(rng, -5, 5))
    centre = quad.mean(0)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    quad = (quad - centre) @ rot.T + centre
    ws = int((np.hypot(*(quad[1] - quad[0])) + np.hypot(*(quad[2] - quad[3]))) / 2)
    hs = int((np.hypot(*(quad[3] - quad[0])) + np.hypot(*(quad[2] - quad[1]))) / 2)
    sheet_corners = [(0, 0), (ws, 0), (ws, hs), (0, hs)]
    to_sheet = perspective_coeffs(quad, sheet_corners)
    to_frame = perspective_coeffs(sheet_corners, quad)

    paper_rgb = plan.paper.colour or _paper_colour(rng)
    sheet = Image.new("RGB", (ws, hs), paper_rgb)
    sheet = ImageChops.add(sheet, _paper_texture(rng, (ws, hs), _u(rng, 0.8, 2.0)), 1.0, -128)
    lines: list[float] = []
    if plan.paper.kind in ("ruled", "grid"):
        lines = _rules(sheet, plan.paper, H, rng)

    if mark is not None:
        ink = plan.ink or pick_ink(rng)
        height = plan.mark_height * S
        for attempt in range(12):
            mh = height * (0.88 ** attempt)
            mw = mh * mark.aspect
            if mw > 0.8 * W:
                mh, mw = 0.8 * W / mark.aspect, 0.8 * W
            if plan.whole_sheet:  # somewhere on the sheet, not on the desk
                cx, cy = _apply_perspective(to_frame, _u(rng, 0.3, 0.7) * ws, _u(rng, 0.3, 0.7) * hs)
            else:
                cx = W / 2 + _u(rng, -0.22, 0.22) * W
                cy = H / 2 + _u(rng, -0.22, 0.22) * H
            sx, sy = _apply_perspective(to_sheet, cx, cy)
            top = _apply_perspective(to_sheet, cx, cy - mh / 2)
            bottom = _apply_perspective(to_sheet, cx, cy + mh / 2)
            sheet_h = max(8, int(math.hypot(bottom[0] - top[0], bottom[1] - top[1])))
            sheet_w = sheet_h * mark.aspect
            if lines and plan.paper.kind == "ruled" and rng.random() < 0.5:  # sit on a line
                below = [y for y in lines if y > sy]
                if below:
                    sy = below[0] - sheet_h / 2 - _u(rng, -0.05, 0.1) * sheet_h
            x0, y0 = sx - sheet_w / 2, sy - sheet_h / 2
            corners = [_apply_perspective(to_frame, px, py) for px, py in
                       ((x0, y0), (x0 + sheet_w, y0), (x0 + sheet_w, y0 + sheet_h), (x0, y0 + sheet_h))]
            xs_, ys_ = [c[0] for c in corners], [c[1] for c in corners]
            m = 0.03 * S
            inside_frame = min(xs_) > m and min(ys_) > m and max(xs_) < W - m and max(ys_) < H - m
            inside_sheet = x0 > 0.02 * ws and y0 > 0.02 * hs and x0 + sheet_w < 0.98 * ws and y0 + sheet_h < 0.98 * hs
            if inside_frame and inside_sheet:
                break
        else:
            raise RuntimeError("could not place the mark")  # never seen; a bug if it happens
        mask = mark.render(sheet_h)
        if plan.around is not None:
            plan.around(sheet, (sx - mask.shape[1] / 2, y0, mask.shape[1], mask.shape[0]), ink, rng)
        _ink_onto(sheet, mask, (int(round(sx - mask.shape[1] / 2)), int(round(y0))), ink, rng)

    frame = sheet.transform((W, H), Image.Transform.PERSPECTIVE, to_sheet, Image.Resampling.BILINEAR)
    corners_on_sheet = [_apply_perspective(to_sheet, x, y) for x, y in ((0, 0), (W, 0), (W, H), (0, H))]
    if not all(0 <= x <= ws and 0 <= y <= hs for x, y in corners_on_sheet):  # some desk shows
        coverage = Image.new("L", (ws, hs), 255).transform((W, H), Image.Transform.PERSPECTIVE, to_sheet,
                                                           Image.Resampling.BILINEAR)
        desk = _desk(rng, (W, H))
        small = coverage.resize((max(8, W // 8), max(8, H // 8)), Image.Resampling.BILINEAR)
        dx, dy = int(rng.integers(-3, 4)), int(rng.integers(1, 5))
        shade = ImageChops.offset(small.filter(ImageFilter.GaussianBlur(2.5)), dx, dy)
        shade = shade.point(lambda v: 255 - int(v * 0.55)).resize((W, H), Image.Resampling.BILINEAR)
        desk = ImageChops.multiply(desk, Image.merge("RGB", (shade, shade, shade)))
        frame = Image.composite(frame, desk, coverage)
    return _camera(frame, rng, luma(paper_rgb) / 255, plan.shadow, (W0, H0), plan.noise, plan.exposure,
                   plan.cast_shadow)


def _scan_image(mark: Mark | None, rng: np.random.Generator, size: tuple[int, int], height: float,
                ink: InkStyle, dust: bool) -> Image.Image:
    """A flatbed scan: near-white paper, even light, slight blur; dust specks and a few dots if ``dust``."""
    w, h = size
    v = int(rng.integers(238, 255))
    page = Image.new("RGB", (w, h), (v, v, v - int(rng.integers(0, 5))))
    page = ImageChops.add(page, _paper_texture(rng, (w, h), _u(rng, 0.3, 0.8)), 1.0, -128)
    box = None
    if mark is not None:
        mh = int(height)
        mask = mark.render(mh)
        if mask.shape[1] > 0.9 * w:
            mask = mark.render(int(mh * 0.9 * w / mask.shape[1]))
        x = int(rng.integers(int(0.05 * w), max(int(0.05 * w) + 1, int(0.95 * w) - mask.shape[1])))
        y = int(rng.integers(int(0.05 * h), max(int(0.05 * h) + 1, int(0.95 * h) - mask.shape[0])))
        soft = np.asarray(_to_l(np.pad(mask, 2)).filter(ImageFilter.GaussianBlur(_u(rng, 0.3, 0.8))),
                          np.float32) / 255  # the scanner's optics
        _ink_onto(page, soft, (x - 2, y - 2), ink, rng)
        box = (x, y, x + mask.shape[1], y + mask.shape[0])
    if dust:
        draw = ImageDraw.Draw(page)
        for _ in range(int(rng.integers(20, 250))):  # dust: tiny grey specks
            px, py = rng.uniform(0, w), rng.uniform(0, h)
            r = _u(rng, 0.4, 1.6)
            g = int(rng.integers(120, 225))
            draw.ellipse((px - r, py - r, px + r, py + r), fill=(g, g, g))
        if rng.random() < 0.3:  # a hair
            t0 = rng.uniform(0, 2 * math.pi)
            px, py = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
            pts = [(px, py)]
            for _ in range(30):
                t0 += rng.normal(0, 0.15)
                px, py = px + 3 * math.cos(t0), py + 3 * math.sin(t0)
                pts.append((px, py))
            draw.line(pts, fill=(90, 90, 90), width=1)
        for _ in range(int(rng.integers(2, 7))):  # a few small dark dots, away from the writing
            for _try in range(20):
                px, py = rng.uniform(0.03, 0.97) * w, rng.uniform(0.03, 0.97) * h
                if box is None or not (box[0] - 0.05 * w < px < box[2] + 0.05 * w
                                       and box[1] - 0.05 * h < py < box[3] + 0.05 * h):
                    break
            r = _u(rng, 1.5, 5)
            g = int(rng.integers(20, 90))
            draw.ellipse((px - r, py - r * _u(rng, 0.7, 1.3), px + r, py + r), fill=(g, g, g))
    noise = rng.standard_normal((h // 2, w // 2)).astype(np.float32) * _u(rng, 0.5, 1.5)
    noise_img = Image.fromarray(np.clip(128 + noise, 0, 255).astype(np.uint8)).resize((w, h))
    return ImageChops.add(page, Image.merge("RGB", (noise_img,) * 3), 1.0, -128)


def _scan_bytes(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    fmt = _pick(rng, ["PNG-L", "PNG", "JPEG", "TIFF", "PDFJPEG"], p=[0.3, 0.2, 0.3, 0.15, 0.05])
    if fmt == "PNG-L":
        return _encode(image.convert("L"), "PNG", compress_level=1), "png"
    if fmt == "PNG":
        return _encode(image, "PNG", compress_level=1), "png"
    if fmt == "TIFF":
        return _encode(image.convert("L") if rng.random() < 0.5 else image, "TIFF", compression="tiff_lzw"), "tif"
    return _encode(image, "JPEG", quality=int(rng.integers(75, 96))), "jpg"


def _place(mark: Mark, rng: np.random.Generator, size: tuple[int, int], height: float) -> np.ndarray:
    """A (h, w) layer with the mark ``height`` px tall (smaller if it would not fit) at a random place,
    all of it at least 3% of the shorter side from the edges."""
    w, h = size
    margin = max(2, round(0.03 * min(w, h)))
    height = min(height, h - 2 * margin, (w - 2 * margin) / max(mark.aspect, 1e-3))
    mask = mark.render(max(8, int(height)))
    for _ in range(4):
        if mask.shape[0] <= h - 2 * margin and mask.shape[1] <= w - 2 * margin:
            break
        shrink = min((h - 2 * margin) / mask.shape[0], (w - 2 * margin) / mask.shape[1])
        mask = mark.render(max(8, int(mask.shape[0] * shrink * 0.97)))
    mask = mask[:h - 2 * margin, :w - 2 * margin]
    mh, mw = mask.shape
    top = int(rng.integers(margin, h - margin - mh + 1))
    left = int(rng.integers(margin, w - margin - mw + 1))
    layer = np.zeros((h, w), np.float32)
    layer[top:top + mh, left:left + mw] = mask
    return layer


def canvas_image(mark: Mark, rng: np.random.Generator, *, size: tuple[int, int] | None = None,
                 height: float | None = None, style: str | None = None,
                 colours: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None) -> tuple[bytes, str, str]:
    """A drawing app's export: the mark on a flat canvas, all of it inside. ``colours`` (ink, background)
    gives a canvas in those colours. Returns (bytes, extension, style)."""
    if size is None:
        side = int(rng.integers(100, 601))
        size = _pick(rng, [(side, side), (side, int(side * 0.75)), (int(side * 0.75), side), (280, 280)],
                     p=[0.55, 0.15, 0.15, 0.15])
    w, h = size
    style = "custom" if colours else style or _pick(rng, ["gray", "colour", "transparent", "black", "darkmode"],
                                                     p=[0.25, 0.25, 0.2, 0.22, 0.08])
    height = height or _u(rng, 0.4, 0.8) * min(w, h)
    layer = _place(mark, rng, (w, h), height)
    if style == "custom":
        if colours is None:
            raise ValueError("canvas_image: style 'custom' needs colours")
        fg, bg = (np.array(c, np.float32) for c in colours)
        rgb = bg[None, None] + layer[..., None] * (fg - bg)[None, None]
        image = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    elif style == "gray":
        paper = _u(rng, 0.92, 1.0)
        image = _to_l(paper - layer * (paper - _u(rng, 0.0, 0.25)))
    elif style == "colour":
        colour = np.array([int(v) for v in rng.integers(0, 140, 3)], np.float32)
        bg = np.array([255, 255, 255], np.float32) if rng.random() < 0.6 else np.array(_paper_colour(rng), np.float32)
        rgb = bg[None, None] - layer[..., None] * (bg - colour)[None, None]
        image = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    elif style == "transparent":
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., :3] = rng.integers(0, 70, 3)
        rgba[..., 3] = np.clip(layer * 255 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(rgba)
    elif style == "black":  # the drawing page: black strokes on white
        image = _to_l(1 - layer).convert("RGB")
    else:  # dark mode: light strokes on a dark canvas
        bg = np.array([int(rng.integers(15, 50))] * 3, np.float32)
        fg = np.array([int(v) for v in rng.integers(200, 256, 3)], np.float32)
        rgb = bg[None, None] + layer[..., None] * (fg - bg)[None, None]
        image = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    if style == "transparent":
        fmt = _pick(rng, ["PNG", "WEBP"], p=[0.85, 0.15])
        data = _encode(image, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    else:
        fmt = _pick(rng, ["PNG", "JPEG", "WEBP"], p=[0.65, 0.25, 0.1])
        data = _encode(image, fmt, **({"quality": int(rng.integers(70, 96))} if fmt != "PNG" else {}))
    return data, EXTENSIONS[fmt], style


# =========================================================================== the conditions


def _digit(split: Split, rng: np.random.Generator, thin_pen: bool = False) -> tuple[np.ndarray, str]:
    """A random test digit and its label; with ``thin_pen``, one whose loops survive thinning."""
    for _ in range(20):
        i = int(rng.integers(len(split.images)))
        digit, label = split.images[i], str(int(split.labels[i]))
        if not thin_pen or loops_survive(digit, label):
            break
    return digit, label


def _photo_plan(rng: np.random.Generator, paper: Paper | None = None, size: tuple[int, int] | None = None,
                ink: InkStyle | None = None) -> PhotoPlan:
    return PhotoPlan(size=size or _photo_size(rng), paper=paper or Paper(), ink=ink,
                     mark_height=_logu(rng, 0.14, 0.55))


def _ruled_paper(rng: np.random.Generator) -> Paper:
    if rng.random() < 0.6:
        return Paper("ruled", spacing=_u(rng, 0.05, 0.08))
    return Paper("grid", spacing=_u(rng, 0.035, 0.06))


def make_mnist28(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    digit, label = _digit(split, rng)
    return _encode(Image.fromarray(digit), "PNG"), "png", "png", label


CROPPED_HEIGHT = (40.0, 600.0)  # px: the cropped digit, enlarged
LOW_RES_HEIGHT = (8, 16)  # px: a digit kept at low resolution, as small digit datasets keep theirs


def make_cropped(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    """A digit cropped to its ink, as a person crops a photo or a program saves a dataset's digit: the
    test digit's ink box and at most a pixel around it, enlarged smoothly or by repeating pixels, or
    kept at a low resolution (8-16 px, 17 grey levels) and saved as it is or enlarged by repeating
    pixels; dark ink on light or light on dark, in a lossless format or as a JPEG."""
    digit, label = _digit(split, rng)
    ink = _crop_to_ink(_from_l(Image.fromarray(digit)), level=0.1)
    kind = _pick(rng, ["smooth", "pixels", "low-res"], p=[0.5, 0.2, 0.3])
    if kind == "low-res":
        side = int(rng.integers(LOW_RES_HEIGHT[0], LOW_RES_HEIGHT[1] + 1))
        scale = side / ink.shape[0]
        ink = _resize_f(ink, (max(1, round(ink.shape[1] * scale)), side), Image.Resampling.BOX)
        ink = np.round(np.clip(ink / max(float(ink.max()), 1e-6), 0, 1) * 16) / 16
        enlarge = 1 if rng.random() < 0.4 else int(rng.integers(4, 33))
    else:
        enlarge = _logu(rng, *CROPPED_HEIGHT) / ink.shape[0]
    size = (max(1, round(ink.shape[1] * enlarge)), max(1, round(ink.shape[0] * enlarge)))
    if size != ink.shape[::-1]:
        smooth = kind == "smooth"
        ink = _resize_f(ink, size, Image.Resampling.BICUBIC if smooth else Image.Resampling.NEAREST)
    ink = np.pad(np.clip(ink, 0, 1), int(rng.integers(0, 2)))
    light_on_dark = rng.random() < 0.3
    paper, pen = (np.array(_hsv(rng.random(), _u(rng, 0, 0.3), _u(rng, 0, 0.25)), np.float32),
                  np.array(_hsv(rng.random(), _u(rng, 0, 0.3), _u(rng, 0.85, 1)), np.float32))
    if not light_on_dark:
        paper, pen = pen, paper
    rgb = paper[None, None] + ink[..., None] * (pen - paper)[None, None]
    image = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    fmt = _pick(rng, ["PNG", "GIF", "WEBP", "BMP", "JPEG"], p=[0.55, 0.1, 0.1, 0.1, 0.15])
    params: dict[str, Any] = {"quality": int(rng.integers(85, 96))} if fmt == "JPEG" else \
        {"lossless": True} if fmt == "WEBP" else {}
    data = _encode(image.convert("P", palette=Image.Palette.ADAPTIVE) if fmt == "GIF" else image, fmt, **params)
    return data, EXTENSIONS[fmt], f"{kind}-{'light' if light_on_dark else 'dark'}", label


def make_canvas(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    digit, label = _digit(split, rng)
    kind = _pick(rng, ["bilinear", "smooth", "pen"], p=[0.35, 0.35, 0.3])
    if kind == "bilinear":  # tests/serve/images.py user_style: the 28x28 image scaled with its margins
        side = int(rng.integers(100, 201))
        size = int(rng.integers(int(side * 0.45), int(side * 0.8)))
        ink = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255
        mark = Mark(lambda height: ink, 1.0)
        data, ext, style = canvas_image(mark, rng, size=(side, side), height=size)
    elif kind == "smooth":
        data, ext, style = canvas_image(digit_mark(digit), rng)
    else:  # drawn with a round pen, as the drawing page does (lineWidth 18 on 280 px)
        data, ext, style = canvas_image(digit_mark(digit, pen=_u(rng, 0.06, 0.14), label=label), rng)
    return data, ext, f"{style}-{kind}", label


def make_photo(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    digit, label = _digit(split, rng)
    ink = pick_ink(rng)
    plan = _photo_plan(rng, ink=ink)
    data, ext = _phone_jpeg(photograph(handwriting(digit, label, rng, ink), rng, plan), rng)
    return data, ext, f"{plan.size[0]}x{plan.size[1]}", label


NOTE_INSET = (0.12, 0.32)  # the desk between a note (or card) and each side of the frame, of the frame
NOTE_COLOURS = ((252, 238, 130), (255, 205, 215), (185, 230, 250), (205, 245, 190), (255, 190, 120),
                (250, 250, 244), (238, 236, 228))  # sticky notes, then white and off-white cards


def make_note(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    """A digit on a sticky note or an index card lying whole on a desk, photographed from above."""
    digit, label = _digit(split, rng)
    ink = pick_ink(rng, ("black", "blue", "pencil"))
    colour = NOTE_COLOURS[int(rng.integers(len(NOTE_COLOURS)))]
    plan = PhotoPlan(size=_photo_size(rng), paper=Paper(colour=colour), ink=ink, whole_sheet=True,
                     mark_height=_u(rng, 0.15, 0.35))
    data, ext = _phone_jpeg(photograph(handwriting(digit, label, rng, ink), rng, plan), rng)
    return data, ext, "card" if colour in NOTE_COLOURS[-2:] else "sticky-note", label


def make_ruled(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    digit, label = _digit(split, rng)
    paper = _ruled_paper(rng)
    ink = pick_ink(rng)
    plan = _photo_plan(rng, paper, ink=ink)
    plan.mark_height = paper.spacing * _u(rng, 1.4, 3.2) * max(plan.size) / min(plan.size) \
        if plan.size[1] > plan.size[0] else paper.spacing * _u(rng, 1.4, 3.2)
    data, ext = _phone_jpeg(photograph(handwriting(digit, label, rng, ink), rng, plan), rng)
    return data, ext, paper.kind, label


def make_framed(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    """A digit photographed in a form's printed box (alone or one of a comb of boxes), circled in ink
    (the ring often left open), or on a notebook page whose punched holes show the desk."""
    digit, label = _digit(split, rng)
    ink = pick_ink(rng, ("black", "blue", "pencil"))
    kind = _pick(rng, ["box", "comb", "ring", "holes"])
    around: dict[str, Decoration] = {"box": functools.partial(_printed_boxes, comb=False),
                                     "comb": functools.partial(_printed_boxes, comb=True),
                                     "ring": _ring_around, "holes": _punched_holes}
    paper = _ruled_paper(rng) if kind == "holes" and rng.random() < 0.7 else Paper()
    plan = PhotoPlan(size=_photo_size(rng), paper=paper, ink=ink, mark_height=_u(rng, 0.12, 0.3),
                     around=around[kind], desk=False)
    data, ext = _phone_jpeg(photograph(handwriting(digit, label, rng, ink), rng, plan), rng)
    return data, ext, kind, label


def make_beside(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    """A digit photographed with something else on the page: a pen or pencil lying beside it, a
    highlighter's band across it, or an underline in its ink."""
    digit, label = _digit(split, rng)
    ink = pick_ink(rng)
    kind = _pick(rng, ["pen", "highlighter", "underline"])
    around: dict[str, Decoration] = {"pen": _pen_beside, "highlighter": _highlighter_across,
                                     "underline": _underline}
    plan = PhotoPlan(size=_photo_size(rng), paper=Paper(), ink=ink, mark_height=_u(rng, 0.1, 0.25),
                     around=around[kind], desk=False)
    data, ext = _phone_jpeg(photograph(handwriting(digit, label, rng, ink), rng, plan), rng)
    return data, ext, kind, label


BOARDS = ((30, 32, 35), (38, 62, 50), (56, 61, 67), (21, 21, 23))  # black, green and slate boards; black card
CHALKS = ((238, 238, 230), (240, 226, 150), (245, 200, 210), (190, 220, 245))  # white, yellow, pink, blue
PAINT = ((245, 245, 245), (200, 200, 205), (225, 190, 110))  # white, silver and gold paint markers
BOARD_EXPOSURE = (40.0, 110.0)  # a dark board fills the frame: auto exposure lifts it to a dark grey, not to white


def make_board(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    """Light on dark, photographed: a digit in chalk on a blackboard (often hazy where it was wiped),
    or in paint marker on black card."""
    digit, label = _digit(split, rng)
    kind = _pick(rng, ["chalk", "paint"], p=[0.7, 0.3])
    if kind == "chalk":
        board = BOARDS[int(rng.integers(3))]
        ink = InkStyle(_pick(rng, list(CHALKS), p=[0.7, 0.1, 0.1, 0.1]), _u(rng, 0.55, 0.95), _u(rng, 0.2, 0.5),
                       kind, covers=True)
        mark = digit_mark(digit, pen=_u(rng, 0.06, 0.13), label=label)
    else:
        board = BOARDS[3]
        ink = InkStyle(_pick(rng, list(PAINT)), _u(rng, 0.85, 1.0), _u(rng, 0.0, 0.1), kind, covers=True)
        mark = handwriting(digit, label, rng, ink)
    plan = _photo_plan(rng, Paper(colour=board), ink=ink)
    plan.exposure = BOARD_EXPOSURE
    plan.around = _wiped_chalk if kind == "chalk" and rng.random() < 0.6 else None
    data, ext = _phone_jpeg(photograph(mark, rng, plan), rng)
    return data, ext, kind, label


DIM_EXPOSURE = (100.0, 165.0)  # a dim room: auto exposure at its limit leaves the paper grey ...
DIM_NOISE = (6.0, 14.0)  # ... and the sensor's gain raises its noise to several times a lit photo's


def make_dim(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    """A phone photo in a dim room: the paper comes out grey, and the sensor's noise (fine grain and
    blotchy colour) is several times a lit photo's; plain paper, sometimes ruled or squared."""
    digit, label = _digit(split, rng)
    ink = pick_ink(rng)
    paper = Paper() if rng.random() < 0.7 else _ruled_paper(rng)
    plan = _photo_plan(rng, paper, ink=ink)
    plan.exposure, plan.noise = DIM_EXPOSURE, DIM_NOISE
    data, ext = _phone_jpeg(photograph(handwriting(digit, label, rng, ink), rng, plan), rng)
    return data, ext, paper.kind, label


def make_shadow(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    """A phone photo with the hard-edged shadow of the phone or a hand across the sheet (see
    _cast_shadow); the digit anywhere, in the light, in the shadow or across its edge; plain paper,
    sometimes ruled or squared."""
    digit, label = _digit(split, rng)
    ink = pick_ink(rng)
    paper = Paper() if rng.random() < 0.75 else _ruled_paper(rng)
    plan = _photo_plan(rng, paper, ink=ink)
    plan.cast_shadow = True
    data, ext = _phone_jpeg(photograph(handwriting(digit, label, rng, ink), rng, plan), rng)
    return data, ext, paper.kind, label


def _wiped_chalk(sheet: Image.Image, mark: tuple[float, float, float, float], ink: InkStyle,
                 rng: np.random.Generator) -> None:
    """The haze a board eraser leaves: broad, soft, faint sweeps of the chalk's colour, across the digit too."""
    w, h = sheet.size
    low_w, low_h = max(8, w // 8), max(8, h // 8)
    sweeps = Image.new("L", (low_w, low_h), 0)
    draw = ImageDraw.Draw(sweeps)
    for _ in range(int(rng.integers(1, 5))):
        y = _u(rng, 0, low_h)
        xs = np.linspace(-0.1 * low_w, 1.1 * low_w, 6)
        draw.line([(float(x), y + _u(rng, -0.08, 0.08) * low_h) for x in xs], fill=int(rng.integers(90, 256)),
                  width=max(2, int(_u(rng, 0.08, 0.3) * low_h)))
    haze = _from_l(sweeps.filter(ImageFilter.GaussianBlur(max(1.0, 0.04 * low_h))))
    haze *= np.clip(0.7 + 0.3 * _smooth_noise(rng, (low_w, low_h), max(low_w, low_h) / 10), 0, 1)
    alpha = _resize_f(haze, (w, h), Image.Resampling.BILINEAR)[..., None] * _u(rng, 0.05, 0.2)
    colour = np.array(ink.colour, np.float32)
    out = np.asarray(sheet, np.float32) * (1 - alpha) + colour * alpha
    sheet.paste(Image.fromarray(out.clip(0, 255).astype(np.uint8)))


# blue, black, red, a yellow pencil, steel
PEN_BODIES = ((30, 60, 170), (25, 25, 30), (180, 30, 30), (235, 190, 40), (170, 170, 175))


def _pen_beside(sheet: Image.Image, mark: tuple[float, float, float, float], ink: InkStyle,
                rng: np.random.Generator) -> None:
    """A pen or pencil lying on the page beside the digit, in any direction: a shaded cylinder (a pen is
    about 1 cm thick and 14 long, a digit 1-3 cm tall) with a darker tip and a soft shadow, passing the
    digit at a gap; the frame often cuts it."""
    x, y, w, h = mark
    length, thick = h * _u(rng, 4.0, 9.0), h * _u(rng, 0.3, 0.7)
    side = math.radians(_u(rng, 0, 360))  # where the pen lies, seen from the digit
    reach = math.hypot(w, h) / 2 + thick / 2 + h * _u(rng, 0.05, 0.4)
    cx, cy = x + w / 2 + reach * math.cos(side), y + h / 2 + reach * math.sin(side)
    ux, uy = -math.sin(side), math.cos(side)  # the pen's axis, across the line to the digit; "across" points to it
    start = _u(rng, -0.8, -0.2) * length  # how far the pen runs on each side of the point nearest the digit
    yy, xx = np.mgrid[0:sheet.height, 0:sheet.width].astype(np.float32)
    along = (xx - cx) * ux + (yy - cy) * uy - start
    across = (xx - cx) * -uy + (yy - cy) * ux
    tip = np.clip((along - length) / (0.8 * thick), 0, None)  # the cone beyond the body, 0 on the body
    body = (along >= 0) & (along <= length) & (np.abs(across) <= thick / 2)
    cone = (along > length) & (np.abs(across) <= thick / 2 * (1 - tip))
    out = np.asarray(sheet, np.float32)
    shadow = ((along >= 0) & (along <= length) & (np.abs(across + 0.25 * thick) <= thick / 2)).astype(np.float32)
    shadow = _box_blur(shadow, max(1, round(thick / 4)))
    out *= (1 - 0.35 * shadow)[..., None]
    colour = np.array(_pick(rng, list(PEN_BODIES)), np.float32)
    # a cylinder lit from one side: bright along one flank, dark along the other
    shade = 0.55 + 0.45 * np.cos(np.clip(across / (thick / 2), -1, 1) * math.pi / 2 + 0.5)
    out[body] = (colour * shade[body][:, None]).clip(0, 255)
    out[cone] = np.array(ink.colour, np.float32) * 0.8
    sheet.paste(Image.fromarray(out.clip(0, 255).astype(np.uint8)))


HIGHLIGHTERS = ((255, 240, 80), (140, 235, 110), (255, 180, 80), (255, 140, 200))  # yellow, green, orange, pink


def _highlighter_across(sheet: Image.Image, mark: tuple[float, float, float, float], ink: InkStyle,
                        rng: np.random.Generator) -> None:
    """A highlighter's translucent band across the digit (under its ink, as marked afterwards it
    would multiply the same), a little longer than the digit is wide, slightly tilted."""
    x, y, w, h = mark
    band = h * _u(rng, 0.25, 0.5)
    mid = y + h * _u(rng, 0.3, 0.7)
    left, right = x - h * _u(rng, 0.2, 0.8), x + w + h * _u(rng, 0.2, 0.8)
    slope = math.tan(math.radians(_u(rng, -4, 4)))
    yy, xx = np.mgrid[0:sheet.height, 0:sheet.width].astype(np.float32)
    inside = (xx >= left) & (xx <= right) & (np.abs(yy - (mid + (xx - x) * slope)) <= band / 2)
    alpha = _box_blur(inside.astype(np.float32), 1) * _u(rng, 0.6, 0.9)
    colour = np.array(_pick(rng, list(HIGHLIGHTERS)), np.float32) / 255
    out = np.asarray(sheet, np.float32) * (1 - alpha[..., None] * (1 - colour))
    sheet.paste(Image.fromarray(out.clip(0, 255).astype(np.uint8)))


def _underline(sheet: Image.Image, mark: tuple[float, float, float, float], ink: InkStyle,
               rng: np.random.Generator) -> None:
    """The digit underlined in its own ink, once or twice."""
    x, y, w, h = mark
    pen = max(2, round(h * _u(rng, 0.03, 0.07)))
    below = y + h * _u(rng, 1.05, 1.2)
    left, right = x - w * _u(rng, 0.0, 0.4), x + w * _u(rng, 1.0, 1.4)
    draw = ImageDraw.Draw(sheet)
    for k in range(2 if rng.random() < 0.25 else 1):
        at = below + k * 2.5 * pen
        draw.line([(left, at + _u(rng, -0.03, 0.03) * h), (right, at + _u(rng, -0.03, 0.03) * h)],
                  fill=ink.colour, width=pen)


def _printed_boxes(sheet: Image.Image, mark: tuple[float, float, float, float], ink: InkStyle,
                   rng: np.random.Generator, comb: bool) -> None:
    """A printed box around the mark, or a comb of 3-6 boxes (a code, a date) with the mark in one."""
    x, y, w, h = mark
    side = h * _u(rng, 1.3, 1.7)
    width = max(side * _u(rng, 0.8, 1.2), w * 1.25)
    left = x + w / 2 - width / 2 + _u(rng, -0.08, 0.08) * width
    top = y + h / 2 - side / 2 + _u(rng, -0.06, 0.06) * side
    boxes = int(rng.integers(3, 7)) if comb else 1
    at = int(rng.integers(boxes)) if comb else 0  # the box the mark is in
    grey = int(rng.integers(20, 110))
    lw = max(1, round(sheet.height * _u(rng, 0.0015, 0.003)))
    draw = ImageDraw.Draw(sheet)
    x0 = left - at * width
    draw.rectangle((x0, top, x0 + boxes * width, top + side), outline=(grey,) * 3, width=lw)
    for k in range(1, boxes):
        draw.line([(x0 + k * width, top), (x0 + k * width, top + side)], fill=(grey,) * 3, width=lw)


def _ring_around(sheet: Image.Image, mark: tuple[float, float, float, float], ink: InkStyle,
                 rng: np.random.Generator) -> None:
    """A ring drawn in the digit's ink around it, as an answer is marked; often left open."""
    x, y, w, h = mark
    cx, cy = x + w / 2, y + h / 2
    ry, rx = h * _u(rng, 0.7, 0.9), max(w, 0.6 * h) * _u(rng, 0.75, 1.0)
    start = _u(rng, 0, 360)
    gap = _u(rng, 0, 50) if rng.random() < 0.6 else 0.0
    pen = max(2, round(h * _u(rng, 0.04, 0.08)))
    ImageDraw.Draw(sheet).arc((cx - rx, cy - ry, cx + rx, cy + ry), start, start + 360 - gap, fill=ink.colour,
                              width=pen)


def _punched_holes(sheet: Image.Image, mark: tuple[float, float, float, float], ink: InkStyle,
                   rng: np.random.Generator) -> None:
    """A notebook page's punched holes down its margin, left of the digit, showing a dark desk through
    them (the photo crops the page's edges, so they are put where the frame shows them)."""
    w, h = sheet.size
    x, _, _, mark_h = mark
    r = h * _u(rng, 0.02, 0.035)
    cx = min(_u(rng, 0.15, 0.25) * w, x - _u(rng, 1.0, 3.0) * mark_h)
    if cx < 2 * r:
        return
    colour = _pick(rng, [(40, 32, 28), (70, 50, 35), (25, 28, 30), (60, 62, 66)])
    draw = ImageDraw.Draw(sheet)
    for cy in np.arange(h * _u(rng, 0.1, 0.3), h, h * _u(rng, 0.2, 0.3)):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)


def make_specks(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    thin = rng.random() >= 0.5
    digit, label = _digit(split, rng, thin_pen=thin)
    size = (1200, 1600)
    if not thin:
        ink = pick_ink(rng, ("black", "blue", "pencil"))
        mark = digit_mark(digit, pen=None if rng.random() < 0.5 else _u(rng, 0.05, 0.12), label=label)
        image = _scan_image(mark, rng, size, _u(rng, 150, 600), ink, dust=True)
        data, ext = _scan_bytes(image, rng)
        return data, ext, "scan", label
    height = _u(rng, 200, 900)
    mark = digit_mark(digit, pen=4.0 / height)
    ink = InkStyle((int(rng.integers(0, 40)),) * 3, 1.0, 0.0)
    scan = _scan_image(mark, rng, size, height, ink, dust=False) if rng.random() < 0.3 else None
    if scan is None:  # a white canvas, the stroke 4 px wide
        layer = np.zeros((size[1], size[0]), np.float32)
        mask = mark.render(int(height))
        y = int(rng.integers(20, size[1] - mask.shape[0] - 20))
        x = int(rng.integers(20, max(21, size[0] - mask.shape[1] - 20)))
        layer[y:y + mask.shape[0], x:x + mask.shape[1]] = mask[:, :size[0] - x]
        canvas = _to_l(1 - layer * (1 - ink.colour[0] / 255))
        return _encode(canvas, "PNG"), "png", "thinpen-canvas", label
    return _encode(scan, "PNG"), "png", "thinpen-scan", label


def colour_pair(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(ink, paper): clearly different hues, luma within about 5-15% of each other."""
    paper_hue = rng.random()
    ink_hue = paper_hue + _u(rng, 0.3, 0.7)
    paper_luma = _u(rng, 90, 200)
    delta = _u(rng, 12, 38) * (1 if rng.random() < 0.75 else -1)  # ink usually a little darker
    paper = colour_with_luma(paper_hue, _u(rng, 0.45, 0.85), paper_luma)
    ink = colour_with_luma(ink_hue, _u(rng, 0.6, 1.0), paper_luma - delta)
    return ink, paper


def make_colour(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    digit, label = _digit(split, rng)
    ink, paper = colour_pair(rng)
    mark = digit_mark(digit, pen=None if rng.random() < 0.6 else _u(rng, 0.06, 0.13), label=label)
    name = f"l{int(luma(ink))}-on-l{int(luma(paper))}"
    if rng.random() < 0.5:  # a flat canvas
        data, ext, _ = canvas_image(mark, rng, colours=(ink, paper))
        return data, ext, f"canvas-{name}", label
    plan = _photo_plan(rng, Paper("plain", colour=paper), ink=InkStyle(ink, 1.0, 0.05))
    data, ext = _phone_jpeg(photograph(mark, rng, plan), rng, quality=(75, 92))
    return data, ext, f"photo-{name}", label


def make_thick_thin(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    digit, label = _digit(split, rng, thin_pen=True)
    pen = _logu(rng, 0.012, 0.24)  # a hairline pen to a fat marker, as a fraction of the height
    mark = digit_mark(digit, pen=pen)
    where = _pick(rng, ["canvas", "photo", "scan"], p=[0.4, 0.4, 0.2])
    if where == "canvas":
        data, ext, _ = canvas_image(mark, rng)
    elif where == "photo":
        ink = pick_ink(rng, ("black", "blue")) if pen > 0.08 else None
        data, ext = _phone_jpeg(photograph(mark, rng, _photo_plan(rng, ink=ink)), rng)
    else:
        image = _scan_image(mark, rng, (1200, 1600), _u(rng, 150, 600), pick_ink(rng, ("black", "blue")), dust=False)
        data, ext = _scan_bytes(image, rng)
    return data, ext, f"{where}-w{pen:.3f}", label


def writer_warp(rng: np.random.Generator) -> Warp:
    return Warp(shear=_u(rng, -0.35, 0.45), aspect=_logu(rng, 0.7, 1.35), rotate=_u(rng, -10, 10),
                elastic=_u(rng, 0.01, 0.045), cells=_u(rng, 0.25, 0.5), seed=int(rng.integers(2**31)))


def make_writers(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    digit, label = _digit(split, rng)
    pen = None if rng.random() < 0.4 else _logu(rng, 0.04, 0.16)
    mark = digit_mark(digit, warp=writer_warp(rng), pen=pen, label=label)
    where = _pick(rng, ["canvas", "photo", "scan"], p=[0.5, 0.3, 0.2])
    if where == "canvas":
        data, ext, _ = canvas_image(mark, rng)
    elif where == "photo":
        data, ext = _phone_jpeg(photograph(mark, rng, _photo_plan(rng)), rng)
    else:
        image = _scan_image(mark, rng, (1200, 1600), _u(rng, 150, 600), pick_ink(rng), dust=False)
        data, ext = _scan_bytes(image, rng)
    return data, ext, where, label


SMALL_HEIGHT = (8.0, 22.0)  # px: a digit in a thumbnail, a downscaled screenshot, a far or low-resolution shot


def make_small(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    """A digit only 8-22 px tall: drawn at four times the size and shrunk with the whole image (so its
    edges are grey, as a camera or a downscale leaves them), on paper or a screen, sometimes blurred
    and JPEG-compressed; or the 28x28 digit itself shrunk, as a thumbnail of a small image."""
    digit, label = _digit(split, rng)
    height = _logu(rng, *SMALL_HEIGHT)
    kind = _pick(rng, ["screen", "photo", "thumbnail"], p=[0.35, 0.4, 0.25])
    if kind == "thumbnail":  # the whole 28x28 image shrunk: the digit is about 0.7 of it
        side = max(8, round(height / 0.7))
        small = np.asarray(Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BILINEAR))
        sheet = np.full((side + 2 * 12, side + 2 * 12), 255, np.uint8)
        sheet[12:12 + side, 12:12 + side] = small
        return _encode(Image.fromarray(sheet), "PNG"), "png", f"thumbnail-h{height:.0f}", label
    w, h = (round(height * _u(rng, 2.5, 8)) for _ in range(2))
    mark = digit_mark(digit, pen=None if rng.random() < 0.5 else _u(rng, 0.07, 0.15), label=label)
    layer = _place(mark, rng, (4 * w, 4 * h), 4 * height)
    layer = _resize_f(layer, (w, h), Image.Resampling.BOX)
    if kind == "screen":
        darkest = _u(rng, 0.0, 0.3)
        return _encode(_to_l(1 - layer * (1 - darkest)), "PNG"), "png", f"screen-h{height:.0f}", label
    paper, ink = np.array(_paper_colour(rng), np.float32), np.array(pick_ink(rng).colour, np.float32)
    rgb = paper[None, None] - layer[..., None] * (paper - ink)[None, None]
    rgb = rgb + rng.normal(0, _u(rng, 1, 6), rgb.shape)
    image = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(_u(rng, 0.3, 0.8)))
    data, ext = _phone_jpeg(image, rng, quality=(70, 92), rotate=0.0)
    return data, ext, f"photo-h{height:.0f}", label


def _flat_text_image(mask: np.ndarray, rng: np.random.Generator, dark_ok: bool = True
                     ) -> tuple[Image.Image, np.ndarray, np.ndarray, np.ndarray]:
    """Typeset ink on a flat background with margins: (RGB image, fg, bg, coverage layer)."""
    mh, mw = mask.shape
    ml, mr, mt, mb = (int(_u(rng, 0.1, 1.5) * mh) + 2 for _ in range(4))
    layer = np.pad(mask, ((mt, mb), (ml, mr)))
    for _ in range(50):
        if dark_ok and rng.random() < 0.3:  # light text on a dark or saturated background
            bg = _hsv(rng.random(), _u(rng, 0, 1), _u(rng, 0.05, 0.6))
            fg = _hsv(rng.random(), _u(rng, 0, 0.5), _u(rng, 0.75, 1))
        else:
            bg = _hsv(rng.random(), _u(rng, 0, 0.35), _u(rng, 0.8, 1))
            fg = _hsv(rng.random(), _u(rng, 0, 1), _u(rng, 0, 0.65))
        if contrast_ratio(fg, bg) >= 3.0:
            break
    bgf, fgf = np.array(bg, np.float32), np.array(fg, np.float32)
    if rng.random() < 0.15:  # a gradient background
        h, w = layer.shape
        ramp = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
        ramp = ramp[None, :, None] if len(ramp) == w else ramp[:, None, None]
        other = np.clip(bgf + rng.uniform(-40, 40, 3), 0, 255).astype(np.float32)
        background = bgf[None, None] + ramp * (other - bgf)[None, None]
    else:
        background = np.broadcast_to(bgf[None, None], layer.shape + (3,))
    rgb = background + layer[..., None] * (fgf[None, None] - background)
    return Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8)), fgf, bgf, layer


def _typeset_file(mask: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, str]:
    """Typeset ink as a digital file in one of many formats and colour modes."""
    fmt = _pick(rng, ["png", "png_rgba", "png_l", "png16", "png_p", "png_1bit", "jpeg", "jpeg_cmyk", "gif", "bmp",
                      "tiff", "webp", "webp_lossless"],
                p=[0.16, 0.1, 0.08, 0.06, 0.06, 0.04, 0.14, 0.03, 0.08, 0.06, 0.07, 0.07, 0.05])
    image, fg, bg, layer = _flat_text_image(mask, rng, dark_ok=fmt not in ("png_rgba",))
    if fmt == "png":
        return _encode(image, "PNG"), "png", fmt
    if fmt == "png_rgba":
        rgba = np.zeros(layer.shape + (4,), np.uint8)
        rgba[..., :3] = np.clip(fg, 0, 255).astype(np.uint8)
        rgba[..., 3] = np.clip(layer * 255 + 0.5, 0, 255).astype(np.uint8)
        return _encode(Image.fromarray(rgba), "PNG"), "png", fmt
    if fmt == "png_l":
        return _encode(image.convert("L"), "PNG"), "png", fmt
    if fmt == "png16":
        grey = np.asarray(image.convert("L"), np.float32) * 257 + rng.uniform(0, 256, layer.shape)
        return _encode(Image.fromarray(np.clip(grey, 0, 65535).astype(np.uint16)), "PNG"), "png", fmt
    if fmt == "png_p":
        return _encode(image.quantize(colors=int(rng.integers(4, 64))), "PNG"), "png", fmt
    if fmt == "png_1bit":
        bw = image.convert("L").point(lambda v: 255 if v > 127 else 0).convert("1")
        return _encode(bw, "PNG"), "png", fmt
    if fmt == "jpeg":
        return _encode(image, "JPEG", quality=int(rng.integers(50, 96))), "jpg", fmt
    if fmt == "jpeg_cmyk":
        return _encode(image.convert("CMYK"), "JPEG", quality=int(rng.integers(80, 96))), "jpg", fmt
    if fmt == "gif":
        return _encode(image.convert("P", palette=Image.Palette.ADAPTIVE,
                                     colors=int(rng.integers(8, 128))), "GIF"), "gif", fmt
    if fmt == "bmp":
        return _encode(image, "BMP"), "bmp", fmt
    if fmt == "tiff":
        return _encode(image, "TIFF", compression=_pick(rng, ["raw", "tiff_lzw", "tiff_adobe_deflate"])), "tif", fmt
    if fmt == "webp":
        return _encode(image, "WEBP", quality=int(rng.integers(60, 95))), "webp", fmt
    return _encode(image, "WEBP", lossless=True), "webp", fmt


def make_typeset(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    label = str(int(rng.integers(10)))
    fonts = font_files()
    font = fonts[int(rng.integers(len(fonts)))]
    fname = Path(font).stem
    if rng.random() < 0.15:  # printed, then photographed
        plan = _photo_plan(rng, ink=InkStyle((20, 20, 20), 1.0, 0.0))
        data, ext = _phone_jpeg(photograph(text_mark(font, label), rng, plan), rng)
        return data, ext, f"printed_photo-{fname}", label
    mask = text_mask(font, label, int(_logu(rng, 14, 260)))
    data, ext, fmt = _typeset_file(mask, rng)
    return data, ext, f"{fmt}-{fname}", label


def make_numbers(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    length = int(rng.integers(2, 5))
    picks = []
    for position in range(length):
        for _ in range(100):
            digit, label = _digit(split, rng)
            if position or label != "0":  # no leading zero (unless the split has nothing else)
                break
        picks.append((digit, label))
    expected = "".join(label for _, label in picks)
    touching = rng.random() < 0.25
    pen = None if rng.random() < 0.6 else _u(rng, 0.06, 0.12)
    slant = Warp(shear=_u(rng, -0.2, 0.3), elastic=0.0) if rng.random() < 0.3 else None
    mark = compose_number([digit_mark(d, pen=pen, warp=slant, label=label) for d, label in picks], rng, touching)
    where = "canvas" if rng.random() < 0.5 else "photo"
    if where == "canvas":
        w = int(rng.integers(240, 900))
        h = int(w * _u(rng, 0.3, 0.75))
        data, ext, _ = canvas_image(mark, rng, size=(w, h),
                                    style=_pick(rng, ["gray", "colour", "transparent", "black"]))
    else:
        paper = Paper() if rng.random() < 0.6 else _ruled_paper(rng)
        plan = _photo_plan(rng, paper)
        plan.mark_height = _logu(rng, 0.14, 0.4)
        data, ext = _phone_jpeg(photograph(mark, rng, plan), rng)
        where = f"photo-{paper.kind}"
    return data, ext, f"{length}d-{where}{'-touching' if touching else ''}", expected


def _noise_image(rng: np.random.Generator) -> tuple[bytes, str, str]:
    w, h = int(rng.integers(64, 900)), int(rng.integers(64, 900))
    kind = _pick(rng, ["uniform", "gaussian", "salt-pepper", "blotches"])
    if kind == "uniform":
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    elif kind == "gaussian":
        array = np.clip(rng.normal(128, 40, (h, w)), 0, 255).astype(np.uint8)
    elif kind == "salt-pepper":
        array = np.full((h, w), 255, np.uint8)
        array[rng.random((h, w)) < _u(rng, 0.005, 0.05)] = 0
    else:
        small = rng.uniform(0, 255, (int(rng.integers(3, 12)), int(rng.integers(3, 12)), 3)).astype(np.uint8)
        array = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))
        array = np.clip(array + rng.normal(0, 6, array.shape), 0, 255).astype(np.uint8)
    fmt = _pick(rng, ["PNG", "JPEG"])
    return _encode(Image.fromarray(array), fmt, **({"quality": 85} if fmt == "JPEG" else {})), EXTENSIONS[fmt], kind


def make_not_digits(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, None]:
    kind = _pick(rng, ["letter-typeset", "word-typeset", "letter-hand", "word-hand", "shape", "scribble", "dot",
                       "blank-paper", "empty-ruled", "noise"],
                 p=[0.14, 0.09, 0.15, 0.1, 0.22, 0.1, 0.05, 0.05, 0.05, 0.05])
    fonts = font_files()
    font = fonts[int(rng.integers(len(fonts)))]
    if kind == "noise":
        data, ext, what = _noise_image(rng)
        return data, ext, f"noise-{what}", None
    if kind in ("blank-paper", "empty-ruled"):
        paper = Paper() if kind == "blank-paper" else _ruled_paper(rng)
        plan = PhotoPlan(size=_photo_size(rng), paper=paper)
        data, ext = _phone_jpeg(photograph(None, rng, plan), rng)
        return data, ext, kind, None
    text = ""
    if kind.startswith("letter"):
        text = LETTERS[int(rng.integers(len(LETTERS)))]
    elif kind.startswith("word"):
        text = WORDS[int(rng.integers(len(WORDS)))]
    if kind.endswith("typeset"):
        if rng.random() < 0.7:
            data, ext, fmt = _typeset_file(text_mask(font, text, int(_logu(rng, 16, 200))), rng)
            return data, ext, f"{kind}-{text}", None
        mark = text_mark(font, text)
        plan = _photo_plan(rng, ink=InkStyle((20, 20, 20), 1.0, 0.0))
        data, ext = _phone_jpeg(photograph(mark, rng, plan), rng)
        return data, ext, f"{kind}-{text}-photo", None
    pen = _logu(rng, 0.04, 0.14)
    detail = kind
    if kind.endswith("hand"):
        hand_fonts = [f for f in fonts if any(s in Path(f).stem for s in ("DejaVuSans", "cmss", "cmr", "STIXGeneral"))]
        mark = handwritten_text_mark(hand_fonts[int(rng.integers(len(hand_fonts)))], text, rng,
                                     pen * (0.6 if len(text) > 1 else 1))
        detail = f"{kind}-{text}"
    elif kind == "shape":
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        strokes, fills, aspect = shape_strokes(shape, rng)
        mark = strokes_mark(strokes, fills, aspect, rng, pen)
        detail = f"shape-{shape}"
    elif kind == "scribble":
        strokes, aspect = scribble_strokes(rng)
        mark = strokes_mark(strokes, [], aspect, rng, pen * 0.7, wobble=0.01)
    else:  # a single dot
        d = _u(rng, 0.02, 0.07)
        mark = strokes_mark([np.array([[0.5, 0.5], [0.5, 0.5]])], [], 1.0, rng, 1.0, wobble=0.0)
        if rng.random() < 0.5:
            side = int(rng.integers(100, 600))
            data, ext, _ = canvas_image(mark, rng, size=(side, side), height=d * side * 1.5)
            return data, ext, "dot-canvas", None
        plan = PhotoPlan(size=_photo_size(rng), mark_height=d)
        data, ext = _phone_jpeg(photograph(mark, rng, plan), rng)
        return data, ext, "dot-photo", None
    if rng.random() < 0.5:
        data, ext, _ = canvas_image(mark, rng)
        return data, ext, f"{detail}-canvas", None
    data, ext = _phone_jpeg(photograph(mark, rng, _photo_plan(rng)), rng)
    return data, ext, f"{detail}-photo", None


def make_big(split: Split, rng: np.random.Generator) -> tuple[bytes, str, str, str]:
    digit, label = _digit(split, rng)
    size = BIG_SIZE if rng.random() < 0.5 else BIG_SIZE[::-1]
    ink = pick_ink(rng)
    plan = PhotoPlan(size=size, paper=Paper() if rng.random() < 0.6 else _ruled_paper(rng), ink=ink,
                     mark_height=_logu(rng, 0.15, 0.45), desk=False)
    image = photograph(handwriting(digit, label, rng, ink), rng, plan, max_internal=2400)
    data, ext = _phone_jpeg(image, rng, quality=(80, 92), rotate=0.3, webp=0.0)
    return data, ext, f"{size[0]}x{size[1]}", label


MAKERS: dict[str, Callable[[Split, np.random.Generator], tuple[bytes, str, str, str | None]]] = {
    "mnist-28": make_mnist28, "canvas": make_canvas, "photo": make_photo, "note": make_note, "ruled": make_ruled,
    "framed": make_framed, "beside": make_beside, "board": make_board, "dim": make_dim,
    "shadow": make_shadow,
    "specks": make_specks, "colour": make_colour,
    "thick-thin": make_thick_thin,
    "writers": make_writers, "small": make_small, "cropped": make_cropped,
    "typeset": make_typeset, "numbers": make_numbers, "not-digits": make_not_digits, "big": make_big,
}


def condition_size(condition: str, per_condition: int) -> int:
    return min(BIG_MAX, per_condition) if condition == "big" else per_condition


def make_item(split: Split, condition: str, index: int, seed: int = 0) -> Item:
    """Item ``index`` of ``condition``: the same bytes for the same (seed, condition, index), always."""
    rng = _rng(seed, condition, index)
    data, ext, variant, expected = MAKERS[condition](split, rng)
    return Item(condition, f"{condition}/{index:04d}-{variant}.{ext}", data, expected)


def plan_items(per_condition: int, conditions: Iterable[str] = CONDITIONS) -> list[tuple[str, int]]:
    return [(c, i) for c in conditions for i in range(condition_size(c, per_condition))]


def generate(split: Split | Any, per_condition: int = DEFAULT_PER_CONDITION, seed: int = 0,
             conditions: Iterable[str] = CONDITIONS) -> Iterator[Item]:
    """The evaluation set, lazily, condition by condition. ``split`` is a ``Split`` or a ``Dataset``
    (only its test_images and test_labels are read)."""
    split = split if isinstance(split, Split) else Split.from_dataset(split)
    for condition, index in plan_items(per_condition, check_conditions(conditions)):
        yield make_item(split, condition, index, seed)


def check_conditions(conditions: Iterable[str]) -> tuple[str, ...]:
    conditions = tuple(conditions)
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise PipelineError(f"unknown condition {unknown[0]!r}; choose from {', '.join(CONDITIONS)}")
    return conditions


# =========================================================================== reading the set


@dataclass
class Outcome:
    """What the served path answered for one item."""

    condition: str
    name: str
    expected: str | None
    read: str | None  # the digits read (None: refused or error)
    refused: bool
    error: str | None
    probability: float | None  # the lowest digit probability of what was read
    correct: bool
    read_seconds: float  # prepare_page plus this image's share of the model run
    generate_seconds: float
    bytes: int
    reason: str | None = None  # why it was refused (the reading's own words)

    @property
    def variant(self) -> str:
        return Item(self.condition, self.name, b"", None).variant

    def record(self) -> dict[str, Any]:
        return {"condition": self.condition, "name": self.name, "expected": self.expected, "read": self.read,
                "refused": self.refused, "reason": self.reason, "error": self.error,
                "probability": None if self.probability is None else round(self.probability, 4),
                "correct": self.correct, "read_ms": round(self.read_seconds * 1000, 2),
                "generate_ms": round(self.generate_seconds * 1000, 2), "bytes": self.bytes}


def group_of(condition: str, variant: str) -> str:
    """The sub-group of an item in the report (numbers by length, not-digits by kind, ...)."""
    first = variant.split("-", 1)[0]
    if condition == "numbers":
        return f"{first[0]} digits"
    if condition == "not-digits":
        parts = variant.split("-")
        if parts[0] in ("letter", "word", "shape"):
            return "-".join(parts[:2])
        return "blank-paper" if variant.startswith("blank") else "empty-ruled" if variant.startswith("empty") \
            else parts[0]
    if condition == "photo":
        long = max(int(v) for v in variant.split("x"))
        return "640-1000 px" if long < 1000 else "1000-2000 px" if long < 2000 else "2000-3000 px"
    if condition == "small":
        height = int(variant.rsplit("-h", 1)[1])
        return "8-12 px" if height < 12 else "12-16 px" if height < 16 else "16-22 px"
    if condition == "thick-thin":
        width = float(variant.rsplit("-w", 1)[1])
        return next(label for limit, label in ((0.02, "0-2% (hairline)"), (0.05, "2-5% (thin)"), (0.1, "5-10%"),
                                                (0.16, "10-16% (thick)"), (9.0, "16%+ (marker)")) if width < limit)
    return first


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _stats(outcomes: list[Outcome]) -> dict[str, Any]:
    n = len(outcomes)
    read = [o.probability for o in outcomes if o.probability is not None]
    read_s = sum(o.read_seconds for o in outcomes)
    return {
        "n": n,
        "correct": sum(o.correct for o in outcomes),
        "accuracy": sum(o.correct for o in outcomes) / n if n else None,
        "refused": sum(o.refused for o in outcomes),
        "refused_rate": sum(o.refused for o in outcomes) / n if n else None,
        "errors": sum(o.error is not None for o in outcomes),
        "mean_probability": float(np.mean(read)) if read else None,
        "read_seconds": round(read_s, 3),
        "ms_per_image": round(1000 * read_s / n, 1) if n else None,
        "generate_seconds": round(sum(o.generate_seconds for o in outcomes), 3),
    }


def summarize(outcomes: list[Outcome], conditions: Iterable[str]) -> dict[str, Any]:
    """Per condition (with sub-groups), over all digit images, over all not-digits, and the goals."""
    by_condition: dict[str, Any] = {}
    for condition in conditions:
        mine = [o for o in outcomes if o.condition == condition]
        if not mine:
            continue
        stats = _stats(mine)
        groups: dict[str, list[Outcome]] = {}
        for o in mine:
            groups.setdefault(group_of(condition, o.variant), []).append(o)
        stats["groups"] = {g: _stats(groups[g]) for g in sorted(groups, key=_natural)}
        by_condition[condition] = stats
    digits = [o for o in outcomes if o.expected is not None]
    refusals = [o for o in outcomes if o.expected is None]
    goals = []
    for goal, goal_conditions, metric, target in GOALS:
        if metric == "false_refusal":
            pool, measured = digits, (sum(o.refused for o in digits) / len(digits) if digits else None)
            met = None if measured is None else measured <= target
        else:
            assert goal_conditions is not None  # in GOALS only the false-refusal goal covers every condition
            pool = [o for o in outcomes if o.condition in goal_conditions]
            measured = sum(o.correct for o in pool) / len(pool) if pool else None
            met = None if measured is None else measured >= target
        goals.append({"goal": goal, "conditions": list(goal_conditions) if goal_conditions else "all digit images",
                      "metric": metric, "target": target, "n": len(pool), "measured": measured, "met": met})
    return {"conditions": by_condition, "digits": _stats(digits) if digits else None,
            "not_digits": _stats(refusals) if refusals else None, "all": _stats(outcomes), "goals": goals}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_header(first: str = "condition") -> str:
    return (f"| {first} | n | accuracy | refused | errors | mean p | read s | ms/image | made in s |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")


def _row(label: str, stats: dict[str, Any]) -> str:
    return (f"| {label} | {stats['n']} | {_pct(stats['accuracy'])} | {_pct(stats['refused_rate'])} | "
            f"{stats['errors']} | {_num(stats['mean_probability'])} | {stats['read_seconds']:.1f} | "
            f"{_num(stats['ms_per_image'], 1)} | {stats['generate_seconds']:.1f} |")


def report_markdown(report: dict[str, Any]) -> str:
    """evaluation.md: the table per condition, the summary, numbers by length, not-digits by kind, goals."""
    summary = report["summary"]
    lines = [f"# How well {report['model']} reads images", "",
             f"{summary['all']['n']} images made from the `{report['data']}` test split only (seed {report['seed']}, "
             f"{report['per_condition']} per condition), read through `serve.reading` (onnxruntime) in "
             f"{report['wall_seconds']:.0f} s with {report['jobs']} process(es).", "", table_header()]
    for condition, stats in summary["conditions"].items():
        lines.append(_row(condition, stats))
    if summary["digits"]:
        lines.append(_row("**all digit images**", summary["digits"]))
    if summary["not_digits"]:
        lines.append(_row("**all not-digits**", summary["not_digits"]))
    lines += ["", "accuracy: the text read is exactly the expected digits; for not-digits, the image was refused. "
              "refused: the share answered \"not a digit\" (for digit images, false refusals). errors: files "
              "the server could not read. mean p: mean lowest digit probability of the images read as digits. "
              "read s: preparing the images and running the model; made in s: generating them."]
    numbers = summary["conditions"].get("numbers")
    if numbers:
        lines += ["", "## Numbers, by length (exact string)", "", table_header("length")]
        lines += [_row(g, v) for g, v in numbers["groups"].items()]
    not_digits = summary["conditions"].get("not-digits")
    if not_digits:
        lines += ["", "## Not-digits, by kind (accuracy = refused)", "", table_header("kind")]
        lines += [_row(g, v) for g, v in not_digits["groups"].items()]
    lines += ["", "## By presentation", "", table_header("condition: group")]
    for condition, stats in summary["conditions"].items():
        if condition not in ("numbers", "not-digits") and len(stats["groups"]) > 1:
            lines += [_row(f"{condition}: {g}", v) for g, v in stats["groups"].items()]
    slowest = sorted(report["items"], key=lambda i: -i["read_ms"])[:5]
    if slowest:
        lines += ["", "## Slowest to read", "", "| image | read in s | answer |", "| --- | ---: | --- |"]
        lines += [f"| {i['name']} | {i['read_ms'] / 1000:.2f} | "
                  f"{i['error'] or ('refused' if i['refused'] else i['read'])} |" for i in slowest]
    lines += ["", "## Goals", "", "| goal | measured on | n | target | measured | met |",
              "| --- | --- | ---: | ---: | ---: | --- |"]
    for g in summary["goals"]:
        on = ", ".join(g["conditions"]) if isinstance(g["conditions"], list) else g["conditions"]
        target = ("≤ " if g["metric"] == "false_refusal" else "≥ ") + _pct(g["target"])
        met = "-" if g["met"] is None else "yes" if g["met"] else "**no**"
        lines.append(f"| {g['goal']} | {on} | {g['n']} | {target} | {_pct(g['measured'])} | {met} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- pictures


THUMB = 150
_CHECKER = None


def thumbnail(data: bytes, size: int = THUMB) -> Image.Image:
    """An RGB thumbnail of image file bytes as a viewer shows them (transparency over a checkerboard)."""
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":
            image.draft("RGB", (size * 2, size * 2))
        image = ImageOps.exif_transpose(image)
        image.thumbnail((size, size))
        if image.mode in ("I;16", "I", "F"):
            image = Image.fromarray((np.asarray(image, np.float64) / max(1, np.asarray(image).max()) * 255)
                                    .astype(np.uint8))
        image = image.convert("RGBA")
    except Exception:  # noqa: BLE001 - a thumbnail of an unreadable file is a grey tile
        return Image.new("RGB", (size, size), (128, 128, 128))
    rows, cols = np.indices(image.size[::-1])
    checker = (rows // 8 + cols // 8) % 2
    board = np.where(checker[..., None] == 1, 235, 205).astype(np.uint8).repeat(3, axis=2)
    base = Image.fromarray(board).convert("RGBA")
    return Image.alpha_composite(base, image).convert("RGB")


def _tile_sheet(tiles: list[tuple[Image.Image, list[str]]], columns: int, title: str) -> Image.Image:
    font = ImageFont.load_default()
    cell_w, cell_h = THUMB + 10, THUMB + 46
    rows = max(1, math.ceil(len(tiles) / columns))
    sheet = Image.new("RGB", (columns * cell_w + 10, rows * cell_h + 30), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((10, 8), title, fill=(0, 0, 0), font=font)
    for i, (thumb, captions) in enumerate(tiles):
        x, y = 10 + (i % columns) * cell_w, 30 + (i // columns) * cell_h
        if not captions:
            continue
        sheet.paste(thumb, (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
        draw.rectangle((x - 1, y - 1, x + THUMB, y + THUMB), outline=(180, 180, 180))
        for j, caption in enumerate(captions):
            draw.text((x, y + THUMB + 3 + 12 * j), caption[:26], fill=(0, 0, 0) if j else (160, 0, 0), font=font)
    return sheet


def _answer(o: Outcome) -> str:
    return f"error: {o.error}" if o.error else "refused" if o.refused else f"read {o.read} ({o.probability:.2f})"


def failures_picture(failures: list[tuple[Outcome, bytes]], path: Path) -> int:
    """Up to MAX_FAILURES_SHOWN failures, taken in turn from each condition; returns how many are shown."""
    queues: dict[str, list[tuple[Outcome, bytes]]] = {}
    for outcome, data in failures:
        queues.setdefault(outcome.condition, []).append((outcome, data))
    chosen: list[tuple[Outcome, bytes]] = []
    while len(chosen) < MAX_FAILURES_SHOWN and any(queues.values()):
        for queue in queues.values():
            if queue and len(chosen) < MAX_FAILURES_SHOWN:
                chosen.append(queue.pop(0))
    tiles = [(thumbnail(data), [f"expected {o.expected or 'refusal'}", _answer(o), o.name.split('/')[-1]])
             for o, data in chosen]
    title = f"{len(chosen)} failures (expected / what the served model answered / file)" if chosen \
        else "no failures"
    _save_png(_tile_sheet(tiles, 8, title), path)
    return len(chosen)


def samples_picture(samples: dict[str, list[tuple[Outcome, bytes]]], path: Path) -> None:
    """A row of examples per condition, so a reader can see what was tested."""
    tiles = []
    columns = max([1] + [len(v) for v in samples.values()])
    for condition, items in samples.items():
        for o, data in items:
            tiles.append((thumbnail(data), [f"{condition}: {o.expected or 'refuse'}", _answer(o),
                                            o.name.split("/")[-1]]))
        tiles += [(Image.new("RGB", (1, 1), "white"), [])] * (columns - len(items))  # one row each
    _save_png(_tile_sheet(tiles, columns, "samples per condition (expected / answer / file)"), path)


def _save_png(image: Image.Image, path: Path) -> None:
    from pipeline.artifacts import atomic_path

    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


# --------------------------------------------------------------------------- the run


_WORKER: dict[str, Any] = {}


def _worker_init(split: Split, spec: Any, seed: int) -> None:
    _WORKER.update(split=split, spec=spec, seed=seed)


def _make_and_prepare(task: tuple[str, int]) -> tuple[Item, Any, float, float]:
    """Generate one item and prepare it for the model (what a worker process does)."""
    from serve.reading import prepare_page

    condition, index = task
    t0 = time.perf_counter()
    item = make_item(_WORKER["split"], condition, index, _WORKER["seed"])
    t1 = time.perf_counter()
    page = prepare_page(item.data, item.name, _WORKER["spec"])
    return item, page, t1 - t0, time.perf_counter() - t1


@dataclass
class Evaluation:
    report: dict[str, Any]
    markdown: str
    out: Path
    files: list[Path]
    wall_time: float


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def run_evaluation(model_path: Path, *, data: str = "sample", data_dir: Path | None = None,
                   per_condition: int = DEFAULT_PER_CONDITION, seed: int = 0, out: Path | None = None,
                   conditions: Iterable[str] = (), jobs: int | None = None, progress: bool = True) -> Evaluation:
    """Generate the set, read every image through the served path, write the report into ``out``."""
    from pipeline.artifacts import atomic_path, ensure_writable_dir, write_json
    from pipeline.data import load_dataset
    from serve.model import ModelError, load_model
    from serve.reading import read_pages

    start = time.perf_counter()
    conditions = check_conditions(conditions or CONDITIONS)
    if per_condition < 1:
        raise PipelineError(f"--per-condition must be at least 1, got {per_condition}")
    try:
        model = load_model(Path(model_path))
    except ModelError as exc:
        raise PipelineError(str(exc)) from None
    out = Path(out) if out is not None else Path(model_path).parent / "evaluation"
    ensure_writable_dir(out)
    split = Split.from_dataset(load_dataset(data, data_dir))
    font_files()  # fail early, with one line, if the fonts are missing
    tasks = plan_items(per_condition, conditions)
    jobs = jobs or default_jobs()

    if jobs > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(jobs, _worker_init, (split, model.field_spec, seed))
        produced: Iterator[tuple[Item, Any, float, float]] = pool.imap(_make_and_prepare, tasks, chunksize=2)
    else:
        pool = None
        _worker_init(split, model.field_spec, seed)
        produced = map(_make_and_prepare, tasks)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="image", dynamic_ncols=True, leave=False)
    outcomes: list[Outcome] = []
    samples: dict[str, list[tuple[Outcome, bytes]]] = {c: [] for c in conditions}
    failures: list[tuple[Outcome, bytes]] = []
    failures_kept: dict[str, int] = {}

    def read_batch(batch: list[tuple[Item, Any, float, float]]) -> None:
        t0 = time.perf_counter()
        readings = read_pages(model, [page for _, page, _, _ in batch])
        model_s = time.perf_counter() - t0
        fields = [len(page.fields) for _, page, _, _ in batch]
        total = sum(fields)
        for (item, _page, gen_s, prep_s), reading, k in zip(batch, readings, fields):
            share = model_s * k / total if total else model_s / len(batch)
            digits = reading.digits
            if item.expected is None:
                correct = reading.error is None and reading.not_a_digit
            else:
                correct = reading.text == item.expected
            outcome = Outcome(item.condition, item.name, item.expected, reading.text, bool(reading.not_a_digit),
                              reading.error, min(d.probability for d in digits) if digits else None, correct,
                              prep_s + share, gen_s, len(item.data), reading.reason)
            outcomes.append(outcome)
            if len(samples[item.condition]) < SAMPLES_PER_CONDITION:
                samples[item.condition].append((outcome, item.data))
            if not correct and failures_kept.get(item.condition, 0) < MAX_FAILURES_SHOWN:
                failures_kept[item.condition] = failures_kept.get(item.condition, 0) + 1
                failures.append((outcome, item.data))
        if bar is not None:
            bar.update(len(batch))
            bar.set_postfix_str(batch[-1][0].condition)

    try:
        batch: list[tuple[Item, Any, float, float]] = []
        for produced_item in produced:
            batch.append(produced_item)
            if len(batch) >= BATCH_PAGES or produced_item[0].condition == "big":
                read_batch(batch)
                batch = []
        if batch:
            read_batch(batch)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if bar is not None:
            bar.close()

    wall = time.perf_counter() - start
    report = {
        "model": str(model_path), "data": data, "seed": seed, "per_condition": per_condition,
        "conditions": list(conditions), "jobs": jobs, "wall_seconds": round(wall, 2),
        "labels": model.labels,
        "reject_label": model.labels[model.reject_index] if model.reject_index is not None else None,
        "min_confidence": model.min_confidence,
        "summary": summarize(outcomes, conditions),
        "items": [o.record() for o in outcomes],
    }
    markdown = report_markdown(report)
    files = [out / "evaluation.json", out / "evaluation.md", out / "failures.png", out / "samples.png"]
    write_json(files[0], report)
    with atomic_path(files[1]) as tmp:
        tmp.write_text(markdown)
    failures_picture(failures, files[2])
    samples_picture(samples, files[3])
    return Evaluation(report, markdown, out, files, time.perf_counter() - start)
