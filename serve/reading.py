"""One reading per image, for every front end: the digits with their boxes and probabilities, the
number they make, or a refusal with its reason.

bytes → ``prepare_page`` (decode, ink, glyphs, one field per glyph) → the model on all fields at once →
``interpret`` (accept the digits, or refuse). ``serve predict``, ``/predict`` and the page all print or
encode the same ``Reading``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from serve.image.decode import DEFAULT_MAX_PIXELS, ImageError, at_drawn_scale, decode_image, to_rgb
from serve.image.ink import NO_INK, NoDigitFound, ink_map
from serve.image.normalize import INK_MIN, FieldSpec, fit_to_field, is_field_form
from serve.image.segment import Box, Glyph, find_glyphs

if TYPE_CHECKING:
    from PIL import Image

    from serve.model import DigitModel

@dataclass
class Page:
    """An image prepared for the model: one field per glyph, left to right (or why there is none);
    after those, the fields of the pieces a glyph may be read as instead (``pieces``: glyph index →
    field indices: a wide glyph cut into touching digits, or a digit without the underline it touches),
    for the model to decide between."""

    name: str
    fields: np.ndarray  # float32 [k, size, size]
    boxes: list[Box]  # in the original image's pixels, one per field
    refusal: str | None = None  # the image has nothing to read (NoDigitFound's message)
    error: str | None = None  # the input could not be read at all
    pieces: dict[int, list[int]] = field(default_factory=dict)
    joins: dict[int, int] = field(default_factory=dict)  # glyph i → the field of glyphs i and i + 1 as one

    @property
    def glyphs(self) -> int:
        return len(self.fields) - sum(len(p) for p in self.pieces.values()) - len(self.joins)


@dataclass(frozen=True)
class DigitRead:
    label: str
    probability: float
    box: Box
    probabilities: np.ndarray  # over every class of the model


@dataclass
class Reading:
    image: str
    digits: list[DigitRead] = field(default_factory=list)  # the digits read, left to right (empty if refused)
    reason: str | None = None  # why the image was refused ("not a digit" answers)
    best_guess: DigitRead | None = None  # for the curious, when refused
    error: str | None = None  # the input could not be read (not an answer)

    @property
    def not_a_digit(self) -> bool:
        return self.error is None and not self.digits

    @property
    def text(self) -> str | None:
        return "".join(d.label for d in self.digits) if self.digits else None

    def line(self, labels: list[str], top_k: int = 1) -> str:
        """The plain output line of `serve predict`."""
        if self.error:
            return f"{self.image}: error: {self.error}"
        if self.not_a_digit:
            guess = (f"best guess {self.best_guess.label}, {self.best_guess.probability:.2f}" if self.best_guess
                     else self.reason)
            return f"{self.image}: not a digit ({guess})"
        if len(self.digits) == 1:
            digit = self.digits[0]
            line = f"{self.image}: {digit.label} (probability {digit.probability:.3f})"
            if top_k > 1:
                line += "  top-{}: {}".format(top_k, ", ".join(f"{labels[i]} {v:.3f}" for i, v in top(digit, top_k)))
            return line
        lowest = min(d.probability for d in self.digits)
        return (f"{self.image}: {self.text} (digits {' '.join(d.label for d in self.digits)}, "
                f"lowest probability {lowest:.2f})")

    def record(self, labels: list[str], top_k: int = 1) -> dict[str, Any]:
        """The JSON object of `serve predict --json` and of the server's /predict."""
        record: dict[str, Any] = {"image": self.image}
        if self.error:
            record["error"] = self.error
            return record
        record.update(text=self.text, not_a_digit=self.not_a_digit,
                      digits=[{"label": d.label, "probability": d.probability, "box": box_list(d.box)}
                              for d in self.digits],
                      label=None, probability=None)
        if len(self.digits) == 1:
            digit = self.digits[0]
            record.update(label=label_value(digit.label),
                          probability=digit.probability,
                          probabilities=[float(v) for v in digit.probabilities])
            if top_k > 1:
                record["top_k"] = [{"label": label_value(labels[i]), "probability": v} for i, v in top(digit, top_k)]
        if self.not_a_digit:
            record["reason"] = self.reason
            record["best_guess"] = None if self.best_guess is None else {
                "label": self.best_guess.label, "probability": self.best_guess.probability,
                "box": box_list(self.best_guess.box)}
        return record


def label_value(label: str) -> int | str:
    """A digit label as the int JSON readers expect (as in `label`); other classes by name."""
    return int(label) if label.isdigit() else label


def box_list(box: Box) -> list[int]:
    return [box.x, box.y, box.width, box.height]


def top(digit: DigitRead, k: int) -> list[tuple[int, float]]:
    order = np.argsort(-digit.probabilities, kind="stable")[:k]
    return [(int(i), float(digit.probabilities[i])) for i in order]


