from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.synth import (DIGIT_STYLES, LOWER, NON_DIGIT_KINDS, SHAPES, UPPER, Glyph, Look, non_digits,
                            render, render_digit, render_non_digit, stroke_digits, to_field)
from serve.image.normalize import FieldSpec, centre_of_mass, is_field_form

SPEC = FieldSpec()


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return stroke_digits(200, np.random.default_rng(0))


@pytest.fixture(scope="module")
def others() -> np.ndarray:
    return non_digits(160, np.random.default_rng(0))


def stroke_width(images: np.ndarray) -> float:
    """Median stroke width in px: twice the ink area over the ink outline's length."""
    on = images > 127
    outline = (on[:, 1:] != on[:, :-1]).sum((1, 2)) + (on[:, :, 1:] != on[:, :, :-1]).sum((1, 2))
    return float(np.median(2 * on.sum((1, 2)) / np.maximum(outline, 1)))


def mean_image(digit: int, style: str, seed: int, n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.mean([render_digit(digit, style, rng) for _ in range(n)], axis=0) / 255.0


def test_digits_are_uint8_fields_with_int64_labels(digits) -> None:
    images, labels = digits
    assert images.shape == (200, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (200,) and labels.dtype == np.int64
    assert set(labels.tolist()) == set(range(10))
    # fit_to_field scales the strongest ink to 1: every image reaches 255 and the background is 0.
    assert (images.max((1, 2)) == 255).all()
    assert (images[:, 0, :] == 0).mean() > 0.9


@pytest.mark.parametrize("n", [10, 25, 103])
def test_labels_are_balanced(n: int) -> None:
    _, labels = stroke_digits(n, np.random.default_rng(n))
    counts = np.bincount(labels, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == n


def test_labels_come_shuffled(digits) -> None:
    _, labels = digits
    assert not np.array_equal(labels, np.arange(200) % 10)


def test_empty_request_gives_empty_arrays() -> None:
    images, labels = stroke_digits(0, np.random.default_rng(0))
    assert images.shape == (0, 28, 28) and labels.shape == (0,)
    assert non_digits(0, np.random.default_rng(0)).shape == (0, 28, 28)


def test_same_seed_same_images_other_seed_other_images() -> None:
    a_images, a_labels = stroke_digits(30, np.random.default_rng(7))
    b_images, b_labels = stroke_digits(30, np.random.default_rng(7))
    c_images, _ = stroke_digits(30, np.random.default_rng(8))
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert not np.array_equal(a_images, c_images)
    np.testing.assert_array_equal(non_digits(24, np.random.default_rng(7)), non_digits(24, np.random.default_rng(7)))
    assert not np.array_equal(non_digits(24, np.random.default_rng(7)), non_digits(24, np.random.default_rng(8)))


@pytest.mark.parametrize("spec", [SPEC, FieldSpec(size=32, box=24, centre=16.0)], ids=["mnist", "32px"])
def test_outputs_are_in_field_form(spec: FieldSpec) -> None:
    """What inference's fit_to_field makes of a real image: ink box within spec.box, mass at spec.centre."""
    images = np.concatenate([stroke_digits(60, np.random.default_rng(1), spec)[0],
                             non_digits(60, np.random.default_rng(1), spec)])
    assert images.shape == (120, spec.size, spec.size)
    ink = images / 255.0
    assert np.mean([is_field_form(x, spec) for x in ink]) >= 0.95
    centres = np.array([centre_of_mass(x) for x in ink])
    np.testing.assert_allclose(centres.mean(0), spec.centre, atol=0.3)
    assert np.abs(centres - spec.centre).max() <= 1.5


def test_stroke_width_is_mnist_like(digits, sample_dataset) -> None:
    """Normal pens land 2-3 px wide in the field, as in MNIST (the sample's median, same estimate)."""
    ours, mnist = stroke_width(digits[0]), stroke_width(sample_dataset.train_images[:1000])
    assert 0.8 * mnist <= ours <= 1.2 * mnist


def nearest_mean_accuracy(means: np.ndarray, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of classifying ``images`` by the nearest (Euclidean) of ten class-mean images."""
    x = images.reshape(len(images), -1) / 255.0
    m = means.reshape(10, -1)
    return float(((x @ m.T - 0.5 * (m * m).sum(1)).argmax(1) == labels).mean())


def class_means(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.stack([images[labels == d].mean(0) for d in range(10)]) / 255.0


def test_digits_look_like_mnist_digits(sample_dataset) -> None:
    """Class means of our digits classify real MNIST digits, and MNIST's means classify ours.

    Chance is 10%; MNIST's own means score about 80% on its test digits, ours about 57%.
    """
    images, labels = stroke_digits(600, np.random.default_rng(0))
    real = sample_dataset
    assert nearest_mean_accuracy(class_means(images, labels), real.test_images, real.test_labels) > 0.45
    assert nearest_mean_accuracy(class_means(real.train_images, real.train_labels), images, labels) > 0.55


@pytest.mark.parametrize("digit, a, b", [
    (0, "oval", "narrow"), (1, "plain", "flag_base"), (2, "flat_base", "loop"), (3, "round_top", "flat_top"),
    (4, "open_top", "closed"), (5, "typical", "detached_bar"), (6, "closed_loop", "straight_stem"),
    (7, "plain", "crossbar"), (8, "figure_eight", "stacked_loops"), (9, "straight_tail", "curved_tail"),
])
def test_styles_of_a_digit_really_differ(digit: int, a: str, b: str) -> None:
    """Two styles' mean images differ by more than two fresh batches of one style do."""
    between = np.abs(mean_image(digit, a, 1) - mean_image(digit, b, 1)).mean()
    within = max(np.abs(mean_image(digit, s, 1) - mean_image(digit, s, 2)).mean() for s in (a, b))
    assert between > 1.3 * within


def test_every_digit_has_several_styles() -> None:
    assert sorted(DIGIT_STYLES) == list(range(10))
    assert all(len(styles) >= 2 for styles in DIGIT_STYLES.values())


def test_seven_crossbar_puts_ink_across_the_middle() -> None:
    """The crossbar's ink sits left of the diagonal at mid height, where a plain 7 has none."""
    band = np.s_[12:17, 4:12]
    assert mean_image(7, "crossbar", 3)[band].mean() > 2 * mean_image(7, "plain", 3)[band].mean()


def test_non_digits_are_uint8_fields_every_one_with_ink(others) -> None:
    assert others.shape == (160, 28, 28) and others.dtype == np.uint8
    assert (others.max((1, 2)) == 255).all()
    assert ((others > 127).sum((1, 2)) >= 3).all()


def test_non_digits_are_diverse(others) -> None:
    """No two images are near copies, and they are not all alike."""
    flat = others.reshape(len(others), -1) / 255.0
    distance = np.abs(flat[:, None] - flat[None]).mean(-1)
    np.fill_diagonal(distance, np.inf)
    assert distance.min() > 0.005  # no copies (two long lines may come close: 0.017 seen)
    pairs = distance[np.isfinite(distance)]
    assert np.median(pairs) > 0.1 and (pairs < 0.03).mean() < 0.01
    # Ink coverage ranges from a thin line to a filled blob.
    coverage = (others > 127).mean((1, 2))
    assert coverage.min() < 0.1 and coverage.max() > 0.3


@pytest.mark.parametrize("kind", NON_DIGIT_KINDS)
def test_each_non_digit_kind_renders(kind: str) -> None:
    rng = np.random.default_rng(4)
    images = np.stack([render_non_digit(kind, rng) for _ in range(12)])
    assert (images.max((1, 2)) == 255).all()
    assert np.mean([is_field_form(x / 255.0, SPEC) for x in images]) >= 0.9
    assert len({x.tobytes() for x in images}) == 12


def test_letters_that_read_as_digits_are_left_out() -> None:
    confusable = set("OoQDIlijJSsZzBbGgqTLUu")
    assert not confusable & (set(UPPER) | set(LOWER))
    assert {"circle", "oval", "ellipse", "ring", "vertical_line"}.isdisjoint(SHAPES)


def test_a_lone_dot_becomes_a_filled_disc() -> None:
    """Scaled up to the box a dot is a disc (about pi/4 of its square), not a square or a ring."""
    look = Look(0.0, 0.0, 0.0, 0.0, 1.0, 0.1, 0.0, 1.0)
    field = to_field(render(Glyph([np.array([[0.5, 0.5]])]), look, np.random.default_rng(0)), SPEC) / 255.0
    box = field[4:24, 4:24]
    assert 0.65 < (box > 0.5).mean() < 0.88
    assert field[14, 14] > 0.8  # filled, not a ring


@pytest.mark.parametrize("seed", range(4))
def test_a_gap_shows_in_the_field(seed: int) -> None:
    """A gap is cut wider than the round caps reach into it: a column inside the line is dark."""
    look = Look(0.0, 0.0, 0.0, 0.0, 1.0, 0.05, 1.0, 1.0)  # gap probability 1
    line = Glyph([np.array([[0.0, 0.5], [1.0, 0.5]])])
    columns = to_field(render(line, look, np.random.default_rng(seed)), SPEC).max(0)
    inked = np.flatnonzero(columns > 128)
    assert inked[-1] - inked[0] + 1 >= SPEC.box - 1  # the line still spans the box...
    assert len(inked) < inked[-1] - inked[0] + 1  # ...with a dark column inside


def test_module_does_not_import_torch() -> None:
    code = "import sys, pipeline.synth; assert 'torch' not in sys.modules, 'pipeline.synth imports torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
