"""Image bytes → an upright Pillow image at working scale, in bounded memory, or one line saying why not.

What users send: phone photos (JPEG of 12 to 50 MP and more, HEIC from iPhones), scans (TIFF, 16-bit,
float), screenshots and canvas exports (PNG with transparency), GIFs. What the rest of serving needs: the
image upright, its longer side about ``WORK_SIDE``, and the factor back to the original's pixels.

How memory stays bounded, in order:

1. The declared size is checked against ``max_pixels`` while Pillow reads the header, before any pixel
   is decoded (decompression bombs: an 86 KB PNG can declare 6300x6300). Our limit replaces Pillow's own
   ``MAX_IMAGE_PIXELS`` guard for the duration of our call only (see ``_bomb_check``).
2. JPEG (and MPO) is decoded at 1/2, 1/4 or 1/8 scale in the DCT (``Image.draft``): a 48 MP photo is
   decoded as 2000x1500 and never exists at full size. (Progressive JPEGs still hold full-size DCT
   coefficients, 3 to 6 bytes a pixel; those count against ``max_pixels`` at 4 bytes a pixel.) HEIC
   uses an embedded thumbnail when one is big enough. Other formats (PNG, TIFF, WebP, GIF, ...) are
   decoded at full size — at most 4 bytes a pixel in Pillow, so 4 x ``max_pixels`` bytes — and reduced
   at once.
3. The integer reduction (``Image.reduce``, a box average) runs on Pillow's 8/16/32-bit pixels; modes
   that must be converted first (palette, 1-bit, CMYK, LAB, 16-bit, alpha) are converted and reduced a
   strip of rows at a time, so no converted full-size copy is ever made, and no float copy of a
   full-size image is ever made.
4. 16-bit, 32-bit and float images, now small, are scaled to [0, 1] (NaN → background); a last resize
   (box filter) brings the longer side to exactly ``work_side``; the result is 8-bit L, LA, RGB or RGBA.

The EXIF orientation is read from the decoded file before any reduction (TIFF keeps it in its own tags,
lost once the image is reduced; PNG's eXIf chunk may follow the pixels) and applied last; reductions
are the same on both axes, so the order does not matter for the scale.
"""
from __future__ import annotations

import contextvars
import io
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from serve.image.morph import resize_channels
from serve.limits import DEFAULT_MAX_PIXELS

WORK_SIDE = 1024  # the longer side images are analysed at; larger images come back with exactly this side
MIN_SIDE = 8
TINY_IMAGE = 24  # px: a smaller image (once its repeated pixels are undone) is enlarged smoothly ...
TINY_TO = 64  # ... to this longer side before it is read
CELL_ASPECT = 0.1  # repeated pixels undone only when the cells are this near square (relative difference)
STRIP_PIXELS = 1 << 21  # pixels converted at a time when a mode must be converted before reducing

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM", "AVIF")  # what we let Pillow open
SUPPORTED = "PNG, JPEG, GIF, BMP, TIFF, WebP, PNM, AVIF, HEIC"
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
HEIF_CONTAINER_BRANDS = frozenset({b"mif1", b"msf1", b"mif2"})  # HEIF structure; HEVC or AV1 inside
AVIF_BRANDS = frozenset({b"avif", b"avis"})
HEIF_MISSING = "HEIC/HEIF photo: install the heif extra (pip install 'foldserve[heif]') or convert it to JPEG"
ORIENTATION = 0x0112
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
             7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
              (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


class ImageError(ValueError):
    """The input cannot be read as an image we accept."""


@dataclass(frozen=True)
class Decoded:
    image: "Image.Image"  # upright (EXIF applied); mode L, LA, RGB or RGBA; see decode_image
    scale: float  # original pixels per pixel of ``image`` (1.0 when not reduced)
    original_size: tuple[int, int] = (0, 0)  # (width, height) of the upright original


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, work_side: int = WORK_SIDE) -> Decoded:
    """Decode image bytes: the declared size is checked before any pixel is decoded, the EXIF orientation
    is applied, and an image whose longer side is above ``work_side`` comes back with its longer side
    exactly ``work_side`` (scale = original longer side / ``work_side``); smaller ones at scale 1.

    Boxes found on ``image`` map back to the upright original by multiplying by ``scale``. Animated
    images give their first frame. Raises ``ImageError`` (one line) for anything that cannot be read."""
    if work_side < MIN_SIDE:
        raise ValueError(f"work_side must be at least {MIN_SIDE}")
    if not data:
        raise ImageError("empty file")
    if _is_heif(data):
        _register_heif()
    token = _limit.set(max_pixels)
    try:
        return _decode(data, max_pixels, work_side)
    except ImageError:
        raise
    except _OverLimit as exc:
        raise ImageError(_over_limit(exc.size, max_pixels)) from None
    except UnidentifiedImageError:
        raise ImageError(_unidentified(data)) from None
    except MemoryError:
        raise ImageError("image too large to decode in the memory available") from None
    except Exception as exc:  # Pillow and its codecs raise many types for broken files; all mean the same
        raise ImageError(_cannot_decode(exc)) from None
    finally:
        _limit.reset(token)


