from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from serve.preprocess import (BOX, CENTRE, ImageError, NoDigitFound, centre_of_mass, prepare,
                              preprocess)
from serve.image.normalize import THICK_STROKE, THIN_STROKE, stroke_width
from tests.serve.images import encode, png_header_only


def bounding_box(x: np.ndarray, threshold: float = 0.3) -> tuple[int, int]:
    rows, cols = np.flatnonzero((x > threshold).any(1)), np.flatnonzero((x > threshold).any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def assert_mnist_like(x: np.ndarray) -> None:
    assert x.shape == (28, 28) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() == pytest.approx(1.0)
    assert max(bounding_box(x)) <= BOX + 1
    r, c = centre_of_mass(x.astype(np.float64))
    assert abs(r - CENTRE) <= 0.75 and abs(c - CENTRE) <= 0.75


def drawn_digit(size: int = 120, thickness: int = 8, offset: tuple[int, int] = (0, 0), ink: int = 20,
                paper: int = 240) -> Image.Image:
    """A '7'-like shape in dark ink on light paper."""
    from PIL import ImageDraw

    img = Image.new("L", (size, size), paper)
    d = ImageDraw.Draw(img)
    s = size / 120
    oy, ox = offset
    d.line([(30 * s + ox, 25 * s + oy), (90 * s + ox, 25 * s + oy), (50 * s + ox, 100 * s + oy)], fill=ink,
           width=max(1, int(thickness * s)))
    return img


def test_a_28x28_digit_in_mnist_form_comes_through_unchanged(sample_dataset) -> None:
    for digit in sample_dataset.test_images[:200]:
        out = prepare(encode(Image.fromarray(digit)))
        np.testing.assert_array_equal(out, digit.astype(np.float32) / 255.0)


def test_polarity_dark_ink_on_light_paper_is_inverted(sample_dataset) -> None:
    digit = sample_dataset.test_images[0]
    light = prepare(encode(Image.fromarray(255 - digit)))
    np.testing.assert_allclose(light, digit / 255.0, atol=1e-6)
    drawn = preprocess(drawn_digit())
    assert_mnist_like(drawn)


def test_transparent_canvas_export_is_composited_onto_white() -> None:
    gray = np.asarray(drawn_digit(paper=255, ink=0))
    rgba = np.zeros(gray.shape + (4,), np.uint8)
    rgba[..., 3] = 255 - gray  # strokes opaque black, background fully transparent (and black in RGB)
    out = prepare(encode(Image.fromarray(rgba, "RGBA")))
    reference = prepare(encode(Image.fromarray(gray)))
    np.testing.assert_allclose(out, reference, atol=1e-6)
    la = Image.fromarray(rgba, "RGBA").convert("LA")
    np.testing.assert_allclose(prepare(encode(la)), reference, atol=1e-6)


def test_16_bit_grayscale_matches_8_bit(sample_dataset) -> None:
    digit = sample_dataset.test_images[3]
    img16 = Image.fromarray(digit.astype(np.uint16) * 257)  # I;16
    data = encode(img16)
    np.testing.assert_allclose(prepare(data), digit / 255.0, atol=1e-6)
    big = drawn_digit()
    np.testing.assert_allclose(prepare(encode(Image.fromarray(np.asarray(big).astype(np.uint16) * 257))),
                               preprocess(big), atol=1e-5)


@pytest.mark.parametrize("fmt, mode, tol", [("PNG", "P", 1e-6), ("PNG", "RGB", 1e-6), ("BMP", "L", 1e-6),
                                            ("TIFF", "L", 1e-6), ("GIF", "L", 1e-6), ("JPEG", "L", 0.08),
                                            ("JPEG", "RGB", 0.08), ("WEBP", "RGB", 0.12)])
def test_common_formats_give_the_same_input(fmt: str, mode: str, tol: float) -> None:
    img = drawn_digit()
    reference = preprocess(img)
    out = prepare(encode(img.convert(mode), fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {})))
    assert np.abs(out - reference).max() <= tol


