from __future__ import annotations

import json
import math

import numpy as np
import pytest

from serve.image.views import READING_VIEWS, View, combine, expand, view_of, views_from_json, views_to_json
from serve.model import load_model
from tests.helpers import tiny_model

CENTRE = 14.0  # the field's centre of mass, in pixel indices


def one_pixel(row: int, col: int) -> np.ndarray:
    field = np.zeros((28, 28), np.float32)
    field[row, col] = 1.0
    return field


def seen(field: np.ndarray, view: View) -> np.ndarray:
    return view_of(field[None], view, CENTRE)[0]


def where(field: np.ndarray) -> tuple[int, int]:
    row, col = np.unravel_index(int(field.argmax()), field.shape)
    return int(row), int(col)


def test_a_shift_moves_the_ink_whole_pixels_and_drops_what_leaves_the_field() -> None:
    field = np.zeros((28, 28), np.float32)
    field[8:20, 11:16] = np.linspace(0.2, 1.0, 12)[:, None]
    field[0, 0] = 1.0  # moves out of the field when shifted up or left
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        expected = np.zeros_like(field)
        expected[max(dy, 0):28 + min(dy, 0), max(dx, 0):28 + min(dx, 0)] = \
            field[max(-dy, 0):28 - max(dy, 0), max(-dx, 0):28 - max(dx, 0)]
        np.testing.assert_allclose(seen(field, View(dx=dx, dy=dy)), expected, atol=1e-6)


def test_turns_and_scales_pivot_on_the_centre_of_mass() -> None:
    right_of_centre = one_pixel(14, 20)  # 6 px right of the pivot
    turned = {where(seen(right_of_centre, View(angle=a))) for a in (90, -90)}
    assert turned == {(8, 14), (20, 14)}
    assert where(seen(one_pixel(14, 14), View(angle=37))) == (14, 14)  # the pivot stays put
    assert where(seen(one_pixel(14, 17), View(scale=2.0))) == (14, 20)
    assert where(seen(one_pixel(11, 14), View(scale=2.0))) == (8, 14)


def test_the_reading_views_keep_a_digit_in_the_field() -> None:
    field = np.zeros((28, 28), np.float32)
    field[4:24, 10:18] = 1.0  # a 20 px tall stroke, as tall as MNIST's box
    for view in READING_VIEWS:
        viewed = seen(field, view)
        assert viewed.shape == (28, 28) and viewed.dtype == np.float32
        assert viewed[0].max() == 0 and viewed[-1].max() == 0  # nothing pushed out over the edge
        assert 0.85 < viewed.sum() / field.sum() / view.scale ** 2 < 1.15  # ink kept, up to the scale


def test_expand_and_combine_average_each_fields_views() -> None:
    fields = np.stack([one_pixel(10, 10), one_pixel(20, 5)])
    views = (View(), View(dx=1), View(dy=-1))
    expanded = expand(fields, views, CENTRE)
    assert expanded.shape == (6, 28, 28)
    assert [where(f) for f in expanded] == [(10, 10), (10, 11), (9, 10), (20, 5), (20, 6), (19, 5)]
    probabilities = np.array([[1, 0], [0, 1], [0.5, 0.5], [0.2, 0.8], [0.2, 0.8], [0.8, 0.2]], np.float32)
    np.testing.assert_allclose(combine(probabilities, 3), [[0.5, 0.5], [0.4, 0.6]])
    assert expand(fields, (View(),), CENTRE) is fields  # as drawn: no copy
    # every field of a batch is viewed alone: the same as viewing it by itself
    np.testing.assert_array_equal(view_of(fields, View(angle=10), CENTRE)[1], seen(fields[1], View(angle=10)))


def test_views_round_trip_and_bad_ones_are_refused() -> None:
    assert views_from_json(views_to_json(READING_VIEWS)) == READING_VIEWS
    for bad in ("{}", "[]", "[1, 2]", '[{"scale": 0}]', '[{"turn": 3}]', '[{"dx": "NaN"}]', "nope"):
        with pytest.raises((ValueError, TypeError)):
            views_from_json(bad)


def test_a_model_is_read_in_the_views_its_metadata_declares(tmp_path) -> None:
    # tiny_model's logits are the field's first row: ink at column 3 is class 3; moved right, class 4
    field = np.zeros((1, 28, 28), np.float32)
    field[0, 0, 3] = 1.0
    one, rest = math.e / (math.e + 9), 1 / (math.e + 9)
    as_drawn = load_model(tiny_model(tmp_path / "plain.onnx", ["N", 1, 28, 28]))
    assert as_drawn.views == (View(),)  # a model exported before views were recorded
    np.testing.assert_allclose(as_drawn.read_fields(field)[0, 3:5], [one, rest], rtol=1e-5)
    viewed = load_model(tiny_model(tmp_path / "views.onnx", ["N", 1, 28, 28],
                                   metadata={"views": json.loads(views_to_json((View(), View(dx=1))))}))
    np.testing.assert_allclose(viewed.read_fields(field)[0, 3:5], [(one + rest) / 2] * 2, rtol=1e-5)
