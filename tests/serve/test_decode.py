"""serve.image.decode: users' images at working scale, in bounded memory, or one clear ImageError."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from benchmarks.images import exif_orientation, png_bomb
from serve.image import decode
from serve.image.decode import (DEFAULT_MAX_PIXELS, HEIF_MISSING, WORK_SIDE, Decoded, ImageError, decode_image,
                                to_rgb)
from tests.serve.images import encode, png_header_only

REPO = Path(__file__).resolve().parents[2]
MB = 1024 * 1024
MARK = (5000, 1000, 5400, 1500)  # a dark rectangle on the 8000x6000 pages: x0, y0, x1, y1 (exclusive)


def page(width: int, height: int, mark: tuple[int, int, int, int] | None = None, mode: str = "RGB") -> Image.Image:
    """Light paper with a dark rectangle at ``mark`` (x0, y0, x1, y1, exclusive)."""
    image = Image.new(mode, (width, height), 230 if mode == "L" else (235, 230, 220))
    if mark:
        ImageDraw.Draw(image).rectangle((mark[0], mark[1], mark[2] - 1, mark[3] - 1),
                                        fill=20 if mode == "L" else (20, 20, 30))
    return image


def dark_box(decoded: Decoded, threshold: float = 0.4) -> tuple[float, float, float, float]:
    """The dark pixels' box in the original's pixels (x0, y0, x1, y1), through ``decoded.scale``."""
    gray = to_rgb(decoded.image).mean(axis=2)
    ys, xs = np.nonzero(gray < threshold)
    s = decoded.scale
    return xs.min() * s, ys.min() * s, (xs.max() + 1) * s, (ys.max() + 1) * s


def one_line_error(data: bytes, **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        decode_image(data, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message and len(message) < 200
    return message


def child(code: str, *args: str, timeout: float = 240) -> dict:
    """Run ``code`` in a fresh interpreter (repo on the path); it prints one JSON line last."""
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts at its parent's
    RSS at fork time (kept across exec), so it would count pytest's own memory."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


PEAK_RSS = """
import json, sys
def peak_rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
from serve.image.decode import decode_image, to_rgb
base = peak_rss_mb()
data = open(sys.argv[1], "rb").read()
decoded = decode_image(data)
rgb = to_rgb(decoded.image)
print(json.dumps({"peak_mb": peak_rss_mb(), "base_mb": base,
                  "size": decoded.image.size, "scale": decoded.scale, "heif": "pillow_heif" in sys.modules}))