def test_gif_uses_the_first_frame() -> None:
    first, second = drawn_digit(), Image.new("L", (120, 120), 240)
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100)
    np.testing.assert_allclose(prepare(data), preprocess(first), atol=1e-6)


def test_exif_orientation_is_applied() -> None:
    upright = drawn_digit()
    stored = upright.rotate(-90, expand=True)  # as a camera stores it; EXIF 8: turn 90° counter-clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 8
    data = encode(stored, "JPEG", quality=98, exif=exif)
    assert np.abs(prepare(data) - preprocess(upright)).max() < 0.1
    assert np.abs(prepare(encode(stored, "JPEG", quality=98)) - preprocess(upright)).max() > 0.5


def test_off_centre_digit_is_centred() -> None:
    out = preprocess(drawn_digit(size=300, offset=(40, -70)))  # lower left of a large canvas
    assert_mnist_like(out)
    np.testing.assert_allclose(out, preprocess(drawn_digit(size=300)), atol=0.02)


def test_tiny_digit_on_a_big_canvas_is_scaled_up() -> None:
    canvas = Image.new("L", (600, 400), 250)
    canvas.paste(drawn_digit(size=24, thickness=8), (500, 40))
    out = preprocess(canvas)
    assert_mnist_like(out)
    assert max(bounding_box(out)) >= BOX - 1


@pytest.mark.parametrize("size, thickness", [(200, 30), (300, 40), (400, 50), (900, 3), (1200, 2), (120, 8)])
def test_a_marker_and_a_thin_pen_both_give_mnist_like_strokes(size: int, thickness: int, monkeypatch) -> None:
    image = drawn_digit(size=size, thickness=thickness)
    out = preprocess(image)
    assert_mnist_like(out)
    with monkeypatch.context() as m:  # the same image without stroke normalization
        m.setattr("serve.image.normalize.THIN_STROKE", 0.0)
        m.setattr("serve.image.normalize.THICK_STROKE", float("inf"))
        as_drawn = preprocess(image)
    # MNIST's strokes measure 1.6-3.0 px this way (5th-95th percentile of the sample)
    if stroke_width(as_drawn) > THICK_STROKE:  # a marker: thinner, towards MNIST's range
        assert stroke_width(out) < stroke_width(as_drawn) - 0.4 and stroke_width(out) < 5.0
    elif stroke_width(as_drawn) < THIN_STROKE:  # a thin pen: thickened
        assert stroke_width(out) > stroke_width(as_drawn) + 0.3 and stroke_width(out) >= THIN_STROKE
    else:  # an ordinary pen is left alone
        np.testing.assert_array_equal(out, as_drawn)
    assert (size, thickness) != (1200, 2) or stroke_width(as_drawn) < THIN_STROKE  # the thin case is tested


def test_uneven_background_is_removed() -> None:
    img = np.asarray(drawn_digit(paper=255, ink=30), np.float64)
    lighting = np.linspace(-40, 0, img.shape[1])[None, :]  # darker on the left, like a phone photo
    out = prepare(encode(Image.fromarray(np.clip(img + lighting, 0, 255).astype(np.uint8))))
    assert_mnist_like(out)
    assert out[out < 0.5].mean() < 0.05


@pytest.mark.parametrize("image", [
    Image.new("L", (64, 64), 255), Image.new("L", (64, 64), 0), Image.new("RGBA", (64, 64), (0, 0, 0, 0)),
    Image.fromarray((200 + np.random.default_rng(0).normal(0, 5, (64, 64))).clip(0, 255).astype(np.uint8)),
])
def test_blank_images_have_no_digit(image: Image.Image) -> None:
    with pytest.raises(NoDigitFound):
        prepare(encode(image))


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (np.random.default_rng(0).bytes(2000), "not a recognised image format"),
    (encode(Image.new("L", (1, 1), 0)), "1x1 pixels"),
    (png_header_only(100_000, 100_000), "image is 100000x100000 pixels, above the limit"),
    (png_header_only(9_000, 8_000), "image is 9000x8000 pixels, above the limit .* --max-pixels"),
    (encode(Image.new("L", (64, 64), 0))[:60], "truncated"),
])
def test_bad_files_raise_a_clear_image_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        prepare(data)
