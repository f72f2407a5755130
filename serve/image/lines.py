"""Ruled and squared paper lines: long, thin, nearly straight runs of ink across the sheet.

A line is a run that spans much of the frame (``SPAN`` of its width or height, gaps allowed)
after thick strokes are set aside, looked for at a few small tilts because photos are rarely square
to the page. Its pixels are removed, except where a stroke crosses it (ink right above and below).
"""
from __future__ import annotations

import numpy as np

from serve.image.morph import extents, joined, label, runs_at_least

SPAN = 0.5  # a line covers at least this fraction of the frame
LONE_SPAN = 2 / 3  # ... and a line with no other beside it (in its direction) at least this fraction
PIECE = 0.25  # a found run with less than this fraction of the largest one's pixels is a piece, not a line
MANY_PIECES = 256  # lines found in more pieces than this are many; wall pieces more than this are noise (the
# pairwise grouping of pieces is n^2 work)
GAP_FILL = 0.7  # of every window along it (faint lines break up in the threshold)
TILTS_DEG = tuple(t / 2 for t in range(-16, 17))  # half-degree steps: a thin line missed by one degree breaks up
THIN = 0.012  # a line is at most this thick (fraction of the frame's longer side, plus 2 px)
ALONG_WIDTH = 2.0  # a stroke lies along a line where the two are at least this many times the line's mean width,
ALONG_LENGTH = 3.0  # for at least this many line widths along it
WALL_LENGTH, WALL_LEAN = 3, 0.3  # a box's wall is at least this many line widths long, leaning at most this much,
WALL_WIDTH = 2.0  # and at most this many times as thick as the lines on average,
WALL_COVER = 0.6  # a wall in pieces covers at least this much of the way between its lines
WALL_BEND, WALL_BEND_PX = 0.03, 1.5  # and straight: no row's centre further than this (of its length, or px)
# from a straight line
REMNANT_WIDTH = 3  # px: a piece of a paper line the finder missed is at most this thick (lines are 1-3 px here),
REMNANT_LENGTH = 4  # ... at least this many times longer,
REMNANT_REACH, REMNANT_TRACK = 2, 1 / 3  # ... and its line goes on beyond both its ends


def find_lines(faint: np.ndarray) -> tuple[np.ndarray, int]:
    """The paper lines' pixels in ``faint`` (within it, grown by one pixel: their anti-aliased rim),
    and the thickest a line may be, in pixels. ``faint`` is the ink at a lower threshold than the
    strokes', where lines are unbroken: a line at the threshold's edge would otherwise leave dashes."""
    across, upright, thickness = find_lines_by_direction(faint)
    return across | upright, thickness


