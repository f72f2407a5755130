"""What reading users' photos costs: wall time and peak memory of a whole `serve predict` process per image.

    python -m benchmarks.images [--out runs/bench-images/IMAGES.md] [--model runs/default/model.onnx]
                                [--repeats 5] [--work DIR] [--quick]

Each image is made in a temporary folder (a phone-photo-like page with a handwritten stroke, sensor noise
and uneven light), then `python -m serve predict --model MODEL FILE` runs in a fresh process ``--repeats``
times; the wall time and the peak RSS of that process (``os.wait4``'s rusage, that child only) are
reported as medians with min–max. A second child per image times only ``decode_image`` + ``to_rgb``
(imports excluded) and reports its own peak RSS. ``--quick`` skips the 48 MP cases (a check that the
script runs; its numbers mean little).

The generators here (``photo``, ``png_bomb``) are also used by tests/serve/test_decode.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


# ---- images ----------------------------------------------------------------------------------------------

def photo(width: int, height: int, seed: int = 0, noise: float = 6.0):
    """An RGB 'photo of a digit on paper': warm paper lit unevenly, a dark pen stroke (a '7') across the
    middle third, sensor noise. Made with Pillow's C routines only (no full-size numpy arrays)."""
    from PIL import Image, ImageChops, ImageDraw

    light = Image.linear_gradient("L").resize((width, height), Image.Resampling.BILINEAR)  # dark at the bottom
    light = light.point(lambda v: 235 - v * 40 // 255)
    paper = Image.merge("RGB", (light, light.point(lambda v: v - 4), light.point(lambda v: v - 14)))
    if noise:
        grain = Image.effect_noise((width, height), noise)  # centred on 128
        paper = ImageChops.add(paper, Image.merge("RGB", (grain, grain, grain)), scale=1.0, offset=-128)
    draw = ImageDraw.Draw(paper)
    s = min(width, height) / 3
    x0, y0 = width / 2 - s / 2 + (seed % 7) * s / 50, height / 2 - s / 2
    draw.line([(x0, y0), (x0 + s, y0), (x0 + s * 0.35, y0 + s)], fill=(25, 28, 40), width=max(2, int(s / 12)),
              joint="curve")
    return paper


def save(image, path: Path, fmt: str, **params) -> Path:
    image.save(path, format=fmt, **params)
    return path


def exif_orientation(value: int):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def png_bomb(width: int = 6300, height: int = 6300) -> bytes:
    """A valid PNG declaring ``width`` x ``height`` RGB pixels, all white, compressed as far as zlib goes
    (about 1:1000): ~115 KB that decode to 119 MB of pixels."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * (3 * width)
    parts = [compressor.compress(row * min(64, height - y)) for y in range(0, height, 64)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


@dataclasses.dataclass
class Case:
    name: str
    file: str
    make: Callable[[Path], Path]


def cases(quick: bool) -> list[Case]:
    def jpeg(w: int, h: int, **params):
        return lambda path: save(photo(w, h), path, "JPEG", quality=90, **params)

    def png(w: int, h: int):
        return lambda path: save(photo(w, h), path, "PNG", compress_level=6)

    def bomb(path: Path) -> Path:
        path.write_bytes(png_bomb())
        return path

    found = [Case("small photo, 800x600 JPEG", "small.jpg", jpeg(800, 600)),
             Case("12 MP JPEG, 4000x3000", "12mp.jpg", jpeg(4000, 3000))]
    if not quick:
        found += [Case("48 MP JPEG, 8000x6000", "48mp.jpg", jpeg(8000, 6000)),
                  Case("48 MP JPEG, EXIF orientation 6", "48mp-rot6.jpg", jpeg(8000, 6000, exif=exif_orientation(6))),
                  Case("48 MP progressive JPEG", "48mp-progressive.jpg", jpeg(8000, 6000, progressive=True)),
                  Case("48 MP PNG, 8000x6000", "48mp.png", png(8000, 6000))]
    found.append(Case("PNG bomb declaring 6300x6300", "bomb.png", bomb))
    return found


# ---- measuring -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Stat:
    values: list[float]

    def fmt(self, digits: int = 0, unit: str = "") -> str:
        med, lo, hi = statistics.median(self.values), min(self.values), max(self.values)
        return f"{med:,.{digits}f}{unit} ({lo:,.{digits}f}–{hi:,.{digits}f})"


# Forks and execs its arguments, then reports the child's own rusage. Measuring through this small
# process matters: on Linux a child's ru_maxrss starts at its parent's RSS at fork (kept across exec), so
# forking straight from this script (which holds 48 MP images) would report our memory, not serve's.
LAUNCH = """
import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"wall": time.perf_counter() - start, "rss_mb": usage.ru_maxrss / 1024,
                  "code": os.waitstatus_to_exitcode(status)}))