"""


# ---- big images ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big(tmp_path_factory) -> dict[str, Path]:
    """8000x6000 pages (48 MP) as JPEG, JPEG with EXIF orientation 6, and PNG, written once."""
    folder = tmp_path_factory.mktemp("big")
    image = page(8000, 6000, MARK)
    files = {"jpeg": folder / "48mp.jpg", "rot6": folder / "48mp-rot6.jpg", "png": folder / "48mp.png"}
    image.save(files["jpeg"], quality=90)
    image.save(files["rot6"], quality=90, exif=exif_orientation(6))
    image.save(files["png"], compress_level=1)
    return files


def test_a_48mp_jpeg_is_draft_decoded_to_work_side_with_the_right_scale(big, monkeypatch) -> None:
    from PIL import JpegImagePlugin

    drafted = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        drafted.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    decoded = decode_image(big["jpeg"].read_bytes())
    assert drafted == [(2000, 1500)]  # decoded at 1/4 scale in the DCT, never at full size
    assert decoded.image.size == (WORK_SIDE, 768) and decoded.image.mode == "RGB"
    assert decoded.scale == pytest.approx(8000 / WORK_SIDE) and decoded.original_size == (8000, 6000)
    box = dark_box(decoded)
    assert np.allclose(box, MARK, atol=2 * decoded.scale), box  # boxes come back in original pixels


def test_exif_orientation_is_applied_to_a_big_jpeg_and_it_stays_tall(big) -> None:
    decoded = decode_image(big["rot6"].read_bytes())
    assert decoded.image.size == (768, WORK_SIDE) and decoded.original_size == (6000, 8000)
    # orientation 6: the stored image is turned 90° clockwise to be seen; a point (x, y) goes to (H-1-y, x)
    x0, y0, x1, y1 = MARK
    expected = (6000 - y1, x0, 6000 - y0, x1)
    assert np.allclose(dark_box(decoded), expected, atol=2 * decoded.scale)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_exif_transpose(orientation: int) -> None:
    stored = page(3000, 2000, (2000, 300, 2600, 700))
    ImageDraw.Draw(stored).rectangle((100, 1500, 400, 1900), fill=(120, 120, 120))  # asymmetric second mark
    data = encode(stored, "JPEG", quality=90, exif=exif_orientation(orientation))
    decoded = decode_image(data)
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).resize(decoded.image.size,
                                                                             Image.Resampling.BOX)
    assert np.abs(to_rgb(decoded.image) - to_rgb(reference)).mean() < 0.01
    assert decoded.scale == pytest.approx(3000 / WORK_SIDE)


@pytest.mark.parametrize("fmt, params", [("PNG", {"exif": exif_orientation(6)}),
                                         ("WEBP", {"exif": exif_orientation(6)}),
                                         ("TIFF", {"tiffinfo": {0x0112: 6}})])  # TIFF: a tag of its own IFD
def test_orientation_is_read_before_reduction_in_every_format(fmt: str, params: dict) -> None:
    stored = page(2400, 1600, (1600, 200, 2000, 600))
    decoded = decode_image(encode(stored, fmt, **params))
    assert decoded.image.size == (683, WORK_SIDE) and decoded.original_size == (1600, 2400)
    assert np.allclose(dark_box(decoded), (1600 - 600, 1600, 1600 - 200, 2000), atol=2 * decoded.scale)


@pytest.mark.parametrize("fmt, mode", [("PNG", "RGB"), ("PNG", "P"), ("PNG", "LA"), ("TIFF", "I;16"),
                                       ("TIFF", "F"), ("PNG", "1"), ("WEBP", "RGBA"), ("GIF", "P")])
def test_non_jpeg_images_are_reduced_to_work_side_with_the_right_scale(fmt: str, mode: str) -> None:
    rgb = page(3300, 2500, (2000, 500, 2400, 1100))
    image = {"I;16": lambda: Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257),
             "F": lambda: Image.fromarray(np.asarray(rgb.convert("L"), np.float32) / 255),
             "P": lambda: rgb.convert("P"), "LA": lambda: rgb.convert("LA"), "1": lambda: rgb.convert("1"),
             "RGBA": lambda: rgb.convert("RGBA")}.get(mode, lambda: rgb)()
    decoded = decode_image(encode(image, fmt))
    assert decoded.image.size == (WORK_SIDE, round(2500 * WORK_SIDE / 3300))
    assert decoded.scale == pytest.approx(3300 / WORK_SIDE)
    assert np.allclose(dark_box(decoded), (2000, 500, 2400, 1100), atol=2 * decoded.scale)


def test_small_images_come_back_at_scale_one() -> None:
    decoded = decode_image(encode(page(640, 480, (10, 10, 50, 50))))
    assert decoded.image.size == (640, 480) and decoded.scale == 1.0
    assert dark_box(decoded) == (10, 10, 50, 50)


def test_work_side_is_honoured() -> None:
    decoded = decode_image(encode(page(8000, 6000, MARK), "JPEG"), work_side=256)
    assert decoded.image.size == (256, 192) and decoded.scale == pytest.approx(8000 / 256)


def test_decoding_a_48mp_jpeg_peaks_far_below_its_full_size(big) -> None:
    for key in ("jpeg", "rot6"):
        result = child(PEAK_RSS, str(big[key]))
        # the full 8000x6000 raster alone would be 192 MB in Pillow; draft decoding never makes it
        assert result["peak_mb"] < 150, result
        assert result["peak_mb"] < 400
        assert not result["heif"]  # cold start does not import pillow-heif


def test_decoding_a_48mp_png_stays_under_400mb(big) -> None:
    result = child(PEAK_RSS, str(big["png"]))
    assert result["size"] == [WORK_SIDE, 768]
    # the full raster (192 MB) must be decoded; no float copy of it (another 576 MB) may follow
    assert result["peak_mb"] < 400, result


# ---- declared-size limit (decompression bombs) -----------------------------------------------------------

def test_default_limit_admits_48_50_and_64_mp_phone_photos() -> None:
    for width, height in [(8000, 6000), (8064, 6048), (8160, 6144), (9248, 6936)]:
        assert width * height <= DEFAULT_MAX_PIXELS


def test_a_bomb_is_refused_before_decoding_with_the_option_named(tmp_path) -> None:
    bomb = png_bomb(6300, 6300)
    assert len(bomb) < 200_000
    start = time.perf_counter()
    message = one_line_error(bomb, max_pixels=20_000_000)
    assert time.perf_counter() - start < 0.5  # refused from the header, nothing inflated
    assert message == "image is 6300x6300 pixels, above the limit of 20,000,000 (raise it with --max-pixels)"
    assert "--max-pixels" in one_line_error(png_header_only(100_000, 100_000))  # beyond Pillow's own guard too


def test_a_bomb_within_the_limit_decodes_in_bounded_memory(tmp_path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(6300, 6300))
    result = child(PEAK_RSS, str(path))
    assert result["size"] == [WORK_SIDE, WORK_SIDE] and result["scale"] == pytest.approx(6300 / WORK_SIDE)
    assert result["peak_mb"] < 400, result  # 159 MB of RGB pixels in Pillow; nothing near a gigabyte


def test_jpeg_with_a_huge_declared_size_is_refused() -> None:
    data = bytearray(encode(page(64, 48), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width
    assert "60000x60000 pixels, above the limit" in one_line_error(bytes(data))


def test_a_tiny_progressive_jpeg_declaring_a_huge_size_counts_its_coefficient_memory() -> None:
    def declaring(width: int, height: int, subsampling: int) -> bytes:
        data = bytearray(encode(page(64, 48), "JPEG", progressive=True, subsampling=subsampling))
        sof = data.index(b"\xff\xc2")
        data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
        return bytes(data)

    # 4:4:4: 6 bytes of DCT coefficients a pixel (375 MB here) however small the draft scale
    message = one_line_error(declaring(8192, 8000, subsampling=0))
    assert message.startswith("progressive JPEG of 8192x8000 pixels needs 375 MB") and "--max-pixels" in message
    assert decode_image(declaring(6000, 4000, subsampling=0)).image.size == (WORK_SIDE, 683)  # 144 MB: fine
    assert decode_image(declaring(8192, 8000, subsampling=2)).image.size == (WORK_SIDE, 1000)  # 4:2:0: 188 MB


def test_our_limit_replaces_pillows_guard_for_our_calls_only(monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(page(100, 100, (10, 10, 20, 20)))
    assert decode_image(data).image.size == (100, 100)  # 10,000 pixels: Pillow alone would refuse (> 2x1000)
    assert "above the limit of 5,000" in one_line_error(data, max_pixels=5000)
    with pytest.raises(Image.DecompressionBombError):  # everyone else still has Pillow's guard
        Image.open(io.BytesIO(data))


def test_each_call_gets_its_own_limit_across_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    data = encode(page(1200, 900, (10, 10, 50, 50)))

    def attempt(max_pixels: int) -> bool:
        try:
            decode_image(data, max_pixels=max_pixels)
            return True
        except ImageError:
            return False

    limits = [1_000_000, 2_000_000] * 20  # 1,080,000 pixels: refused by the first, admitted by the second
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(attempt, limits)) == [False, True] * 20


# ---- HEIC ------------------------------------------------------------------------------------------------

def heic(image: Image.Image, **params) -> bytes:
    pillow_heif = pytest.importorskip("pillow_heif", reason="the heif extra is not installed "
                                                            "(pip install -c constraints.txt -e '.[heif]')")
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, quality=90, **params)
    return buffer.getvalue()


def test_heic_photos_decode_with_the_heif_extra_and_their_orientation_applied() -> None:
    upright = page(1600, 1200, (1000, 200, 1400, 400))
    decoded = decode_image(heic(upright))
    assert decoded.image.size == (WORK_SIDE, 768)
    assert np.allclose(dark_box(decoded), (1000, 200, 1400, 400), atol=3 * decoded.scale)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a camera stores a photo with orientation 6
    decoded = decode_image(heic(stored, exif=exif_orientation(6).tobytes()))
    assert decoded.image.size == (WORK_SIDE, 768)  # upright again, not turned twice
    assert np.allclose(dark_box(decoded), (1000, 200, 1400, 400), atol=3 * decoded.scale)


def test_heic_without_the_extra_says_what_to_do(monkeypatch) -> None:
    data = (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)  # an iPhone photo's start
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import pillow_heif → ImportError
    monkeypatch.setattr(decode, "_heif_registered", False)
    assert one_line_error(data) == HEIF_MISSING
    assert "pip install 'foldserve[heif]'" in HEIF_MISSING and "convert it to JPEG" in HEIF_MISSING


@pytest.mark.parametrize("head, is_heif", [
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", True),
    (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", True),
    (b"\x00\x00\x00\x14ftyphevc\x00\x00\x00\x00mif1", True),
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", False),  # AVIF: Pillow reads it
    (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif", False),
    (b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isomiso2", False),  # an MP4 video
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 16, False),
])
def test_heif_is_recognised_by_its_ftyp_brands(head: bytes, is_heif: bool) -> None:
    assert decode._is_heif(head + b"\x00" * 32) is is_heif


# ---- unusual but valid images ----------------------------------------------------------------------------

PAPER, INK = 0.9, 0.1
GRAY = np.full((60, 80), PAPER, np.float32)
GRAY[20:40, 30:50] = INK  # ink in the middle
U8 = Image.fromarray((GRAY * 255).round().astype(np.uint8))


def float_tiff() -> bytes:
    values = GRAY.copy()
    values[0:4, 0:6] = np.nan
    values[50, 70] = np.inf
    values[51, 71] = -np.inf
    return encode(Image.fromarray(values), "TIFF")


def lab_tiff() -> bytes:
    flat = Image.new("L", U8.size, 128)
    return encode(Image.merge("LAB", (U8, flat, flat)), "TIFF")


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))
                                           for k, d in chunks)


def palette_with_long_trns() -> bytes:
    """A 4-colour palette PNG whose tRNS table has 256 entries (longer than the palette)."""
    image = Image.new("P", U8.size, 0)
    image.putpalette([230, 230, 230, 25, 25, 25, 255, 0, 0, 0, 0, 255])
    image.paste(1, (30, 20, 50, 40))
    chunks = []
    for kind, body in png_chunks(encode(image)):
        chunks.append((kind, body))
        if kind == b"PLTE":
            chunks.append((b"tRNS", bytes([255, 255] + [0] * 254)))
    return png_from_chunks(chunks)


def raw_exif(tag_type: int, count: int, value: bytes) -> bytes:
    """An EXIF block whose only entry is the orientation, of any type."""
    return (b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01" + struct.pack(">HHI", 0x0112, tag_type, count)
            + value.ljust(4, b"\x00")[:4] + b"\x00\x00\x00\x00")


def u16(big_endian: bool = False) -> Image.Image:
    values = (GRAY * 65535).round().astype(">u2" if big_endian else np.uint16)
    return Image.fromarray(values)


UNUSUAL = {
    "float TIFF with NaN and inf": float_tiff,
    "LAB TIFF": lab_tiff,
    "CMYK JPEG": lambda: encode(U8.convert("RGB").convert("CMYK"), "JPEG", quality=95),
    "CMYK TIFF": lambda: encode(U8.convert("RGB").convert("CMYK"), "TIFF"),
    "YCbCr TIFF": lambda: encode(U8.convert("RGB").convert("YCbCr"), "TIFF"),
    "palette PNG, tRNS longer than the palette": palette_with_long_trns,
    "palette PNG with a transparent index": lambda: encode(U8.convert("RGB").convert("P"), "PNG", transparency=255),
    "1-bit PNG": lambda: encode(U8.convert("1", dither=Image.Dither.NONE), "PNG"),
    "1-bit TIFF": lambda: encode(U8.convert("1", dither=Image.Dither.NONE), "TIFF", compression="group4"),
    "I;16 PNG": lambda: encode(u16(), "PNG"),
    "I;16B PNG": lambda: encode(u16(big_endian=True), "PNG"),
    "I;16 TIFF": lambda: encode(u16(), "TIFF"),
    "I;16B TIFF": lambda: encode(u16(big_endian=True), "TIFF"),
    "16-bit PGM": lambda: encode(u16(), "PPM"),
    "I (32-bit) TIFF": lambda: encode(Image.fromarray((GRAY * 1_000_000).astype(np.int32)), "TIFF"),
    "LA PNG": lambda: encode(U8.convert("LA"), "PNG"),
    "PA TIFF": lambda: encode(U8.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE).convert("PA"), "TIFF"),
    "RGBA PNG, transparent background": lambda: encode(Image.merge("RGBA", (*[Image.new("L", U8.size, 0)] * 3,
                                                                             U8.point(lambda v: 255 - v))), "PNG"),
    "L PNG with a transparent grey": lambda: encode(U8, "PNG", transparency=230),
    "RGB PNG with a transparent colour": lambda: encode(U8.convert("RGB"), "PNG", transparency=(230, 230, 230)),
    "animated GIF": lambda: encode(U8, "GIF", save_all=True, append_images=[Image.new("L", U8.size, 0)] * 2),
    "APNG": lambda: encode(U8.convert("RGB"), "PNG", save_all=True,
                           append_images=[Image.new("RGB", U8.size, (0, 0, 0))]),
    "animated WebP": lambda: encode(U8.convert("RGB"), "WEBP", lossless=True, save_all=True,
                                    append_images=[Image.new("RGB", U8.size, (0, 0, 0))]),
    "AVIF": lambda: encode(U8.convert("RGB"), "AVIF", quality=90),
    "BMP": lambda: encode(U8.convert("RGB"), "BMP"),
    "EXIF orientation 0": lambda: encode(U8, "JPEG", exif=exif_orientation(0)),
    "EXIF orientation 9": lambda: encode(U8, "JPEG", exif=exif_orientation(9)),
    "EXIF orientation as text": lambda: encode(U8, "JPEG", exif=raw_exif(2, 4, b"six\x00")),
    "EXIF orientation as a rational": lambda: encode(U8, "JPEG", exif=raw_exif(5, 1, b"\x00\x00\x00\x08")),
}


@pytest.mark.parametrize("name", UNUSUAL)
def test_unusual_images_decode_to_finite_values_in_0_1(name: str) -> None:
    decoded = decode_image(UNUSUAL[name]())
    rgb = to_rgb(decoded.image)
    assert rgb.shape == (60, 80, 3) and rgb.dtype == np.float32
    assert np.isfinite(rgb).all() and rgb.min() >= 0.0 and rgb.max() <= 1.0
    gray = rgb.mean(axis=2)
    if name not in ("palette PNG with a transparent index",):  # there the ink itself is transparent: white
        assert gray[25:35, 35:45].mean() < gray[45:, :20].mean() - 0.4, name  # the ink is still dark


def test_a_corrupt_exif_block_is_a_warning_not_an_error() -> None:
    data = encode(U8, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x01")
    with pytest.warns(UserWarning, match="Corrupt EXIF data"):  # Pillow's; printed, unless warnings are errors
        decoded = decode_image(data)
    assert decoded.image.size == (80, 60)


def test_float_nan_becomes_the_background_and_inf_the_extremes() -> None:
    gray = to_rgb(decode_image(float_tiff()).image)[..., 0]
    assert np.allclose(gray[0:4, 0:6], PAPER, atol=1 / 255) and gray[50, 70] == 1.0 and gray[51, 71] == 0.0
    assert np.allclose(gray[25, 35], INK, atol=1 / 255)


def test_sixteen_bit_keeps_its_scale() -> None:
    for data in (encode(u16(), "PNG"), encode(u16(big_endian=True), "TIFF")):
        decoded = decode_image(data)
        assert decoded.image.mode == "L"  # scaled from 16 bits, not clipped at 255
        np.testing.assert_allclose(to_rgb(decoded.image)[..., 0], GRAY, atol=0.5 / 255 + 1e-6)


def test_to_rgb_composites_alpha_onto_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.putpixel((5, 5), (0, 0, 0, 255))
    rgba.putpixel((6, 6), (0, 0, 0, 128))
    rgb = to_rgb(rgba)
    assert rgb[0, 0].tolist() == [1, 1, 1] and rgb[5, 5].tolist() == [0, 0, 0]
    assert rgb[6, 6, 0] == pytest.approx(1 - 128 / 255)


# ---- broken files ----------------------------------------------------------------------------------------

def bad_crc_png() -> bytes:
    data = bytearray(encode(U8))
    data[29] ^= 0xFF  # the IHDR chunk's CRC
    return bytes(data)


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"digit: 7\nwritten by hand\n", "not a recognised image format"),
    (b"%PDF-1.7\n" + b"\x00" * 100, "a PDF, not an image"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "an SVG drawing"),
    (encode(U8)[:-30], "truncated"),
    (encode(U8.convert("RGB"), "JPEG")[:300], "truncated"),
    (encode(U8, "GIF")[:40], "cannot decode image|truncated"),
    (encode(U8, "TIFF")[:100], "cannot decode image|truncated|corrupt TIFF"),
    (bad_crc_png(), "corrupt PNG file"),
    (encode(Image.new("L", (4, 7))), "4x7 pixels; a digit needs at least 8 on its longer side"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 50, "corrupt JPEG file|cannot decode"),
])
def test_broken_files_raise_one_line_image_errors(data: bytes, message: str) -> None:
    import re

    assert re.search(message, one_line_error(data))


# ---- fuzz ------------------------------------------------------------------------------------------------

def fuzz_seeds() -> list[bytes]:
    rgb = U8.convert("RGB")
    return [encode(rgb, "PNG"), encode(rgb.convert("P"), "PNG", transparency=3), encode(U8.convert("LA"), "PNG"),
            encode(rgb, "JPEG", quality=80, exif=exif_orientation(6)), encode(rgb, "JPEG", progressive=True),
            encode(U8, "GIF", save_all=True, append_images=[U8]), encode(rgb, "TIFF"),
            encode(u16(), "TIFF", compression="tiff_deflate"), encode(rgb, "WEBP"), encode(rgb, "BMP")]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip bits, overwrite, insert or truncate: mostly in the first 100 bytes (headers, sizes)."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(0, 5))
        head = int(rng.integers(0, min(len(out), 100))) if rng.random() < 0.6 else int(rng.integers(0, len(out)))
        if kind == 0:
            out[head] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            out[head] = int(rng.integers(0, 256))
        elif kind == 2:
            out[head:head] = rng.bytes(int(rng.integers(1, 16)))
        elif kind == 3:
            del out[head:head + int(rng.integers(1, 16))]
        else:
            out = out[:int(rng.integers(0, len(out)))]
        if not out:
            break
    return bytes(out)


def run_fuzz(cases: int, seed: int) -> dict:
    """Decode ``cases`` mutated files; count outcomes, list anything that is not an ImageError."""
    import traceback

    rng = np.random.default_rng(seed)
    seeds = fuzz_seeds()
    counts, wrong, slowest = {"ok": 0, "image_error": 0}, [], 0.0
    for case in range(cases):
        data = mutate(seeds[case % len(seeds)], rng)
        start = time.perf_counter()
        try:
            rgb = to_rgb(decode_image(data).image)
            assert np.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1, "values outside [0, 1]"
            counts["ok"] += 1
        except ImageError as exc:
            assert "\n" not in str(exc), f"two lines: {exc!r}"
            counts["image_error"] += 1
        except Exception:  # noqa: BLE001 - collected and reported by the test
            wrong.append({"case": case, "data": data[:64].hex(), "error": traceback.format_exc(limit=-3)})
        slowest = max(slowest, time.perf_counter() - start)
    return {**counts, "wrong": wrong, "slowest_s": slowest,
            "peak_mb": peak_rss_mb()}


def test_fuzzed_files_only_ever_raise_image_error_in_bounded_memory_and_time() -> None:
    start = time.perf_counter()
    result = child("import json; from tests.serve.test_decode import run_fuzz; "
                   "print(json.dumps(run_fuzz(400, 20240607)))")
    assert result["wrong"] == [], json.dumps(result["wrong"][:3], indent=1)
    assert result["ok"] > 20 and result["image_error"] > 100, result  # both outcomes really exercised
    assert result["peak_mb"] < 400, result
    assert result["slowest_s"] < 10 and time.perf_counter() - start < 200, result


def test_repeated_pixels_are_read_at_the_scale_they_were_drawn() -> None:
    # a low-resolution digit shown big by repeating its pixels (12.5 times: rows of 12 and 13) is read
    # as drawn, then enlarged smoothly like any tiny image; the factor maps boxes back to the file
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    big = np.asarray(Image.fromarray(cells).resize((100, 100), Image.Resampling.NEAREST), np.float32) / 255
    rgb, pixel = decode.at_drawn_scale(np.repeat(big[..., None], 3, axis=2))
    assert rgb.shape[:2] == (decode.TINY_TO, decode.TINY_TO)
    assert pixel * decode.TINY_TO == pytest.approx(100)
    assert decode.repeated_cell(np.any(big[1:] != big[:-1], axis=1)) == pytest.approx(12.5)


def test_a_digit_enlarged_by_repeating_pixels_is_read_as_the_small_one(sample_dataset) -> None:
    from serve.reading import prepare_page

    small = 255 - np.asarray(Image.fromarray(sample_dataset.test_images[1]).resize((12, 12), Image.Resampling.BOX))
    pages = [prepare_page(encode(Image.fromarray(small).resize((side, side), Image.Resampling.NEAREST)), "digit")
             for side in (12, 60, 300)]
    assert all(p.glyphs == 1 for p in pages)
    np.testing.assert_array_equal(pages[1].fields, pages[0].fields)
    np.testing.assert_array_equal(pages[2].fields, pages[0].fields)
    box = pages[2].boxes[0]  # in the 300 px file's pixels
    assert box.x + box.width <= 300 and box.height > 150, box


def test_an_ordinary_image_is_read_as_it_is() -> None:
    # smooth strokes change from one row to the next: no cells, nothing is resampled
    ramp = np.tile(np.linspace(0, 1, 200, dtype=np.float32), (150, 1))
    rgb = np.repeat(ramp[..., None], 3, axis=2)
    same, pixel = decode.at_drawn_scale(rgb)
    assert same is rgb and pixel == 1.0
    # a flat stretch is no cell: runs must all be whole cells of one size
    steps = np.zeros(100, bool)
    steps[[9, 12, 50]] = True  # runs of 10, 3, 38, 49
    assert decode.repeated_cell(steps) is None