def to_rgb(image: Image.Image) -> np.ndarray:
    """float32 [H, W, 3] in [0, 1]: transparency composited onto white; 16-bit, 32-bit and float scaled
    (float NaN becomes the background, ±inf the extremes). Meant for ``Decoded.image`` (small); any
    Pillow image works."""
    try:
        image = _unit_float(_converter(image)(image), image.mode)
        mode = image.mode
        if mode in ("L", "F"):
            values = np.asarray(image, dtype=np.float32)
            gray = values / np.float32(255) if mode == "L" else values
            return np.repeat(gray[..., None], 3, axis=2)
        values = np.asarray(image, dtype=np.float32) / np.float32(255)
        if mode in ("LA", "RGBA"):
            colour, alpha = values[..., :-1], values[..., -1:]
            values = colour * alpha + (np.float32(1) - alpha)
            if mode == "LA":
                values = np.repeat(values, 3, axis=2)
        return np.ascontiguousarray(values, dtype=np.float32)
    except Exception as exc:
        raise ImageError(_cannot_decode(exc)) from None


def at_drawn_scale(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The image at the scale it was drawn at, and the size of its pixels in ``rgb``'s: an image
    enlarged by repeating pixels (a low-resolution digit or pixel art shown big) back to one pixel a
    cell, since its blocks are no strokes; then an image smaller than TINY_IMAGE enlarged smoothly to
    TINY_TO, as a screen shows it (read at 8 px, a stroke is an eighth of the digit)."""
    h, w = rgb.shape[:2]
    pixel = 1.0
    cell_y = cell_x = None
    if not row_alone(rgb) and not row_alone(rgb.transpose(1, 0, 2)):  # (a photo: at once)
        cell_y = repeated_cell(np.any(rgb[1:] != rgb[:-1], axis=(1, 2)))
        cell_x = repeated_cell(np.any(rgb[:, 1:] != rgb[:, :-1], axis=(0, 2)))
    if cell_y and cell_x and abs(cell_y - cell_x) <= CELL_ASPECT * max(cell_y, cell_x):
        rows = np.minimum(((np.arange(round(h / cell_y)) + 0.5) * cell_y).astype(np.int64), h - 1)
        cols = np.minimum(((np.arange(round(w / cell_x)) + 0.5) * cell_x).astype(np.int64), w - 1)
        rgb, pixel = rgb[rows][:, cols], (cell_y + cell_x) / 2
        h, w = rgb.shape[:2]
    if max(h, w) < TINY_IMAGE:
        factor = TINY_TO / max(h, w)
        rgb = resize_channels(rgb, (max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BILINEAR)
        pixel /= factor
    return rgb, pixel


def row_alone(rgb: np.ndarray, probes: int = 16) -> bool:
    """Whether one of ``probes`` rows spread over ``rgb`` differs from both its neighbours: then no
    pixel was repeated into cells (a cheap look before comparing every row)."""
    if rgb.shape[0] < 3:
        return False
    rows = np.unique(np.linspace(1, rgb.shape[0] - 2, probes).astype(np.int64))
    return any(np.any(rgb[i] != rgb[i - 1]) and np.any(rgb[i + 1] != rgb[i]) for i in rows)


def repeated_cell(changes: np.ndarray) -> float | None:
    """The size of the cells an image line was enlarged into by repeating pixels, from ``changes`` (True
    where a pixel differs from the one before it); None unless every run of equal pixels is one or more
    whole cells of at least 2 pixels (within a pixel: an enlargement by 12.5 repeats pixels 12 or 13
    times)."""
    length = len(changes) + 1
    runs = np.diff(np.concatenate([[0], np.flatnonzero(changes) + 1, [length]]))
    shortest = int(runs.min())
    if shortest < 2:
        return None
    cell = length / max(1, int(np.round(runs / shortest).sum()))
    return cell if float(np.abs(runs - np.round(runs / cell) * cell).max()) <= 1.0 else None


# ---- decoding ------------------------------------------------------------------------------------------

def _decode(data: bytes, max_pixels: int, work_side: int) -> Decoded:
    _import_plugins()
    image: Image.Image = Image.open(io.BytesIO(data), formats=_formats())
    width, height = image.size
    if width * height > max_pixels:  # Pillow's open ran _bomb_check already; kept for plugins that don't
        raise _OverLimit((width, height))
    if max(width, height) < MIN_SIDE:  # a 1 kept at low resolution may be 3 px wide and 10 tall
        raise ImageError(f"image is {width}x{height} pixels; a digit needs at least {MIN_SIDE} on its longer side")
    if image.format in ("JPEG", "MPO") and image.info.get("progressive"):
        _check_progressive(image, max_pixels)
    longer = max(width, height)
    extent = (float(width), float(height))  # the original's extent in pixels of ``image``
    if longer > work_side:
        target = (math.ceil(width * work_side / longer), math.ceil(height * work_side / longer))
        drafted = image.draft(None, target)  # JPEG: 1/2, 1/4 or 1/8 scale in the DCT; HEIC: a thumbnail
        if drafted is not None:
            box = drafted[1]
            extent = (float(box[2] - box[0]), float(box[3] - box[1]))
    image.load()
    orientation = _orientation(image)  # after load (PNG's eXIf may follow the pixels), before any reduction
    source_mode = image.mode
    convert = _converter(image)
    factor = max(1, int(max(extent) / work_side))
    image = _reduce(image, factor, convert)
    extent = (extent[0] / factor, extent[1] / factor)
    image = _unit_float(image, source_mode)
    image.info.pop("transparency", None)
    if longer > work_side:
        size = (max(1, round(width * work_side / longer)), max(1, round(height * work_side / longer)))
        image = image.resize(size, Image.Resampling.BOX, box=(0.0, 0.0, *extent))
    if image.mode == "F":  # 8 bits from here: plenty for ink, and no trap for callers (Pillow's F → L clips)
        image = Image.fromarray((np.asarray(image) * np.float32(255)).round().astype(np.uint8), "L")
    if orientation in TRANSPOSE:
        image = image.transpose(TRANSPOSE[orientation])
        if orientation >= 5:
            width, height = height, width
    return Decoded(image, longer / max(image.size), (width, height))


def _check_progressive(image: Image.Image, max_pixels: int) -> None:
    """A progressive JPEG is decoded through full-size DCT coefficient buffers (2 bytes a sample, whatever
    the draft scale): 6 bytes a pixel at 4:4:4, 3 at 4:2:0. Counted like other formats' full-size pixels
    (4 bytes each), so that a 600-byte file declaring 8192x8000 cannot cost 400 MB within the limit."""
    width, height = image.size
    layers = getattr(image, "layer", None) or []
    h_max = max((h for _, h, _, _ in layers), default=1) or 1
    v_max = max((v for _, _, v, _ in layers), default=1) or 1
    coefficients = sum(math.ceil(width * h / h_max / 8) * 8 * math.ceil(height * v / v_max / 8) * 8 * 2
                       for _, h, v, _ in layers)
    if coefficients // 4 > max_pixels:
        raise ImageError(f"progressive JPEG of {width}x{height} pixels needs {coefficients / 2**20:,.0f} MB to "
                         f"decode, like {coefficients // 4:,} pixels: above the limit of {max_pixels:,} "
                         "(raise it with --max-pixels)")


def _reduce(image: Image.Image, factor: int, convert: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """Box-reduce by ``factor`` after ``convert``; whole when that makes no full-size copy, else a strip
    of rows at a time (converting a mode, or Pillow's premultiplied copy for alpha, would copy it all)."""
    if factor == 1:
        return convert(image)
    if convert is _same and image.mode not in ("LA", "RGBA"):
        return image.reduce(factor)
    width, height = image.size
    rows = max(1, STRIP_PIXELS // (width * factor)) * factor
    out = None
    for top in range(0, height, rows):
        strip = convert(image.crop((0, top, width, min(height, top + rows)))).reduce(factor)
        if out is None:
            out = Image.new(strip.mode, (math.ceil(width / factor), math.ceil(height / factor)))
        out.paste(strip, (0, top // factor))
    assert out is not None
    return out


def _same(image: Image.Image) -> Image.Image:
    return image


def _converter(image: Image.Image) -> Callable[[Image.Image], Image.Image]:
    """How to bring ``image``'s mode to one that reduces and resizes correctly: L, LA, RGB, RGBA, I or F
    (alpha from a transparency key or table included)."""
    mode = image.mode
    if mode in ("1", "L", "P", "RGB") and image.info.get("transparency") is not None:
        target = "LA" if mode in ("1", "L") else "RGBA"
        try:  # a transparency value Pillow cannot apply (wrong type, out of range) is ignored
            image.crop((0, 0, 1, 1)).convert(target)
        except Exception:
            return _same if mode in ("L", "RGB") else lambda im: _opaque(im).convert("L" if mode == "1" else "RGB")
        return lambda im: im.convert(target)
    if mode in ("L", "RGB", "LA", "RGBA", "I", "F"):
        return _same
    if mode == "LAB":  # its L band is lightness, all that ink needs; Pillow has no LAB → RGB conversion
        return lambda im: im.getchannel("L")
    if mode.startswith("I;16"):
        return lambda im: _opaque(im).convert("I")
    targets = {"1": "L", "P": "RGB", "PA": "RGBA", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB",
               "YCbCr": "RGB", "HSV": "RGB"}
    target = targets.get(mode, "RGBA" if mode.endswith("A") else "RGB")
    return lambda im: im.convert(target)


def _opaque(image: Image.Image) -> Image.Image:
    """``image`` without its transparency key (a copy when it has one; strips and small images only)."""
    if "transparency" not in image.info:
        return image
    image = image.copy()
    del image.info["transparency"]
    return image


def _unit_float(image: Image.Image, source_mode: str) -> Image.Image:
    """I and F images → F in [0, 1]: 16-bit over 65535, 8-bit ranges over 255, anything else stretched
    from its least to its greatest finite value; NaN → the background (the median), ±inf → 1 / 0."""
    if image.mode not in ("I", "F"):
        return image
    values = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return Image.new("F", image.size, 1.0)
    seen = values[finite]
    low, high = float(seen.min()), float(seen.max())
    if source_mode == "F" and low >= -0.01 and high <= 1.01:  # unit floats, give or take rounding
        scaled = values
    elif source_mode.startswith("I;16"):
        scaled = values / np.float32(65535)
    elif low >= 0.0 and high <= 255.0:
        scaled = values / np.float32(255)
    elif low >= 0.0 and high <= 65535.0:
        scaled = values / np.float32(65535)
    elif high > low:
        scaled = (values - np.float32(low)) / np.float32(high - low)
    else:
        scaled = np.ones_like(values)
    with np.errstate(invalid="ignore"):
        unit = np.clip(scaled, 0.0, 1.0)  # +inf → 1, -inf → 0, NaN stays NaN
    nan = np.isnan(unit)
    if nan.any():
        unit[nan] = np.median(unit[~nan]) if not nan.all() else 1.0
    return Image.fromarray(unit.astype(np.float32), "F")


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1–8), or 1 when absent, invalid or unreadable."""
    try:
        value = image.getexif().get(ORIENTATION)
    except Exception:  # corrupt EXIF does not make the photo unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# ---- the declared-size limit, in place of Pillow's guard for our calls only -------------------------------

class _OverLimit(Image.DecompressionBombError):
    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(f"image is {size[0]}x{size[1]} pixels")
        self.size = size


_limit: contextvars.ContextVar[int | None] = contextvars.ContextVar("foldserve_max_pixels", default=None)
_pillow_check = getattr(Image._decompression_bomb_check, "__wrapped__", Image._decompression_bomb_check)


def _bomb_check(size: tuple[int, int], *args, **kwargs) -> None:
    """Pillow calls this with every size it is about to allocate (while reading headers, frames, tiles).
    Inside decode_image it applies ``max_pixels`` (no warning, one error); elsewhere Pillow's own guard,
    unchanged, so other users of Pillow in the process see Pillow's ``MAX_IMAGE_PIXELS`` as usual."""
    limit = _limit.get()
    if limit is None:
        _pillow_check(size, *args, **kwargs)
        return
    if max(1, size[0]) * max(1, size[1]) > limit:
        raise _OverLimit((int(size[0]), int(size[1])))
    return None


_bomb_check.__wrapped__ = _pillow_check  # type: ignore[attr-defined]
Image._decompression_bomb_check = _bomb_check


# ---- formats ---------------------------------------------------------------------------------------------

_plugins_imported = False
_heif_lock = threading.Lock()
_heif_registered = False


def _import_plugins() -> None:
    """Import only the plugins of FORMATS (not Pillow's ~40, some of which run Ghostscript)."""
    global _plugins_imported
    if not _plugins_imported:
        from PIL import (AvifImagePlugin, BmpImagePlugin, GifImagePlugin, JpegImagePlugin,  # noqa: F401
                         PngImagePlugin, PpmImagePlugin, TiffImagePlugin, WebPImagePlugin)
        _plugins_imported = True


def _formats() -> tuple[str, ...]:
    return tuple(f for f in FORMATS + ("HEIF",) if f in Image.OPEN)


def _is_heif(data: bytes) -> bool:
    """An ISO-BMFF file whose ftyp brands say HEIF with HEVC inside (iPhone photos); AVIF is Pillow's."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return False
    end = min(len(data), max(16, int.from_bytes(data[:4], "big")), 4096)
    brands = {data[8:12]} | {data[i:i + 4] for i in range(16, end - 3, 4)}
    if brands & HEIF_BRANDS:
        return True
    return bool(brands & HEIF_CONTAINER_BRANDS) and not brands & AVIF_BRANDS


def _register_heif() -> None:
    """Register pillow-heif's opener the first time a HEIF file comes (its import is not paid otherwise)."""
    global _heif_registered
    if _heif_registered:
        return
    with _heif_lock:
        if _heif_registered:
            return
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            raise ImageError(HEIF_MISSING) from None
        register_heif_opener()
        _heif_registered = True


# ---- messages (one line each) ----------------------------------------------------------------------------

def _over_limit(size: tuple[int, int], max_pixels: int) -> str:
    return (f"image is {size[0]}x{size[1]} pixels, above the limit of {max_pixels:,} "
            "(raise it with --max-pixels)")


def _unidentified(data: bytes) -> str:
    head = bytes(data[:512])
    for signature, name in SIGNATURES:
        if head.startswith(signature):
            return f"corrupt {name} file (its header cannot be read)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "corrupt WebP file (its header cannot be read)"
    head = head.lstrip().lower()
    if head.startswith(b"%pdf"):
        return "a PDF, not an image: export the page as PNG or JPEG"
    if b"<svg" in head:
        return "an SVG drawing: export it as PNG"
    return f"not a recognised image format (supported: {SUPPORTED})"


def _cannot_decode(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 160:
        text = text[:157] + "..."
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return "image file is truncated (incomplete download?)"
    return f"cannot decode image ({text or type(exc).__name__})"
