"""A sheet lying whole on a desk: a sticky note, an index card, a small page in a wide shot.

Where the desk takes much of the frame, the local background of serve/image/ink.py is the desk's,
and the sheet itself stands out from it as one huge "stroke" (a light sheet on a dark desk), or its
edges cut the digit off from the frame. So the sheet is looked for first, on the low copy: the
largest bright region, taken with all it encloses (its convex hull: ink, a shadow's bite), that is
of a sheet's size and shape (a quadrilateral, seen in perspective), mostly paper, clearly brighter
than what surrounds it across a sharp edge, and inside the frame. A sheet running off the frame (the
usual photo of a page, a desk at one or two edges) is left to the general rule, which handles it.
"""
from __future__ import annotations

import itertools

import numpy as np
from PIL import Image, ImageDraw

from serve.image.morph import LUMA, border, box_mean, label

SHEET_AREA = (0.03, 0.9)  # of the frame, the sheet with its ink
ON_FRAME = 0.02  # the sheet touches at most this share of the frame's border (a corner cut off) ...
ON_ONE_SIDE = 0.3  # ... or, on a far darker desk, this much (it runs off one side of the frame) ...
DARK_DESK = 0.55  # ... "far darker": at most this fraction of the sheet's brightness
RECTANGLE_FILL = 0.88  # ... its convex hull fills this much of the smallest rectangle around it, at any
# angle (a sheet in perspective does; an ellipse fills pi/4 = 0.79: a fat light 0 on a dark canvas is no sheet) ...
CUT_RECTANGLE_FILL = 0.84  # ... (0.84 for one the frame cuts: a turned quadrilateral cut off is a pentagon) ...
QUADRILATERAL_FILL = 0.95  # ... or, inside the frame, a quadrilateral on four of its corners covers this much of it (a
# note in steep perspective, a trapezoid, fills 0.86 of a rectangle; the largest in an ellipse covers 2/pi = 0.64) ...
ASPECT = 3.0  # ... is at most this elongated (a bright band of light on a page is a strip) ...
PAPER_FILL = 0.7  # ... and is at least this much paper, the rest its ink and shadows ...
STEP = 0.12  # ... and is brighter than the desk by at least this much (grey levels, 0-1) ...
HUE_STEP = 0.06  # ... or brighter and this far from the desk's chromaticity (an orange note in shade on a grey desk)
HUE = 0.03  # chromaticity (r, g, b over their sum): the sheet's shaded part is within this of its lit part ...
SHADES = (0.45, 0.6)  # ... and at least this fraction of its brightness: the first that gives a sheet (a
# shadow across a card on a desk of its hue: at 0.45 the shade spills onto the desk's lit parts)
EDGE_RINGS = ((1, 3), (5, 8))  # px of the low copy outside the sheet: just past its edge, and further out
SHARP = 0.75  # the step to just past the edge is at least this much of the step to further out
RIM = 2  # px of the low copy: the sheet's edge, blurred, and its convex hull's overreach


def find_sheet(low: np.ndarray) -> np.ndarray | None:
    """bool, ``low``'s [h, w]: the sheet lying on a desk in ``low`` (float RGB, a shrunk frame), with its
    ink; None when there is no such sheet. The sheet is brighter than the desk: the brighter of two
    classes of grey level, or (a light desk) of the brighter class split again."""
    level = low @ LUMA
    threshold = otsu_threshold(level)
    for _ in range(2):
        sheet = sheet_above(low, level, threshold)
        if sheet is not None:
            return sheet
        threshold = otsu_threshold(level[level > threshold])
    return None


def sheet_above(low: np.ndarray, level: np.ndarray, threshold: float) -> np.ndarray | None:
    """The sheet whose lit part is the largest region brighter than ``threshold``, or None: that region
    with its parts in shadow (those of its hue joined to it: shade changes a sheet's brightness, not
    its hue), or, when that spills onto a desk of the same hue, the lit region alone."""
    regions, count = label(opened(level > threshold))
    if count == 0:
        return None
    sizes = np.bincount(regions.ravel(), minlength=count + 1)
    sizes[0] = 0
    lit = regions == int(sizes.argmax())
    chroma = chromaticity(low)
    for paper in itertools.chain((with_its_shade(chroma, level, lit, shade) for shade in SHADES), [lit]):
        hull = convex_hull(pixel_corners(paper))
        sheet = polygon_mask(hull, paper.shape)
        if is_sheet(chroma, level, paper, sheet, hull):
            return sheet
    return None


