"""Synthetic digits (and non-digits) drawn from stroke skeletons written in this file.

Why: training data must be reproducible from the repository alone. Fonts installed on a machine
differ from machine to machine, and digit sets shipped by other packages are someone else's data; a
seed and this file are all it takes to regenerate every image here, anywhere.

Each digit is a few strokes (polylines, elliptic arcs, quadratic and cubic Bézier curves,
Catmull-Rom splines) in a box one unit tall, in the styles people and typefaces use: a 1 plain, with
a flag, with flag and base; a 7 with and without a crossbar; a 4 open and closed; and so on
(``DIGIT_STYLES``). Each sample is either typeset-like (exact geometry, uniform thick pen) or
handwritten-like (jittered control points, a slight smooth bend, occasional small gaps, uneven ink),
and every sample is slanted, rotated, stretched and drawn with its own pen width, with round caps and
joins. The glyph is drawn 4x supersampled, averaged down, and handed to
``serve.image.normalize.fit_to_field``: the very function inference runs on a real image, so a
synthetic digit reaches the model in the form a real one does.

``non_digits`` draws, the same way, things that are not digits for a "not a digit" class (outlier
exposure): letters no one would read as a digit, short words, shapes and symbols, blobs and dots,
scribbles, dense strokes, noise patches and fragments (``NON_DIGIT_KINDS``).

Coordinates are (x, y) with y pointing down, as in an image; angles are in degrees, counterclockwise
as seen on the page (0 = right, 90 = up).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from serve.image.normalize import FieldSpec, fit_to_field

CANVAS = 96  # px of the rendered glyph before fit_to_field (which shrinks its longer side to 20)
SUPERSAMPLE = 4  # drawn at 4x and averaged down: anti-aliased edges without a slow renderer
ROUND_TURN = math.cos(math.radians(12))  # a polyline turning more than this gets a round join

Points = np.ndarray  # float64 [k, 2]
Point = np.ndarray | tuple[float, float]  # one (x, y): an array, or a plain tuple where the value is exact


@dataclass
class Glyph:
    """Strokes (polylines; a single point is a dot) and filled outlines, in glyph units."""

    strokes: list[Points]
    fills: list[Points] = field(default_factory=list)


# --------------------------------------------------------------------------- curve primitives

_T = np.linspace(0.0, 1.0, 17)[:, None]  # parameter samples of one Bézier segment


def line(*points: Point, n: int = 6) -> Points:
    """Straight segments through ``points``, each cut in ``n`` so a bend of the whole glyph curves them."""
    p = np.asarray(points, np.float64)
    t = np.linspace(0.0, 1.0, n + 1)[:-1, None]
    return np.vstack([a + (b - a) * t for a, b in zip(p[:-1], p[1:])] + [p[-1:]])


def arc(centre: Point, rx: float, ry: float, a0: float, a1: float) -> Points:
    """Elliptic arc from angle ``a0`` to ``a1`` (a1 < a0 runs clockwise), a point every 7.5 degrees."""
    k = max(2, math.ceil(abs(a1 - a0) / 7.5))
    a = np.radians(np.linspace(a0, a1, k + 1))
    return np.column_stack([centre[0] + rx * np.cos(a), centre[1] - ry * np.sin(a)])


def quad(p0: Points, p1: Points, p2: Points) -> Points:
    t = _T
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def cubic(p0: Points, p1: Points, p2: Points, p3: Points) -> Points:
    t = _T
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3


def spline(*points: Points, k: int = 8) -> Points:
    """Catmull-Rom curve through ``points``: a smooth hand-drawn path from a few waypoints."""
    p = np.asarray(points, np.float64)
    p = np.vstack([p[:1], p, p[-1:]])
    t = np.linspace(0.0, 1.0, k, endpoint=False)[:, None]
    p0, p1, p2, p3 = p[:-3, None], p[1:-2, None], p[2:-1, None], p[3:, None]
    seg = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                 + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3)
    return np.vstack([seg.reshape(-1, 2), p[-2:-1]])


def chain(*parts: Points) -> Points:
    """One stroke made of consecutive parts (the pen does not lift)."""
    return np.vstack(parts)


class Pen:
    """Makes control points, each nudged by ``jitter`` (a fraction of the height): no hand repeats a shape."""

    def __init__(self, rng: np.random.Generator, jitter: float) -> None:
        self.rng, self.jitter = rng, jitter

    def p(self, x: float, y: float) -> Points:
        return np.array((x, y)) + self.rng.normal(0.0, self.jitter, 2)

    def s(self, value: float, scale: float = 1.0) -> float:
        return value + float(self.rng.normal(0.0, self.jitter * scale))

    def arc(self, cx: float, cy: float, rx: float, ry: float, a0: float, a1: float) -> Points:
        j = self.rng.normal(0.0, self.jitter, 4)
        return arc(self.p(cx, cy), rx * (1 + 2 * j[0]), ry * (1 + 2 * j[1]), a0 + 100 * j[2], a1 + 100 * j[3])

    def arc_from(self, start: Points, rx: float, ry: float, a0: float, a1: float) -> Points:
        """An arc that begins exactly at ``start`` (a joined stroke stays joined under jitter)."""
        j = self.rng.normal(0.0, self.jitter, 3)
        rx, ry, a1 = rx * (1 + 2 * j[0]), ry * (1 + 2 * j[1]), a1 + 100 * j[2]
        a = math.radians(a0)
        return arc(start - (rx * math.cos(a), -ry * math.sin(a)), rx, ry, a0, a1)


# --------------------------------------------------------------------------- digits
# Glyphs are about 0.6 wide and 1 tall; DIGIT_WIDTH brings each digit to MNIST's proportions and the
# look's aspect ratio then makes a sample narrow or wide.

def _zero_oval(pen: Pen) -> Glyph:
    return Glyph([pen.arc(0.3, 0.5, 0.3, 0.5, 95, 95 + pen.s(363, 100))])


def _zero_narrow(pen: Pen) -> Glyph:
    return Glyph([pen.arc(0.3, 0.5, 0.17, 0.5, 100, 100 + pen.s(362, 100))])


def _zero_stadium(pen: Pen) -> Glyph:
    """The sans-serif 0: straight sides between two round ends."""
    r, top, bottom = pen.s(0.27), pen.s(0.28), pen.s(0.72)
    return Glyph([chain(arc((0.3, top), r, top, 0, 180), line((0.3 - r, top), (0.3 - r, bottom)),
                        arc((0.3, bottom), r, 1 - bottom, 180, 360), line((0.3 + r, bottom), (0.3 + r, top)))])


def _one_plain(pen: Pen) -> Glyph:
    return Glyph([line(pen.p(0.3, 0), pen.p(0.3, 1))])


def _one_flag(pen: Pen) -> Glyph:
    return Glyph([line(pen.p(0.1, 0.22), pen.p(0.33, 0), pen.p(0.33, 1))])


def _one_serif(pen: Pen) -> Glyph:
    foot = pen.p(0.33, 1)
    return Glyph([line(pen.p(0.1, 0.2), pen.p(0.33, 0), foot), line(foot - (0.24, 0), foot + (0.24, 0))])


def _two_top(pen: Pen) -> Points:
    return pen.arc(0.3, 0.28, 0.28, 0.27, 160, -35)


def _two_flat(pen: Pen) -> Glyph:
    top = _two_top(pen)
    corner = pen.p(0.02, 1)
    return Glyph([chain(top, quad(top[-1], pen.p(0.25, 0.68), corner), line(corner, pen.p(0.62, 0.99)))])


def _two_loop(pen: Pen) -> Glyph:
    """The handwritten 2 whose diagonal curls into a small loop before running along the base."""
    top = _two_top(pen)
    loop = spline(top[-1], pen.p(0.3, 0.7), pen.p(0.1, 0.9), pen.p(0.0, 0.86), pen.p(0.06, 0.76),
                  pen.p(0.18, 0.82), pen.p(0.3, 0.97), pen.p(0.62, 0.98))
    return Glyph([chain(top, loop)])


def _three_round(pen: Pen) -> Glyph:
    upper = pen.arc(0.28, 0.26, 0.26, 0.24, 150, -90)
    lower = pen.arc_from(upper[-1] + pen.p(0.0, -0.02), 0.31, 0.26, 90, -155)
    return Glyph([chain(upper, lower)])


def _three_flat(pen: Pen) -> Glyph:
    """Flat-topped 3: a bar, a diagonal down to the middle, one bowl."""
    a, b, mid, end = pen.p(0.04, 0), pen.p(0.56, 0), pen.p(0.22, 0.4), pen.p(0.02, 0.88)
    return Glyph([chain(line(a, b, mid), cubic(mid, pen.p(0.78, 0.33), pen.p(0.75, 1.08), end))])


# The crossbar of a 4 sits a little below the middle (MNIST's 4s have it at 55-60% of the height).

def _four_open(pen: Pen) -> Glyph:
    bar = pen.s(0.56, 2)
    return Glyph([line(pen.p(0.12, 0), pen.p(0.02, bar), pen.p(0.62, bar)), line(pen.p(0.46, 0.04), pen.p(0.46, 1))])


def _four_closed(pen: Pen) -> Glyph:
    apex, bar = pen.p(0.44, 0), pen.s(0.62, 2)
    return Glyph([line(apex, pen.p(0.0, bar), pen.p(0.62, bar)), line(apex, pen.p(0.44, 1))])


def _five_bowl(pen: Pen, start: Points) -> Points:
    neck = pen.p(0.06, 0.44)
    return chain(line(start, neck), cubic(neck, pen.p(0.62, 0.26), pen.p(0.74, 1.06), pen.p(0.0, 0.9)))


def _five_typical(pen: Pen) -> Glyph:
    """Stem and bowl in one stroke, the bar added after (as it is written)."""
    corner = pen.p(0.1, 0)
    return Glyph([_five_bowl(pen, corner), line(corner, pen.p(0.58, 0.0))])


def _five_detached(pen: Pen) -> Glyph:
    """The bar written apart: lifted off the stem, starting to its right, rising a little."""
    return Glyph([_five_bowl(pen, pen.p(0.08, 0.1)), line(pen.p(0.2, 0.02), pen.p(0.64, -0.04))])


def _six(pen: Pen, stem: Points, sweep: float) -> Glyph:
    return Glyph([chain(stem, pen.arc_from(stem[-1], 0.27, 0.27, 180, 180 + sweep))])


def _six_closed(pen: Pen) -> Glyph:
    return _six(pen, cubic(pen.p(0.52, 0), pen.p(0.2, 0.08), pen.p(0.03, 0.4), pen.p(0.03, 0.72)), pen.s(362, 100))


def _six_open(pen: Pen) -> Glyph:
    return _six(pen, cubic(pen.p(0.5, 0), pen.p(0.2, 0.08), pen.p(0.03, 0.4), pen.p(0.03, 0.72)), pen.s(295, 100))


def _six_straight(pen: Pen) -> Glyph:
    """The 6 whose stem is a straight diagonal, as in many typefaces and quick hands."""
    return _six(pen, line(pen.p(0.46, 0), pen.p(0.04, 0.7)), pen.s(362, 100))


def _seven_plain(pen: Pen) -> Glyph:
    a, b = pen.p(0.02, 0), pen.p(0.6, 0)
    return Glyph([chain(line(a, b), quad(b, pen.p(0.38, 0.45), pen.p(0.2, 1)))])


def _seven_crossbar(pen: Pen) -> Glyph:
    return Glyph(_seven_plain(pen).strokes + [line(pen.p(0.16, 0.52), pen.p(0.54, 0.5))])


def _seven_serif(pen: Pen) -> Glyph:
    """Typeset 7 with a short downward serif at the left end of the bar."""
    a, b = pen.p(0.02, 0), pen.p(0.6, 0)
    return Glyph([chain(line(a + (0, 0.16), a, b), line(b, pen.p(0.22, 1)))])


def _eight_figure(pen: Pen) -> Glyph:
    """One-stroke 8 (a figure-of-eight curve); the top loop is the smaller."""
    t = np.radians(np.arange(pen.s(0, 200), 368, 7.5))
    u = 0.5 - 0.5 * np.cos(t)  # 0 at the top, 1 at the bottom
    waist = pen.s(0.44)
    y = np.where(u < 0.5, u * 2 * waist, waist + (u - 0.5) * 2 * (1 - waist))
    half_width = np.where(u < 0.5, pen.s(0.24), pen.s(0.3))
    x = 0.3 + pen.s(0.0) * (1 - u) + half_width * np.sin(2 * t)
    return Glyph([np.column_stack([x, y])])


def _eight_stacked(pen: Pen) -> Glyph:
    """Two separate loops, a small one on a larger one (typeset 8s look like this)."""
    return Glyph([pen.arc(0.3, 0.23, 0.22, 0.23, 270, 630), pen.arc(0.3, 0.73, 0.29, 0.27, 90, 450)])


def _nine_loop(pen: Pen) -> Points:
    return pen.arc(0.28, 0.27, 0.26, 0.27, 20, 380)


def _nine_straight(pen: Pen) -> Glyph:
    loop = _nine_loop(pen)
    return Glyph([chain(loop, line(loop[-1], pen.p(0.5, 1)))])


def _nine_curved(pen: Pen) -> Glyph:
    loop = _nine_loop(pen)
    return Glyph([chain(loop, cubic(loop[-1], pen.p(0.58, 0.7), pen.p(0.45, 1.0), pen.p(0.05, 0.95)))])


def _nine_open(pen: Pen) -> Glyph:
    """A 9 whose head is an open bowl against the stem."""
    return Glyph([pen.arc(0.3, 0.27, 0.26, 0.27, 35, 325), line(pen.p(0.56, 0.0), pen.p(0.52, 1))])


DIGIT_STYLE_FUNCTIONS: dict[int, dict[str, Callable[[Pen], Glyph]]] = {
    0: {"oval": _zero_oval, "narrow": _zero_narrow, "stadium": _zero_stadium},
    1: {"plain": _one_plain, "flag": _one_flag, "flag_base": _one_serif},
    2: {"flat_base": _two_flat, "loop": _two_loop},
    3: {"round_top": _three_round, "flat_top": _three_flat},
    4: {"open_top": _four_open, "closed": _four_closed},
    5: {"typical": _five_typical, "detached_bar": _five_detached},
    6: {"closed_loop": _six_closed, "open_loop": _six_open, "straight_stem": _six_straight},
    7: {"plain": _seven_plain, "crossbar": _seven_crossbar, "serif": _seven_serif},
    8: {"figure_eight": _eight_figure, "stacked_loops": _eight_stacked},
    9: {"straight_tail": _nine_straight, "curved_tail": _nine_curved, "open_loop": _nine_open},
}
DIGIT_STYLES: dict[int, tuple[str, ...]] = {d: tuple(s) for d, s in DIGIT_STYLE_FUNCTIONS.items()}
# Horizontal stretch of each digit's skeletons, so the median width/height of its ink box matches
# MNIST's for that class (measured on the embedded sample: 0.9 for 0, 1.0 for 2 and 5, 0.45 for 1).
DIGIT_WIDTH = {0: 1.7, 1: 1.1, 2: 1.45, 3: 1.1, 4: 1.25, 5: 1.5, 6: 1.1, 7: 1.3, 8: 1.2, 9: 1.15}


# --------------------------------------------------------------------------- the look of one sample

@dataclass(frozen=True)
class Look:
    """How one sample is drawn (all lengths are fractions of the glyph's height)."""

    jitter: float  # control-point noise
    bend: float  # amplitude of a smooth displacement field: strokes curve slightly
    slant: float  # shear, degrees (positive leans right)
    rotation: float  # degrees
    aspect: float  # horizontal stretch
    width: float  # pen width
    gap: float  # probability that one stroke has a small gap
    ink: float  # weakest stroke intensity (each stroke is drawn between this and 1)


def random_look(rng: np.random.Generator, typeset_share: float = 0.3) -> Look:
    """A typeset-like (exact, uniform thick pen) or handwritten-like (wobbly, any pen) sample."""
    # Handwriting leans right: MNIST's median slant is about +8 degrees, its 10-90% range -12..+27.
    slant = float(np.clip(rng.normal(7.0, 9.0), -20.0, 20.0))
    rotation, aspect = rng.uniform(-8, 8), math.exp(rng.uniform(-0.35, 0.3))
    if rng.random() < typeset_share:
        return Look(0.0, 0.0, slant, rotation, aspect, rng.uniform(0.10, 0.18), 0.0, 1.0)
    # Most pens land 2-4 px wide in the 28x28 field (20 px tall) as in MNIST (measured on the sample:
    # these ranges give its stroke-width distribution); one in eight is a fine pen.
    width = rng.uniform(0.02, 0.08) if rng.random() < 0.125 else rng.uniform(0.10, 0.20)
    return Look(rng.uniform(0.005, 0.03), rng.uniform(0.0, 0.03), slant, rotation, aspect, width, 0.12,
                rng.uniform(0.65, 1.0))


def _cut_gap(stroke: Points, length: float, rng: np.random.Generator) -> list[Points]:
    """The stroke with a piece of ``length`` taken out of its middle part (a pen that skipped)."""
    d = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(stroke, axis=0).T))])
    if d[-1] < 4 * length:
        return [stroke]
    lo = rng.uniform(0.2 * d[-1], 0.8 * d[-1] - length)
    hi = lo + length

    def at(t: float) -> Points:
        return np.array([[np.interp(t, d, stroke[:, 0]), np.interp(t, d, stroke[:, 1])]])

    return [np.vstack([stroke[d < lo], at(lo)]), np.vstack([at(hi), stroke[d > hi]])]


