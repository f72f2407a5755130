"""One image → one model field: the largest glyph's (the OIP v2 BYTES input uses this; everything
else reads whole images with serve.reading, whose steps this reuses)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from serve.image.decode import DEFAULT_MAX_PIXELS, ImageError, decode_image
from serve.image.ink import NoDigitFound
from serve.image.normalize import FieldSpec, centre_of_mass
from serve.reading import page_of_image

__all__ = ["ImageError", "NoDigitFound", "centre_of_mass", "prepare", "preprocess", "BOX", "CENTRE"]
BOX, CENTRE = FieldSpec().box, FieldSpec().centre


def prepare(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, spec: FieldSpec = FieldSpec()) -> np.ndarray:
    """Image file bytes → float32 [size, size] field of its largest glyph (raises ImageError or NoDigitFound)."""
    return preprocess(decode_image(data, max_pixels).image, spec)


def preprocess(image: Image.Image, spec: FieldSpec = FieldSpec()) -> np.ndarray:
    """A decoded image → float32 [size, size] field of its largest glyph (raises NoDigitFound)."""
    page = page_of_image(image, "image", spec)
    if page.refusal or page.glyphs == 0:
        raise NoDigitFound("no digit found")
    largest = max(range(page.glyphs), key=lambda i: page.boxes[i].width * page.boxes[i].height)
    return page.fields[largest]
