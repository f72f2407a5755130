"""Small numpy building blocks for the image steps: boxes, window means, run filters, connected components."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 grey from RGB
BLOB_FILL, BLOB_ASPECT = 0.6, 1.6  # a mark with no hole filling this much of its box, at most this far from
# square, is a blob (a punched hole, a stain, a pen's blot), not strokes: a digit's strokes fill far less
BLOB_CORE, BLOB_CORE_FILL = 0.9, 0.75  # or its core (thin bits stuck to it set aside) holds this much of its
# ink and fills this much of its own box (a disc fills 0.79, a punched hole in a photo 0.82 or more)


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


def border(a: np.ndarray) -> np.ndarray:
    """The values along the edge of the frame ``a``, each pixel once."""
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def integral(a: np.ndarray) -> np.ndarray:
    """The summed-area table of ``a``: float64 [H+1, W+1], s[y, x] the sum of a[:y, :x]."""
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1), np.float64)
    s[1:, 1:] = np.cumsum(np.cumsum(a, axis=0), axis=1)
    return s


def window_sums_at(s: np.ndarray, ys: np.ndarray, xs: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums over the (2r+1)^2 windows around pixels (``ys``, ``xs``) from summed-area table ``s``
    (windows clipped at the edges), and each window's area."""
    h, w = s.shape[0] - 1, s.shape[1] - 1
    y0, y1 = np.clip(ys - radius, 0, h), np.clip(ys + radius + 1, 0, h)
    x0, x1 = np.clip(xs - radius, 0, w), np.clip(xs + radius + 1, 0, w)
    return s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0], (y1 - y0) * (x1 - x0)