def unreadable(name: str, error: str, spec: FieldSpec = FieldSpec()) -> Page:
    return Page(name, np.zeros((0, spec.size, spec.size), np.float32), [], error=error)


def glyphs_of(ink: np.ndarray) -> list[Glyph]:
    """The glyphs of an ink map; NoDigitFound(NO_INK) when there are none."""
    glyphs = find_glyphs(ink) if ink.max(initial=0.0) >= INK_MIN else []
    if not glyphs:
        raise NoDigitFound(NO_INK)
    return glyphs


def prepare_page(data: bytes, name: str, spec: FieldSpec = FieldSpec(),
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Page:
    """Image bytes → fields for the model. Unreadable input is a Page with ``error``, never an exception."""
    try:
        decoded = decode_image(data, max_pixels)
    except ImageError as exc:
        return unreadable(name, str(exc), spec)
    return page_of_image(decoded.image, name, spec, decoded.scale)


def page_of_image(image: "Image.Image", name: str, spec: FieldSpec = FieldSpec(), scale: float = 1.0) -> Page:
    """A decoded image → one field per glyph (and per alternative), boxes scaled by ``scale`` to the
    original image's pixels."""
    empty = np.zeros((0, spec.size, spec.size), np.float32)
    rgb, pixel = at_drawn_scale(to_rgb(image))
    scale *= pixel
    try:
        ink = ink_map(rgb)
        # already what MNIST's own preprocessing produces: leave it alone
        if ink.max(initial=0.0) >= INK_MIN and is_field_form(ink, spec):
            return Page(name, ink[None].astype(np.float32), [Box(0, 0, spec.size, spec.size)])
        glyphs = glyphs_of(ink)
    except NoDigitFound as exc:
        if str(exc) != NO_INK:
            return Page(name, empty, [], refusal=str(exc))
        try:  # chalk on a board lifted to grey, or beside a strip of lighter desk (ink_map's second look)
            glyphs = glyphs_of(ink_map(rgb, second_look=True))
        except NoDigitFound:
            return Page(name, empty, [], refusal=str(exc))
    ordered, pieces, joins = list(glyphs), {}, {}
    for i, glyph in enumerate(glyphs):
        if glyph.pieces:
            pieces[i] = list(range(len(ordered), len(ordered) + len(glyph.pieces)))
            ordered += glyph.pieces
        if glyph.joined_with_next is not None:
            joins[i] = len(ordered)
            ordered.append(glyph.joined_with_next)
    fields = np.stack([fit_to_field(g.ink, spec) for g in ordered])
    boxes = [Box(round(g.box.x * scale), round(g.box.y * scale), max(1, round(g.box.width * scale)),
                 max(1, round(g.box.height * scale))) for g in ordered]
    return Page(name, fields, boxes, pieces=pieces, joins=joins)


def interpret(page: Page, probabilities: np.ndarray, labels: list[str], reject_index: int | None,
              min_confidence: float) -> Reading:
    """Accept the page's digits, or refuse it: a glyph is read as a digit when its most likely class is
    a digit with at least ``min_confidence``; one glyph that is not makes the whole image a refusal."""
    if page.error:
        return Reading(page.name, error=page.error)
    if page.refusal:
        return Reading(page.name, reason=page.refusal)
    every = []
    for p, box in zip(probabilities, page.boxes):
        digit_p = p.copy()
        if reject_index is not None:
            digit_p[reject_index] = -1.0
        best = int(digit_p.argmax())
        every.append((DigitRead(labels[best], float(p[best]), box, p), int(p.argmax()) == best))
    reads, i = [], 0
    while i < page.glyphs:
        if i in page.joins and i + 1 < page.glyphs and prefer_joined(every[page.joins[i]], every[i], every[i + 1],
                                                                      min_confidence):
            reads.append(every[page.joins[i]])
            i += 2
            continue
        cut = [every[j] for j in page.pieces.get(i, [])]
        reads += cut if cut and prefer_pieces(every[i], cut, min_confidence) else [every[i]]
        i += 1
    reads = without_strays(reads, min_confidence)
    not_digits = [r for r, is_top in reads if not is_top]
    unsure = [r for r, is_top in reads if is_top and r.probability < min_confidence]
    if not not_digits and not unsure:
        return Reading(page.name, digits=[r for r, _ in reads])
    guess = min(not_digits + unsure, key=lambda r: r.probability)
    return Reading(page.name, reason=refusal_reason(len(reads), len(not_digits), len(unsure), min_confidence),
                   best_guess=guess)


STRAY_HEIGHT = (0.5, 2.0)  # marks outside this range of the sure digits' height do not belong with them


def without_strays(reads: list[tuple[DigitRead, bool]], min_confidence: float) -> list[tuple[DigitRead, bool]]:
    """The marks that belong with the sure digits. Marks the model does not read as sure digits are set
    aside when they are off the digits' row, or much smaller or taller than the digits: the remains of a
    shadow's edge, a ruled line, the sheet's edge. One in the row and of the digits' size (a letter beside
    digits, a digit the model doubts) stays, and refuses the image."""
    sure = [r for r, is_top in reads if is_top and r.probability >= min_confidence]
    if not sure or len(sure) == len(reads):
        return reads
    row_top = min(r.box.y for r in sure)
    row_bottom = max(r.box.y + r.box.height for r in sure)
    height = float(np.median([r.box.height for r in sure]))

    def belongs(read: DigitRead, is_top: bool) -> bool:
        if is_top and read.probability >= min_confidence:
            return True
        box = read.box
        overlap = min(row_bottom, box.y + box.height) - max(row_top, box.y)
        in_row = overlap >= 0.5 * min(box.height, row_bottom - row_top)
        return in_row and STRAY_HEIGHT[0] * height <= box.height <= STRAY_HEIGHT[1] * height

    return [(r, is_top) for r, is_top in reads if belongs(r, is_top)]


HAIRLINE = 0.05  # neighbours this close (of their height) were one mark that a removed paper line cut
SURE_WHOLE = 0.9  # a wide glyph read as one digit this surely is not cut; its pieces must be this sure


def prefer_pieces(whole: tuple[DigitRead, bool], pieces: list[tuple[DigitRead, bool]], min_confidence: float) -> bool:
    """Read a glyph as its pieces (touching digits, or the digit above an underline) only when the
    whole is not a sure digit and every piece is a sure digit (at least SURE_WHOLE), each more surely
    than the whole: a cut of a letter (a "u" into two 1s) is rarely sure of both halves."""
    whole_read, whole_is_digit = whole
    sure = max(SURE_WHOLE, min_confidence)
    if whole_is_digit and whole_read.probability >= sure:
        return False
    for read, is_digit in pieces:
        if not is_digit or read.probability < sure:
            return False
        if whole_is_digit and read.probability <= whole_read.probability:
            return False
    return True


def prefer_joined(joined: tuple[DigitRead, bool], left: tuple[DigitRead, bool], right: tuple[DigitRead, bool],
                  min_confidence: float) -> bool:
    """Read two close neighbours as one digit only when they are not both sure digits apart (unless a
    hairline apart: a 4 a removed paper line cut down the middle reads as two sure 1s) and the joined
    one is a digit, more surely than the weaker of the two."""
    def sureness(read: tuple[DigitRead, bool]) -> float:
        return read[0].probability if read[1] else 0.0

    union = left[0].box.union(right[0].box)
    hairline = right[0].box.x - left[0].box.right <= HAIRLINE * union.height
    if min(sureness(left), sureness(right)) >= max(SURE_WHOLE, min_confidence) and not hairline:
        return False
    return joined[1] and joined[0].probability >= min_confidence and \
        joined[0].probability > min(sureness(left), sureness(right))


def refusal_reason(marks: int, not_digits: int, unsure: int, min_confidence: float) -> str:
    if marks == 1:
        return "not a digit" if not_digits else f"unsure (below {min_confidence:.2f})"
    parts = []
    if not_digits:
        parts.append(f"{not_digits} of {marks} marks {'is' if not_digits == 1 else 'are'} not a digit")
    if unsure:
        parts.append(f"{unsure} of {marks} {'is' if unsure == 1 else 'are'} unsure (below {min_confidence:.2f})")
    return "; ".join(parts)


def interpret_for(model: "DigitModel", page: Page, probabilities: np.ndarray,
                  min_confidence: float | None = None) -> Reading:
    """``interpret`` with the model's labels, refusal class and (unless given) calibrated threshold."""
    threshold = model.min_confidence if min_confidence is None else min_confidence
    return interpret(page, probabilities, model.labels, model.reject_index, threshold)


def read_pages(model: "DigitModel", pages: list[Page], min_confidence: float | None = None,
               batch_size: int = 256) -> list[Reading]:
    """Run the model over every field of ``pages`` (calls of ``batch_size``) and interpret each page."""
    counts = [len(p.fields) for p in pages]
    stacked = np.concatenate([p.fields for p in pages]) if pages else np.zeros((0, 1, 1), np.float32)
    probabilities = (model.read_fields(stacked, batch_size) if len(stacked)
                     else np.zeros((0, len(model.labels))))
    readings, start = [], 0
    for page, count in zip(pages, counts):
        readings.append(interpret_for(model, page, probabilities[start:start + count], min_confidence))
        start += count
    return readings


def read_bytes(model: "DigitModel", data: bytes, name: str = "image", min_confidence: float | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Reading:
    """The reading of one image file's bytes (what `serve predict FILE` prints)."""
    return read_pages(model, [prepare_page(data, name, model.field_spec, max_pixels)], min_confidence)[0]
