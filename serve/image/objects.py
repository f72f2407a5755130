"""Objects lying on the paper beside the digit: a pen or a pencil, seen as a long straight filled bar.

Shrunk to a field, such a bar is a perfect 1, and beside it the digit is a speck; darker than a
pencil's digit, it would also set the ink threshold above the digit's strokes. Both the ink step
(serve/image/ink.py: what sets the threshold) and the glyph step (serve/image/segment.py: which marks
are digits) ask the same question here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serve.image.morph import Box

BAR_FILL, BAR_ASPECT = 0.85, 5.0  # a straight filled bar fills this much of its rectangle, this many times longer
OBJECT_FRAME = 0.2  # a pen is at least this long for the frame's longer side (~14 cm: the frame rarely 5 times it)
OBJECT_DIGIT = 0.1  # a drawing beside a pen is at least this long for the pen (and as big as it is wide)


@dataclass(frozen=True)
class Bar:
    length: float
    width: float
    centre: tuple[float, float]  # x, y in the frame
    across: tuple[float, float]  # unit vector across the bar

    def clear_of(self, box: Box) -> bool:
        """Whether ``box``'s centre lies beyond the bar's width from its axis (beside it, not against it)."""
        dx, dy = box.x + box.width / 2 - self.centre[0], box.y + box.height / 2 - self.centre[1]
        return abs(dx * self.across[0] + dy * self.across[1]) >= self.width

    def beside(self, box: Box) -> bool:
        """Whether ``box`` may hold a drawing beside the bar: clear of it, and at least OBJECT_DIGIT of
        its length and its width big (a digit beside a pen is taller than the pen is thick: a smaller
        mark is a letter's dot, dust)."""
        return self.clear_of(box) and max(box.width, box.height) >= max(OBJECT_DIGIT * self.length, self.width)


def bar_shape(mask: np.ndarray, box: Box) -> Bar | None:
    """The mark (``mask`` within ``box``) as a straight filled bar: its pixels fill BAR_FILL of the
    rectangle their principal axes give, at least BAR_ASPECT times longer than wide; else None."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 3:
        return None
    spread, axes = np.linalg.eigh(np.cov(np.stack([xs, ys]).astype(np.float64)))  # ascending
    # a filled rectangle of length L has variance L^2 / 12 along it
    length, width = float(np.sqrt(12 * spread[1])), float(np.sqrt(12 * max(spread[0], 0.0)))
    if width <= 0 or length < BAR_ASPECT * width or len(xs) < BAR_FILL * length * width:
        return None
    centre = (box.x + float(xs.mean()), box.y + float(ys.mean()))
    return Bar(length, width, centre, (float(axes[0, 0]), float(axes[1, 0])))


def long_for_frame(bar: Bar, shape: tuple[int, ...]) -> bool:
    """Whether ``bar`` is as long as a pen lying in a frame of ``shape`` is (OBJECT_FRAME)."""
    return bar.length >= OBJECT_FRAME * max(shape[:2])
