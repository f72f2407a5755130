"""Turn an image file as people have them into the model's input, the way MNIST itself was made.

MNIST digits are white ink on black, their bounding box scaled so the longer side is 20 px
(anti-aliased), pasted into 28x28 with the centre of mass at (14, 14). A photo of a digit on paper,
a canvas export with a transparent background or a scan goes through the same steps here.
Pure numpy and Pillow.
"""
from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FIELD = 28
BOX = 20  # the longer side of the digit's bounding box, as in MNIST
CENTRE = 14.0  # where MNIST puts the centre of mass (row, column), measured on the sample: 14.0 ± 0.3
MAX_PIXELS = 40_000_000  # refuse larger images before decoding them (decompression bombs)
MIN_SIDE = 8
INK_MIN = 0.2  # strongest ink below this (after background removal): no digit
BOX_THRESHOLD = 0.3  # fraction of the strongest ink that counts for the bounding box (ignores faint noise)


class ImageError(ValueError):
    """The input cannot be read as an image we accept."""


class NoDigitFound(ValueError):
    """The image has no ink: blank, or nothing but faint noise."""


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode image bytes, checking the declared size before any pixel is decoded."""
    if not data:
        raise ImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"image is {width}x{height} pixels, above the limit of {max_pixels:,}")
            if min(width, height) < MIN_SIDE:
                raise ImageError(f"image is {width}x{height} pixels; a digit needs at least {MIN_SIDE}x{MIN_SIDE}")
            image.seek(0)  # first frame of animations
            image.load()
            return ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fires while reading the header, for sizes far above ours
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(declared.group(1)):,} pixels, " if declared else ""
        raise ImageError(f"image is {size}above the limit of {max_pixels:,} pixels") from None
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"cannot decode image ({str(exc).strip() or type(exc).__name__})") from None


def to_gray(image: Image.Image) -> np.ndarray:
    """Grayscale float64 in [0, 1]; transparency is composited onto white first."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        return np.clip(values / scale, 0.0, 1.0)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        return np.clip(values if values.max(initial=0) <= 1.0 else values / 255.0, 0.0, 1.0)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("L"), dtype=np.float64) / 255.0


def border(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def ink_map(gray: np.ndarray) -> np.ndarray:
    """White-on-black ink in [0, 1]: invert a light background, then subtract the background level."""
    if np.median(border(gray)) > 0.5:  # light paper, dark ink
        gray = 1.0 - gray
    background = float(np.median(border(gray)))
    if background >= 0.9:
        raise NoDigitFound("no digit found")
    return np.clip((gray - background) / (1.0 - background), 0.0, 1.0)


def centre_of_mass(ink: np.ndarray) -> tuple[float, float]:
    total = ink.sum()
    rows, cols = np.indices(ink.shape)
    return float((rows * ink).sum() / total), float((cols * ink).sum() / total)


def is_mnist_form(ink: np.ndarray) -> bool:
    """28x28, ink box within 20 px (plus anti-aliasing), centre of mass at MNIST's centre."""
    if ink.shape != (FIELD, FIELD) or ink.max() < INK_MIN:
        return False
    mask = ink > BOX_THRESHOLD * ink.max()
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 > BOX:
        return False
    r, c = centre_of_mass(ink)
    return abs(r - CENTRE) <= 1.0 and abs(c - CENTRE) <= 1.0


def fit_to_field(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink, scale the longer side to 20 px, paste centred on the centre of mass."""
    peak = ink.max()
    mask = ink > BOX_THRESHOLD * peak
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    patch = Image.fromarray(crop.astype(np.float32), mode="F")
    if size != (w, h):
        # Pillow's resampling is anti-aliased when it shrinks; Lanczos can ring slightly below 0.
        patch = patch.resize(size, Image.Resampling.LANCZOS)
    patch = np.clip(np.asarray(patch, dtype=np.float64), 0.0, None)
    patch /= max(patch.max(), 1e-12)  # strongest ink is 1, as in MNIST
    r, c = centre_of_mass(patch)
    top = int(np.clip(round(CENTRE - r), 0, FIELD - patch.shape[0]))
    left = int(np.clip(round(CENTRE - c), 0, FIELD - patch.shape[1]))
    field = np.zeros((FIELD, FIELD), np.float64)
    field[top:top + patch.shape[0], left:left + patch.shape[1]] = patch
    return field


def preprocess(image: Image.Image) -> np.ndarray:
    """The model input for one image: float32 [28, 28] in [0, 1], white ink on black.

    Raises NoDigitFound for an image without ink.
    """
    ink = ink_map(to_gray(image))
    if ink.max() < INK_MIN:
        raise NoDigitFound("no digit found")
    if is_mnist_form(ink):
        return ink.astype(np.float32)  # already what MNIST's own preprocessing produces: leave it alone
    return fit_to_field(ink).astype(np.float32)


def prepare(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Image file bytes → float32 [28, 28] model input (raises ImageError or NoDigitFound)."""
    return preprocess(decode_image(data, max_pixels))