"""


def run_child(argv: list[str]) -> tuple[float, float, int, str]:
    """Wall seconds, peak RSS in MB, exit status and output of one fresh process running ``argv``."""
    proc = subprocess.run([sys.executable, "-c", LAUNCH, *argv], cwd=REPO, capture_output=True, text=True)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    output = "\n".join(proc.stdout.strip().splitlines()[:-1] + proc.stderr.strip().splitlines())
    return report["wall"], report["rss_mb"], report["code"], output


DECODE_ONLY = """
import json, sys, time
from serve.image.decode import decode_image, to_rgb, ImageError
data = open(sys.argv[1], 'rb').read()
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    try:
        decoded = decode_image(data)
        to_rgb(decoded.image)
        result = f"{decoded.image.size[0]}x{decoded.image.size[1]} scale {decoded.scale:.3f}"
    except ImageError as exc:
        result = f"ImageError: {exc}"
    times.append(time.perf_counter() - start)
with open("/proc/self/status") as status:  # VmHWM: this process's own peak (see LAUNCH)
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
print(json.dumps({"times": times, "rss": rss,
                  "result": result}))
"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs/bench-images/IMAGES.md")
    parser.add_argument("--model", type=Path, default=REPO / "runs/default/model.onnx")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=None, help="where to make the images (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="skip the 48 MP cases")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        sys.exit(f"no model at {args.model}: train and export one first (make demo)")

    import PIL

    machine = f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, Pillow {PIL.__version__}"
    print(f"machine: {machine}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for case in cases(args.quick):
            path = work / case.file
            if not path.is_file():
                case.make(path)
            walls, rss = [], []
            for _ in range(args.repeats):
                wall, peak, code, out = run_child([sys.executable, "-m", "serve", "predict", "--model",
                                                   str(args.model), str(path)])
                walls.append(wall)
                rss.append(peak)
            line = out.splitlines()[-1] if out else ""
            wall, peak, code, out = run_child([sys.executable, "-c", DECODE_ONLY, str(path), str(args.repeats)])
            decode: dict[str, Any] = json.loads(out.splitlines()[-1]) if code == 0 else {
                "times": [float("nan")], "rss": float("nan"), "result": out[-200:]}
            row: dict[str, Any] = {
                "case": case.name, "bytes": path.stat().st_size, "wall": Stat(walls), "rss": Stat(rss),
                "exit": code, "output": line.replace(str(path), path.name),
                "decode_ms": Stat([t * 1000 for t in decode["times"]]), "decode_rss": decode["rss"],
                "decoded": decode["result"]}
            rows.append(row)
            print(f"{case.name}: {row['wall'].fmt(2, ' s')}, peak RSS {row['rss'].fmt(0, ' MB')}; "
                  f"decode+to_rgb {row['decode_ms'].fmt(0, ' ms')} ({row['decoded']}), "
                  f"decode-only process peak {row['decode_rss']:.0f} MB", flush=True)
    small = statistics.median(rows[0]["wall"].values)
    model_name = args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model
    table = ["| image | file size | `serve predict` wall time, s | × small | peak RSS, MB | decode + to_rgb, ms "
             "| decode-only process peak RSS, MB | decoded as | exit |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for row in rows:
        ratio = statistics.median(row["wall"].values) / small
        table.append(f"| {row['case']} | {row['bytes'] / 1e6:,.2f} MB | {row['wall'].fmt(2)} | {ratio:.2f} "
                     f"| {row['rss'].fmt(0)} | {row['decode_ms'].fmt(0)} | {row['decode_rss']:.0f} "
                     f"| {row['decoded']} | {row['exit']} |")
    text = "\n".join([
        "# Reading users' images: time and memory",
        "",
        f"{datetime.date.today().isoformat()}; {machine}; model {model_name}.",
        f"Each `serve predict` figure is the median (min–max) of {args.repeats} fresh processes (model load "
        "included); peak RSS is the whole process's. 'decode + to_rgb' is timed inside one process "
        "(imports excluded).",
        "",
        *table,
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
