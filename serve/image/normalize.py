"""One digit's ink → the field the model reads, the way MNIST itself was made.

MNIST digits are white ink on black, their bounding box scaled so the longer side is 20 px
(anti-aliased), pasted into 28x28 with the centre of mass at (14, 14). The sizes come from the
model's metadata (``FieldSpec``); the defaults are MNIST's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

INK_MIN = 0.2  # strongest ink below this (after background removal): no digit
BOX_THRESHOLD = 0.3  # fraction of the strongest ink that counts for the bounding box (ignores faint noise)
# Stroke widths in field pixels (``stroke_width``): MNIST's are 1.58-3.02 (5th-95th percentile of the
# sample; 1st-99th 1.46-3.89, median 2.0). A thin pen on a big canvas ends up below after scaling, a
# fat marker above: those are brought to the targets; everything between is left alone.
THIN_STROKE, THICK_STROKE = 1.45, 3.5
TARGET_THIN, TARGET_THICK = 2.0, 2.6
WORK_BOX = 4  # strokes are normalized on a copy at most this many times the field's box
BLOB_FILL = 0.7  # ink covering more of its box than this (a disc covers 0.79), in a squat box, is a blob
MAX_PASSES = 2 * WORK_BOX * 4  # bounds the work whatever the shape (a blob's "stroke" is its whole width)


@dataclass(frozen=True)
class FieldSpec:
    """The model's input field: ``size`` x ``size``, the digit's longer side ``box`` px, centre of mass at
    ``centre``."""

    size: int = 28
    box: int = 20
    centre: float = 14.0  # (row, column), measured on the sample: 14.0 ± 0.3
    stroke: float = 0.0  # target stroke width in field pixels (0: keep the writer's)


def centre_of_mass(ink: np.ndarray) -> tuple[float, float]:
    total = ink.sum()
    rows, cols = np.indices(ink.shape)
    return float((rows * ink).sum() / total), float((cols * ink).sum() / total)


def is_field_form(ink: np.ndarray, spec: FieldSpec) -> bool:
    """Already a field: the right size, ink box within ``box`` (plus anti-aliasing), centred."""
    if ink.shape != (spec.size, spec.size) or ink.max() < INK_MIN:
        return False
    mask = ink > BOX_THRESHOLD * ink.max()
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 > spec.box:
        return False
    r, c = centre_of_mass(ink)
    return abs(r - spec.centre) <= 1.0 and abs(c - spec.centre) <= 1.0


def fit_to_field(ink: np.ndarray, spec: FieldSpec = FieldSpec()) -> np.ndarray:
    """float32 [size, size]: crop to the ink, bring strokes into MNIST's width range, scale the longer
    side to ``box`` px, centre the mass."""
    crop = crop_to_ink(ink.astype(np.float32))
    crop = crop_to_ink(normalize_stroke(shrink_to(crop, WORK_BOX * spec.box), spec.box))
    h, w = crop.shape
    scale = spec.box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    patch = Image.fromarray(crop, mode="F")
    if size != (w, h):
        # Pillow's resampling is anti-aliased when it shrinks; Lanczos can ring slightly below 0.
        patch = patch.resize(size, Image.Resampling.LANCZOS)
    field_patch = np.clip(np.asarray(patch, dtype=np.float64), 0.0, None)
    field_patch /= max(field_patch.max(), 1e-12)  # strongest ink is 1, as in MNIST
    r, c = centre_of_mass(field_patch)
    top = int(np.clip(round(spec.centre - r), 0, spec.size - field_patch.shape[0]))
    left = int(np.clip(round(spec.centre - c), 0, spec.size - field_patch.shape[1]))
    field = np.zeros((spec.size, spec.size), np.float32)
    field[top:top + field_patch.shape[0], left:left + field_patch.shape[1]] = field_patch
    return field


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: 2 * ink / boundary length (a stroke of length L and width w holds
    L*w of ink and has a boundary of about 2L). Ink is summed, not counted, so a faint hairline
    reads below 1 instead of as a full pixel."""
    peak = float(ink.max())
    mask = np.pad(ink > 0.25 * peak, 1)  # the crop's edge is a boundary too
    inner = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(3))) > 0
    boundary = int((mask & ~inner).sum())
    return 2.0 * float(ink.sum()) / max(peak, 1e-12) / max(boundary, 1)


def crop_to_ink(ink: np.ndarray) -> np.ndarray:
    """The bounding box of the ink that counts (at least BOX_THRESHOLD of the strongest)."""
    mask = ink > BOX_THRESHOLD * float(ink.max())
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def shrink_to(crop: np.ndarray, side: int) -> np.ndarray:
    """An area-averaged copy whose longer side is at most ``side``, strongest ink 1 again."""
    h, w = crop.shape
    if max(h, w) <= side:
        return crop
    size = (max(1, round(w * side / max(h, w))), max(1, round(h * side / max(h, w))))
    small = np.asarray(Image.fromarray(crop, mode="F").resize(size, Image.Resampling.BOX), np.float32)
    return small / max(float(small.max()), 1e-12)


def normalize_stroke(crop: np.ndarray, box: int, rounds: int = 3) -> np.ndarray:
    """Thicken a thin pen's strokes or thin a marker's, as they will be once the crop's longer side
    is ``box`` px, into MNIST's range (dilate or erode with 3x3 max / min filters, before scaling).
    The width model below is approximate for short, fat shapes: a few rounds converge on the range."""
    for _ in range(rounds):
        changed = normalize_stroke_once(crop, box)
        if changed is crop:
            break
        crop = crop_to_ink(changed)
    return crop


def normalize_stroke_once(crop: np.ndarray, box: int) -> np.ndarray:
    longer = max(crop.shape)
    if longer <= box or min(crop.shape) < 3:
        return crop
    solid = (crop > 0.5 * float(crop.max())).mean() > BLOB_FILL and longer < 2 * min(crop.shape)
    if solid:  # a dot or blob has no strokes to normalize (and eroding it would only square it off)
        return crop
    # measured where MNIST's widths were measured: at the field's scale
    preview = Image.fromarray(crop, mode="F").resize(
        (max(1, round(crop.shape[1] * box / longer)), max(1, round(crop.shape[0] * box / longer))),
        Image.Resampling.LANCZOS)
    field_width = stroke_width(np.asarray(preview, np.float32))
    width = field_width * longer / box  # in the crop's pixels
    if THIN_STROKE <= field_width <= THICK_STROKE:
        return crop
    target = TARGET_THIN if field_width < THIN_STROKE else TARGET_THICK
    # Growing (or shrinking) every stroke by p px on each side also grows the crop's longer side by
    # 2p, and the crop is scaled to ``box`` after: solve (width + 2p) * box / (longer + 2p) = target.
    p = (target * longer - box * width) / (2 * (box - target))
    passes, rank = (int(np.ceil(p)), ImageFilter.MaxFilter) if p > 0 else (int(-p), ImageFilter.MinFilter)
    passes = min(passes, MAX_PASSES)
    if passes < 1:
        return crop
    image = Image.fromarray(np.pad(crop, passes), mode="F")  # room to grow at the edges
    for _ in range(passes):
        image = image.filter(rank(3))
    out = np.asarray(image, np.float32)
    return out if out.max() > 0 else crop