def _with_gaps(glyph: Glyph, look: Look, rng: np.random.Generator) -> Glyph:
    if not glyph.strokes or rng.random() >= look.gap:
        return glyph
    i = int(rng.integers(len(glyph.strokes)))
    # Round caps reach half a pen width into the gap from each side: cut a pen width more than shows
    # (0.04-0.09 of the height shows: 1-2 px in the field).
    pieces = _cut_gap(glyph.strokes[i], look.width + rng.uniform(0.04, 0.09), rng)
    return Glyph(glyph.strokes[:i] + pieces + glyph.strokes[i + 1:], glyph.fills)


def _transform(points: Points, look: Look, rng: np.random.Generator) -> Points:
    """Bend (smooth displacement), stretch, slant and rotate all points of a glyph together."""
    if look.bend:
        freq, phase = rng.normal(0.0, 3.0, (2, 2)), rng.uniform(0, 2 * math.pi, 2)
        points = points + look.bend * np.sin(points @ freq.T + phase)
    shear, turn = math.tan(math.radians(look.slant)), math.radians(look.rotation)
    c, s = math.cos(turn), math.sin(turn)
    # y points down: x -= shear * y leans the top to the right for a positive slant.
    m = np.array([[c, s], [-s, c]]) @ np.array([[look.aspect, -shear], [0.0, 1.0]])
    return points @ m.T