def find_lines_by_direction(faint: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """find_lines' lines in two families: those running across the frame, and the upright ones (with
    the walls of printed boxes). A ruled sheet's margin line is the one upright line there, and often
    far stronger than the rules it crosses."""
    h, w = faint.shape
    factor = 2 if max(h, w) > 512 else 1  # lines are found on a half-size copy of large frames
    blocks = faint[:h - h % factor, :w - w % factor].reshape(h // factor, factor, w // factor, factor)
    small = np.any(blocks, axis=(1, 3))
    thickness = int(THIN * max(small.shape)) + 2
    rules = ruled(horizontal_lines(small, thickness))
    upright = ruled(horizontal_lines(small.T, thickness).T, axis=0)
    rules, upright = (rules & ~strokes_along(rules, small & ~upright),
                      upright & ~strokes_along(upright.T, (small & ~rules).T).T)
    upright |= walls(small & ~(rules | upright), rules, thickness)
    return at_full_size(rules, faint, factor), at_full_size(upright, faint, factor), thickness * factor


def at_full_size(found: np.ndarray, faint: np.ndarray, factor: int) -> np.ndarray:
    """Lines ``found`` on a copy ``factor`` times smaller, as ``faint``'s pixels, grown by one."""
    h, w = faint.shape
    lines = np.zeros_like(faint)
    if found.any():
        lines[:h - h % factor, :w - w % factor] = np.repeat(np.repeat(found, factor, axis=0), factor, axis=1)
        lines = dilate(lines & faint)
    return lines


def without_lines(mask: np.ndarray, lines: np.ndarray, thickness: int, pen: np.ndarray | None = None) -> np.ndarray:
    """``mask`` without the ``lines`` found, except where a stroke crosses them or where ``pen`` says the
    ink on a line is a pen's (far darker than the line: a 4's bar written on a ruled line as thick as
    it), and without the pieces of a line the finder missed (line_remnants)."""
    if not lines.any():
        return mask
    kept = mask & ~lines
    stroke = crossed(kept, thickness + 1)
    if pen is not None:
        stroke |= pen
    kept |= lines & mask & stroke
    remnants = line_remnants(kept, lines)
    if pen is not None:
        remnants &= ~pen  # what is left of a faded line is faint: a pen's stroke lying on a line is no remnant
    return kept & ~remnants


def line_remnants(kept: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """The marks of ``kept`` that are pieces of a found line where it fades too much to be found: as
    thin as a line (REMNANT_WIDTH), long for it, and with the line going on beyond both ends (``lines``
    over REMNANT_TRACK of the stretch of REMNANT_REACH times the mark's length in its columns or rows).
    A pen's 1 in a square of the grid ends at the square's lines, which it meets across."""
    labels, count = label(kept)
    boxes = extents(labels, count)
    tall, wide = boxes[:, 1] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 2] + 1
    narrow, long = np.minimum(tall, wide), np.maximum(tall, wide)
    candidates = np.flatnonzero((narrow <= REMNANT_WIDTH) & (long >= REMNANT_LENGTH * narrow))
    found = np.zeros(count + 1, bool)
    for k in candidates[candidates > 0][:MANY_PIECES]:
        top, bottom, left, right, _ = boxes[k]
        if tall[k] >= wide[k]:
            found[k] = line_goes_on(lines, top, bottom, left, right)
        else:
            found[k] = line_goes_on(lines.T, left, right, top, bottom)
    return found[labels]


def line_goes_on(lines: np.ndarray, top: int, bottom: int, left: int, right: int) -> bool:
    """Whether ``lines`` cover REMNANT_TRACK of the rows in columns ``left``..``right`` (and one beside)
    over REMNANT_REACH times the length ``top``..``bottom`` above it and below it, each in the frame."""
    h, w = lines.shape
    reach = REMNANT_REACH * (bottom - top + 1)
    track = np.asarray(lines[:, max(left - 1, 0):min(right + 2, w)].any(axis=1))
    above, below = track[max(top - reach, 0):top], track[bottom + 1:min(bottom + 1 + reach, h)]
    return all(len(side) >= reach // 2 and side.mean() >= REMNANT_TRACK for side in (above, below))


def dilate(mask: np.ndarray) -> np.ndarray:
    """One pixel more on every side (a line's anti-aliased rim)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def thin_only(mask: np.ndarray, thickness: int) -> np.ndarray:
    """Pixels of vertical runs no longer than ``thickness``: thick and vertical strokes set aside."""
    thick = runs_at_least(mask.T, thickness + 1).T
    return mask & ~thick


def horizontal_lines(mask: np.ndarray, thickness: int) -> np.ndarray:
    h, w = mask.shape
    thin = thin_only(mask, thickness)
    length = int(SPAN * w)
    found = np.zeros_like(mask)
    rows = np.arange(h)[:, None]
    ink_y, ink_x = np.nonzero(thin)
    for tilt in TILTS_DEG:
        offsets = np.round(np.arange(w) * np.tan(np.radians(tilt))).astype(np.int64)
        offsets -= offsets.min()
        shift = offsets.max() // 2
        if not may_hold_a_line(ink_y - offsets[ink_x] + shift, h, int(np.ceil(GAP_FILL * length))):
            continue
        source = rows + offsets[None, :] - shift  # sheared row for every (row, column)
        valid = (source >= 0) & (source < h)
        src = np.clip(source, 0, h - 1)
        sheared = np.where(valid, thin[src, np.arange(w)[None, :]], False)
        hits = runs_at_least(sheared, length, GAP_FILL) & valid
        ys, xs = np.nonzero(hits)
        found[src[ys, xs], xs] = True
    # bridge the gaps where thick strokes or other lines cross (set aside above)
    return found | (mask & near(found, 1, 1, thickness) & near(found, 1, -1, thickness))


def strokes_along(rules: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The pixels of the horizontal ``rules`` where a pen's stroke lies along one (the bar of a 7 or a
    4 written on the line): there ``mask`` (the ink without the upright lines) runs across the rule
    for ALONG_WIDTH times the rules' mean width or more, over ALONG_LENGTH widths along it. The
    rules are found with room for a thick line, which a thin stroke on a line fits within."""
    starts = rules.copy()
    starts[1:] &= ~rules[:-1]
    if not starts.any():
        return starts
    width = float(rules.sum() / starts.sum())
    across = runs_at_least(mask.T, max(3, int(np.ceil(ALONG_WIDTH * width)))).T & rules
    return runs_at_least(across, max(4, int(np.ceil(ALONG_LENGTH * width))))


def ruled(found: np.ndarray, axis: int = 1) -> np.ndarray:
    """The lines ``found`` along ``axis``, unless there is one only and it is shorter than LONE_SPAN of
    the frame: ruled paper has lines beside it and a lone rule runs across the sheet, while the base
    of a typeset 2 filling a tight crop spans half of it, and a pen's 1 on a card half its height.
    Pieces one after another along the same track are one line (a faint rule breaks up; a wobbly
    stroke's end is found at another tilt), and a line with under PIECE of the largest one's pixels
    is a fragment, not a line beside it."""
    labels, count = label(found)
    if count == 0 or count > MANY_PIECES:
        return found
    boxes = extents(labels, count)[1:]
    along = boxes[:, 2:4] if axis == 1 else boxes[:, 0:2]
    line_of = one_line(along, boxes[:, 0:2] if axis == 1 else boxes[:, 2:4])
    pixels = np.bincount(line_of, weights=boxes[:, 4])
    if int((pixels >= PIECE * pixels.max()).sum()) > 1:
        return found
    main = line_of == int(np.argmax(pixels))
    length = int(along[main, 1].max() - along[main, 0].min()) + 1
    return found if length >= LONE_SPAN * found.shape[axis] else np.zeros_like(found)


def one_line(along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """The line each piece belongs to, for pieces whose extents along the lines' direction and across
    it are ``along`` and ``across`` (int [n, 2], first and last, inclusive): pieces whose extents
    overlap across and not along (one after the other on one track), directly or through others, are
    one line; parallel lines overlap along. int [n], lines numbered from 0."""
    def overlap(extent: np.ndarray) -> np.ndarray:
        return (extent[:, None, 0] <= extent[None, :, 1]) & (extent[None, :, 0] <= extent[:, None, 1])

    a, b = np.nonzero(np.triu(overlap(across) & ~overlap(along), 1))
    return joined(len(along), a, b)


def walls(rest: np.ndarray, rules: np.ndarray, thickness: int) -> np.ndarray:
    """Thin, straight, nearly upright marks in ``rest`` that run from one found line (``rules``) down to
    another, no thicker than the lines, two or more of them: the walls of a form's boxes or a table's
    dividers, too short to be found as lines themselves. A wall printed faintly breaks up in the
    threshold: its pieces, one after another on one track, are a wall too (pieced_wall). A digit's
    stroke between two lines is thicker than the print, bends, or stands alone."""
    found = np.zeros_like(rest)
    if not rules.any():
        return found
    starts = rules.copy()
    starts[1:] &= ~rules[:-1]
    widest = max(2.0, WALL_WIDTH * rules.sum() / starts.sum())  # the lines' own thickness, and a little more
    labels, count = label(rest)
    boxes = extents(labels, count)

    def shaped(k: int) -> bool:
        top, bottom, left, right, _ = (int(v) for v in boxes[k])
        return wall_shaped(labels[top:bottom + 1, left:right + 1] == k, thickness, widest)

    heights, widths = boxes[:, 1] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 2] + 1
    whole = [[k] for k in range(1, count + 1) if heights[k] >= WALL_LENGTH * thickness
             and between_lines(rules, int(boxes[k, 0]), int(boxes[k, 1]), int(boxes[k, 2]), int(boxes[k, 3]),
                               thickness) and shaped(k)]
    walls_whole = {members[0] for members in whole}
    # pieces: upright (a box no wider than the lean allows), and few (noise has thousands of marks)
    upright = [k for k in range(1, count + 1) if k not in walls_whole and heights[k] >= thickness
               and widths[k] <= WALL_LEAN * heights[k] + 2 * widest + 1]
    pieces = [k for k in upright if shaped(k)] if len(upright) <= MANY_PIECES else []
    if pieces:
        tracks = one_line(boxes[pieces, 0:2], boxes[pieces, 2:4])
        for track in range(int(tracks.max()) + 1):
            members = [k for k, t in zip(pieces, tracks) if t == track]
            if len(members) > 1 and pieced_wall(labels, boxes, members, rules, thickness, widest):
                whole.append(members)
    if len(whole) >= 2:
        found = np.isin(labels, [k for members in whole for k in members])
    return found


def pieced_wall(labels: np.ndarray, boxes: np.ndarray, members: list[int], rules: np.ndarray, thickness: int,
                widest: float) -> bool:
    """Whether the pieces ``members`` (labels of one track, each thin and straight) are a wall: straight
    together, covering WALL_COVER of the way between the lines above and below them, the first or the
    last meeting its line."""
    top, bottom = int(boxes[members, 0].min()), int(boxes[members, 1].max())
    left, right = int(boxes[members, 2].min()), int(boxes[members, 3].max())
    columns = np.asarray(rules[:, max(0, left - thickness):right + 1 + thickness].any(axis=1))
    above, below = np.flatnonzero(columns[:top + thickness]), np.flatnonzero(columns[bottom - thickness + 1:])
    if not len(above) or not len(below):
        return False
    line_top, line_bottom = int(above[-1]), bottom - thickness + 1 + int(below[0])
    if top - line_top > thickness and line_bottom - bottom > thickness:
        return False  # meets neither line
    covered = int(boxes[members, 1].sum() - boxes[members, 0].sum()) + len(members)
    block = labels[top:bottom + 1, left:right + 1]
    return covered >= WALL_COVER * (line_bottom - line_top + 1) and \
        wall_shaped(np.isin(block, members), thickness, widest)


def between_lines(rules: np.ndarray, top: int, bottom: int, left: int, right: int, thickness: int) -> bool:
    """Whether a line passes near both ends of the mark (at a corner, level with the end; and a line
    may stop a little short of the corner)."""
    columns = slice(max(0, left - thickness), right + 1 + thickness)
    return all(rules[max(0, end - thickness):end + thickness + 1, columns].any() for end in (top, bottom))


def wall_shaped(mask: np.ndarray, ends: int, widest: float) -> bool:
    """Whether the mark is at most ``widest`` thick on average and its row centres keep to a straight
    line (least squares) leaning at most WALL_LEAN: print does, a pen's stroke bends. Judged without
    ``ends`` rows at each end, where a stub of the lines' rims joins a box's corner (and widens the
    mark's box and adds to its ink)."""
    ys, xs = np.nonzero(mask)
    rows = np.bincount(ys - ys.min())
    centres = np.bincount(ys - ys.min(), weights=xs) / np.maximum(rows, 1)
    y = np.flatnonzero(rows > 0)
    ends = min(ends, len(rows) // 5)
    y = y[(y >= ends) & (y < len(rows) - ends)]
    if len(y) < 3 or float(rows[y].mean()) > widest:
        return False
    slope, intercept = np.polyfit(y, centres[y], 1)
    bend = float(np.abs(centres[y] - (slope * y + intercept)).max())
    return abs(float(slope)) <= WALL_LEAN and bend <= max(WALL_BEND_PX, WALL_BEND * len(rows))


def may_hold_a_line(sheared_rows: np.ndarray, h: int, least: int) -> bool:
    """Whether any sheared row has at least ``least`` ink pixels: a run that fills enough of its
    window cannot exist otherwise, and counting is far cheaper than shearing the frame (most tilts
    hold no line: a photo's lines share one tilt, give or take the perspective)."""
    inside = sheared_rows[(sheared_rows >= 0) & (sheared_rows < h)]
    return bool(len(inside)) and int(np.bincount(inside).max()) >= least


def near(a: np.ndarray, axis: int, sign: int, reach: int) -> np.ndarray:
    """Pixels with a set pixel within ``reach`` steps in one direction along ``axis``."""
    out = np.zeros_like(a)
    for k in range(1, reach + 1):
        out |= np.roll(a, sign * k, axis=axis)
    return out


def crossed(kept: np.ndarray, reach: int) -> np.ndarray:
    """Pixels with kept ink within ``reach`` rows above and below, or columns left and right: where a
    stroke crosses a line."""
    vertical = near(kept, 0, 1, reach) & near(kept, 0, -1, reach)
    horizontal = near(kept, 1, 1, reach) & near(kept, 1, -1, reach)
    return vertical | horizontal