def is_sheet(chroma: np.ndarray, level: np.ndarray, paper: np.ndarray, sheet: np.ndarray, hull: np.ndarray) -> bool:
    """Whether ``paper`` in its convex ``hull`` (``sheet``, as a mask) looks like a sheet on a desk. It
    may run off one side of the frame when the desk is far darker: the lit part of a page half in
    shadow runs off the frame too, but a shadow takes less than half the light (its hue is no guide:
    a shadow on coloured paper shifts it)."""
    on_frame = float(border(sheet).mean())
    if not SHEET_AREA[0] <= float(sheet.mean()) <= SHEET_AREA[1] or on_frame > ON_ONE_SIDE:
        return False
    inside, outside = float(np.median(level[paper])), float(np.median(level[~sheet]))
    if on_frame > ON_FRAME and outside > DARK_DESK * inside:
        return False
    rectangle, aspect = smallest_rectangle(hull)
    area = polygon_area(hull)
    if on_frame <= ON_FRAME:
        shaped = area >= RECTANGLE_FILL * rectangle or largest_quadrilateral(hull) >= QUADRILATERAL_FILL * area
    else:
        shaped = area >= CUT_RECTANGLE_FILL * rectangle
    if not shaped or aspect > ASPECT or paper.sum() < PAPER_FILL * sheet.sum():
        return False
    if inside - outside < STEP and not (inside > outside and hue_step(chroma, paper, sheet) >= HUE_STEP):
        return False
    # a sheet's edge is sharp: a little way out the desk is as dark as further out; the edge of the
    # light on a page (a shadow's, a bright band's) is a gradual step, still half lit there
    near, far = (ring(sheet, reach) for reach in EDGE_RINGS)
    if not near.any() or not far.any():
        return False
    return inside - float(np.median(level[near])) >= SHARP * (inside - float(np.median(level[far])))


def hue_step(chroma: np.ndarray, paper: np.ndarray, sheet: np.ndarray) -> float:
    """How far the paper's chromaticity (median of ``chroma``) is from that of what lies outside the ``sheet``."""
    return float(np.abs(np.median(chroma[paper], axis=0) - np.median(chroma[~sheet], axis=0)).max())


def ring(mask: np.ndarray, reach: tuple[int, int]) -> np.ndarray:
    """The pixels outside ``mask`` between reach[0] and reach[1] px (square distance) from it."""
    grown = [box_mean(mask.astype(np.float32), r) > 0 for r in reach]
    return grown[1] & ~grown[0]


def chromaticity(low: np.ndarray) -> np.ndarray:
    """r, g, b over their sum: a colour's hue and saturation, whatever its brightness."""
    return low / np.maximum(low.sum(axis=2, keepdims=True), 1e-3)


def with_its_shade(chroma: np.ndarray, level: np.ndarray, lit: np.ndarray, shade: float) -> np.ndarray:
    """``lit`` and the region joined to it of its hue (``chroma``, the chromaticity, within HUE of its
    median) and at least ``shade`` of its brightness."""
    alike = np.abs(chroma - np.median(chroma[lit], axis=0)).max(axis=2) < HUE
    alike &= level >= shade * float(np.median(level[lit]))
    regions, _ = label(opened(alike | lit))
    ids = np.unique(regions[lit])
    return np.isin(regions, ids[ids > 0]) | lit


def opened(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """``mask`` opened by a (2r+1)-square: a bright streak of the desk no longer ties to the sheet."""
    return box_mean(eroded(mask, radius).astype(np.float32), radius) > 0


def pixel_corners(mask: np.ndarray) -> np.ndarray:
    """float [n, 2] (x, y): the corners of the outermost pixels of each row of ``mask``, all that its
    convex hull can use."""
    rows = np.flatnonzero(mask.any(axis=1))
    ys = np.concatenate([rows, rows])
    xs = np.concatenate([mask[rows].argmax(axis=1), mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)])
    return np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)]).astype(np.float64)


