"""One image → one model field (the OIP v2 BYTES input and tests use this; readings use serve.reading)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from serve.image.decode import DEFAULT_MAX_PIXELS, ImageError, decode_image, to_rgb
from serve.image.ink import NoDigitFound, ink_map
from serve.image.normalize import INK_MIN, FieldSpec, centre_of_mass, fit_to_field, is_field_form
from serve.image.segment import find_glyphs

__all__ = ["ImageError", "NoDigitFound", "centre_of_mass", "prepare", "preprocess", "BOX", "CENTRE"]
BOX, CENTRE = FieldSpec().box, FieldSpec().centre


def prepare(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, spec: FieldSpec = FieldSpec()) -> np.ndarray:
    """Image file bytes → float32 [size, size] field of its largest glyph (raises ImageError or NoDigitFound)."""
    return preprocess(decode_image(data, max_pixels).image, spec)


def preprocess(image: Image.Image, spec: FieldSpec = FieldSpec()) -> np.ndarray:
    """A decoded image → float32 [size, size] field of its largest glyph (raises NoDigitFound)."""
    ink = ink_map(to_rgb(image))
    if ink.max(initial=0.0) < INK_MIN:
        raise NoDigitFound("no digit found")
    if is_field_form(ink, spec):
        return ink.astype(np.float32)
    glyphs = find_glyphs(ink)
    if not glyphs:
        raise NoDigitFound("no digit found")
    largest = max(glyphs, key=lambda g: g.box.width * g.box.height)
    return fit_to_field(largest.ink, spec)
