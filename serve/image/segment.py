"""The digits in an ink map: connected components, judged against each other, grouped and ordered.

- Specks and dust are judged against the largest mark, not the frame: a component far smaller than
  the main marks is dropped.
- Long thin marks (paper line remains, shadow rims) are dropped, and so are marks cut by the frame
  when others are not (a desk or a sheet's edge at the border of a photo); with nothing inside, a
  mark along the frame or thinly across it (a strip of desk, a sheet's edge) is no digit either.
- Glyphs much shorter or taller than the tallest solid (not sliver-thin) glyph are dropped: the
  digits of a number stand about alike; and so are glyphs off the row of the glyph with the most ink
  (a number is written on a line), and shorter glyphs far from every other one (a piece of a margin
  line far to the left of a digit).
- Components stacked above each other (a 5's detached top bar, a 4 drawn in two strokes, a stroke
  cut by a removed paper line) are one glyph.
- Flat slivers and stacks of dashes (what a paper line leaves), and a thin mark far taller than every
  other (a sheet's edge), are not digits.
- A glyph wider than a digit may be two or more touching digits, or one wide digit: it carries a
  proposed cut (at the columns with the least ink near the expected cuts) as ``pieces``; two close
  neighbours may be one digit cut apart (a 0 whose top a paper line took): ``joined_with_next``.
  The model decides which reading holds (serve/reading.py).
Glyphs come left to right.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serve.image.ink import NO_BARS, NoDigitFound
from serve.image.lines import WALL_LENGTH, between_lines, thin_only, wall_shaped
from serve.image.morph import Box, blob_shaped, extents, label
from serve.image.normalize import BOX_THRESHOLD, stroke_width
from serve.image.objects import bar_shape, long_for_frame

SPECK = 0.2  # components smaller than this fraction of the largest one's height (and width) are specks
SMALL_AREA = 0.02  # ... or than this fraction of its ink area, unless inside one of the SHAPES largest marks
SHAPES = 8  # (bounded: a noisy frame has thousands of marks)
DASH_ASPECT = 10  # a part this many times wider than tall is a piece of a line, not of a digit
DASHES, DASH_FILL = 4, 0.06  # a "glyph" of at least this many parts filling less than this of its box
SLIVER_HEIGHT, SLIVER_WIDTH = 2.0, 0.25  # taller than twice every other mark, and this thin: not a digit
SHORT = 0.45  # glyphs shorter than this fraction of the tallest are not digits (dashes, fragments)
FAINT = 0.25  # a glyph with less ink than this fraction of the strongest one's does not set the height
OVERLAP = 0.5  # components sharing this fraction of the narrower one's columns are one glyph ...
STACK_ROWS, STACK_GAP = 0.3, 0.2  # ... or some columns, when one stands above the other (rows and gap, of the heights)
FAR_BELOW = 2.0  # ... unless the space between them is more than this times the taller one's height
DIGIT_ASPECT = 0.75  # typical width / height of one digit, for cutting touching digits
WIDE = 1.1  # a glyph wider than this times its height may hold touching digits: a cut is proposed
LINE_LENGTH = 0.4  # a component this long (fraction of the frame's longer side) ...
LINE_THICKNESS = 0.015  # ... and on average at most this thick is a paper line or an edge, not ink
MAX_DIGITS = 12
JOIN_GAP = 0.15  # neighbours closer than this (fraction of their height) ...
JOIN_ASPECT = 1.0  # ... whose union is at most this wide for its height may be one digit
OVERLAP_JOIN_ASPECT = 1.7  # ... or this wide, when the two overlap across (the halves of a wide 0)
ROW_OVERLAP = 0.5  # a digit shares at least this much of its height with the main glyph's rows
FAR_GAP = 2.0  # a glyph further than this many of the main glyph's heights from every other glyph ...
FAR_SHORT = 0.8  # ... and shorter than this share of its height is no digit of the number
MAX_PARTS = 64  # bounds the work on noisy images
OBJECT_CANDIDATES = 4  # the largest marks looked at as objects lying on the paper (serve/image/objects.py) ...
OBJECT_THICK, OBJECT_LONG = 2.0, 2.0  # ... this many times thicker than the largest drawing beside them and longer,
OBJECT_TRACE = 2.0  # ... whose strokes run at least this many times as long as the bar's are wide (stroke_width)
OBJECT_STROKES = 0.25  # ... in strokes at most this thick for its size
UNDERLINE_FLAT, UNDERLINE_BELOW = 3.0, 0.5  # an underline is this many times wider than tall, at most this far below
UNDERLINE_WIDTH, UNDERLINE_THIN = 0.9, 0.25  # ... as wide as the marks above it and this thin for their height
# an underline the digit touches: the lowest ink of this share of the glyph's columns on one line, within
UNDERLINE_FILL, UNDERLINE_SLACK, UNDERLINE_SLOPE = 0.8, 2.0, 0.3  # this many px of it, at most this steep
THREAD = 0.004  # what a missed paper line leaves is at most this thick (of the frame's longer side, >= 2 px) ...
RESCUED = 4  # ... in the largest marks cut by the frame, which are looked at for digits it ties to the edge
LEVEL = 0.1  # two walls of a comb start and end this close (of their height)
TINY = 0.015  # of the frame's longer side: no digit is smaller (thumbnails have small frames: SMALL_FRAME)
SMALL_FRAME = 64  # frames up to this size (MNIST-form inputs, thumbnails) keep marks that touch the edge
FILLS = 0.9  # a mark this tall and wide (of the frame) is what the image was cropped to
FRAMED = 0.35  # a mark inside another's box, at least this tall (of the other), and surrounded by it ...
RAYS, OPEN_RAYS = 16, 3  # ... (met by all but this many of this many rays from its centre) is what a box or ring frames
PRINTED_STROKE = 0.5  # a straight upright glyph at most this thick for the pen of the other glyphs ...
PRINTED_HEIGHT = 0.8  # ... and at least this tall for them is a printed box's wall, not a 1
WALL_ENDS = 2  # px: rows at each end of a wall not judged for straightness (a stub of the box's corner)
BARS, BAR_SHARE, BAR_LEVEL = 5, 0.8, 0.05  # a barcode: this many bars or more, this share of the glyphs, this level


@dataclass
class Glyph:
    """One digit candidate: its ink (other glyphs' ink masked out), cropped to its box in the ink map;
    what it may be read as instead: a wide glyph's proposed cut into touching digits, or the digit
    above an underline it touches."""

    ink: np.ndarray
    box: Box
    pieces: list["Glyph"] | None = None
    joined_with_next: "Glyph | None" = None  # this and the next glyph as one (a stroke cut apart)


@dataclass
class Part:
    labels: list[int]
    box: Box
    area: int


def find_glyphs(ink: np.ndarray) -> list[Glyph]:
    """The digit candidates of ``ink`` (white on black, background 0), left to right, with the
    alternative readings the model will choose between (a cut into touching digits, a digit without
    the underline it touches, a join of two)."""
    small = max(ink.shape) <= SMALL_FRAME
    # small frames come from the global rule, whose background is not exactly 0
    mask = ink > (BOX_THRESHOLD * float(ink.max()) if small else 0.0)
    labels, count = label(mask)
    if count == 0:
        return []
    parts = candidate_parts(components(labels, count), labels, small)
    if not parts:
        return []
    groups = digit_groups(parts, np.bincount(labels.ravel(), weights=ink.ravel(), minlength=count + 1))
    if not small:  # a mark far smaller than any digit in a photo is dust, however alone it is
        groups = [g for g in groups if max(g.box.height, g.box.width) >= TINY * max(ink.shape)]
        if not groups:
            return []
    median_height = sorted(g.box.height for g in groups)[len(groups) // 2]
    glyphs = []
    for group in groups:
        glyph = cut_out(group, labels, ink)
        if glyph is None:
            continue
        above = above_underline(glyph)
        if above is not None:
            glyph.pieces = [above]
        elif cut := split_wide(group, mask, median_height):
            glyph.pieces = [g for g in (cut_out(piece, labels, ink) for piece in cut) if g is not None] or None
        glyphs.append(glyph)
    glyphs = without_printed_walls(glyphs)
    if is_barcode(glyphs):
        raise NoDigitFound(NO_BARS)
    glyphs.sort(key=lambda g: g.box.x + g.box.width / 2)
    glyphs = glyphs[:MAX_DIGITS]
    for glyph, following in zip(glyphs, glyphs[1:]):
        if may_be_one(glyph.box, following.box):
            glyph.joined_with_next = joined(glyph, following)
    return glyphs


def without_printed_walls(glyphs: list[Glyph]) -> list[Glyph]:
    """Glyphs without the walls of a printed box or comb that the line finder left (their top and
    bottom lines were long enough to find, the walls too short): straight and upright, drawn far
    thinner than the other glyphs (PRINTED_STROKE) and standing about as tall or taller
    (PRINTED_HEIGHT). The digits of a number are written with one pen, so a 1 among them is as
    thick as they are; where every glyph is straight, the thickest is the pen's if it is a sliver
    too (a pen's 1 beside a wall; a symmetric 0's row centres are as straight)."""
    if len(glyphs) < 2:
        return glyphs
    # straight and upright whatever their thickness (the box's width bounds none): that is judged below
    straight = [wall_shaped(g.ink > 0, WALL_ENDS, float(g.box.width)) for g in glyphs]
    drawn = [g for g, s in zip(glyphs, straight) if not s]
    if not drawn:
        thickest = max(glyphs, key=lambda g: stroke_width(g.ink))
        if thickest.box.width >= SLIVER_WIDTH * thickest.box.height:
            return glyphs
        drawn = [thickest]
    pen = float(np.median([stroke_width(g.ink) for g in drawn]))
    height = float(np.median([g.box.height for g in drawn]))
    return [g for g, s in zip(glyphs, straight)
            if not (s and g.box.height >= PRINTED_HEIGHT * height and stroke_width(g.ink) <= PRINTED_STROKE * pen)]


def is_barcode(glyphs: list[Glyph]) -> bool:
    """Whether the glyphs are a barcode's bars: at least BARS of them, nearly all (BAR_SHARE) straight,
    upright slivers whose tops are level within BAR_LEVEL of their height. Each bar is a perfect "1" to
    the model; a person's row of 1s leans, bends and starts at different heights."""
    if len(glyphs) < BARS:
        return False
    bars = [g for g in glyphs if g.box.width < SLIVER_WIDTH * g.box.height
            and wall_shaped(g.ink > 0, WALL_ENDS, float(g.box.width))]
    if len(bars) < BAR_SHARE * len(glyphs):
        return False
    top = float(np.median([g.box.y for g in bars]))
    height = float(np.median([g.box.height for g in bars]))
    return sum(abs(g.box.y - top) <= BAR_LEVEL * height for g in bars) >= BAR_SHARE * len(glyphs)


def candidate_parts(parts: list[Part], labels: np.ndarray, small: bool) -> list[Part]:
    """The components (of ``labels``) that may be (parts of) digits: no line remains,
    slivers, specks, frame cuts, or things lying on the paper."""
    shape = labels.shape
    parts = [p for p in parts if not is_line_or_edge(p, shape) and not is_dash(p)] or parts
    inside = [p for p in parts if not touches_frame(p.box, shape)]
    if any(p.box.height >= FILLS * shape[0] and p.box.width >= FILLS * shape[1] for p in parts):
        # a digit cropped to its ink fills the frame, and the frame cuts it: dust inside is no digit
        inside = [p for p in inside if max(p.box.height, p.box.width) >= TINY * max(shape)]
    if inside and not small:
        # a mark cut by the frame (a desk's edge, a sheet's corner, a neighbour's digit) cannot be read,
        # and is not what the photo is of; but a missed paper line may tie more of the marks inside to
        # the frame
        cut = sorted((p for p in parts if touches_frame(p.box, shape)), key=lambda p: p.area, reverse=True)
        parts = inside + [piece for p in cut[:RESCUED] for piece in untied(p, labels)]
    elif not small:  # only marks cut by the frame: a digit the frame crops, unless the mark runs along it
        parts = [p for p in parts if not along_frame(p, labels) and not crosses_frame(p, labels.shape)
                 and not hairline(p)]
        if not parts:
            return []
    parts = without_lying_objects(parts, labels)
    parts = drop_specks(parts)
    if len(parts) > MAX_PARTS:  # noise or texture: the largest marks are the only candidates worth the time
        parts = sorted(parts, key=lambda p: p.area, reverse=True)[:MAX_PARTS]
    parts = without_underlines(parts)
    if not small:
        parts = [p for p in parts if not is_blob(p, labels) or within_another(p, parts)] or parts
        parts = without_frames(parts, labels)
    return parts


ALONG_FRAME = 0.4  # a mark touching the frame over this share of its length runs along the frame ...
ACROSS_FRAME = 0.25  # ... when it is also at most this deep into the frame
HAIRLINE = 0.012  # with nothing inside the frame, a mark it cuts this thin for its length is a paper line's remains
CROSSING_THICKNESS = 0.04  # a narrow mark from one edge of the frame to the opposite one, on average at most
# this thick for its length, is an edge or a line across the photo: a 1 cropped that tightly is thicker


def untied(part: Part, labels: np.ndarray) -> list[Part]:
    """The thick pieces of a mark cut by the frame that the frame does not cut once the mark's thin
    threads (at most THREAD tall: a ruled line's remains) are gone: a paper line the line finder
    missed (bent by the lens, broken up) runs off the sheet and ties the digits it touches to the
    frame's edge. The walls of a comb of boxes running off the frame are no such pieces (comb_walls).
    ``labels`` gets the pieces' labels."""
    h, w = labels.shape
    b = part.box
    window = labels[b.y:b.bottom, b.x:b.right]
    own = own_mask(part, labels)
    thread = max(2, round(THREAD * max(h, w)))
    thick = own & ~thin_only(own, thread)
    pieces, count = label(thick)
    placed = [(piece, Box(b.x + piece.box.x, b.y + piece.box.y, piece.box.width, piece.box.height))
              for piece in components(pieces, count)]
    inside = [(piece, box) for piece, box in placed if not touches_frame(box, (h, w))]
    walls = comb_walls([piece for piece, _ in inside], pieces, own & ~thick, thread)
    found, next_label = [], int(labels.max()) + 1
    for piece, box in inside:
        if id(piece) in walls:
            continue
        window[pieces == piece.labels[0]] = next_label
        found.append(Part([next_label], box, piece.area))
        next_label += 1
    return found


def comb_walls(pieces: list[Part], labels: np.ndarray, threads: np.ndarray, thread: int) -> set[int]:
    """The ids of the ``pieces`` (labelled in ``labels``) that are the walls of a comb of printed boxes
    whose top and bottom (too short to be found as paper lines) tie it to the frame: thin, straight,
    upright marks (at most twice a ``thread`` thick) that the ``threads`` meet at both ends, standing
    as tall as another such mark, level with it. A pen's 1 that a missed line ties to the frame is
    met by the line once, and is rarely that thin, straight and level with another."""
    upright = [p for p in pieces if p.box.height >= WALL_LENGTH * thread
               and between_lines(threads, p.box.y, p.box.bottom - 1, p.box.x, p.box.right - 1, thread)
               and wall_shaped(labels[p.box.y:p.box.bottom, p.box.x:p.box.right] == p.labels[0], thread, 2.0 * thread)]
    return {id(p) for p in upright for q in upright if q is not p and level_with(p.box, q.box)}


def level_with(a: Box, b: Box) -> bool:
    """Whether two boxes start and end at about the same height (within LEVEL of the taller)."""
    tolerance = LEVEL * max(a.height, b.height)
    return abs(a.y - b.y) <= tolerance and abs(a.bottom - b.bottom) <= tolerance


def along_frame(part: Part, labels: np.ndarray) -> bool:
    """Whether ``part`` lies along an edge of the frame, touching it over much of its length, like a
    strip of desk beside a sheet, a sheet's edge or a shadow's rim; the frame cuts a digit it crops
    across its strokes, touching it over a few stroke widths (or runs along a whole side of a
    tightly cropped one, which then fills the frame)."""
    h, w = labels.shape
    b, ids = part.box, part.labels
    narrow, low = b.width <= ACROSS_FRAME * w, b.height <= ACROSS_FRAME * h
    sides = ((labels[:, 0], b.height, narrow), (labels[:, -1], b.height, narrow),
             (labels[0], b.width, low), (labels[-1], b.width, low))
    return any(shallow and np.isin(edge, ids).sum() >= ALONG_FRAME * length for edge, length, shallow in sides)


def crosses_frame(part: Part, shape: tuple[int, int]) -> bool:
    """Whether ``part`` runs from one edge of the frame to the opposite one, narrow and thin: a
    sheet's edge or its shadow crossing a photo, not a digit (which the frame would have to crop at
    both ends, and whose strokes are thicker for their length)."""
    h, w = shape
    b = part.box
    if b.y == 0 and b.bottom >= h:
        span, narrow = b.height, b.width <= ACROSS_FRAME * w
    elif b.x == 0 and b.right >= w:
        span, narrow = b.width, b.height <= ACROSS_FRAME * h
    else:
        return False
    return narrow and part.area / span < CROSSING_THICKNESS * span


def hairline(part: Part) -> bool:
    """Whether ``part`` is on average thinner than HAIRLINE of its length: what a paper line the line
    finder missed leaves, where the frame cuts it (a digit's stroke is thicker for its length)."""
    length = float(np.hypot(part.box.width, part.box.height))
    return part.area / length < HAIRLINE * length


def digit_groups(parts: list[Part], strength: np.ndarray) -> list[Part]:
    """Parts grouped into digit candidates; stacks of dashes, tall slivers and short marks dropped.
    ``strength``: each label's ink (the sum of its ink values)."""
    groups = group_stacked(parts)
    groups = drop_slivers([g for g in groups if not is_dash_stack(g)] or groups)
    groups = of_digit_height(groups, strength)
    return near_each_other(on_main_row(groups, strength), strength)


def of_digit_height(groups: list[Part], strength: np.ndarray) -> list[Part]:
    """The digits of a number stand about alike: glyphs far shorter (dashes, fragments) or far taller
    (margin lines, shadow edges) than the tallest glyph that is not a thin sliver are dropped. Thin
    slivers do not set the height, since paper and shadows leave long ones; a lone 1 still counts.
    Nor do faint marks (under FAINT of the strongest glyph's ink, ``strength`` per label): the
    speckle of a shadow's edge beside a pen's 1 is no digit to measure the 1 by."""
    ink = [float(strength[g.labels].sum()) for g in groups]
    strong = [g for g, s in zip(groups, ink) if s >= FAINT * max(ink)]
    solid = [g for g in strong if g.box.width >= SLIVER_WIDTH * g.box.height]
    reference = max(g.box.height for g in (solid or strong))
    return [g for g in groups if SHORT * reference <= g.box.height <= reference / SHORT]


def on_main_row(groups: list[Part], strength: np.ndarray) -> list[Part]:
    """The glyphs in the row of the one with the most ink (``strength``, each label's; a pen's strokes
    are solid ink, the speckle a shadow's edge leaves is faint): a number is written on a line, and a
    mark above or below it (a sheet's edge, a grid line's remains, a note) is not one of its digits."""
    main = main_box(groups, strength)
    return [g for g in groups if min(g.box.bottom, main.bottom) - max(g.box.y, main.y)
            >= ROW_OVERLAP * min(g.box.height, main.height)]


def main_box(groups: list[Part], strength: np.ndarray) -> Box:
    """The box of the glyph with the most ink (``strength``, each label's)."""
    return max(groups, key=lambda g: float(strength[g.labels].sum())).box


def near_each_other(groups: list[Part], strength: np.ndarray) -> list[Part]:
    """Without the glyphs far from every other one and shorter than the one with the most ink (FAR_GAP,
    FAR_SHORT): a number's digits stand close, and a piece of a margin or grid line left far from the
    digit is no digit of it (it read as a sure 1 before the digit: "10", "16", "19")."""
    if len(groups) < 2:
        return groups
    main = main_box(groups, strength)

    def gap(a: Box, b: Box) -> int:
        return max(a.x - b.right, b.x - a.right, 0)

    return [g for g in groups if g.box.height >= FAR_SHORT * main.height
            or min(gap(g.box, o.box) for o in groups if o is not g) <= FAR_GAP * main.height]


def joined(left: Glyph, right: Glyph) -> Glyph:
    """Two glyphs as one, in the box around both."""
    union = left.box.union(right.box)
    ink = np.zeros((union.height, union.width), np.float32)
    for g in (left, right):
        y, x = g.box.y - union.y, g.box.x - union.x
        region = ink[y:y + g.box.height, x:x + g.box.width]
        np.maximum(region, g.ink, out=region)
    return Glyph(ink, union)


def may_be_one(left: Box, right: Box) -> bool:
    """Two neighbours so close, and together so digit-shaped, that they may be one digit cut apart
    (a 0 whose top and bottom a paper line took): the model decides (serve/reading.py)."""
    union = left.union(right)
    gap = right.x - left.right
    widest = OVERLAP_JOIN_ASPECT if gap < 0 else JOIN_ASPECT
    return gap <= JOIN_GAP * union.height and union.width <= widest * union.height


def cut_out(part: Part, labels: np.ndarray, ink: np.ndarray) -> Glyph | None:
    b = part.box
    crop = np.where(own_mask(part, labels), ink[b.y:b.bottom, b.x:b.right], 0.0)
    return Glyph(crop.astype(np.float32), b) if crop.max(initial=0) > 0 else None


def components(labels: np.ndarray, count: int) -> list[Part]:
    return [Part([k], Box(int(left), int(top), int(right - left + 1), int(bottom - top + 1)), int(area))
            for k, (top, bottom, left, right, area) in enumerate(extents(labels, count)) if k > 0]


def touches_frame(box: Box, shape: tuple[int, int]) -> bool:
    return box.x == 0 or box.y == 0 or box.right >= shape[1] or box.bottom >= shape[0]


def is_line_or_edge(part: Part, shape: tuple[int, int]) -> bool:
    """Long and thin anywhere (what is left of a paper line, a shadow's rim), or a large filled
    region touching the frame (a desk, a dark border)."""
    h, w = shape
    b = part.box
    length = float(np.hypot(b.width, b.height))
    long_thin = length > LINE_LENGTH * max(h, w) and part.area / length < LINE_THICKNESS * max(h, w)
    touches = b.x == 0 or b.y == 0 or b.right >= w or b.bottom >= h
    filled = part.area > 0.6 * b.width * b.height and part.area > 0.05 * h * w
    return long_thin or (touches and filled)


def without_lying_objects(parts: list[Part], labels: np.ndarray) -> list[Part]:
    """Without a pen or pencil lying on the paper beside the digit: a straight filled bar (bar_shape),
    long for the frame (long_for_frame), at least OBJECT_THICK times as thick as the strokes of the
    largest mark drawn beside it and OBJECT_LONG times as long. Shrunk to a field, such a bar is a
    perfect 1, and beside it the digit is a speck. A 1 of a number is as thick as its other digits
    (one pen) and about as tall; what a marker's 1 leaves beside itself (a blot, its flag cut off) lies
    against it or is no drawing; what a paper line leaves is short strokes (OBJECT_TRACE).
    The drawing's ink is not judged: beside a black pen a pencil's digit is pale."""
    largest = sorted(parts, key=lambda p: p.area, reverse=True)[:OBJECT_CANDIDATES]
    objects = set()
    for part in largest:
        mask = own_mask(part, labels)
        bar = bar_shape(mask, part.box)
        if bar is None or not long_for_frame(bar, labels.shape):
            continue
        beside = [p for p in largest if p is not part and bar.beside(p.box)]
        # a drawing's strokes run far longer than a pen is wide (area / stroke width: their length);
        # what a paper line leaves is as short as the line's remains
        trace = OBJECT_TRACE * stroke_width(mask.astype(np.float32))
        drawn = [(p, stroke) for p in beside
                 if (stroke := drawing_stroke(p, labels)) is not None and p.area / stroke >= trace]
        if drawn:  # measured by the largest: a fragment of a digit (a loop a gap cut off) is no digit
            other, stroke = max(drawn, key=lambda d: d[0].area)
            size = max(other.box.height, other.box.width)
            if bar.width >= OBJECT_THICK * stroke and bar.length >= OBJECT_LONG * size:
                objects.add(id(part))
    return [p for p in parts if id(p) not in objects]


def drawing_stroke(part: Part, labels: np.ndarray) -> float | None:
    """The stroke width of a mark drawn in strokes (at most OBJECT_STROKES of its size thick: no blot), else None."""
    b = part.box
    stroke = stroke_width(own_mask(part, labels).astype(np.float32))
    return stroke if stroke <= OBJECT_STROKES * max(b.height, b.width) else None


def without_underlines(parts: list[Part]) -> list[Part]:
    """Without the lines drawn under the digits (an answer underlined, once or twice): a flat mark
    (UNDERLINE_FLAT) just below marks whose columns it shares (within UNDERLINE_BELOW of their height),
    as wide as all of them (UNDERLINE_WIDTH) and far thinner than they are tall (UNDERLINE_THIN).
    Joined to the digit above it, a 7 underlined was a 2. A 5's detached bar lies above it."""
    flat = [p for p in parts if p.box.width >= UNDERLINE_FLAT * p.box.height]
    lines = set()
    for line in flat:
        b = line.box
        above = [p.box for p in parts if p is not line and p.box.width < UNDERLINE_FLAT * p.box.height
                 and min(p.box.right, b.right) > max(p.box.x, b.x) and p.box.bottom <= b.y + b.height
                 and b.y - p.box.bottom <= UNDERLINE_BELOW * p.box.height]
        if not above:
            continue
        span = above[0]
        for box in above[1:]:
            span = span.union(box)
        if b.width >= UNDERLINE_WIDTH * span.width and b.height <= UNDERLINE_THIN * span.height:
            lines.add(id(line))
    return [p for p in parts if id(p) not in lines]


def above_underline(glyph: Glyph) -> Glyph | None:
    """The glyph without an underline drawn touching it, as the one piece it may be read as instead
    (serve/reading.py: prefer_pieces): the lowest ink of UNDERLINE_FILL of its columns lies on one
    straight, nearly level line, the ink above that line is at most UNDERLINE_THIN of the glyph's
    height thick there, and the line runs on beyond the rest on both sides. Touching the digit, the
    line is no separate mark for without_underlines to drop."""
    mask = glyph.ink > 0
    h, w = mask.shape
    columns = np.flatnonzero(mask.any(axis=0))
    if len(columns) < UNDERLINE_FILL * w or w < 8:
        return None
    lowest = h - 1 - np.argmax(mask[::-1, columns], axis=0)
    on_line = np.ones(len(columns), bool)
    for _ in range(2):  # fit, then fit again to the columns near the line (not where the digit touches it)
        slope, offset = np.polyfit(columns[on_line], lowest[on_line], 1)
        on_line = np.abs(lowest - (slope * columns + offset)) <= UNDERLINE_SLACK
        if on_line.sum() < 2:
            return None
    if on_line.sum() < UNDERLINE_FILL * w or abs(slope) > UNDERLINE_SLOPE:
        return None
    thickness = float(np.median([run_up(mask[:, x], y) for x, y in zip(columns[on_line], lowest[on_line])]))
    if thickness > UNDERLINE_THIN * h:
        return None
    yy, xx = np.mgrid[0:h, 0:w]
    kept = np.where(yy < slope * xx + offset - 1.5 * thickness, glyph.ink, 0.0).astype(np.float32)
    ys, xs = np.nonzero(kept)
    if not len(ys) or ys.max() - ys.min() + 1 < (1 - 2 * UNDERLINE_THIN) * h:
        return None  # what is above the line is most of the glyph: a digit, not a line's own ragged edge
    line = columns[on_line]
    if min(xs.min() - line.min(), line.max() - xs.max()) < thickness:
        return None  # a line ending where a stroke meets it is the digit's or a letter's own (a 2's, an L's)
    top, left = int(ys.min()), int(xs.min())
    box = Box(glyph.box.x + left, glyph.box.y + top, int(xs.max()) - left + 1, int(ys.max()) - top + 1)
    return Glyph(kept[top:top + box.height, left:left + box.width], box)


def run_up(column: np.ndarray, bottom: int) -> int:
    """How many inked pixels of ``column`` run up from row ``bottom``."""
    run = 0
    while bottom - run >= 0 and column[bottom - run]:
        run += 1
    return run


def drop_specks(parts: list[Part]) -> list[Part]:
    """Marks far smaller than the largest, unless inside another mark's box: what is drawn inside a
    shape (a smiley's eyes, the dot in a circle) is part of it, and without it the shape is a 0."""
    biggest = max(parts, key=lambda p: p.area)
    size = max(biggest.box.height, biggest.box.width)
    big = [p for p in parts if p.area >= SMALL_AREA * biggest.area and max(p.box.height, p.box.width) >= SPECK * size]
    shapes = sorted(big, key=lambda p: p.area, reverse=True)[:SHAPES]
    kept = {id(p) for p in big}
    return [p for p in parts if id(p) in kept or any(inside(p.box, s.box) for s in shapes)]


def own_mask(part: Part, labels: np.ndarray) -> np.ndarray:
    b = part.box
    return np.isin(labels[b.y:b.bottom, b.x:b.right], part.labels)


def is_blob(part: Part, labels: np.ndarray) -> bool:
    """A blob (morph.blob_shaped; inside another mark a blob stays: a smiley's eyes)."""
    return blob_shaped(own_mask(part, labels))


def within_another(part: Part, parts: list[Part]) -> bool:
    return any(inside(part.box, other.box) for other in parts)


def without_frames(parts: list[Part], labels: np.ndarray) -> list[Part]:
    """Marks that surround another mark of about a digit's size are frames (a printed box, a ring drawn
    around a digit, a canvas's border), not digits: a digit's loop holds nothing as large. Smaller
    marks inside (a dot in a circle, a smiley's eyes) leave the shape as it is."""
    if len(parts) < 2:
        return parts
    frames = set()
    for outer in sorted(parts, key=lambda p: p.area, reverse=True)[:SHAPES]:
        b = outer.box
        inner = [p for p in parts if p is not outer and inside(p.box, b) and p.box.height >= FRAMED * b.height]
        if not inner:
            continue
        mask = own_mask(outer, labels)
        if any(surrounds(mask, p.box.y - b.y + p.box.height / 2, p.box.x - b.x + p.box.width / 2) for p in inner):
            frames.add(id(outer))
    return [p for p in parts if id(p) not in frames] or parts


def surrounds(mask: np.ndarray, y: float, x: float) -> bool:
    """Whether ``mask`` lies around the point (y, x) of its box: rays from it in RAYS directions meet the
    mask in all but a few (a ring drawn around a digit is often left open)."""
    h, w = mask.shape
    steps = np.arange(max(h, w) * 1.5)
    met = 0
    for angle in np.linspace(0, 2 * np.pi, RAYS, endpoint=False):
        ys = np.round(y + steps * np.sin(angle)).astype(np.int64)
        xs = np.round(x + steps * np.cos(angle)).astype(np.int64)
        within = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        met += bool(mask[ys[within], xs[within]].any())
    return met >= RAYS - OPEN_RAYS


def inside(inner: Box, outer: Box) -> bool:
    return outer.x < inner.x and inner.right < outer.right and outer.y < inner.y and inner.bottom < outer.bottom


def group_stacked(parts: list[Part]) -> list[Part]:
    """Join parts whose columns overlap: pieces of one digit stacked or crossing (one sweep, left to
    right). Parts far apart vertically are not one digit however their columns overlap (a digit and a
    paper line's remains at the bottom of the sheet)."""
    groups: list[Part] = []
    for part in sorted(parts, key=lambda p: p.box.x):
        if groups:
            a, b = groups[-1].box, part.box
            shared = min(a.right, b.right) - max(a.x, b.x)
            gap = max(a.y, b.y) - min(a.bottom, b.bottom)
            near = gap <= FAR_BELOW * max(a.height, b.height)
            if near and (shared >= OVERLAP * min(a.width, b.width) or (shared > 0 and one_above_other(a, b))):
                groups[-1] = Part(groups[-1].labels + part.labels, a.union(b), groups[-1].area + part.area)
                continue
        groups.append(part)
    return groups


def one_above_other(a: Box, b: Box) -> bool:
    """Boxes stacked with (almost) no rows in common and little space between: the two halves of a
    stroke a paper line was removed from (a 3 whose lower bowl runs along a line for a while)."""
    rows = min(a.bottom, b.bottom) - max(a.y, b.y)  # negative: the gap between them
    return -STACK_GAP * max(a.height, b.height) <= rows <= STACK_ROWS * min(a.height, b.height)


def drop_slivers(groups: list[Part]) -> list[Part]:
    """Drop thin marks far taller than every other mark: what a sheet's edge or a shadow's rim leaves
    beside the digits (a 1 stands about as tall as its neighbours)."""
    if len(groups) < 2:
        return groups
    kept = []
    for g in groups:
        others = max(o.box.height for o in groups if o is not g)
        if not (g.box.height > SLIVER_HEIGHT * others and g.box.width < SLIVER_WIDTH * g.box.height):
            kept.append(g)
    return kept or groups


def is_dash(part: Part) -> bool:
    """A flat horizontal sliver: a piece of a paper line (a 5's or 7's bar is far less flat)."""
    return part.box.width >= DASH_ASPECT * part.box.height


def is_dash_stack(group: Part) -> bool:
    """Many small parts stacked in a tall, mostly empty box: what paper lines leave along a margin or
    a desk's edge, not a digit (whose few parts fill its box far more)."""
    return len(group.labels) >= DASHES and group.area < DASH_FILL * group.box.width * group.box.height


def split_wide(part: Part, mask: np.ndarray, median_height: int) -> list[Part] | None:
    """A proposed cut of a glyph wider than a digit into touching digits, at its thinnest columns."""
    b = part.box
    height = max(b.height, median_height)
    if b.width <= WIDE * height:
        return None
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
    pieces = [Part(part.labels, Box(b.x + x0, b.y, x1 - x0, b.height), part.area)
              for x0, x1 in zip(cuts, cuts[1:]) if x1 - x0 >= 2]
    slants = [slant(mask[p.box.y:p.box.bottom, p.box.x:p.box.right]) for p in pieces]
    if any(left * right < 0 and min(abs(left), abs(right)) > MEETING_STROKES
           for left, right in zip(slants, slants[1:])):
        return None  # two straight strokes slanting towards each other (a V, a check mark): one shape
    return pieces if len(pieces) > 1 else None


MEETING_STROKES = 0.6  # |correlation of x and y| of a piece's ink from which it is a slanted straight stroke


def slant(ink: np.ndarray) -> float:
    """The correlation of x and y over ``ink``'s pixels (y down): near +1 for a straight stroke like
    a backslash, near -1 like a slash, near 0 for a digit's loops and curves or an upright stroke."""
    ys, xs = np.nonzero(ink)
    if len(xs) < 3 or xs.std() == 0 or ys.std() == 0:
        return 0.0
    return float(np.corrcoef(xs, ys)[0, 1])
