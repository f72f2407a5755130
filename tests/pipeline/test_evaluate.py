from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from pipeline import evaluate as ev
from pipeline.cli import cli
from pipeline.data import Dataset
from serve.image.ink import pixel_noise
from tests.helpers import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]
CHEAP = tuple(c for c in ev.CONDITIONS if c != "big")  # the 48-megapixel photos take seconds each
FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "tif": "TIFF", "gif": "GIF", "bmp": "BMP"}


class Forbidden:
    """Stands in for the training split: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the evaluation set touched the training split ({name})")

    def __getitem__(self, key):
        raise AssertionError("the evaluation set indexed the training split")

    def __len__(self):
        raise AssertionError("the evaluation set asked the training split's length")

    def __array__(self, *args, **kwargs):
        raise AssertionError("the evaluation set converted the training split to an array")


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.slow
def test_the_set_is_deterministic_per_seed_and_never_reads_the_training_split(sample_dataset: Dataset) -> None:
    forbidden = cast(np.ndarray, Forbidden())  # stands in for the arrays; any use of it fails the test
    no_train = dataclasses.replace(sample_dataset, train_images=forbidden, train_labels=forbidden)
    first = list(ev.generate(sample_dataset, per_condition=2, seed=0, conditions=CHEAP))
    again = list(ev.generate(no_train, per_condition=2, seed=0, conditions=CHEAP))
    other = list(ev.generate(sample_dataset, per_condition=2, seed=1, conditions=CHEAP))
    assert len(first) == 2 * len(CHEAP)
    assert first == again  # names, bytes and expected answers, item by item
    differing = [a.name for a, b in zip(first, other) if a.data != b.data]
    assert len(differing) >= len(first) - 3, "another seed should give other images"
    # an item does not depend on how many items are made
    assert ev.make_item(ev.Split.from_dataset(sample_dataset), "photo", 1, 0) == first[CHEAP.index("photo") * 2 + 1]


def test_training_split_of_zeros_changes_nothing(sample_dataset: Dataset) -> None:
    zeros = dataclasses.replace(sample_dataset, train_images=np.zeros_like(sample_dataset.train_images),
                                train_labels=np.zeros_like(sample_dataset.train_labels))
    conditions = ("mnist-28", "canvas", "numbers", "writers")
    assert list(ev.generate(zeros, 2, 3, conditions)) == list(ev.generate(sample_dataset, 2, 3, conditions))


@pytest.fixture(scope="module")
def items(sample_dataset: Dataset) -> list[ev.Item]:
    made = list(ev.generate(sample_dataset, per_condition=4, seed=5, conditions=CHEAP))
    return made + list(ev.generate(sample_dataset, per_condition=1, seed=5, conditions=("big",)))


def claimed_size_ok(item: ev.Item, size: tuple[int, int]) -> bool:
    w, h = size
    long, short = max(w, h), min(w, h)
    photo = 640 <= long <= 3000 and short >= 360
    scan = (w, h) == (1200, 1600)
    canvas = 100 <= w <= 600 and 100 <= h <= 600
    variant = item.variant
    if item.condition == "mnist-28":
        return (w, h) == (28, 28)
    if item.condition == "canvas":
        return canvas
    if item.condition in ("photo", "note", "ruled", "framed", "beside", "board", "dim", "shadow"):
        return photo
    if item.condition == "specks":
        return scan
    if item.condition == "colour":
        return canvas if variant.startswith("canvas") else photo
    if item.condition in ("thick-thin", "writers"):
        return {"canvas": canvas, "photo": photo, "scan": scan}[variant.split("-")[0]]
    if item.condition == "numbers":
        return photo if "photo" in variant else 240 <= w <= 900 and h >= 70
    if item.condition == "small":
        return 20 <= min(w, h) and max(w, h) <= 8 * ev.SMALL_HEIGHT[1] + 1
    if item.condition == "cropped":  # 8-16 px tall when kept at low resolution, up to 600 px enlarged
        return ev.LOW_RES_HEIGHT[0] <= max(w, h) <= 1.5 * ev.CROPPED_HEIGHT[1] + 2
    if item.condition == "big":
        return (w, h) in ((8000, 6000), (6000, 8000))
    return min(w, h) >= 8  # typeset, not-digits: any size a file can have


@pytest.mark.slow
def test_every_condition_gives_decodable_files_of_the_sizes_claimed(items: list[ev.Item]) -> None:
    seen = set()
    for item in items:
        image = decode(item.data)
        ext = item.name.rsplit(".", 1)[1]
        assert image.format == FORMATS[ext], item.name
        upright = ImageOps.exif_transpose(image)
        assert claimed_size_ok(item, upright.size), (item.name, upright.size)
        assert re.fullmatch(rf"{item.condition}/\d{{4}}-[^/]+\.{ext}", item.name), item.name
        seen.add(item.condition)
    assert seen == set(ev.CONDITIONS)
    big = [i for i in items if i.condition == "big"]
    assert big and all(decode(i.data).size[0] * decode(i.data).size[1] == 48_000_000 for i in big)


def test_expected_answers(items: list[ev.Item]) -> None:
    for item in items:
        if item.condition == "not-digits":
            assert item.expected is None, item.name
        elif item.condition == "numbers":
            assert item.expected is not None and re.fullmatch(r"[1-9]\d{1,3}", item.expected), item.name
            assert item.variant.startswith(f"{len(item.expected)}d-"), item.name
        else:
            assert item.expected is not None and re.fullmatch(r"\d", item.expected), item.name


@pytest.mark.slow
def test_expected_labels_are_the_source_digits_labels(sample_dataset: Dataset) -> None:
    # mnist-28 files are the test digits themselves, pixel for pixel, with their labels
    split = ev.Split.from_dataset(sample_dataset)
    for item in ev.generate(split, 10, 0, ("mnist-28",)):
        pixels = np.asarray(decode(item.data))
        matches = np.flatnonzero((split.images == pixels).all(axis=(1, 2)))
        assert len(matches) and {str(split.labels[i]) for i in matches} == {item.expected}
    # a test split holding only 3s (labelled 3): every handwritten item expects 3s only
    threes = sample_dataset.test_labels == 3
    only_threes = ev.Split(sample_dataset.test_images[threes], sample_dataset.test_labels[threes])
    for item in ev.generate(only_threes, 2, 0, [c for c in CHEAP if c not in ("typeset", "not-digits")]):
        assert item.expected is not None and set(item.expected) == {"3"}, item.name
    relabelled = ev.Split(split.images, np.full_like(split.labels, 7))
    for item in ev.generate(relabelled, 2, 0, ("photo", "specks", "writers")):
        assert item.expected == "7", item.name


def test_phone_photos_stored_sideways_come_upright_with_exif() -> None:
    image = Image.new("RGB", (300, 200), "white")
    image.paste((0, 0, 0), (0, 0, 40, 40))  # a mark at the top left
    for seed in range(12):
        data, ext = ev._phone_jpeg(image, np.random.default_rng(seed), rotate=1.0)
        upright = ImageOps.exif_transpose(decode(data)).convert("L")
        assert upright.size == (300, 200)
        assert np.asarray(upright)[:30, :30].mean() < 60 and np.asarray(upright)[-30:, -30:].mean() > 200


def test_small_digits_are_as_small_as_claimed(sample_dataset: Dataset) -> None:
    heights = []
    for item in ev.generate(sample_dataset, 16, 0, ("small",)):
        gray = np.asarray(ImageOps.exif_transpose(decode(item.data)).convert("L"), np.float32)
        paper = float(np.median(gray))
        rows = np.flatnonzero((gray < paper - 0.4 * (paper - gray.min())).any(axis=1))
        claimed = int(item.variant.rsplit("-h", 1)[1])
        height = int(rows[-1] - rows[0] + 1)
        # a wide digit (a 2 shrunk as a thumbnail) is shorter than its box; nothing is taller
        assert 0.5 * claimed - 2 <= height <= claimed + 2, (item.name, height)
        heights.append(height)
    assert min(heights) < 12 and max(heights) > 16


def test_cropped_digits_reach_every_side_of_the_frame(sample_dataset: Dataset) -> None:
    kinds = set()
    for item in ev.generate(sample_dataset, 24, 0, ("cropped",)):
        gray = np.asarray(ImageOps.exif_transpose(decode(item.data)).convert("L"), np.float32) / 255
        values, counts = np.unique(np.round(gray, 2), return_counts=True)
        ink = np.abs(gray - values[counts.argmax()]) > 0.03  # off the commonest grey: the background
        sides = (ink[:2].any(), ink[-2:].any(), ink[:, :2].any(), ink[:, -2:].any())
        assert all(sides), (item.name, sides)  # at most a pixel of margin
        kinds.add(item.variant.split("-")[0] + ("-raw" if max(gray.shape) <= ev.LOW_RES_HEIGHT[1] + 2 else ""))
    assert {"smooth", "pixels", "low", "low-raw"} <= kinds, kinds


def test_coloured_ink_and_paper_differ_in_hue_not_brightness() -> None:
    import colorsys

    for seed in range(40):
        ink, paper = ev.colour_pair(np.random.default_rng(seed))
        assert 8 <= abs(ev.luma(ink) - ev.luma(paper)) <= 42, (ink, paper)
        hue = lambda c: colorsys.rgb_to_hsv(*(v / 255 for v in c))[0]  # noqa: E731
        distance = abs(hue(ink) - hue(paper))
        assert min(distance, 1 - distance) > 0.2, (ink, paper)


def test_chalk_and_paint_lie_over_a_dark_board_and_wiping_leaves_a_faint_haze() -> None:
    # ink darkens what it is written on (multiplied); chalk and paint lay their own colour over a
    # board (covers), so a white stroke on a black board is nearly white, and only where it is drawn
    board, chalk = ev.BOARDS[0], (238, 238, 230)
    mask = np.zeros((20, 20), np.float32)
    mask[5:15, 8:12] = 1.0

    def written(covers: bool) -> np.ndarray:
        sheet = Image.new("RGB", (60, 60), board)
        ev._ink_onto(sheet, mask, (20, 20), ev.InkStyle(chalk, 0.9, 0.0, "chalk", covers=covers),
                     np.random.default_rng(0))
        return np.asarray(sheet, np.float32)

    laid, multiplied = written(True), written(False)
    stroke = np.zeros((60, 60), bool)
    stroke[25:35, 28:32] = True
    assert np.allclose(laid[stroke], 0.9 * np.array(chalk) + 0.1 * np.array(board), atol=1.0)
    assert np.array_equal(laid[~stroke], np.broadcast_to(board, laid[~stroke].shape))
    assert (multiplied[stroke] <= np.array(board) + 0.5).all()  # ink could never show on it
    sheet = Image.new("RGB", (400, 300), board)
    ev._wiped_chalk(sheet, (150, 100, 60, 100), ev.InkStyle(chalk, 0.9, 0.3, "chalk", covers=True),
                    np.random.default_rng(3))
    lift = np.asarray(sheet, np.float32) - np.array(board)
    assert lift.min() >= 0 and 0 < lift.max() <= 0.2 * (238 - board[0]) + 1  # lighter, and faint


def test_a_dim_room_leaves_the_paper_grey_and_the_sensor_noisy() -> None:
    # the same scene and draws, photographed lit and dim: only the exposure and the noise differ
    def shot(exposure: tuple[float, float], noise: tuple[float, float]) -> np.ndarray:
        plan = ev.PhotoPlan(size=(900, 1200), desk=False, shadow=False, exposure=exposure, noise=noise)
        return np.asarray(ev.photograph(None, np.random.default_rng(4), plan).convert("L"), np.float32)

    lit, dim = shot(ev.PhotoPlan.exposure, ev.PhotoPlan.noise), shot(ev.DIM_EXPOSURE, ev.DIM_NOISE)
    assert 195 <= np.median(lit) <= 250 and ev.DIM_EXPOSURE[0] - 10 <= np.median(dim) <= ev.DIM_EXPOSURE[1] + 5
    assert pixel_noise(dim / 255) > 2.5 * pixel_noise(lit / 255)


def test_a_cast_shadow_darkens_one_side_of_a_sharp_edge() -> None:
    # the same scene and draws with and without the shadow of a phone or a hand: where the shadow falls
    # the light is 30-60% lower, elsewhere the same, and the two meet within 2% of the frame
    size = (1200, 900)
    lit, _ = ev._lighting(np.random.default_rng(6), size, shadow=False)
    shaded, _ = ev._lighting(np.random.default_rng(6), size, shadow=False, cast_shadow=True)
    ratio = (np.asarray(shaded, np.float32) + 0.5) / (np.asarray(lit, np.float32) + 0.5)
    ratio = ratio.mean(axis=2)
    dark = ratio < 0.75
    assert 0.1 < dark.mean() < 0.9  # the edge crosses the frame
    assert 0.35 <= np.median(ratio[dark]) <= 0.72 and np.median(ratio[~dark]) > 0.97
    # across the edge the light changes within 2% of the frame (the soft shadows of the other photos
    # take 5-20%): the pixels between the two levels, per pixel of the shadow's outline
    between = (ratio < 0.97) & (ratio > np.median(ratio[dark]) + 0.03)
    outline = dark & ~(np.roll(dark, 1, 0) & np.roll(dark, -1, 0) & np.roll(dark, 1, 1) & np.roll(dark, -1, 1))
    outline[[0, -1]] = outline[:, [0, -1]] = False  # the frame's edge is no edge of the shadow
    assert between.sum() / outline.sum() <= 0.02 * max(size)


@pytest.mark.parametrize("seed", range(6))
def test_what_lies_beside_the_digit_is_where_it_is_meant_to_be(seed: int) -> None:
    # the `beside` condition's things, each drawn on a blank sheet around a digit's box (x, y, w, h):
    # a pen outside the box (beside the digit, never over it) and far longer than the digit is tall;
    # a highlighter's band across the box's middle rows; an underline below the box, in the ink
    box = (400, 300, 100, 160)
    ink = ev.InkStyle((30, 40, 150), 1.0, 0.0)

    def drawn(decoration) -> np.ndarray:
        sheet = Image.new("RGB", (1200, 1000), (240, 240, 235))
        decoration(sheet, box, ink, np.random.default_rng(seed))
        return np.abs(np.asarray(sheet, np.int16) - (240, 240, 235)).max(axis=2) > 30

    x, y, w, h = box
    pen = drawn(ev._pen_beside)
    assert not pen[y:y + h, x:x + w].any() and pen.any()
    ys, xs = np.nonzero(pen)
    assert max(np.ptp(ys), np.ptp(xs)) > 2 * h or pen[[0, -1]].any() or pen[:, [0, -1]].any()  # or cut by the sheet
    band = drawn(ev._highlighter_across)
    rows = np.flatnonzero(band[:, x + w // 2])
    assert y <= rows.min() and rows.max() <= y + h and band[:, x - 1].any() and band[:, x + w].any()
    line = drawn(ev._underline)
    assert line.any() and np.flatnonzero(line.any(axis=1)).min() > y + h


def test_typeset_fonts_are_matplotlibs_own() -> None:
    import matplotlib

    fonts = ev.font_files()
    root = Path(matplotlib.get_data_path()).resolve()
    assert len(fonts) >= 15
    assert all(Path(f).resolve().is_relative_to(root) for f in fonts)
    assert not any(s in Path(f).name for f in fonts for s in ("cmex", "cmsy", "STIXSiz", "LastResort"))


def markdown_rows(markdown: str) -> dict[str, list[str]]:
    """The first table of evaluation.md: condition -> cells."""
    rows = {}
    for line in markdown.split("| --- |", 1)[1].split("\n\n", 1)[0].splitlines()[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("*")] = cells[1:]
    return rows


def pct(value):
    return "-" if value is None else f"{100 * value:.1f}%"


@pytest.mark.slow
def test_cli_end_to_end_writes_the_report(exported_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = run("evaluate", "--model", str(exported_run / "model.onnx"), "--per-condition", "1", "--out", str(out),
                 "--jobs", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"evaluation.json", "evaluation.md", "failures.png", "samples.png"}
    report = json.loads((out / "evaluation.json").read_text())
    markdown = (out / "evaluation.md").read_text()
    assert markdown.strip() in result.output
    summary = report["summary"]
    assert list(summary["conditions"]) == list(ev.CONDITIONS)
    assert len(report["items"]) == len(ev.CONDITIONS) and summary["all"]["n"] == len(ev.CONDITIONS)
    rows = markdown_rows(markdown)
    expected_rows = dict(summary["conditions"], **{"all digit images": summary["digits"],
                                                    "all not-digits": summary["not_digits"]})
    assert set(rows) == set(expected_rows)
    for name, stats in expected_rows.items():
        n, accuracy, refused, errors, mean_p = rows[name][:5]
        assert int(n) == stats["n"]
        assert accuracy == pct(stats["accuracy"]) and refused == pct(stats["refused_rate"]), name
        assert int(errors) == stats["errors"]
        assert mean_p == ("-" if stats["mean_probability"] is None else f"{stats['mean_probability']:.2f}")
    # the per-condition numbers are those of the items
    for condition, stats in summary["conditions"].items():
        mine = [i for i in report["items"] if i["condition"] == condition]
        assert stats["correct"] == sum(i["correct"] for i in mine)
        assert stats["refused"] == sum(i["refused"] for i in mine)
    for item in report["items"]:
        if item["expected"] is None:
            assert item["correct"] == (item["refused"] and item["error"] is None)
        else:
            assert item["correct"] == (item["read"] == item["expected"])
        assert (item["reason"] is not None) == (item["refused"] and item["error"] is None)  # says why
    for picture in ("failures.png", "samples.png"):
        image = decode((out / picture).read_bytes())
        assert image.format == "PNG" and image.width > 100 and image.height > 30
    assert [g["goal"] for g in summary["goals"]] == [g[0] for g in ev.GOALS]


@pytest.mark.slow
def test_cli_default_out_is_beside_the_model_and_jobs_do_not_change_answers(exported_run: Path,
                                                                           tmp_path: Path) -> None:
    model = tmp_path / "run" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes((exported_run / "model.onnx").read_bytes())
    args = ["evaluate", "--model", str(model), "--per-condition", "2", "--condition", "canvas", "--condition",
            "not-digits", "--condition", "typeset", "--quiet"]
    result = run(*args, "--jobs", "1")
    assert result.exit_code == 0, result.output
    single = json.loads((model.parent / "evaluation" / "evaluation.json").read_text())
    assert single["conditions"] == ["canvas", "not-digits", "typeset"]
    result = run(*args, "--jobs", "2", "--out", str(tmp_path / "two"))
    assert result.exit_code == 0, result.output
    double = json.loads((tmp_path / "two" / "evaluation.json").read_text())
    strip = lambda items: [{k: v for k, v in i.items() if not k.endswith("_ms")} for i in items]  # noqa: E731
    assert strip(double["items"]) == strip(single["items"])


def test_help_documents_the_options() -> None:
    result = run("evaluate", "--help")
    assert result.exit_code == 0
    for option in ("--model", "--data", "--per-condition", "--condition", "--seed", "--out", "--jobs", "--quiet"):
        assert option in result.output, option
    default = next(p.default for p in cli.commands["evaluate"].params if p.name == "per_condition")
    assert default == ev.DEFAULT_PER_CONDITION
    # the help names every condition, in order (it is written out so that --help does not import numpy)
    # (the help is wrapped, at a hyphen too: "not-" ends a line)
    listed = re.search(r"several\):(.*?)\. Default", re.sub(r"-\s+", "-", " ".join(result.output.split())))
    assert listed is not None and [c.strip() for c in listed.group(1).split(",")] == list(ev.CONDITIONS)


def test_bad_model_or_condition_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.onnx"
    assert_one_line_error(run("evaluate", "--model", str(missing), "--quiet"), "not found", str(missing))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    assert_one_line_error(run("evaluate", "--model", str(garbage), "--quiet"), "garbage.onnx")
    assert not (tmp_path / "evaluation").exists()
    assert_one_line_error(run("evaluate", "--model", str(missing), "--condition", "selfies", "--quiet"),
                          "unknown condition 'selfies'")


def test_evaluation_needs_no_torch(exported_run: Path, tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
        "from pipeline.evaluate import run_evaluation\n"
        f"r = run_evaluation({str(exported_run / 'model.onnx')!r}, per_condition=1, "
        f"conditions=['mnist-28', 'photo', 'not-digits'], out={str(tmp_path)!r}, jobs=1, progress=False)\n"
        "assert r.report['summary']['all']['n'] == 3\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