# --------------------------------------------------------------------------- rendering

def _round_points(stroke: Points) -> Points:
    """Ends and sharp turns of a polyline: where a wide line needs a disc to look round."""
    v = np.diff(stroke, axis=0)
    norm = np.hypot(v[:, 0], v[:, 1])
    cos = (v[:-1] * v[1:]).sum(1) / np.maximum(norm[:-1] * norm[1:], 1e-12)
    return np.vstack([stroke[:1], stroke[1:-1][cos < ROUND_TURN], stroke[-1:]])


def _draw_stroke(draw: ImageDraw.ImageDraw, stroke: Points, width: float, value: int) -> None:
    keep = np.concatenate([[True], np.any(np.diff(stroke, axis=0) != 0, axis=1)])
    stroke = stroke[keep]
    r = width / 2
    if len(stroke) > 1:
        draw.line(stroke.ravel().tolist(), fill=value, width=max(1, round(width)))
        discs = _round_points(stroke)
    else:
        discs, r = stroke, 0.75 * width  # a dot: the pen pressed down, a little wider than its line
    if r >= 1.0:
        for x, y in discs.tolist():
            draw.ellipse((x - r, y - r, x + r, y + r), fill=value)


def _to_pixels(points: Points, pen_width: float, size: int) -> tuple[Points, float]:
    """Points scaled and centred so the glyph fills a ``size`` canvas; the pen width in pixels."""
    lo, hi = points.min(0), points.max(0)
    # Room for the pen around the points: half a width at a line's end, 0.75 of one around a dot.
    scale = (size - 4 * SUPERSAMPLE) / (float((hi - lo).max()) + 1.5 * pen_width)
    return (points - lo) * scale + (size - (hi - lo) * scale) / 2, pen_width * scale