def box_mean(a: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1)^2 window around each pixel, windows clipped at the edges (integral image)."""
    h, w = a.shape
    s = integral(a)
    y0 = np.clip(np.arange(h) - radius, 0, h)
    y1 = np.clip(np.arange(h) + radius + 1, 0, h)
    x0 = np.clip(np.arange(w) - radius, 0, w)
    x1 = np.clip(np.arange(w) + radius + 1, 0, w)
    total = s[y1][:, x1] - s[y0][:, x1] - s[y1][:, x0] + s[y0][:, x0]
    area = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    return (total / area).astype(np.float32)


def window_extreme(a: np.ndarray, radius: int, largest: bool) -> np.ndarray:
    """The largest (or smallest) value over the (2r+1)^2 window around each pixel, the frame's edge
    repeated beyond it: a max (min) filter, separable, each axis by doubling windows (log r passes)."""
    op = np.maximum if largest else np.minimum
    size = 2 * radius + 1
    out = a
    for _ in range(2):  # down the columns, then (transposed) along the rows
        acc = np.pad(out, ((radius, radius), (0, 0)), mode="edge")
        span = 1
        while 2 * span <= size:  # acc[i] holds the extreme of the padded rows i .. i + span - 1
            acc = op(acc[:-span], acc[span:])
            span *= 2
        out = op(acc[:len(out)], acc[size - span:size - span + len(out)]).T
    return out


def closed(a: np.ndarray, radius: int, dark_marks: bool = True) -> np.ndarray:
    """A grey closing (an opening for light marks): marks narrower than 2r+1 lifted off their
    ground, while a step in the ground (a shadow's edge) stays where it is, unblurred."""
    return window_extreme(window_extreme(a, radius, dark_marks), radius, not dark_marks)


def regrown(closing: np.ndarray, a: np.ndarray, steps: int, dark_marks: bool = True) -> np.ndarray:
    """``closing`` (closed(a)) lowered back towards ``a`` from the ground it kept: each step, a pixel
    takes the darkest of its 3x3 neighbours, never darker than ``a`` (lighter, for light marks): a
    geodesic reconstruction, bounded to ``steps`` px. A closing fills the narrow tip of a dark region's
    corner (a shadow's) with the light around it; regrown, the tip is the region's again. The bound
    keeps a stroke as dark as the region it touches from fading into it beyond ``steps`` px."""
    out = closing
    for _ in range(steps):
        grown_back = window_extreme(out, 1, largest=not dark_marks)
        grown_back = np.maximum(grown_back, a) if dark_marks else np.minimum(grown_back, a)
        if np.array_equal(grown_back, out):
            break
        out = grown_back
    return out


def resize_channels(rgb: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize a float [H, W, C] array channel by channel to ``size`` (width, height)."""
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., c]), mode="F").resize(size, resample),
                                np.float32) for c in range(rgb.shape[2])], axis=2)


def runs_at_least(mask: np.ndarray, length: int, fill: float = 1.0) -> np.ndarray:
    """Pixels of horizontal runs at least ``length`` long (a 1 x length opening); ``fill`` < 1 lets a
    run have small gaps (that fraction of each window must be set)."""
    h, w = mask.shape
    if length > w:
        return np.zeros_like(mask)
    s = np.zeros((h, w + 1), np.int32)
    s[:, 1:] = np.cumsum(mask, axis=1)
    starts = (s[:, length:] - s[:, :-length]) >= int(np.ceil(fill * length))  # window [x, x+length)
    # dilate back: a pixel is covered if any window containing it qualified
    c = np.zeros((h, w - length + 2), np.int32)
    c[:, 1:] = np.cumsum(starts, axis=1)
    x = np.arange(w)
    lo, hi = np.clip(x - length + 1, 0, w - length + 1), np.clip(x + 1, 0, w - length + 1)
    return ((c[:, hi] - c[:, lo]) > 0) & mask


def extents(labels: np.ndarray, count: int) -> np.ndarray:
    """Each component's top, bottom, left and right (inclusive) and area: int64 [count + 1, 5], row k for
    label k (row 0 unused)."""
    ys, xs = np.nonzero(labels)
    own = labels[ys, xs]
    out = np.zeros((count + 1, 5), np.int64)
    out[:, 0], out[:, 2] = labels.shape[0], labels.shape[1]
    np.minimum.at(out[:, 0], own, ys)
    np.maximum.at(out[:, 1], own, ys)
    np.minimum.at(out[:, 2], own, xs)
    np.maximum.at(out[:, 3], own, xs)
    out[:, 4] = np.bincount(own, minlength=count + 1)
    return out


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean mask: int32 labels (0 background, 1..n) and n.

    Every pair of touching pixels is joined (``joined``, a vectorized union-find).
    """
    h, w = mask.shape
    ids = np.flatnonzero(mask)
    n = len(ids)
    if n == 0:
        return np.zeros(mask.shape, np.int32), 0
    index = np.full(h * w, -1, np.int64)
    index[ids] = np.arange(n)
    sources, targets = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        ys, xs = np.nonzero(mask[:h - dy, max(0, -dx):w - max(0, dx)]
                            & mask[dy:, max(0, dx):w - max(0, -dx) if dx < 0 else w][:, :w - abs(dx)])
        x0 = xs + max(0, -dx)
        sources.append(index[ys * w + x0])
        targets.append(index[(ys + dy) * w + x0 + dx])
    compact = joined(n, np.concatenate(sources), np.concatenate(targets))
    labels = np.zeros(h * w, np.int32)
    labels[ids] = compact + 1
    return labels.reshape(h, w), int(compact.max()) + 1


def joined(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The group of each of ``n`` items that the pairs (``src[i]``, ``dst[i]``) join, directly or
    through others: int64 [n], groups numbered from 0 in the order of their smallest item.

    Vectorized union-find: every pair hooks the larger root onto the smaller, then pointer jumping
    flattens the trees; a few rounds suffice even for long chains."""
    parent = np.arange(n)
    while len(src):
        ps, pd = parent[src], parent[dst]
        differ = ps != pd
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(ps, pd)[differ], np.minimum(ps, pd)[differ])
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return np.unique(parent, return_inverse=True)[1]


def grown(seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The components of ``seeds | mask`` that hold a seed: ``seeds`` grown through ``mask`` as far as it
    reaches (hysteresis, as in Canny's two thresholds)."""
    marks, count = label(seeds | mask)
    holds = np.zeros(count + 1, bool)
    holds[marks[seeds]] = True
    holds[0] = False
    return holds[marks]


def holes(mask: np.ndarray) -> np.ndarray:
    """The background pixels of ``mask`` that it encloses (not connected to its box's edge; 8-connected,
    so a loop closed only at a diagonal step counts as open)."""
    regions, _ = label(~mask)
    return (regions > 0) & ~np.isin(regions, border(regions))


def blob_shaped(mask: np.ndarray) -> bool:
    """Whether one mark (``mask``, cropped to its box) is a blob: filled, roughly round or square, with
    no hole. A punched hole showing the desk, a stain, a blot; a digit's strokes are thin for its
    size, and a heavy 0 or 8 keeps its holes. Thin bits stuck to a blob (what is left of a paper line
    running into a punched hole) are looked through: its core, the pixels in runs across and along at
    least a quarter of its box's smaller side, may hold BLOB_CORE of its ink and fill its own box as a
    disc does (a fat marker's 2 fills less)."""
    if not (filled(mask, BLOB_FILL) or core_filled(mask)):
        return False
    return not holes(mask).any()


def filled(mask: np.ndarray, fill: float) -> bool:
    """Whether ``mask`` (cropped to its box) is at most BLOB_ASPECT from square and fills ``fill`` of it."""
    h, w = mask.shape
    return 1 / BLOB_ASPECT <= w / h <= BLOB_ASPECT and int(mask.sum()) >= fill * w * h


def core_filled(mask: np.ndarray) -> bool:
    """Whether the core of ``mask`` (its pixels in runs across and along at least a quarter of its box's
    smaller side) holds BLOB_CORE of its ink and fills its own box as a disc does."""
    reach = max(2, min(mask.shape) // 4)
    core = runs_at_least(mask, reach) & runs_at_least(mask.T, reach).T
    if not core.any() or int(core.sum()) < BLOB_CORE * int(mask.sum()):
        return False
    rows, cols = np.flatnonzero(core.any(axis=1)), np.flatnonzero(core.any(axis=0))
    return filled(core[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], BLOB_CORE_FILL)
