"""Draw the user-style example images in examples/ (run once; the output is committed).

Hand-drawn-looking digits as people's images come: dark pen on unevenly lit paper photographed as
JPEG, a canvas export with a transparent background, a scan; plus two 28x28 MNIST test digits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parents[1] / "examples"


def paper(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    shade = 215 + 20 * np.linspace(0, 1, w)[None, :] + rng.normal(0, 4, (h, w))  # uneven light, grain
    return Image.fromarray(np.clip(shade, 0, 255).astype(np.uint8)).convert("RGB")


def seven_photo() -> None:
    img = paper((180, 220), seed=7)
    d = ImageDraw.Draw(img)
    d.line([(62, 58), (138, 52), (96, 182)], fill=(40, 40, 60), width=9, joint="curve")
    d.line([(82, 118), (128, 116)], fill=(40, 40, 60), width=7)
    img.filter(ImageFilter.GaussianBlur(1.2)).save(OUT / "seven-photo.jpg", quality=85)


def three_canvas() -> None:
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    ink = (20, 30, 160, 255)
    d.arc([70, 30, 190, 130], start=200, end=90, fill=ink, width=14)
    d.arc([60, 110, 200, 250], start=270, end=160, fill=ink, width=14)
    img.save(OUT / "three-canvas.png")


def four_scan() -> None:
    img = Image.new("L", (120, 150), 245)
    d = ImageDraw.Draw(img)
    d.line([(70, 20), (30, 95), (95, 95)], fill=30, width=6)
    d.line([(72, 40), (72, 135)], fill=30, width=6)
    img.save(OUT / "four-scan.png")


def number_photo() -> None:
    """A phone photo of "2026" written on ruled paper, a shadow across one side."""
    w, h = 1200, 700
    img = paper((w, h), seed=26)
    d = ImageDraw.Draw(img)
    for y in range(40, h, 70):  # ruled lines, light blue
        d.line([(0, y), (w, y + 6)], fill=(150, 170, 215), width=3)
    ink, pen = (30, 35, 70), 14
    d.arc([150, 220, 390, 400], start=190, end=20, fill=ink, width=pen)  # 2
    d.line([(383, 345), (160, 560), (400, 555)], fill=ink, width=pen, joint="curve")
    d.ellipse([440, 220, 640, 560], outline=ink, width=pen)  # 0
    d.arc([690, 220, 930, 400], start=190, end=20, fill=ink, width=pen)  # 2
    d.line([(923, 345), (700, 560), (940, 555)], fill=ink, width=pen, joint="curve")
    d.arc([985, 220, 1160, 560], start=200, end=265, fill=ink, width=pen)  # 6
    d.ellipse([990, 380, 1150, 560], outline=ink, width=pen)
    shaded = np.asarray(img, np.float32)
    shaded[:, : w // 3] *= 0.7  # the phone's shadow
    Image.fromarray(shaded.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5)).save(
        OUT / "number-photo.jpg", quality=85)


def scribble() -> None:
    """Not a digit: a star drawn on a canvas."""
    img = Image.new("L", (280, 280), 255)
    d = ImageDraw.Draw(img)
    points = [(140 + 110 * np.sin(a), 150 - 110 * np.cos(a)) for a in np.arange(0, 5) * 4 * np.pi / 5]
    d.line(points + [points[0]], fill=0, width=10, joint="curve")
    img.save(OUT / "scribble.png")


def mnist_digits() -> None:
    """Two digits of the embedded sample's test split, as 28x28 PNGs in MNIST form."""
    from pipeline.data import load_dataset

    test = load_dataset("sample")
    for index in (0, 1):
        label = int(test.test_labels[index])
        Image.fromarray(test.test_images[index]).save(OUT / f"mnist-test-{index:04d}-label-{label}.png")


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    seven_photo()
    three_canvas()
    four_scan()
    number_photo()
    scribble()
    mnist_digits()