def render(glyph: Glyph, look: Look, rng: np.random.Generator) -> np.ndarray:
    """float32 [CANVAS, CANVAS] white ink on black in [0, 1]: the glyph drawn to fill the canvas."""
    glyph = _with_gaps(glyph, look, rng)
    parts = glyph.strokes + glyph.fills
    size = CANVAS * SUPERSAMPLE
    points, width = _to_pixels(_transform(np.vstack(parts), look, rng), look.width, size)
    pieces = np.split(points, np.cumsum([len(p) for p in parts])[:-1])
    values = (255 * rng.uniform(look.ink, 1.0, len(parts))).astype(int).tolist()
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    n = len(glyph.strokes)
    for poly, value in zip(pieces[n:], values[n:]):
        draw.polygon(poly.ravel().tolist(), fill=value)
    for stroke, value in zip(pieces[:n], values[:n]):
        _draw_stroke(draw, stroke, width, value)
    return np.asarray(image.reduce(SUPERSAMPLE), np.float32) / 255.0


def to_field(ink: np.ndarray, spec: FieldSpec) -> np.ndarray:
    """uint8 [size, size] exactly as inference would see this ink."""
    return np.round(fit_to_field(ink, spec) * 255.0).astype(np.uint8)


def _widen(glyph: Glyph, factor: float) -> Glyph:
    stretch = np.array((factor, 1.0))
    return Glyph([p * stretch for p in glyph.strokes], [p * stretch for p in glyph.fills])


def render_digit(digit: int, style: str, rng: np.random.Generator, spec: FieldSpec = FieldSpec()) -> np.ndarray:
    """uint8 [size, size]: one ``digit`` in ``style`` (a name from ``DIGIT_STYLES[digit]``), freshly drawn."""
    look = random_look(rng)
    glyph = DIGIT_STYLE_FUNCTIONS[digit][style](Pen(rng, look.jitter))
    return to_field(render(_widen(glyph, DIGIT_WIDTH[digit]), look, rng), spec)


