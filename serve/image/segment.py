"""The digits in an ink map: connected components, judged against each other, grouped and ordered.

- Specks and dust are judged against the largest mark, not the frame: a component far smaller than
  the main marks is dropped.
- Marks touching the frame's edge that are long and thin (a sheet's edge, a desk) are dropped.
- Components stacked above each other (a 5's detached top bar, a 4 drawn in two strokes, a stroke
  cut by a removed paper line) are one glyph.
- A glyph much wider than a digit is two or more touching digits: it is cut at the columns with the
  least ink near the expected cuts.
Glyphs come left to right.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serve.image.morph import label
from serve.image.normalize import BOX_THRESHOLD

SPECK = 0.2  # components smaller than this fraction of the largest one's height (and width) are specks
SMALL_AREA = 0.02  # ... or than this fraction of its ink area
OVERLAP = 0.5  # components sharing this fraction of the narrower one's columns are one glyph
DIGIT_ASPECT = 0.75  # typical width / height of one digit, for cutting touching digits
WIDE = 1.3  # a glyph wider than this times its height holds touching digits
MAX_DIGITS = 12


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    def union(self, other: "Box") -> "Box":
        x, y = min(self.x, other.x), min(self.y, other.y)
        return Box(x, y, max(self.right, other.right) - x, max(self.bottom, other.bottom) - y)


@dataclass
class Glyph:
    """One digit candidate: its ink (other glyphs' ink masked out), cropped to its box in the ink map."""

    ink: np.ndarray
    box: Box


@dataclass
class Part:
    labels: list[int]
    box: Box
    area: int


def find_glyphs(ink: np.ndarray) -> list[Glyph]:
    """The digit candidates of ``ink`` (white on black, background 0), left to right."""
    mask = ink > (BOX_THRESHOLD * float(ink.max()) if ink.min() > 0 or ink.shape[0] <= 64 else 0.0)
    labels, count = label(mask)
    if count == 0:
        return []
    parts = components(labels, count)
    parts = [p for p in parts if not is_edge_artifact(p, mask.shape)] or parts
    parts = drop_specks(parts)
    glyphs = []
    for part in split_wide(group_stacked(parts), mask):
        b = part.box
        own = np.isin(labels[b.y:b.bottom, b.x:b.right], part.labels)
        crop = np.where(own, ink[b.y:b.bottom, b.x:b.right], 0.0)
        if crop.max(initial=0) > 0:
            glyphs.append(Glyph(crop.astype(np.float32), b))
    glyphs.sort(key=lambda g: g.box.x + g.box.width / 2)
    return glyphs[:MAX_DIGITS]


def components(labels: np.ndarray, count: int) -> list[Part]:
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    area = np.bincount(lab, minlength=count + 1)
    top = np.full(count + 1, labels.shape[0]); np.minimum.at(top, lab, ys)
    bottom = np.zeros(count + 1, np.int64); np.maximum.at(bottom, lab, ys)
    left = np.full(count + 1, labels.shape[1]); np.minimum.at(left, lab, xs)
    right = np.zeros(count + 1, np.int64); np.maximum.at(right, lab, xs)
    return [Part([k], Box(int(left[k]), int(top[k]), int(right[k] - left[k] + 1), int(bottom[k] - top[k] + 1)),
                 int(area[k])) for k in range(1, count + 1)]


def is_edge_artifact(part: Part, shape: tuple[int, int]) -> bool:
    """Touches the frame and is long and thin: a sheet's edge, a desk, a shadow's rim."""
    h, w = shape
    b = part.box
    touches = b.x == 0 or b.y == 0 or b.right >= w or b.bottom >= h
    length = float(np.hypot(b.width, b.height))
    long_thin = length > 0.4 * max(h, w) and part.area / length < 0.015 * max(h, w)
    filled = part.area > 0.6 * b.width * b.height and part.area > 0.05 * h * w
    return touches and (long_thin or filled)


def drop_specks(parts: list[Part]) -> list[Part]:
    biggest = max(parts, key=lambda p: p.area)
    size = max(biggest.box.height, biggest.box.width)
    return [p for p in parts if p.area >= SMALL_AREA * biggest.area
            and max(p.box.height, p.box.width) >= SPECK * size]


def group_stacked(parts: list[Part]) -> list[Part]:
    """Join parts whose columns overlap: pieces of one digit stacked or crossing."""
    parts = sorted(parts, key=lambda p: p.box.x)
    merged = True
    while merged:
        merged = False
        for i in range(len(parts)):
            for j in range(i + 1, len(parts)):
                a, b = parts[i].box, parts[j].box
                shared = min(a.right, b.right) - max(a.x, b.x)
                if shared >= OVERLAP * min(a.width, b.width):
                    parts[i] = Part(parts[i].labels + parts[j].labels, a.union(b), parts[i].area + parts[j].area)
                    del parts[j]
                    merged = True
                    break
            if merged:
                break
    return parts


def split_wide(parts: list[Part], mask: np.ndarray) -> list[Part]:
    """Cut glyphs much wider than a digit (touching digits) at their thinnest columns."""
    out = []
    heights = sorted(p.box.height for p in parts)
    for part in parts:
        b = part.box
        height = max(b.height, heights[len(heights) // 2])
        if b.width <= WIDE * height:
            out.append(part)
            continue
        n = min(MAX_DIGITS, max(2, round(b.width / (DIGIT_ASPECT * height))))
        profile = mask[b.y:b.bottom, b.x:b.right].sum(axis=0).astype(np.float64)
        cuts = [0]
        for k in range(1, n):
            centre = round(k * b.width / n)
            lo, hi = max(cuts[-1] + 1, centre - b.width // (3 * n)), min(b.width - 1, centre + b.width // (3 * n))
            if hi <= lo:
                continue
            cuts.append(lo + int(np.argmin(profile[lo:hi])))
        cuts.append(b.width)
        for x0, x1 in zip(cuts, cuts[1:]):
            if x1 - x0 < 2:
                continue
            out.append(Part(part.labels, Box(b.x + x0, b.y, x1 - x0, b.height), part.area))
    return out