def polygon_mask(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    image = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(image).polygon([(x - 0.5, y - 0.5) for x, y in polygon.tolist()], fill=255)  # corners to centres
    return np.asarray(image) > 0


def polygon_area(polygon: np.ndarray) -> float:
    return float(polygon_areas(polygon))


def polygon_areas(polygons: np.ndarray) -> np.ndarray:
    """The areas of polygons [..., k, 2] (the shoelace formula)."""
    x, y = polygons[..., 0], polygons[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=-1) - y * np.roll(x, -1, axis=-1)).sum(axis=-1))


def smallest_rectangle(polygon: np.ndarray) -> tuple[float, float]:
    """The smallest rectangle, at any angle, around a convex ``polygon`` [k, 2] (one of its sides lies
    along an edge of the polygon): its area and its longer side over its shorter."""
    edges = np.roll(polygon, -1, axis=0) - polygon
    angles = np.arctan2(edges[:, 1], edges[:, 0])
    along = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # [k, 2]
    across = np.stack([-along[:, 1], along[:, 0]], axis=1)
    u, v = polygon @ along.T, polygon @ across.T  # [k, k]: the points in each edge's frame
    sides = np.stack([u.max(0) - u.min(0), v.max(0) - v.min(0)])
    best = int((sides[0] * sides[1]).argmin())
    long, short = float(sides[:, best].max()), float(sides[:, best].min())
    return long * short, long / max(short, 1e-9)


def largest_quadrilateral(hull: np.ndarray, directions: int = 16) -> float:
    """The area of the largest quadrilateral whose corners are among the points of the convex ``hull``
    (counterclockwise) that lie furthest out in ``directions`` evenly spaced directions: a sheet's
    corners are among those, whatever its perspective."""
    angles = np.linspace(0.0, 2 * np.pi, directions, endpoint=False)
    extreme = np.unique((hull @ np.stack([np.cos(angles), np.sin(angles)])).argmax(axis=0))  # in hull order
    if len(extreme) < 4:
        return 0.0
    corners = hull[np.array(list(itertools.combinations(extreme.tolist(), 4)))]  # [C, 4, 2], each convex
    return float(polygon_areas(corners).max())


def convex_hull(points: np.ndarray) -> np.ndarray:
    """The convex hull of ``points`` [n, 2], counterclockwise, without repeated points (Andrew's
    monotone chain)."""
    ordered = [tuple(p) for p in np.unique(points, axis=0).tolist()]  # by x, then y
    if len(ordered) < 3:
        return np.array(ordered, np.float64).reshape(-1, 2)

    def half(chain_of: list[tuple[float, float]]) -> list[tuple[float, float]]:
        chain: list[tuple[float, float]] = []
        for x, y in chain_of:
            while len(chain) >= 2 and ((chain[-1][0] - chain[-2][0]) * (y - chain[-2][1])
                                       - (chain[-1][1] - chain[-2][1]) * (x - chain[-2][0])) <= 0:
                chain.pop()
            chain.append((x, y))
        return chain[:-1]

    return np.array(half(ordered) + half(ordered[::-1]), np.float64)


def sheet_interior(sheet: np.ndarray) -> np.ndarray:
    """The sheet without its rim (RIM px of the low copy), where its edge against the desk still shows."""
    return eroded(sheet, RIM)


def eroded(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` eroded by a (2r+1)-square."""
    return box_mean(mask.astype(np.float32), radius) > 1.0 - 1e-6


def otsu_threshold(level: np.ndarray, bins: int = 64) -> float:
    """The grey level that best splits ``level`` into two classes (Otsu's method)."""
    counts, edges = np.histogram(level, bins=bins, range=(0.0, 1.0))
    p = counts / max(1, counts.sum())
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(p)
    mean = np.cumsum(p * centres)
    between = (mean[-1] * weight - mean) ** 2 / np.maximum(weight * (1 - weight), 1e-12)
    return float(edges[int(between[:-1].argmax()) + 1])