def stroke_digits(n: int, rng: np.random.Generator, spec: FieldSpec = FieldSpec()) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic digits: uint8 [n, size, size] (MNIST form) and int64 labels [n], balanced over 0-9."""
    labels = rng.permutation(np.arange(n, dtype=np.int64) % 10)
    images = np.empty((n, spec.size, spec.size), np.uint8)
    for i, digit in enumerate(labels.tolist()):
        styles = DIGIT_STYLES[digit]
        images[i] = render_digit(digit, styles[int(rng.integers(len(styles)))], rng, spec)
    return images, labels


# --------------------------------------------------------------------------- letters
# Only letters that no one would read as a digit: no O o Q D I l i j J S s Z z B b G g q T L U u.
# Capitals are 1 tall; small letters have their x-height from 0.45 to the baseline at 1, ascenders
# from 0 and descenders to 1.35, so a word's letters line up.

def _lines(pen: Pen, *polylines: tuple[tuple[float, float], ...]) -> Glyph:
    """Straight-stroke glyph; a point used twice (a joint) is jittered once so joints stay joined."""
    cache: dict[tuple[float, float], Points] = {}

    def p(xy: tuple[float, float]) -> Points:
        if xy not in cache:
            cache[xy] = pen.p(*xy)
        return cache[xy]

    return Glyph([line(*[p(xy) for xy in poly]) for poly in polylines])


def _cap_p_bowl(pen: Pen) -> tuple[Points, Points]:
    """The stem and bowl shared by P and R, and the point where the bowl meets the stem."""
    top, foot = pen.p(0, 0), pen.p(0, 1)
    bowl = chain(line(top, top + (0.3, 0)), pen.arc_from(top + (0.3, 0), 0.26, 0.26, 90, -90))
    join = np.array([top[0], bowl[-1, 1]])
    return chain(line(foot, top), bowl, line(bowl[-1], join)), join


def _cap_p(pen: Pen) -> Glyph:
    return Glyph([_cap_p_bowl(pen)[0]])


def _cap_r(pen: Pen) -> Glyph:
    stroke, join = _cap_p_bowl(pen)
    return Glyph([stroke, line(join + (0.25, 0), pen.p(0.62, 1))])


def _cap_c(pen: Pen) -> Glyph:
    return Glyph([pen.arc(0.4, 0.5, 0.4, 0.5, 50, 310)])


UPPER: dict[str, Callable[[Pen], Glyph]] = {
    "A": lambda pen: _lines(pen, ((0, 1), (0.35, 0), (0.7, 1)), ((0.13, 0.62), (0.57, 0.62))),
    "C": _cap_c,
    "E": lambda pen: _lines(pen, ((0.6, 0), (0, 0), (0, 1), (0.62, 1)), ((0, 0.5), (0.5, 0.5))),
    "F": lambda pen: _lines(pen, ((0.6, 0), (0, 0), (0, 1)), ((0, 0.48), (0.48, 0.48))),
    "H": lambda pen: _lines(pen, ((0, 0), (0, 1)), ((0.62, 0), (0.62, 1)), ((0, 0.5), (0.62, 0.5))),
    "K": lambda pen: _lines(pen, ((0, 0), (0, 1)), ((0.6, 0), (0, 0.58)), ((0.2, 0.42), (0.64, 1))),
    "M": lambda pen: _lines(pen, ((0, 1), (0.06, 0), (0.38, 0.62), (0.7, 0), (0.76, 1))),
    "N": lambda pen: _lines(pen, ((0, 1), (0, 0), (0.62, 1), (0.62, 0))),
    "P": _cap_p,
    "R": _cap_r,
    "V": lambda pen: _lines(pen, ((0, 0), (0.35, 1), (0.7, 0))),
    "W": lambda pen: _lines(pen, ((0, 0), (0.2, 1), (0.42, 0.3), (0.64, 1), (0.84, 0))),
    "X": lambda pen: _lines(pen, ((0, 0), (0.64, 1)), ((0.64, 0), (0, 1))),
    "Y": lambda pen: _lines(pen, ((0, 0), (0.35, 0.5), (0.7, 0)), ((0.35, 0.5), (0.35, 1))),
}


def _small_a(pen: Pen) -> Glyph:
    """Two-storey a (the one-storey form is too close to a small 9 or 0)."""
    hook = pen.arc(0.24, 0.6, 0.22, 0.14, 160, 0)
    stem = line(hook[-1], hook[-1] + (0, 0.4))
    return Glyph([chain(hook, stem), pen.arc_from(hook[-1] + (0, 0.2), 0.23, 0.15, 60, 330)])


def _small_arch(pen: Pen, x: float, top: float = 0.45) -> Points:
    """The arch of h, m, n, r: from the stem at x, over, and down to the baseline."""
    start = pen.p(x, top + 0.17)
    over = pen.arc_from(start, 0.2, 0.17, 180, 0)
    return chain(over, line(over[-1], pen.p(over[-1, 0], 1.0)))


def _small_h(pen: Pen) -> Glyph:
    return Glyph([line(pen.p(0, 0), pen.p(0, 1)), _small_arch(pen, 0)])


def _small_n(pen: Pen) -> Glyph:
    return Glyph([line(pen.p(0, 0.45), pen.p(0, 1)), _small_arch(pen, 0)])


def _small_m(pen: Pen) -> Glyph:
    return Glyph([line(pen.p(0, 0.45), pen.p(0, 1)), _small_arch(pen, 0), _small_arch(pen, 0.4)])


def _small_r(pen: Pen) -> Glyph:
    return Glyph([line(pen.p(0, 0.45), pen.p(0, 1)), pen.arc_from(pen.p(0, 0.62), 0.22, 0.17, 180, 45)])


def _small_c(pen: Pen) -> Glyph:
    return Glyph([pen.arc(0.26, 0.725, 0.26, 0.275, 45, 315)])


def _small_e(pen: Pen) -> Glyph:
    bar = line(pen.p(0.02, 0.71), pen.p(0.5, 0.71))
    return Glyph([chain(bar, pen.arc_from(bar[-1], 0.25, 0.27, 0, 320))])


def _small_f(pen: Pen) -> Glyph:
    hook = pen.arc(0.32, 0.14, 0.16, 0.14, 30, 180)
    return Glyph([chain(hook, line(hook[-1], pen.p(0.16, 1))), line(pen.p(0.0, 0.45), pen.p(0.4, 0.45))])


def _small_p(pen: Pen) -> Glyph:
    return Glyph([line(pen.p(0, 0.45), pen.p(0, 1.35)), pen.arc_from(pen.p(0, 0.6), 0.25, 0.27, 170, 530)])


def _small_t(pen: Pen) -> Glyph:
    stem = line(pen.p(0.16, 0.1), pen.p(0.16, 0.88))
    return Glyph([chain(stem, quad(stem[-1], stem[-1] + (0, 0.12), pen.p(0.42, 0.96))),
                  line(pen.p(0.0, 0.45), pen.p(0.42, 0.45))])


def _small_y(pen: Pen) -> Glyph:
    bend = pen.p(0.2, 1.25)
    tail = chain(line(pen.p(0.52, 0.45), bend), quad(bend, pen.p(0.14, 1.37), pen.p(0.02, 1.33)))
    return Glyph([line(pen.p(0, 0.45), pen.p(0.25, 1.0)), tail])


LOWER: dict[str, Callable[[Pen], Glyph]] = {
    "a": _small_a, "c": _small_c, "e": _small_e, "f": _small_f, "h": _small_h, "m": _small_m, "n": _small_n,
    "p": _small_p, "r": _small_r, "t": _small_t, "y": _small_y,
    "k": lambda pen: _lines(pen, ((0, 0), (0, 1)), ((0.45, 0.45), (0, 0.78)), ((0.16, 0.67), (0.48, 1))),
    "v": lambda pen: _lines(pen, ((0, 0.45), (0.26, 1), (0.52, 0.45))),
    "w": lambda pen: _lines(pen, ((0, 0.45), (0.16, 1), (0.34, 0.62), (0.52, 1), (0.68, 0.45))),
    "x": lambda pen: _lines(pen, ((0, 0.45), (0.5, 1)), ((0.5, 0.45), (0, 1))),
}


def _shift(glyph: Glyph, dx: float, dy: float = 0.0) -> Glyph:
    d = np.array((dx, dy))
    return Glyph([s + d for s in glyph.strokes], [f + d for f in glyph.fills])


def _letter(rng: np.random.Generator, pen: Pen) -> Glyph:
    table = UPPER if rng.random() < 0.5 else LOWER
    return table[list(table)[int(rng.integers(len(table)))]](pen)


def _word(rng: np.random.Generator, pen: Pen) -> Glyph:
    """2-5 letters side by side, touching or overlapping a little: a word arrives as one blob."""
    table = UPPER if rng.random() < 0.3 else LOWER
    names = list(table)
    strokes: list[Points] = []
    x = 0.0
    for i in rng.integers(len(names), size=int(rng.integers(2, 6))).tolist():
        letter = table[names[i]](pen)
        left, right = (f(np.vstack(letter.strokes)[:, 0]) for f in (np.min, np.max))
        strokes += _shift(letter, x - left).strokes
        x += right - left + rng.uniform(-0.06, 0.08)
    return Glyph(strokes)


# --------------------------------------------------------------------------- shapes and symbols
# No ring (a circle or oval alone is a 0) and no lone upright stroke (a 1).

def _closed(pen: Pen, *corners: tuple[float, float]) -> Glyph:
    return _lines(pen, corners + corners[:1])


def _dot(pen: Pen, x: float, y: float) -> Points:
    return pen.p(x, y)[None]


def _star(pen: Pen) -> Glyph:
    a = np.radians(90 + 36 * np.arange(11))
    r = np.where(np.arange(11) % 2 == 0, 0.5, pen.s(0.2))
    return Glyph([line(*np.column_stack([0.5 + r * np.cos(a), 0.5 - r * np.sin(a)]), n=2)])


def _heart(pen: Pen) -> Glyph:
    tip, dip = pen.p(0.5, 1), pen.p(0.5, 0.25)
    return Glyph([chain(cubic(tip, pen.p(-0.1, 0.55), pen.p(0.05, -0.15), dip),
                        cubic(dip, pen.p(0.95, -0.15), pen.p(1.1, 0.55), tip))])


def _arrow(pen: Pen) -> Glyph:
    """Pointing left, right or diagonally; never straight up or down (that reads as a 1)."""
    glyph = _lines(pen, ((0, 0.5), (1, 0.5)), ((0.72, 0.25), (1, 0.5), (0.72, 0.75)))
    angle = math.radians(float(pen.rng.choice([0, 180, 40, 140, -40, -140])))
    c, s = math.cos(angle), math.sin(angle)
    m = np.array([[c, s], [-s, c]])
    return Glyph([(p - 0.5) @ m.T + 0.5 for p in glyph.strokes])


def _percent(pen: Pen) -> Glyph:
    return Glyph([line(pen.p(0.85, 0), pen.p(0.15, 1)),
                  pen.arc(0.2, 0.2, 0.14, 0.18, 90, 450), pen.arc(0.8, 0.8, 0.14, 0.18, 90, 450)])


def _at(pen: Pen) -> Glyph:
    inner = pen.arc(0.47, 0.52, 0.17, 0.2, 30, 390)
    stem = line(pen.p(0.66, 0.3), pen.p(0.66, 0.66))
    outer = chain(quad(stem[-1], pen.p(0.74, 0.8), pen.p(0.9, 0.6)), pen.arc(0.5, 0.5, 0.45, 0.48, 10, 300))
    return Glyph([inner, chain(stem, outer)])


def _ampersand(pen: Pen) -> Glyph:
    return Glyph([spline(*(pen.p(x, y) for x, y in ((0.85, 1), (0.3, 0.42), (0.28, 0.12), (0.45, 0.02),
                                                     (0.6, 0.15), (0.5, 0.35), (0.08, 0.65), (0.15, 0.95),
                                                     (0.5, 0.96), (0.82, 0.6))))])


def _dollar(pen: Pen) -> Glyph:
    s = spline(*(pen.p(x, y) for x, y in ((0.85, 0.15), (0.5, 0.03), (0.15, 0.2), (0.3, 0.45), (0.7, 0.55),
                                          (0.85, 0.8), (0.5, 0.97), (0.12, 0.85))))
    return Glyph([s, line(pen.p(0.5, -0.12), pen.p(0.5, 1.12))])


def _question(pen: Pen) -> Glyph:
    hook = spline(*(pen.p(x, y) for x, y in ((0.08, 0.25), (0.45, 0.0), (0.85, 0.2), (0.5, 0.48), (0.48, 0.72))))
    return Glyph([hook, _dot(pen, 0.48, 0.95)])


def _asterisk(pen: Pen) -> Glyph:
    a = np.radians(np.arange(3) * 60 + pen.s(0, 300))
    dx, dy = 0.5 * np.cos(a), 0.5 * np.sin(a)
    return Glyph([line(pen.p(0.5 - x, 0.5 - y), pen.p(0.5 + x, 0.5 + y)) for x, y in zip(dx, dy)])


def _smiley(pen: Pen) -> Glyph:
    return Glyph([pen.arc(0.5, 0.5, 0.5, 0.5, 90, 450), _dot(pen, 0.33, 0.35), _dot(pen, 0.67, 0.35),
                  pen.arc(0.5, 0.5, 0.3, 0.28, 200, 340)])


def _spiral(pen: Pen) -> Glyph:
    a = np.radians(np.arange(0, pen.s(2.5, 10) * 360, 10))
    r = 0.05 + 0.45 * a / a[-1]
    return Glyph([np.column_stack([0.5 + r * np.cos(a), 0.5 - r * np.sin(a)])])


def _wave(pen: Pen, periods: float, amplitude: float) -> Glyph:
    x = np.linspace(0.0, 1.0, 9 * max(2, math.ceil(periods)))
    phase = pen.s(0.0, 10)
    return Glyph([np.column_stack([x, 0.5 + amplitude * np.sin(2 * math.pi * periods * x + phase)])])


def _check(pen: Pen) -> Glyph:
    knee = pen.p(0.32, 1)
    return Glyph([chain(line(pen.p(0, 0.62), knee), quad(knee, pen.p(0.55, 0.45), pen.p(1, 0)))])


SHAPES: dict[str, Callable[[Pen], Glyph]] = {
    "triangle": lambda pen: _closed(pen, (0.5, 0), (1, 0.9), (0, 0.9)),
    "square": lambda pen: _closed(pen, (0, 0), (1, 0), (1, 1), (0, 1)),
    "rectangle": lambda pen: _closed(pen, (0, 0.2), (1, 0.2), (1, 0.75), (0, 0.75)),
    "diamond": lambda pen: _closed(pen, (0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)),
    "star": _star,
    "heart": _heart,
    "arrow": _arrow,
    "plus": lambda pen: _lines(pen, ((0, 0.5), (1, 0.5)), ((0.5, 0), (0.5, 1))),
    "cross": lambda pen: _lines(pen, ((0, 0), (1, 1)), ((1, 0), (0, 1))),
    "hash": lambda pen: _lines(pen, ((0.35, 0), (0.2, 1)), ((0.8, 0), (0.65, 1)), ((0, 0.33), (1, 0.33)),
                               ((0, 0.67), (1, 0.67))),
    "percent": _percent,
    "at": _at,
    "ampersand": _ampersand,
    "dollar": _dollar,
    "question": _question,
    "exclamation": lambda pen: Glyph([line(pen.p(0.5, 0), pen.p(0.5, 0.7)), _dot(pen, 0.5, 0.95)]),
    "equals": lambda pen: _lines(pen, ((0, 0.35), (1, 0.35)), ((0, 0.65), (1, 0.65))),
    "tilde": lambda pen: _wave(pen, 1.0, 0.15),
    "asterisk": _asterisk,
    "check": _check,
    "smiley": _smiley,
    "spiral": _spiral,
    "wavy_line": lambda pen: _wave(pen, float(pen.rng.uniform(2, 4)), float(pen.rng.uniform(0.05, 0.15))),
    "dash": lambda pen: _lines(pen, ((0, 0.5), (0.3, 0.5))),
    "long_line": lambda pen: _lines(pen, ((0, 0.5), (1, 0.5))),
}


def _shape(rng: np.random.Generator, pen: Pen) -> Glyph:
    return SHAPES[list(SHAPES)[int(rng.integers(len(SHAPES)))]](pen)


# --------------------------------------------------------------------------- blobs, scribbles, noise

def _blob(rng: np.random.Generator, pen: Pen) -> Glyph:
    """A filled irregular blob, one dot (scaled up, a filled disc) or a few dots."""
    kind = rng.integers(3)
    if kind < 2:  # a pressed dot is never a perfect disc: a little wobble, where a blob has a lot
        a = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        k = np.arange(2, 5)[:, None]
        wobble = rng.uniform(0, 0.12 if kind == 0 else 0.025, (3, 1))
        r = 0.5 + (wobble * np.cos(k * a + rng.uniform(0, 6.3, (3, 1)))).sum(0)
        return Glyph([], [np.column_stack([0.5 + r * np.cos(a), 0.5 + r * np.sin(a)])])
    return Glyph([rng.uniform(0, 1, (1, 2)) for _ in range(int(rng.integers(2, 6)))])


def _scribble(rng: np.random.Generator, pen: Pen) -> Glyph:
    """A zig-zag, a tangle of curves, or hatching."""
    kind = rng.integers(3)
    if kind == 0:
        k = int(rng.integers(5, 11))
        x = np.sort(rng.uniform(0, 1, k))
        y = np.where(np.arange(k) % 2 == 0, rng.uniform(0, 0.35, k), rng.uniform(0.65, 1, k))
        corners = np.column_stack([x, y])
        return Glyph([spline(*corners, k=4) if rng.random() < 0.5 else line(*corners)])
    if kind == 1:
        return Glyph([spline(*rng.uniform(0, 1, (int(rng.integers(8, 16)), 2)))])
    return _hatching(rng)


def _hatching(rng: np.random.Generator) -> Glyph:
    strokes = []
    for angle in rng.uniform(0, 180, int(rng.integers(1, 3))):
        a = math.radians(angle)
        d, n = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
        for off in np.linspace(-0.4, 0.4, int(rng.integers(4, 9))):
            strokes.append(line(0.5 + off * n - 0.45 * d, 0.5 + off * n + 0.45 * d, n=3))
    return Glyph(strokes)


def _dense(rng: np.random.Generator, pen: Pen) -> Glyph:
    """Many random straight and curved strokes over one another."""
    strokes = []
    for _ in range(int(rng.integers(8, 25))):
        p = rng.uniform(0, 1, (3, 2))
        strokes.append(quad(*p) if rng.random() < 0.5 else line(p[0], p[1], n=2))
    return Glyph(strokes)


def _fragments(rng: np.random.Generator, pen: Pen) -> Glyph:
    """1-3 pieces of stroke: arcs opening up or down, and segments within 30 degrees of flat.

    A steeper lone segment, slanted and rotated by the look, reads as a 1; pieces stacked one above
    the other can compose a 2 or a 7, so they run left to right like a broken line of writing.
    """
    strokes = []
    for i in range(int(rng.integers(1, 4))):
        centre = np.array([0.8 * i + rng.uniform(-0.1, 0.1), rng.uniform(0.4, 0.6)])
        if rng.random() < 0.5:
            mid = float(rng.choice([90.0, 270.0])) + rng.uniform(-40, 40)
            half = rng.uniform(35, 80)
            r = rng.uniform(0.15, 0.4)
            strokes.append(arc(centre, r, r * rng.uniform(0.6, 1.2), mid - half, mid + half))
        else:
            a, half = math.radians(rng.uniform(-30, 30)), rng.uniform(0.1, 0.35)
            d = half * np.array([math.cos(a), math.sin(a)])
            strokes.append(line(centre - d, centre + d, n=3))
    return Glyph(strokes)


def _noise_patch(rng: np.random.Generator) -> np.ndarray:
    """float32 [CANVAS, CANVAS]: a rectangle or disc of pixel noise, fine-grained or blotchy.

    Never much taller than wide: a tall narrow patch is the silhouette of a 1 drawn with a marker.
    """
    h = int(rng.integers(CANVAS // 4, CANVAS))
    w = int(rng.integers(max(CANVAS // 4, round(0.6 * h)), CANVAS))
    grain = int(rng.integers(3, 40))
    noise = Image.fromarray(rng.random((grain, grain), np.float32)).resize((w, h), Image.Resampling.BILINEAR)
    patch = np.asarray(noise) ** rng.uniform(0.5, 3.0)
    if rng.random() < 0.5:
        rows, cols = np.ogrid[-1:1:h * 1j, -1:1:w * 1j]
        patch = patch * (rows ** 2 + cols ** 2 <= 1)
    ink = np.zeros((CANVAS, CANVAS), np.float32)
    top, left = (CANVAS - h) // 2, (CANVAS - w) // 2
    ink[top:top + h, left:left + w] = patch
    return ink


NonDigitMaker = Callable[[np.random.Generator, Pen], Glyph]
# Noise has no strokes: it is made as pixels (_noise_patch), so it has no maker here.
NON_DIGIT_MAKERS: dict[str, NonDigitMaker | None] = {
    "letter": _letter, "word": _word, "shape": _shape, "blob": _blob, "scribble": _scribble,
    "dense": _dense, "noise": None, "fragment": _fragments,
}
NON_DIGIT_KINDS: tuple[str, ...] = tuple(NON_DIGIT_MAKERS)


def render_non_digit(kind: str, rng: np.random.Generator, spec: FieldSpec = FieldSpec()) -> np.ndarray:
    """uint8 [size, size]: one freshly drawn non-digit of ``kind`` (a name from ``NON_DIGIT_KINDS``)."""
    maker = NON_DIGIT_MAKERS[kind]
    if maker is None:
        return to_field(_noise_patch(rng), spec)
    look = random_look(rng)
    if kind == "dense":  # many strokes in one box: a broad pen would make a solid blot
        look = dataclasses.replace(look, width=look.width / 3, gap=0.0)
    return to_field(render(maker(rng, Pen(rng, look.jitter)), look, rng), spec)


def non_digits(n: int, rng: np.random.Generator, spec: FieldSpec = FieldSpec()) -> np.ndarray:
    """``n`` images of things that are not digits, uint8 [n, size, size], the kinds in equal shares."""
    kinds = rng.permutation(np.arange(n) % len(NON_DIGIT_KINDS))
    images = np.empty((n, spec.size, spec.size), np.uint8)
    for i, k in enumerate(kinds.tolist()):
        images[i] = render_non_digit(NON_DIGIT_KINDS[k], rng, spec)
    return images
