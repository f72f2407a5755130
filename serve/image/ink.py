"""White-on-black ink in [0, 1] from a photo, scan or canvas export.

A canvas export or a clean scan has one background colour, its border's (or one smooth ramp, a
rendered gradient's): that is the background everywhere, however fat the strokes. Paper in a photo
is rarely one colour: shadows, light fall-off, vignetting and a darker desk around the sheet all
change the background across the frame, so there the background is estimated locally (a median over
neighbourhoods much larger than a stroke, then a mean of the pixels that are not ink) and ink is
what differs from it. A sheet lying whole on a desk that fills most of the frame (a sticky note, a
card) is found first (serve/image/sheet.py) and read as if it filled the frame. Contrast is taken
per colour channel, so blue ink on yellow paper of the same brightness is still ink. Ruled and
squared paper lines (long, thin, straight) are removed. Small images (28x28 MNIST-form inputs and
thumbnails) keep the simple global rule, which reproduces MNIST fields exactly. A photo whose pixels
are noisy (a dim room's high-gain sensor) is smoothed before any of this (or, where a phone's noise
reduction left blotches a few pixels across instead, once the ink's side is known), and where its
noise still sets the threshold high enough to break strokes into dashes, they are grown whole
(hysteresis).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageFilter

from serve.image.lines import find_lines_by_direction, without_lines
from serve.image.morph import LUMA, Box, blob_shaped, border, box_mean, closed, extents, grown, integral, label, \
    regrown, resize_channels, window_extreme, window_sums_at
from serve.image.objects import bar_shape, long_for_frame
from serve.image.sheet import ON_FRAME, eroded, find_sheet, sheet_interior

SMALL_SIDE = 64  # images up to this size: one global background level
THIN_SIDE = 8  # ... and images narrower than this (a strip a few pixels across has no paper around its ink to estimate)
LOW_SIDE = 128  # the background is estimated on a copy this small (longer side)
MEDIAN_SIDE = 64  # and its first, median estimate on one smaller still
MEDIAN_FRACTION = 0.25  # median window, as a fraction of the low copy's longer side
STROKE_REACH = 6  # px of the low copy: a stroke up to twice this wide stands above the paper on both sides
SHEET_REACH = 8  # px of the low copy: the desk around a sheet takes the colour of the sheet this near
RIM_BAND = 2  # px of the low copy: the band along a sheet's edge where the edge and the desk's shade show
DESK_MARGIN = 4  # px of the low copy: the band beside a desk where its edge still shows in the contrast
FLAT_SPREAD = 0.04  # a border whose colour varies less than this (2nd to 98th percentile) is one colour
FLAT_MAJORITY = 0.5  # ... the background, when this share of the frame is within FLAT_MAJORITY_TOLERANCE of it
# A digit cropped to its ink (cropped_background): strokes at least CROSSING_INK from one colour come within
# CROP_BAND px of all four sides; the outermost ring they cross is exactly that colour (within CROP_NOISE: no
# sensor noise) over CROP_FLAT of it, with at most CROP_EDGES pixels between the two (a stroke's soft edges)
# per stroke pixel; light strokes cross each side in runs of at most LIGHT_RUN of it, or cover at most LIGHT_RUN
# of the frame. Such a border, or dark strokes on a border exactly one colour, need only CROP_MAJORITY of the
# frame as the background (a bold digit's soft edges take much of a close crop).
CROP_FLAT, CROP_NOISE = 0.3, 1.5 / 255
CROSSING_INK, CROP_EDGES, LIGHT_RUN = 0.25, 1.5, 0.5
# ... or, for a crop enlarged smoothly or saved as JPEG (soft edges wider than its strokes), up to
# CROP_SOFT_EDGES per stroke pixel when the ring away from the strokes (further than CROP_REACH of the frame's
# longer side) keeps to the colour exactly over CROP_AWAY_FLAT of it: a photo's paper is noisy (about half
# of it within CROP_NOISE) or drifts off its colour away from any stroke
CROP_SOFT_EDGES, CROP_AWAY_FLAT, CROP_REACH = 3.0, 0.75, 0.08
CROP_MAJORITY = 0.25
CROP_BAND = 3  # px: the strokes come this close to every side
CROP_BINS = 50  # the one colour is the commonest of this many grey levels
POLARITY_SIDE = 512  # the ink's side is judged on a copy at most this large
FLAT_MAJORITY_TOLERANCE = 0.1  # ... and the background when most of the frame is within this of it
MIN_CONTRAST = 0.06  # weakest ink that counts, as a fraction of the paper's brightness
NOISE_SIGMAS = 6.0  # ink must stand this many noise deviations above the background
PEAK_FRACTION = 0.3  # and at least this fraction of the strongest ink
HOLE_SIDE = 256
LINK_REACH = 2  # pixels: faint ink this close to strong ink joins it ...
RIDGE_REACH = 3  # ... when it stands above the paper this far away on both sides
DARK_PAPER = 0.3  # a photo whose median grey is below this is light ink on a dark board; above, dark ink
BOTH_SIDES = (0.2, 0.55)  # ... in doubt in this range (ink_map's second look tries the other side)
LIGHT_BOARD = 0.45  # ... and below this, the side whose marks stand out far more (mark_strengths) is the ink's:
LIGHT_OVER_DARK = 1.6  # ... this many times more, each over its own noise (a board's chalk or paint: 1.58 and
# more, 5 typically; a dim sheet's pencil below DARK_PAPER, the other way: the light side at most 0.62 of it)
PAPER_SHARE = 0.3  # a photo in which less than this share of the frame has the paper's colour has no paper
PAPER_TOLERANCE = 0.05  # ... within this of its median chromaticity (r, g, b over their sum)
NOISY = 0.008  # noise (quiet_noise) above this is smoothed away before ink is looked for: over a whole frame a
# lit photo's is mostly under 0.011 (0.014 at most in the evaluation), a dim room's about 0.018 ...
NOISE_BLUR = 2.5  # px: ... over a Gaussian radius growing from 0 to this at twice NOISY: narrower than the
# strokes of a photo's digit (a printed box's thin walls, blurred over the full radius at a noise just
# above the cut, were no longer found as its walls) ...
NOISE_BLUR_SIDE = 256  # ... in a frame at least this large (a small image's digit is too small to smooth)
BLOTCHY = 0.03  # noise at half the frame's scale above this share of the paper's grey (dark ink) is a dim room's too:
# a phone's noise reduction leaves little from pixel to pixel (0.005-0.007 in four of seed 7's dim photos, under
# NOISY) and blotches a few pixels across (0.037-0.051 of the paper's grey; lit photos 0.026 at most)
CAMERA_NOISE = 0.06  # pixel noise above this (twice a dim room's worst in the evaluation) is no camera's: the
# image is noise (uniform noise is 0.2), and smoothed it would become blotches that pass for ink
HUE_FLOOR = 0.3  # below this sum of r, g and b, chromaticity is taken over this sum: a dark board's noise is no hue
BLOB_CANDIDATES = 8  # the largest marks judged as blobs when the threshold's peak is looked for
FAINT = 0.5  # paper lines are looked for at this fraction of the ink threshold, where they are unbroken
BROKEN_BY_NOISE = 0.5  # where a camera's noise lifts the cut above this fraction of the strongest ink, a
# stroke's weaker half falls below it: strokes are grown through the faint ink (0.56-0.92 in the evaluation's
# dim photos that broke into specks). Not in frames without a camera's noise (noise_blur_radius 0), where the
# cut is as high for other reasons: the rims of ruled lines (0.40-0.62 in lit photos of ruled paper; grown,
# pieces of lines the finder missed were taken for marks, and a "5603" refused), a pen lying beside the digit
# or a low-resolution crop (a refusal grown into a wrong answer)
PEN_OVER_LINE = 2.0  # ink on a paper line this many times stronger than its lines (their 90th percentile) is a pen's
# A highlighter's band (without_colour_only): ink whose brightness differs from the paper's less than
COLOUR_ONLY = 0.75  # this share of its colour's (contrast in the channel where it differs most),
COLOUR_MIN, DARK_LUMA = 0.15, 0.35  # by at least this much in colour and under this much in brightness,
BAND_SHARE, BAND_DEPTH = 0.1, 2  # at least this share of the ink this many px inside it, where at least
NEUTRAL_SHARE, NEUTRAL_LUMA = 0.1, 0.2  # this share of it is neutral (grey, black: a pen), this much darker,
OUT_FROM_UNDER, BAND_REACH = 0.03, 6  # or this share in strokes running from under the band (this near) to beyond
BAND_GAPS = 2  # px: a band's gaps this wide (its faint pixels below the threshold) are closed before it is measured


STEP = 0.4  # a change of the paper's brightness this large (relative) across 4 px of the low copy is a step the
# upsampled low copy cannot follow (the hard shadows measured: 0.61 and more; the soft bands of two lit photos that
# 0.2 changed for the worse: 0.32 and 0.35) ...
STEP_REACH = 6  # px of the low copy: ... and the band this far beside it gets at_steps' background (the low
# copy's estimate rounds a shadow's corner off over more than its step shows: 1 left the corners' tips as ink),
STEP_STROKE = 0.06  # which lifts strokes up to this fraction of the frame's longer side wide off the paper
STEP_REGROW = 0.5  # closing radii: and regrows the closing this far into the ground it kept (a shadow's corner);
# 1 faded grey strokes as dark as the shadow they touched (an 8, a 6, a 3, a 4 across the edge refused)
STEP_SIDE = 512  # px: frames smaller than this are left as they are (a crop's strokes are wider)
STEP_FRAME_MARGIN = 2  # ... and the frame's edge, as far as this many closing radii
# Paper a shadow darkens, taken for ink where the background estimate misses it (a hard shadow's corner, a strip
# along its edge): along much of its rim it runs into the shadowed paper, as dark as itself (without_paper_patches)
PAPER_EDGE = 0.02  # a mark's rim pixel is an edge where the mark 2 px in is this much darker than the paper 3 px out
EDGE_SHARE = 0.7  # a mark with edges along less than this share of its rim (strokes of ink: 0.99-1; such patches
# in the evaluation's shadow photos: 0.26-0.70)
EDGE_CONTRAST = 0.06  # ... and a median contrast across its rim below this (strokes: 0.06 and up) is such a patch;
# a stroke the patch touches keeps it (a fat 5 beside a shadow's corner: rim edges 0.68, contrast 0.14)
PATCH_MIN = 30  # px: smaller marks are left to the glyph finder's rules for dust
PATCH_INK = 0.9  # a mark whose median ink is this strong (as strong as the ink's strongest tenth) is ink: the
# inside of a fat printed stroke, noisy where the camera's grain breaks it up, has no edge towards its holes
NO_INK = "no ink found"
NO_PAPER = "no paper: most of the image has no one background colour"
NO_BARS = "bars of a barcode"


class NoDigitFound(ValueError):
    """The image has nothing to read: blank, faint noise, or no paper to write on (its message says which)."""


def ink_map(rgb: np.ndarray, second_look: bool = False) -> np.ndarray:
    """float32 [H, W] ink, white on black, strongest strokes near 1, background exactly 0.

    ``second_look``: a photo in which no digit was found, looked at again. A sheet that runs off the
    frame may be a strip of desk lighter than a dark board (then the whole frame is read); else the
    ink is looked for on the other side of the paper's grey, where that is in doubt (photo_ink's
    other_side: dim paper and a board the camera lifted to grey overlap). NoDigitFound where there
    is nothing else to look at (a canvas, a sheet inside the frame, a bright or a dark frame)."""
    gray = luminance(rgb)
    small = max(gray.shape) <= SMALL_SIDE or min(gray.shape) < THIN_SIDE
    radius = noise_blur_radius(gray)
    noisy = radius > 0
    if noisy:
        rgb = without_sensor_noise(rgb, radius)
        gray = luminance(rgb)
    if small:
        if second_look:
            raise NoDigitFound(NO_INK)
        return global_ink(gray)
    flat = flat_background(rgb)
    # a sheet lying on a desk is photographed: a one-colour border is a canvas's or a clean scan's
    if flat is None:
        low = shrink(rgb, LOW_SIDE)
        sheet = find_sheet(low)
        if second_look:
            if sheet is not None and not runs_off_frame(sheet):
                raise NoDigitFound(NO_INK)
            return photo_ink(rgb, gray, other_side=sheet is None, noisy=noisy)
        ink = sheet_ink(rgb, low, sheet, noisy) if sheet is not None else None
        if ink is not None:
            return ink
    elif second_look:
        raise NoDigitFound(NO_INK)
    return frame_ink(rgb, gray, flat, noisy)


def pixel_noise(gray: np.ndarray, row_step: int = 4) -> float:
    """The grey level's noise from pixel to pixel: a robust deviation of each pixel's difference from
    the mean of its 3x3 neighbourhood, on every ``row_step``-th row (strokes' and shadows' edges are too
    few to move it; a mean of nine 8-bit levels keeps it from moving in whole levels)."""
    block = gray[0:-2:row_step] + gray[1:-1:row_step] + gray[2::row_step]  # the three rows around each sampled one
    mean = (block[:, :-2] + block[:, 1:-1] + block[:, 2:]) / 9.0
    residual = gray[1:-1:row_step, 1:-1] - mean  # of white noise: 8/9 of its variance
    return float(1.4826 * np.median(np.abs(residual - np.median(residual))) * np.sqrt(9.0 / 8.0))


def quiet_noise(gray: np.ndarray) -> float:
    """A camera's noise in the frame: the pixel noise of its quietest ninth (a 3x3 grid). A sensor's
    noise is everywhere; a grainy desk beside the paper is not the sensor's, and smoothed for it, a
    note's edges on the desk were read as one mark around the note."""
    h, w = gray.shape
    return min(pixel_noise(gray[i * h // 3:(i + 1) * h // 3, j * w // 3:(j + 1) * w // 3])
               for i in range(3) for j in range(3))


def noise_blur_radius(gray: np.ndarray) -> float:
    """How far (px) to smooth a frame before its ink is looked for: 0 below NOISY, above CAMERA_NOISE
    or in a small frame."""
    if min(gray.shape) < NOISE_BLUR_SIDE:
        return 0.0
    noise = quiet_noise(gray)
    return 0.0 if noise > CAMERA_NOISE else NOISE_BLUR * float(np.clip(noise / NOISY - 1.0, 0.0, 1.0))


def blotchy(gray: np.ndarray, paper: float) -> bool:
    """Whether a photo (at least NOISE_BLUR_SIDE) of paper of grey level ``paper`` has a dim room's noise
    in blotches a few pixels across, which quiet_noise, from pixel to pixel, misses (BLOTCHY); not when
    its pixel noise is no camera's (CAMERA_NOISE)."""
    h, w = gray.shape
    if min(h, w) < NOISE_BLUR_SIDE or quiet_noise(gray) > CAMERA_NOISE:
        return False
    halved = gray[:h // 2 * 2, :w // 2 * 2].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    return quiet_noise(halved) >= BLOTCHY * paper


def without_sensor_noise(rgb: np.ndarray, radius: float) -> np.ndarray:
    """``rgb`` smoothed over ``radius`` px. A photo in a dim room has its sensor's noise raised so high
    that, pixel by pixel, it stands as far above the paper as a pencil's stroke does: ink found by its
    contrast over the noise was none ("no ink found") or specks. Smoothed, the stroke stands above it."""
    image = Image.fromarray(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), np.float32) / np.float32(255.0)


def sheet_ink(rgb: np.ndarray, low: np.ndarray, sheet: np.ndarray, noisy: bool = False) -> np.ndarray | None:
    """The ink on a ``sheet`` lying on a desk (serve/image/sheet.py; a mask of ``low``, the low copy):
    read as if the sheet filled the frame, from the sheet's bounding box with the desk around it
    painted in the paper's colour; marks on the sheet's rim (its edge, the desk's shade beside it) are
    not ink. NoDigitFound for a blank sheet (a blank note is no digit, whatever the desk around it
    holds); None when the sheet is too small to have an inside (then the frame is read as usual)."""
    h, w = rgb.shape[:2]
    inner = sheet_interior(sheet)
    if not inner.any():
        return None
    rows, cols = low_pixel_of(inner.shape, (h, w))
    ys, xs = np.nonzero(inner[rows].any(axis=1)), np.nonzero(inner[:, cols].any(axis=0))
    y0, y1, x0, x1 = int(ys[0][0]), int(ys[0][-1]) + 1, int(xs[0][0]), int(xs[0][-1]) + 1
    rows, cols = rows[y0:y1], cols[x0:x1]
    on_sheet = inner[rows][:, cols]
    crop = rgb[y0:y1, x0:x1].copy()
    # the desk painted in the colour of the sheet nearest to it, so no edge is left where they meet
    near, weight = paper_mean(low, inner.astype(np.float32), SHEET_REACH)
    colour = np.where(weight > 1e-3, near, np.median(low[inner], axis=0)).astype(np.float32)
    crop[~on_sheet] = colour[rows][:, cols][~on_sheet]
    # a photo still, though its border is now one colour: no canvas rule (which would take the
    # sheet's lit parts for light ink, against the paint); a blank note raises NoDigitFound
    crop_ink = np.where(on_sheet, photo_ink(crop, luminance(crop), noisy=noisy), 0.0)
    rim = (inner & ~eroded(inner, RIM_BAND))[rows][:, cols]
    crop_ink[mostly_on(crop_ink > 0, rim)] = 0.0  # a digit near the sheet's edge just touches the rim
    if not crop_ink.any():
        raise NoDigitFound(NO_INK)
    ink = np.zeros((h, w), np.float32)
    ink[y0:y1, x0:x1] = crop_ink
    return ink


def runs_off_frame(sheet: np.ndarray) -> bool:
    """Whether a sheet (find_sheet's mask) runs off the frame, more than a corner cut off."""
    return float(border(sheet).mean()) > ON_FRAME


def low_pixel_of(low_shape: tuple[int, ...], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For each row and each column of a frame of ``shape``, the row and column of its copy of
    ``low_shape`` it falls in: ``low[rows][:, cols]`` is the low copy at the frame's size."""
    (h, w), (low_h, low_w) = shape, low_shape[:2]
    return (np.minimum(np.arange(h) * low_h // h, low_h - 1), np.minimum(np.arange(w) * low_w // w, low_w - 1))


def mostly_on(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The pixels of the marks (components of ``mask``) that lie at least half on ``region``."""
    marks, count = label(mask)
    on_region = np.bincount(marks[region], minlength=count + 1) >= 0.5 * np.bincount(marks.ravel(), minlength=count + 1)
    on_region[0] = False
    return on_region[marks]


def frame_ink(rgb: np.ndarray, gray: np.ndarray, flat: np.ndarray | None, noisy: bool = False) -> np.ndarray:
    """The ink of a frame that is all paper (or paper and some desk at its edges), whose ``flat``
    background colour (flat_background) is given."""
    if flat is None:
        return photo_ink(rgb, gray, noisy=noisy)
    # a canvas or a clean scan: one colour (or one ramp), even under the fattest marker stroke
    dark_ink = ink_is_darker(rgb, flat)
    background = np.broadcast_to(flat, rgb.shape)
    raw = contrast(rgb, background, dark_ink)
    # the noise of the background itself: the ink of a digit cropped to it can be most of the frame
    paper = colour_distance(rgb, background) < FLAT_MAJORITY_TOLERANCE
    noise_cut = noise_level(raw[paper]) if paper.any() else None
    ink = threshold_ink(raw, gray, dark_ink, noise_cut=noise_cut, noisy=noisy)
    return without_colour_only(ink, raw, luma_contrast(gray, background, dark_ink))


def photo_ink(rgb: np.ndarray, gray: np.ndarray, other_side: bool = False, noisy: bool = False) -> np.ndarray:
    """The ink of a photo: against the paper's colour estimated locally, without the desk around the
    sheet; a frame with no paper to speak of is refused. ``other_side``: the ink on the side of the
    paper's grey level its median does not suggest, where that is in doubt (BOTH_SIDES), else none.
    Dark ink on paper with a dim room's blotchy noise (blotchy) is looked for on a smoothed copy."""
    # most of a frame is background; white paper in dim light is often darker than mid-grey
    # (0.44-0.49 in the evaluation's dim photos), a blackboard darker still (0.16-0.43 there)
    median = float(np.median(gray))
    if other_side and not BOTH_SIDES[0] <= median <= BOTH_SIDES[1]:
        raise NoDigitFound(NO_INK)  # no doubt which side the ink is on
    low = shrink(rgb, LOW_SIDE)
    if float(np.mean(hue_distance(low) < PAPER_TOLERANCE)) < PAPER_SHARE:
        raise NoDigitFound(NO_PAPER)
    dark_ink = median > DARK_PAPER
    if median < LIGHT_BOARD:
        dark, light = mark_strengths(rgb, low)
        dark_ink = light < LIGHT_OVER_DARK * dark if dark_ink else dark >= LIGHT_OVER_DARK * light
    dark_ink = dark_ink != other_side
    if dark_ink and not noisy and blotchy(gray, median):
        rgb, noisy = without_sensor_noise(rgb, NOISE_BLUR), True
        gray = luminance(rgb)
    return polarity_ink(rgb, gray, low, dark_ink, noisy)


def polarity_ink(rgb: np.ndarray, gray: np.ndarray, low: np.ndarray, dark_ink: bool, noisy: bool = False) -> np.ndarray:
    """photo_ink's ink, darker (``dark_ink``) or lighter than the paper; ``low``: the frame shrunk to LOW_SIDE."""
    low_background = paper_colour(low, dark_ink)
    upsampled = resize_channels(low_background, (rgb.shape[1], rgb.shape[0]), Image.Resampling.BILINEAR)
    desk = desk_beside(low_background, gray.shape)
    background = at_steps(rgb, upsampled, low_background, dark_ink)
    raw = contrast(rgb, background, dark_ink)
    # the noise's cut as before the steps were corrected (less contrast along them would lower it: put in
    # against a sheet's faint rim coming through, which the frame margin turned out to be what stopped;
    # kept, since no reading of either seed needs it lower)
    noise_cut = noise_level(raw if background is upsampled else contrast(rgb, upsampled, dark_ink))
    ink = without_desk(threshold_ink(raw, gray, dark_ink, desk, noise_cut=noise_cut, noisy=noisy), desk)
    ink = without_colour_only(ink, raw, luma_contrast(gray, background, dark_ink))
    return without_paper_patches(ink, 1.0 - rgb if dark_ink else rgb)


def without_paper_patches(ink: np.ndarray, level: np.ndarray) -> np.ndarray:
    """``ink`` without marks that are paper, not ink: where the background estimate misses a hard
    shadow's corner or a strip along its edge, that patch of shadowed paper stands out from the estimate
    but not from the shadowed paper it runs into, so along much of its rim there is no edge (EDGE_SHARE)
    and the contrast across its rim is low (EDGE_CONTRAST). A stroke of ink is darker than the paper all
    around it, whatever its width, and ink as strong as the strongest (PATCH_INK) is ink. The ink left is
    scaled as threshold_ink scales it. ``level``: [H, W, 3] inkiness (1 - rgb for dark ink, rgb for light):
    an edge in any channel counts (coloured ink on paper of its brightness). After without_colour_only:
    a highlighter's band differs from the paper in colour, and faintly."""
    mask = ink > 0
    labels, count = label(mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    if count == 0 or not (sizes[1:] >= PATCH_MIN).any():
        return ink
    ys, xs = np.nonzero(mask & ~eroded(mask, 1))  # the rim
    if len(ys) == 0:
        return ink  # ink everywhere: no paper to compare it with
    # measured within the marks' box and the 3 px beyond it the paper is looked at: the same sums
    # (windows are clipped where the frame ends), on a crop that is often a small part of the frame
    top, left = max(int(ys.min()) - 3, 0), max(int(xs.min()) - 3, 0)
    crop = np.s_[top:int(ys.max()) + 4, left:int(xs.max()) + 4]
    contrast = rim_contrast(mask[crop], level[crop], ys - top, xs - left)
    share, median = edge_share_and_median(labels[ys, xs], contrast, count)
    patch = (sizes >= PATCH_MIN) & (share < EDGE_SHARE) & (median < EDGE_CONTRAST)
    patch[0] = False
    for k in np.flatnonzero(patch):
        patch[k] = float(np.median(ink[labels == k])) < PATCH_INK
    if not patch.any():
        return ink
    kept = np.where(patch[labels], 0.0, ink)
    if not kept.any():
        raise NoDigitFound(NO_INK)
    # scaled as threshold_ink scales it, by the ink's strongest tenth: a desk's rim, far stronger than a
    # faint digit, had set the scale, and the digit alone was too faint to count (INK_MIN)
    return np.clip(kept / float(np.percentile(kept[kept > 0], 90)), 0.0, 1.0).astype(np.float32)


def rim_contrast(mask: np.ndarray, level: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """At each rim pixel (``ys``, ``xs``) of ``mask``: how much more ``level`` the mark has within 2 px
    than the paper (not the mark) within 3 px, in the channel where it has most."""
    marks = integral(mask)
    inner = np.maximum(window_sums_at(marks, ys, xs, 2)[0], 1.0)
    marked, area = window_sums_at(marks, ys, xs, 3)
    outer = np.maximum(area - marked, 1.0)
    best = np.full(len(ys), -np.inf)
    for c in range(level.shape[2]):
        channel = level[..., c]
        on_marks = integral(np.where(mask, channel, 0.0))
        inside = window_sums_at(on_marks, ys, xs, 2)[0] / inner
        outside = (window_sums_at(integral(channel), ys, xs, 3)[0] - window_sums_at(on_marks, ys, xs, 3)[0]) / outer
        np.maximum(best, inside - outside, out=best)
    return best


def edge_share_and_median(keys: np.ndarray, contrast: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per mark 0..``count`` (``keys``: the mark of each rim pixel): the share of its rim pixels with an
    edge (PAPER_EDGE) and the median of their ``contrast`` (inf for a mark without rim pixels)."""
    order = np.lexsort((contrast, keys))
    ordered_keys, ordered = keys[order], contrast[order]
    marks = np.arange(count + 1)
    starts = np.searchsorted(ordered_keys, marks, "left")
    n = np.searchsorted(ordered_keys, marks, "right") - starts
    median = np.full(count + 1, np.inf)
    median[n > 0] = ordered[(starts + (n - 1) // 2)[n > 0]]
    edges = np.bincount(keys, weights=contrast >= PAPER_EDGE, minlength=count + 1)
    return edges / np.maximum(n, 1), median


def at_steps(rgb: np.ndarray, background: np.ndarray, low_background: np.ndarray, dark_ink: bool) -> np.ndarray:
    """``background`` (the low copy's, at the frame's size) corrected where the paper's brightness steps
    (a hard shadow's edge, a sheet's edge): upsampled, the low copy's estimate spreads a step over
    several pixels, and along the edge the side it darkens stood out as a thin line of ink; it also
    rounds a shadow's corner off, wider than the step it shows. Within STEP_REACH of the step the paper
    is paper_at_steps'. Not within STEP_FRAME_MARGIN closing radii of the frame's edge (where the
    closing sees the frame's edge repeated, and a sheet's rim that ended short of the frame was no
    longer cut by it), and only in a frame at least STEP_SIDE large (in a crop or a small note a stroke
    can be wider than the closing reaches, and was hollowed)."""
    h, w = rgb.shape[:2]
    steps = background_steps(low_background) >= STEP
    if max(h, w) < STEP_SIDE or not steps.any():
        return background
    half = shrink(rgb, max(h, w) // 2) if max(h, w) >= 2 * LOW_SIDE else rgb
    radius = max(2, round(STEP_STROKE * max(half.shape[:2]) / 2))
    rows, cols = low_pixel_of(steps.shape, (h, w))
    band = (box_mean(steps.astype(np.float32), STEP_REACH) > 0)[rows][:, cols]
    margin = STEP_FRAME_MARGIN * radius * max(h, w) // max(half.shape[:2])
    band[:margin] = band[h - margin:] = False
    band[:, :margin] = band[:, w - margin:] = False
    paper = paper_at_steps(half, radius, low_background, background, dark_ink)
    return np.where(band[..., None], paper, background).astype(np.float32)


def paper_at_steps(half: np.ndarray, radius: int, low_background: np.ndarray, background: np.ndarray,
                   dark_ink: bool) -> np.ndarray:
    """float32 [H, W, 3] (``background``'s size): the paper as a grey closing (an opening for light
    ink) of ``half``, a copy half the frame's size (its box filter quiets the grain a closing would lift
    the paper to), which lifts strokes up to 2 ``radius`` + 1 px of it wide off the paper and keeps a
    step where it is. A closing also fills the tip of a shadow's corner with light: regrown from the
    shadow STEP_REGROW radii (morph.regrown), the tip is paper again. Never lighter than
    ``background`` (darker, for light ink), nor darker than the darkest of the low copy's paper within
    STEP_REACH (lighter): a stroke wider than the closing reaches is not lifted off, and the closing
    took its core for paper (a bold printed 7, a fat marker's 6 hollowed)."""
    regrow = int(STEP_REGROW * radius)
    paper = np.stack([regrown(closed(half[..., c], radius, dark_ink), half[..., c], regrow, dark_ink)
                      for c in range(3)], axis=2)
    darkest = np.stack([window_extreme(low_background[..., c], STEP_REACH + 1, not dark_ink) for c in range(3)],
                       axis=2)
    size = (background.shape[1], background.shape[0])
    paper = resize_channels(paper, size, Image.Resampling.BILINEAR)
    darkest = resize_channels(darkest, size, Image.Resampling.BILINEAR)
    if dark_ink:
        return np.minimum(np.maximum(paper, darkest), background)
    return np.maximum(np.minimum(paper, darkest), background)


def hue_distance(low: np.ndarray) -> np.ndarray:
    """How far each pixel's chromaticity (r, g, b over their sum) is from the frame's median one.

    Paper is one hue under any light: shadows and fall-off change its brightness, not its hue, and
    the ink and a desk at the edges are a minority (at least 64% of every photo in the evaluation is
    within PAPER_TOLERANCE, coloured paper in dim light the lowest); blotches of colour, a pattern or
    a scene have no such majority (under 10%). The floor on the sum keeps a dark board's sensor
    noise from looking like hue."""
    chroma = low / np.maximum(low.sum(axis=2, keepdims=True), HUE_FLOOR)
    return np.abs(chroma - np.median(chroma.reshape(-1, 3), axis=0)).max(axis=2)


def desk_beside(low_background: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """bool [H, W] (the frame's ``shape``): the desk around the sheet (desk_of the background of the low
    copy), and DESK_MARGIN // 2 px of the low copy beside it (the sheet's rim, where the background
    estimate lags behind the edge); None when there is no desk."""
    low_desk = desk_of(low_background)
    if not low_desk.any():
        return None
    low_desk = box_mean(low_desk.astype(np.float32), DESK_MARGIN // 2) > 0
    rows, cols = low_pixel_of(low_desk.shape, (shape[0], shape[1]))
    return low_desk[rows][:, cols]


def without_desk(ink: np.ndarray, desk: np.ndarray | None) -> np.ndarray:
    """``ink`` without the marks that lie mostly on the ``desk`` (desk_beside): its grain and shadows,
    and the sheet's rim, stand out like ink and can outweigh a thin digit. A mark reaching from the
    desk well onto the sheet stays, for the segmentation to drop as cut by the frame; a region off the
    paper's colour that does not reach the edge (a small sheet on a large desk, which then has the
    majority colour) is not a desk."""
    if desk is None:
        return ink
    kept = np.where(mostly_on(ink > 0, desk), 0.0, ink).astype(np.float32)
    if not kept.any():
        raise NoDigitFound(NO_INK)
    return kept


def desk_of(background: np.ndarray) -> np.ndarray:
    """bool, ``background``'s shape: where the background is not the paper's hue or not within half
    to twice its brightness, in a region reaching the frame's edge (a desk around the sheet)."""
    brightness = background @ LUMA
    reference = float(np.median(brightness))
    on_paper = (hue_distance(background) < PAPER_TOLERANCE) \
        & (brightness >= 0.5 * reference) & (brightness <= 2.0 * reference)
    regions, count = label(~on_paper)
    at_edge = np.unique(border(regions))
    return np.isin(regions, at_edge[at_edge > 0])


def flat_background(rgb: np.ndarray) -> np.ndarray | None:
    """The frame's background when its border is one colour (a canvas export, a clean scan: that
    colour) or one smooth ramp (a digital gradient: the plane fitted to the border, [H, W, 3]), or one
    colour that strokes cross (a digit cropped to its ink); None for photos, whose paper changes across
    the frame in other ways (then the background is estimated locally, which a stroke wider than its
    window would leak into)."""
    edge = border(rgb)
    low, high = np.percentile(edge, [2, 98], axis=0)
    background = np.median(edge, axis=0).astype(np.float32) if float((high - low).max()) <= FLAT_SPREAD \
        else ramp_background(rgb, edge)
    exact = float((high - low).max()) <= 2 * CROP_NOISE  # a digital canvas's border: no noise at all
    if background is not None:
        sample = counting_sample(rgb)
        expected = background if background.ndim == 1 else counting_sample(background)
        share = background_share(sample, expected)
        if share >= FLAT_MAJORITY:
            return background
        # a uniform desk around a sheet: the sheet, not the desk, is the background; but on a canvas the
        # dark strokes of a bold digit cropped close (a sheet is lighter than its desk) may be most of it
        if exact and share >= CROP_MAJORITY and lighter_strokes(sample, expected) is False:
            return background
    # a digit cropped to its ink, whose border may also pass for one colour or one ramp where few strokes cross it
    background = cropped_background(rgb)
    if background is None or background_share(counting_sample(rgb), background) < CROP_MAJORITY:
        return None
    return background


def colour_distance(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """How far each pixel of ``rgb`` (its last axis the channels) is from ``background``: the largest
    difference of a channel."""
    return np.abs(rgb - background).max(axis=-1)


def background_share(sample: np.ndarray, expected: np.ndarray) -> float:
    """The share of ``sample`` within FLAT_MAJORITY_TOLERANCE of ``expected``, the background there."""
    return float(np.mean(colour_distance(sample, expected) < FLAT_MAJORITY_TOLERANCE))


def cropped_background(rgb: np.ndarray) -> np.ndarray | None:
    """The one colour of a border that strokes cross (or come within CROP_BAND px of) on all four sides, as the
    border of a digit cropped to its ink does (a canvas or a scan cut where the strokes end), or on two opposite
    sides (cut to the ink along one axis, a margin left on the other) where no side is crossed along more than
    LIGHT_RUN of it (a desk or a scanner's dark band beyond the paper runs along one, and reaches the two beside
    it), or None. Much of such a border keeps to one colour exactly and the rest is ink, far from it but for the
    few pixels at a stroke's soft edges. A photo's border drifts off its colour by degrees (light fall-off, a
    shadow's penumbra), and a desk or a hard shadow crosses fewer sides; a photo's paper between corners the
    lens darkened to black crosses every side, lighter, along most of it, and is most of the frame (light
    strokes must cross in shorter runs, or be less of the frame: a 7's bar runs along the whole top of its
    crop)."""
    sides = (rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1])
    edge = np.concatenate(sides)
    lum = edge @ LUMA
    counts, bins = np.histogram(lum, bins=CROP_BINS, range=(0.0, 1.0))
    mode = int(counts.argmax())
    near = np.abs(lum - (bins[mode] + bins[mode + 1]) / 2) <= FLAT_SPREAD / 2
    background = np.median(edge[near], axis=0).astype(np.float32)
    if not crossed_ring(rgb, background):
        return None
    bands = (rgb[:CROP_BAND], rgb[-CROP_BAND:], rgb[:, :CROP_BAND], rgb[:, -CROP_BAND:])
    top, bottom, left, right = ((colour_distance(band, background) >= MIN_CONTRAST).any() for band in bands)
    if not (top and bottom or left and right):
        return None  # (a round glyph's outermost pixels are faint: anti-aliasing)
    runs_along = any(longest_run(colour_distance(side, background) >= CROSSING_INK) > LIGHT_RUN * len(side)
                     for side in sides)
    if runs_along and not (top and bottom and left and right):
        return None  # a desk or a scanner's dark band beyond the paper's edge, not strokes cut by the frame
    if runs_along and lighter_strokes(counting_sample(rgb), background) and light_share(rgb, background) > LIGHT_RUN:
        return None
    return background


def crossed_ring(rgb: np.ndarray, background: np.ndarray) -> bool:
    """Whether the outermost ring of ``rgb`` that strokes cross (at least CROSSING_INK off ``background``;
    a pixel or two inside the border where a margin or soft edges keep them off it; the border itself
    when none is crossed) keeps to the background exactly over CROP_FLAT of it, with at most CROP_EDGES
    soft-edge pixels per stroke pixel (or CROP_SOFT_EDGES, with the ring exact away from the strokes)."""
    h, w = rgb.shape[:2]
    rings = [(d, colour_distance(border(rgb[d:h - d, d:w - d]), background))
             for d in range(min(CROP_BAND, (min(h, w) - 1) // 2))]
    depth, off = next(((d, ring) for d, ring in rings if (ring >= CROSSING_INK).any()), rings[0])
    flat, crossing = float(np.mean(off <= CROP_NOISE)), float(np.mean(off >= CROSSING_INK))
    if flat < CROP_FLAT:
        return False
    soft = 1.0 - flat - crossing
    if soft <= CROP_EDGES * crossing:
        return True
    away = ~beside_strokes(rgb, background, depth, max(2, round(CROP_REACH * max(h, w))))
    return soft <= CROP_SOFT_EDGES * crossing and bool(away.any()) \
        and float(np.mean(off[away] <= CROP_NOISE)) >= CROP_AWAY_FLAT


def beside_strokes(rgb: np.ndarray, background: np.ndarray, depth: int, reach: int) -> np.ndarray:
    """For each pixel of the ring ``depth`` px inside the frame (in border()'s order), whether a stroke
    pixel (CROSSING_INK off ``background``) lies within ``reach`` px of it: its strips along the four
    sides are all that is looked at."""
    h, w = rgb.shape[:2]
    band = min(depth + reach + 1, h, w)
    strips = (rgb[:band], rgb[h - band:], rgb[:, :band], rgb[:, w - band:])
    near = [box_mean((colour_distance(strip, background) >= CROSSING_INK).astype(np.float32), reach) > 0
            for strip in strips]
    top, bottom = near[0][depth, depth:w - depth], near[1][band - 1 - depth, depth:w - depth]
    left, right = near[2][depth + 1:h - depth - 1, depth], near[3][depth + 1:h - depth - 1, band - 1 - depth]
    return np.concatenate([top, bottom, left, right])


def lighter_strokes(sample: np.ndarray, expected: np.ndarray) -> bool | None:
    """Whether the strokes of ``sample`` (its pixels at least CROSSING_INK off ``expected``, the background
    there) are lighter than the background under them; None when there are none."""
    strokes = colour_distance(sample, expected) >= CROSSING_INK
    if not strokes.any():
        return None
    under = np.broadcast_to(expected, sample.shape)[strokes]
    return float(np.mean(sample[strokes] @ LUMA)) > float(np.mean(under @ LUMA))


def light_share(rgb: np.ndarray, background: np.ndarray) -> float:
    """The share of the frame (on a sample) at least CROSSING_INK off ``background``."""
    return float(np.mean(colour_distance(counting_sample(rgb), background) >= CROSSING_INK))


def counting_sample(a: np.ndarray) -> np.ndarray:
    """Every n-th pixel of ``a`` in both directions, about 256 along its longer side: enough to count shares."""
    step = max(1, max(a.shape[:2]) // 256)
    return a[::step, ::step]


def longest_run(flags: np.ndarray) -> int:
    """The length of the longest run of True in the 1-D ``flags``."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max(initial=0))


def ramp_background(rgb: np.ndarray, edge: np.ndarray) -> np.ndarray | None:
    """The plane (per channel, in x and y) fitted to the border pixels ``edge`` (flat_background's
    order), at every pixel of the frame, when the border keeps to it within FLAT_SPREAD; else None.
    A light fall-off or shadow in a photo is not a plane (its corners fall off faster than its sides)."""
    h, w = rgb.shape[:2]
    ys = border(np.broadcast_to(np.arange(h, dtype=np.float64)[:, None], (h, w)))  # each edge pixel's row,
    xs = border(np.broadcast_to(np.arange(w, dtype=np.float64)[None, :], (h, w)))  # and column, in edge's order
    design = np.stack([np.ones_like(ys), ys / h, xs / w], axis=1)
    coefficients = np.linalg.lstsq(design, edge.astype(np.float64), rcond=None)[0]  # [3 terms, 3 channels]
    low, high = np.percentile(edge - design @ coefficients, [2, 98], axis=0)
    if float((high - low).max()) > FLAT_SPREAD:
        return None
    c = coefficients.astype(np.float32)
    y = (np.arange(h, dtype=np.float32) / h)[:, None, None]
    x = (np.arange(w, dtype=np.float32) / w)[None, :, None]
    return c[0] + y * c[1] + x * c[2]


def ink_is_darker(rgb: np.ndarray, flat: np.ndarray) -> bool:
    """On a one-colour or one-ramp background (``flat``, flat_background's), the ink is on the side
    where it stands out most (its strongest 3x3 patch): green on red and black on white are darker,
    pink on mustard and white on black lighter."""
    if max(rgb.shape[:2]) > POLARITY_SIDE:
        rgb = shrink(rgb, POLARITY_SIDE)
        flat = shrink(flat, POLARITY_SIDE) if flat.ndim == 3 else flat
    background = np.broadcast_to(flat, rgb.shape)
    dark = float(box_mean(contrast(rgb, background, True), 1).max())
    light = float(box_mean(contrast(rgb, background, False), 1).max())
    return dark >= light


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Grey level; a grey image's own values exactly (so MNIST-form inputs come through bit for bit)."""
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0]
    return rgb @ LUMA


def global_ink(gray: np.ndarray) -> np.ndarray:
    """The rule for small and thin images (SMALL_SIDE, THIN_SIDE): invert a light background, subtract the
    border's median level."""
    if np.median(border(gray)) > 0.5:  # light paper, dark ink
        gray = 1.0 - gray
    level = float(np.median(border(gray)))
    if level >= 0.9:
        raise NoDigitFound(NO_INK)
    return np.clip((gray - level) / (1.0 - level), 0.0, 1.0).astype(np.float32)


def paper_colour(low: np.ndarray, dark_ink: bool) -> np.ndarray:
    """float32 [h, w, 3]: the paper's colour (a desk's around a sheet) at every pixel of ``low``, the
    frame shrunk to LOW_SIDE, without the ink."""
    median = median_background(low)
    # Second pass: the paper is the pixels that are not ink; ink pixels get the mean of the paper
    # around them (a window wider than a fat stroke), so strokes do not darken the paper.
    paper = (~ink_on_sheet(contrast(low, median, dark_ink), median)).astype(np.float32)
    near, near_weight = paper_mean(low, paper, 1)
    wide, wide_weight = paper_mean(low, paper, int(MEDIAN_FRACTION * LOW_SIDE) // 3)
    return np.where(near_weight > 0.2, near, np.where(wide_weight > 1e-3, wide, median))


def median_background(low: np.ndarray) -> np.ndarray:
    """float32 [h, w, 3]: a first guess at the paper's colour at every pixel of ``low`` (the frame shrunk
    to LOW_SIDE), whichever side of it the ink is on: the median over a window far wider than a stroke."""
    coarse = shrink(low, MEDIAN_SIDE)
    size = max(3, int(MEDIAN_FRACTION * MEDIAN_SIDE) | 1)
    median = np.stack([np.asarray(Image.fromarray((coarse[..., c] * 255).astype(np.uint8)).filter(
        ImageFilter.MedianFilter(size)), np.float32) / 255 for c in range(3)], axis=2)
    return resize_channels(median, (low.shape[1], low.shape[0]), Image.Resampling.BILINEAR)


def mark_strengths(rgb: np.ndarray, low: np.ndarray) -> tuple[float, float]:
    """How far a photo's strongest dark and strongest light marks stand out (dark, light): each side's
    strongest mark (inner_peak: not cut by the frame, not on a desk, no blob) against the median
    background, over its side's noise, on a copy POLARITY_SIDE px large. Which side the ink is on is
    in doubt where the paper's grey is in between: chalk on a board the camera lifted to grey, a dim
    sheet of paper darker still; one side wins only by LIGHT_OVER_DARK (a shadow's edge leaves lighter
    paper beside it where the median lags)."""
    work = shrink(rgb, POLARITY_SIDE) if max(rgb.shape[:2]) > POLARITY_SIDE else rgb
    background = median_background(low)
    desk = desk_beside(background, work.shape[:2])
    background = resize_channels(background, (work.shape[1], work.shape[0]), Image.Resampling.BILINEAR)
    strength = []
    for dark in (True, False):
        raw = contrast(work, background, dark)
        noise = noise_level(raw)
        strength.append(inner_peak(box_mean(raw, 1), noise, desk) / noise)
    return strength[0], strength[1]


def ink_on_sheet(diff: np.ndarray, median: np.ndarray) -> np.ndarray:
    """bool: the pixels of the low copy that are ink, not paper, by their contrast ``diff`` to the
    ``median`` background: at least half the strongest ink on the sheet, or a stroke that stands
    above the paper on both sides. The strongest ink is looked for away from a desk and the sheet's
    edges, where the median lags behind the step and the contrast is far above a faint digit's; a
    faint fat stroke below that half would count as paper, and only its outline would be ink. The
    second rule finds such strokes (2 px or wider here, so not paper lines; not cut by the frame, so
    not a sheet's edge), and lets a shadow pass: across a shadow's edge the paper is as dark on one side."""
    noise = noise_level(diff)
    edges = desk_of(median) | (background_steps(median) >= noise)
    sheet = ~(box_mean(edges.astype(np.float32), DESK_MARGIN) > 0)
    peak = float(diff[sheet].max()) if sheet.any() else float(diff.max())
    strokes = off_frame(two_wide(sheet & (ridge(diff, STROKE_REACH) >= noise)))
    return (diff >= max(MIN_CONTRAST, 0.5 * peak)) | strokes


def background_steps(background: np.ndarray, reach: int = 2) -> np.ndarray:
    """How much the background's brightness changes across each pixel (``reach`` px to either side,
    the most of four directions), relative to its brightness: high at a sheet's edge."""
    level = background @ LUMA
    best = np.zeros(level.shape, np.float32)
    for before, after in across(level, reach):
        np.maximum(best, np.abs(after - before), out=best)
    return best / np.maximum(level, 0.15)


def two_wide(mask: np.ndarray) -> np.ndarray:
    """The parts of ``mask`` at least 2 px wide every way (an opening by a 2x2 square): a paper line
    is 1 px wide at the low copy's scale."""
    core = mask[:-1, :-1] & mask[1:, :-1] & mask[:-1, 1:] & mask[1:, 1:]
    grown = np.zeros_like(mask)
    for dy in (0, 1):
        for dx in (0, 1):
            grown[dy:dy + core.shape[0], dx:dx + core.shape[1]] |= core
    return grown


def off_frame(mask: np.ndarray) -> np.ndarray:
    """``mask`` without its regions that touch the frame's edge."""
    regions, count = label(mask)
    at_frame = np.unique(border(regions))
    return mask & ~np.isin(regions, at_frame[at_frame > 0])


def noise_level(contrast: np.ndarray) -> float:
    """NOISE_SIGMAS robust deviations above the typical contrast (at least MIN_CONTRAST): what ink
    must stand above."""
    centre = float(np.median(contrast))
    sigma = 1.4826 * float(np.median(np.abs(contrast - centre))) + 1e-4
    return max(centre + NOISE_SIGMAS * sigma, MIN_CONTRAST)


def paper_mean(low: np.ndarray, paper: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean colour of the paper pixels around each pixel, and the fraction of paper there."""
    weight = box_mean(paper, radius)[..., None]
    total = np.stack([box_mean(low[..., c] * paper, radius) for c in range(3)], axis=2)
    return total / np.maximum(weight, 1e-3), weight


def shrink(rgb: np.ndarray, side: int) -> np.ndarray:
    """A box-filtered copy whose longer side is ``side``."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    return resize_channels(rgb, (max(4, round(w * scale)), max(4, round(h * scale))), Image.Resampling.BOX)


def contrast(rgb: np.ndarray, background: np.ndarray, dark_ink: bool) -> np.ndarray:
    """How much each pixel differs from the paper in the ink's direction, in the channel where it
    differs most, relative to the paper's brightness (so a shadow does not weaken the ink)."""
    diff = background - rgb if dark_ink else rgb - background
    return (diff.max(axis=2) / paper_reference(background @ LUMA, dark_ink)).astype(np.float32)


def luma_contrast(gray: np.ndarray, background: np.ndarray, dark_ink: bool) -> np.ndarray:
    """contrast() in brightness alone: small where ink differs from the paper only in colour (a
    highlighter's band), as large where it is darker (a pen's stroke)."""
    paper_luma = background @ LUMA
    diff = paper_luma - gray if dark_ink else gray - paper_luma
    return (diff / paper_reference(paper_luma, dark_ink)).astype(np.float32)


def paper_reference(paper_luma: np.ndarray, dark_ink: bool) -> np.ndarray:
    """What contrast is relative to: the paper's brightness (its darkness, for light ink on a board)."""
    return np.maximum(paper_luma, 0.15) if dark_ink else np.maximum(1.0 - paper_luma, 0.15)


def threshold_ink(raw: np.ndarray, gray: np.ndarray, dark_ink: bool = True,
                  desk: np.ndarray | None = None, noise_cut: float | None = None, noisy: bool = False) -> np.ndarray:
    """Keep what stands clearly above the background noise and a fraction of the strongest ink not cut
    by the frame and not on a ``desk`` (desk_beside: its grain and the sheet's rim are far stronger
    than a pencil's digit on the paper); where a camera's noise sets a cut so high that strokes break,
    grow them through the faint ink off the paper lines; remove paper lines, or on plain paper let faint ink
    bridge a stroke's gaps; scale typical strokes to 1. ``noise_cut``: what ink must stand above, when known
    (else noise_level of the whole frame); ``noisy``: the frame had a camera's noise (noise_blur_radius)."""
    # The noise is the whole frame's, desk included: on the paper alone it is lower on ruled paper beside
    # a desk, and the lower cut kept the rim of a line the line finder missed, which tied a "23" to the
    # frame (tried: one faint digit on squared paper found, that "23" lost).
    noise_cut = noise_level(raw) if noise_cut is None else noise_cut
    smooth = box_mean(raw, 1)
    peak = inner_peak(smooth, noise_cut, desk)
    cut = max(noise_cut, PEAK_FRACTION * peak)
    if peak < cut:
        raise NoDigitFound(NO_INK)
    strong, faint = raw >= cut, raw >= FAINT * cut  # faint holds strong
    across, upright, thickness = find_lines_by_direction(faint)
    lines = across | upright
    if noisy and noise_cut >= BROKEN_BY_NOISE * peak:  # off the lines: a line's faint rim would grow along it
        strong = grown(strong, faint & ~lines)
    if lines.any():  # on ruled paper the faint ink is mostly the lines' rims: no links through it
        pen = pen_on_lines(raw, across, upright)
        mask = without_lines(strong, lines, thickness, pen)
    else:
        inkiness = 1.0 - gray if dark_ink else gray  # the grey level itself: flat across a shadow
        paper = max(float(np.median(1.0 - inkiness)), 0.15)
        reach = int(np.clip(typical_run(strong), RIDGE_REACH, 4 * RIDGE_REACH))
        mask = with_faint_links(strong, faint & (ridge(inkiness, reach) >= 0.5 * FAINT * cut * paper))
    if not mask.any():
        raise NoDigitFound(NO_INK)
    level = float(np.percentile(raw[mask], 90))
    ink = np.where(mask, np.clip(raw / max(level, 1e-6), 0.0, 1.0), 0.0)
    hollow = hollow_stroke_interiors(mask, gray)
    ink[hollow] = 1.0
    return ink.astype(np.float32)


def pen_on_lines(raw: np.ndarray, across: np.ndarray, upright: np.ndarray) -> np.ndarray:
    """Ink far stronger (PEN_OVER_LINE) than the paper lines it lies on, each family of lines (across,
    upright) judged by its own strength: a pen's stroke written on a line (a 4's bar on a rule). A ruled
    sheet's margin line is often far stronger than the rules: judged by the rules, it was a pen's
    stroke all along its length, and its remnant was read as a sure 1 on an empty sheet."""
    everywhere = across | upright
    # off the lines (a remnant of one beside them, which a pen's stroke is not) all lines at once, as before
    level = np.full(raw.shape, float(np.percentile(raw[everywhere], 90)), np.float32)
    families = [family for family in (across, upright) if family.any()]
    if len(families) == 2:
        level[everywhere] = 0.0
        for family in families:
            level[family] = np.maximum(level[family], float(np.percentile(raw[family], 90)))
    return raw >= PEN_OVER_LINE * level


def without_colour_only(ink: np.ndarray, raw: np.ndarray, luma: np.ndarray) -> np.ndarray:
    """``ink`` without a highlighter's band across the digit: light ink that differs from the paper
    far more in colour (``raw`` contrast) than in brightness (``luma`` contrast), a broad region of it
    (BAND_SHARE, BAND_DEPTH), where neutral ink, grey or black, is there too: a pen's or pencil's digit
    under the band, a tenth of the ink (NEUTRAL_SHARE) or, beside a band far larger than a thin digit,
    strokes running out from under it (OUT_FROM_UNDER). Coloured ink of the paper's brightness (blue
    on yellow), with no neutral ink beside it, is the digit; a green or light blue pen's stroke is
    darker than any highlighter; what is neutral where the frame cuts it (a desk, a sleeve) is no pen's
    digit; a long straight bar with a drawing beside it is a pencil lying on the page (lying_object)."""
    mask = ink > 0
    neutral = luma >= COLOUR_ONLY * raw  # what differs in brightness as much as in colour: along a stroke
    # the two shrink alike towards its edges, so a coloured ink's stroke is not neutral anywhere
    pen = mask & neutral & (luma >= NEUTRAL_LUMA)
    if pen.sum() < OUT_FROM_UNDER * mask.sum():
        return ink
    # colour with too little contrast to tell is no highlighter: inside a filled blob the paper's colour
    # is guessed from the blob itself, and both contrasts are noise there
    band = mask & ~(neutral | (luma >= DARK_LUMA) | (raw < COLOUR_MIN))
    # a band is broad: a few such pixels, or the coloured rims of a grid's lines, are no band; a faint
    # band's threshold speckles it, so its gaps (BAND_GAPS) are closed before it is measured
    if band.sum() < BAND_SHARE * mask.sum():
        return ink  # (most photos: no colour-only ink to speak of, and nothing to close)
    solid = eroded(box_mean(band.astype(np.float32), BAND_GAPS) > 0, BAND_GAPS + BAND_DEPTH)
    if (solid & band).sum() < BAND_SHARE * mask.sum():
        return ink
    pen = off_frame(pen)
    if pen.sum() < NEUTRAL_SHARE * mask.sum() and out_from_under(pen, band) < OUT_FROM_UNDER * mask.sum():
        return ink
    if lying_object(mask, band):
        return ink
    kept = np.where(band, 0.0, ink).astype(np.float32)
    if not kept.any():
        raise NoDigitFound(NO_INK)
    return kept


def lying_object(mask: np.ndarray, band: np.ndarray) -> bool:
    """Whether the mark holding most of the ``band`` is an object lying on the page beside a drawing
    (without_lying_pen), not a highlighter's band across it: a yellow pencil's lit body is colour
    only, and its shadow and shaded flank are neutral, as a pen's digit under a band is. Without its
    body the rest was a long thin bar, read as a sure 1 beside the digit; left whole, the glyph step
    takes the pencil for what it is (segment.without_lying_objects)."""
    marks, count = label(mask)
    among = np.ones(count + 1, bool)
    among[0] = False
    holding = np.bincount(marks[band], minlength=count + 1)
    holding[0] = 0
    return not without_lying_pen(marks, count, among)[int(holding.argmax())]


def out_from_under(pen: np.ndarray, band: np.ndarray) -> int:
    """The ``pen`` pixels in strokes that run from under the ``band`` (within BAND_REACH of it) to
    beyond it: a digit written across a highlighter's band. The flecks a coloured stroke's noise
    leaves neutral lie inside it; a coloured pencil's dark outline hugs its body, and a digit beside
    it does not run under it."""
    strokes, count = label(pen)
    near = box_mean(band.astype(np.float32), BAND_REACH) > 0
    under, beyond = np.zeros(count + 1, bool), np.zeros(count + 1, bool)
    under[strokes[pen & near]] = True
    beyond[strokes[pen & ~near]] = True
    across = under & beyond
    across[0] = False
    return int(across[strokes].sum())


def inner_peak(smooth: np.ndarray, noise_cut: float, desk: np.ndarray | None = None) -> float:
    """The strongest ink that is not cut by the frame, not mostly on the ``desk``, no blob and no pen
    lying beside a drawing: a dark desk or a sheet's edge, a punched hole showing the desk or a black
    pen is far stronger than a pencil digit, and would otherwise set the threshold above it."""
    strongest = float(smooth.max())
    # traced well below any threshold the peak could set, so a desk or an edge is one region
    marks, count = label(smooth >= max(noise_cut, PEAK_FRACTION ** 2 * strongest))
    inside = np.ones(count + 1, bool)
    inside[border(marks)] = False
    if desk is not None:
        inside &= np.bincount(marks[desk], minlength=count + 1) < 0.5 * np.bincount(marks.ravel(), minlength=count + 1)
    inside[0] = False
    if not inside.any():
        return strongest
    strokes = inside & ~blobs(marks, count, inside)
    return float(smooth[without_lying_pen(marks, count, strokes if strokes.any() else inside)[marks]].max())


def without_lying_pen(marks: np.ndarray, count: int, among: np.ndarray) -> np.ndarray:
    """``among`` (bool [count + 1], of the labelled ``marks``) without a pen lying beside a drawing: a
    long straight filled bar (serve/image/objects.py) among the BLOB_CANDIDATES largest, with a mark
    of a digit's size beside it. A black pen beside a pencil's digit set the threshold above the
    digit's strokes, which fell apart into pieces, and the pen was read as a sure 1."""
    boxes = extents(marks, count)
    candidates = np.flatnonzero(among)
    largest = candidates[np.argsort(boxes[candidates, 4])[::-1][:BLOB_CANDIDATES]]
    found = {int(k): Box(int(left), int(top), int(right - left + 1), int(bottom - top + 1))
             for k, (top, bottom, left, right, _) in zip(largest, boxes[largest])}
    kept = among.copy()
    for k, box in found.items():
        bar = bar_shape(marks[box.y:box.bottom, box.x:box.right] == k, box)
        if bar is not None and long_for_frame(bar, marks.shape) and any(
                bar.beside(other) for j, other in found.items() if j != k):
            kept[k] = False
    return kept if kept.any() else among


def blobs(marks: np.ndarray, count: int, among: np.ndarray) -> np.ndarray:
    """bool [count + 1]: which of the labelled ``marks`` are blobs (morph.blob_shaped), judged among the
    BLOB_CANDIDATES largest of those ``among`` allows (a noisy frame has thousands of marks)."""
    boxes = extents(marks, count)
    found = np.zeros(count + 1, bool)
    candidates = np.flatnonzero(among)
    for k in candidates[np.argsort(boxes[candidates, 4])[::-1][:BLOB_CANDIDATES]]:
        top, bottom, left, right, _ = boxes[k]
        found[k] = blob_shaped(marks[top:bottom + 1, left:right + 1] == k)
    return found


def with_faint_links(strong: np.ndarray, faint: np.ndarray) -> np.ndarray:
    """``strong`` plus the faint ink right beside it: a pencil stroke fades in places, and at the
    strong threshold alone it falls apart into pieces no model can read. Only faint pixels within
    LINK_REACH of strong ink count, so gaps wider than twice the reach stay gaps (two digits of a
    number stay two)."""
    near = box_mean(strong.astype(np.float32), LINK_REACH) > 0
    return strong | (faint & near)


def typical_run(mask: np.ndarray) -> float:
    """The median length of the mask's horizontal and vertical runs: about a stroke's width."""
    runs = []
    for rows in (mask, mask.T):
        edges = np.diff(np.pad(rows, ((0, 0), (1, 1))).astype(np.int8), axis=1)
        runs.append(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))
    lengths = np.concatenate(runs)
    return float(np.median(lengths)) if len(lengths) else 1.0


def ridge(level: np.ndarray, reach: int = RIDGE_REACH) -> np.ndarray:
    """How far each pixel's ``level`` stands above its neighbours ``reach`` px away on both sides, in
    the direction (of four) where it stands out most. A faint gap in a thin stroke is darker than the
    paper on both sides across the stroke; the rim a sharp shadow's edge leaves in the contrast is not
    (across the edge, the shadowed paper is as dark)."""
    best = np.full(level.shape, -np.inf, np.float32)
    for before, after in across(level, reach):
        np.maximum(best, level - np.maximum(before, after), out=best)
    return best


def across(level: np.ndarray, reach: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each of four directions (across rows, columns and both diagonals), ``level`` seen ``reach``
    px before and after every pixel (the frame's edge repeated beyond it)."""
    padded = np.pad(level, reach, mode="edge")
    h, w = level.shape
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        yield (padded[reach - dy * reach:reach - dy * reach + h, reach - dx * reach:reach - dx * reach + w],
               padded[reach + dy * reach:reach + dy * reach + h, reach + dx * reach:reach + dx * reach + w])


def hollow_stroke_interiors(mask: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """Enclosed regions of the ink mask that have the ink's colour, not the paper's.

    A marker stroke wider than the background window makes the local background the ink's own
    colour, so only its outline stands out. A real hole (the loop of a 0, 6, 8, 9) shows paper;
    the inside of such an outline shows ink: fill those. Regions are found on a copy at most
    HOLE_SIDE px wide (labelling the whole background at full size would cost ~100 MB), which only
    misses interiors too thin to matter."""
    h, w = mask.shape
    f = max(1, -(-max(h, w) // HOLE_SIDE))
    small_mask = np.any(np.pad(mask, ((0, -h % f), (0, -w % f))).reshape(-(-h // f), f, -(-w // f), f), axis=(1, 3))
    regions, count = label(~small_mask)
    if count < 2:
        return np.zeros_like(mask)
    regions = np.repeat(np.repeat(regions, f, axis=0), f, axis=1)[:h, :w]
    regions = np.where(mask, 0, regions)
    outside = np.unique(border(regions))
    sizes = np.bincount(regions.ravel(), minlength=count + 1)
    means = np.bincount(regions.ravel(), weights=gray.ravel(), minlength=count + 1) / np.maximum(sizes, 1)
    ink_level = float(np.median(gray[mask]))
    paper_level = float(np.median(gray[~mask]))
    inky = np.abs(means - ink_level) < np.abs(means - paper_level)
    inky[outside] = False
    inky[0] = False
    return inky[regions]
