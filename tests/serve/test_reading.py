"""The one reading every front end shows: digits, the number, or a refusal (serve/reading.py)."""
from __future__ import annotations

import re

import numpy as np

from serve.image.segment import Box
from serve.reading import NO_INK, Page, interpret

LABELS = [str(d) for d in range(10)] + ["not a digit"]
REJECT = 10


def page(n: int) -> Page:
    return Page("img.png", np.zeros((n, 28, 28), np.float32), [Box(10 + 40 * i, 5, 30, 50) for i in range(n)])


def probs(*rows: dict[int, float]) -> np.ndarray:
    out = np.full((len(rows), len(LABELS)), 0.0)
    for i, row in enumerate(rows):
        rest = (1 - sum(row.values())) / (len(LABELS) - len(row))
        out[i] = rest
        for k, v in row.items():
            out[i, k] = v
    return out


def test_a_number_is_read_left_to_right_with_boxes_and_the_lowest_probability() -> None:
    reading = interpret(page(4), probs({2: 0.99}, {0: 0.97}, {2: 0.98}, {6: 0.995}), LABELS, REJECT, 0.5)
    assert reading.text == "2026" and not reading.not_a_digit
    assert reading.line(LABELS) == "img.png: 2026 (digits 2 0 2 6, lowest probability 0.97)"
    record = reading.record(LABELS)
    assert record["text"] == "2026" and record["label"] is None and record["not_a_digit"] is False
    assert [d["box"] for d in record["digits"]] == [[10 + 40 * i, 5, 30, 50] for i in range(4)]
    assert "probabilities" not in record


def test_a_single_digit_keeps_label_probability_and_probabilities() -> None:
    reading = interpret(page(1), probs({7: 0.998}), LABELS, REJECT, 0.5)
    assert reading.line(LABELS) == "img.png: 7 (probability 0.998)"
    record = reading.record(LABELS, top_k=2)
    assert record["label"] == 7 and record["probability"] == 0.998 and record["text"] == "7"
    assert len(record["probabilities"]) == len(LABELS) and record["top_k"][0]["label"] == 7


def test_the_reject_class_refuses_with_the_best_digit_as_a_guess() -> None:
    reading = interpret(page(1), probs({REJECT: 0.8, 4: 0.15}), LABELS, REJECT, 0.5)
    assert reading.not_a_digit and reading.text is None
    assert reading.line(LABELS) == "img.png: not a digit (best guess 4, 0.15)"
    record = reading.record(LABELS)
    assert record["not_a_digit"] is True and record["label"] is None and record["text"] is None
    assert record["reason"] == "not a digit" and record["best_guess"]["label"] == "4"


def test_a_digit_below_the_threshold_is_refused_and_the_threshold_is_adjustable() -> None:
    unsure = probs({3: 0.41, 5: 0.39})
    refused = interpret(page(1), unsure, LABELS, REJECT, 0.6)
    assert refused.not_a_digit and refused.reason is not None and re.search(r"below 0\.60", refused.reason)
    assert interpret(page(1), unsure, LABELS, REJECT, 0.4).text == "3"


def test_one_mark_that_is_not_a_digit_refuses_the_whole_image() -> None:
    reading = interpret(page(3), probs({4: 0.99}, {REJECT: 0.9}, {2: 0.99}), LABELS, REJECT, 0.5)
    assert reading.not_a_digit and reading.reason == "1 of 3 marks is not a digit"


def test_no_ink_is_a_refusal_and_an_error_is_not_an_answer() -> None:
    blank = interpret(Page("b.png", np.zeros((0, 28, 28), np.float32), [], refusal=NO_INK),
                      probs(), LABELS, REJECT, 0.5)
    assert blank.not_a_digit and blank.line(LABELS) == "b.png: not a digit (no ink found)"
    broken = interpret(Page("x.png", np.zeros((0, 28, 28), np.float32), [], error="not a recognised image format"),
                       probs(), LABELS, REJECT, 0.5)
    assert not broken.not_a_digit and broken.record(LABELS) == {"image": "x.png",
                                                                "error": "not a recognised image format"}


def test_a_ten_class_model_refuses_by_threshold_only() -> None:
    ten = [str(d) for d in range(10)]
    p = np.full((1, 10), 0.02)
    p[0, 8] = 0.82
    assert interpret(page(1), p, ten, None, 0.5).text == "8"
    assert interpret(page(1), p, ten, None, 0.9).not_a_digit


def wide_page() -> Page:
    """One wide glyph (field 0) with a proposed cut into two pieces (fields 1 and 2)."""
    return Page("w.png", np.zeros((3, 28, 28), np.float32), [Box(0, 0, 100, 50), Box(0, 0, 50, 50), Box(50, 0, 50, 50)],
                pieces={0: [1, 2]})


def test_a_wide_glyph_sure_as_one_digit_is_not_cut() -> None:
    reading = interpret(wide_page(), probs({0: 0.97}, {6: 0.99}, {7: 0.99}), LABELS, REJECT, 0.5)
    assert reading.text == "0" and reading.digits[0].box == Box(0, 0, 100, 50)


def test_touching_digits_are_read_as_the_pieces_when_those_are_surer() -> None:
    reading = interpret(wide_page(), probs({4: 0.6}, {1: 0.98}, {2: 0.95}), LABELS, REJECT, 0.5)
    assert reading.text == "12" and [d.box.x for d in reading.digits] == [0, 50]
    not_a_digit_whole = interpret(wide_page(), probs({REJECT: 0.7}, {1: 0.98}, {2: 0.95}), LABELS, REJECT, 0.5)
    assert not_a_digit_whole.text == "12"


def test_a_cut_with_an_unsure_or_non_digit_piece_is_not_taken() -> None:
    assert interpret(wide_page(), probs({4: 0.6}, {1: 0.98}, {REJECT: 0.9}), LABELS, REJECT, 0.5).text == "4"
    assert interpret(wide_page(), probs({4: 0.6}, {1: 0.98}, {2: 0.55}), LABELS, REJECT, 0.5).text == "4"
    # a letter cut in two (a "u" as "11"): pieces above the threshold but not sure are not taken
    letter = interpret(wide_page(), probs({REJECT: 0.7}, {1: 0.8}, {1: 0.75}), LABELS, REJECT, 0.5)
    assert letter.not_a_digit


def close_pair(gap: int = 4) -> Page:
    """Two close glyphs (fields 0 and 1), ``gap`` px apart, and the two as one (field 2)."""
    return Page("j.png", np.zeros((3, 28, 28), np.float32),
                [Box(0, 0, 20, 60), Box(20 + gap, 0, 20, 60), Box(0, 0, 40 + gap, 60)], joins={0: 2})


def test_two_halves_of_a_cut_digit_are_read_as_one() -> None:
    reading = interpret(close_pair(), probs({REJECT: 0.6}, {1: 0.55}, {0: 0.99}), LABELS, REJECT, 0.5)
    assert reading.text == "0" and reading.digits[0].box == Box(0, 0, 44, 60)


def test_two_sure_digits_close_together_stay_two() -> None:
    reading = interpret(close_pair(), probs({1: 0.99}, {1: 0.98}, {4: 0.999}), LABELS, REJECT, 0.5)
    assert reading.text == "11"


def test_two_sure_halves_a_hairline_apart_are_one_digit_when_it_is_sure() -> None:
    # a 4 that a removed paper line cut down the middle reads as two sure 1s: 2 px apart, it is one mark
    reading = interpret(close_pair(gap=2), probs({1: 0.99}, {1: 0.98}, {4: 0.995}), LABELS, REJECT, 0.5)
    assert reading.text == "4"
    unsure = interpret(close_pair(gap=2), probs({1: 0.99}, {1: 0.98}, {4: 0.4}), LABELS, REJECT, 0.5)
    assert unsure.text == "11"


def boxed_page(*boxes: Box) -> Page:
    return Page("img.png", np.zeros((len(boxes), 28, 28), np.float32), list(boxes))


def test_marks_off_the_digits_row_or_far_smaller_are_set_aside() -> None:
    digit, below, speck = Box(100, 100, 40, 60), Box(300, 400, 30, 50), Box(160, 120, 8, 10)
    reading = interpret(boxed_page(digit, speck, below), probs({3: 0.99}, {REJECT: 0.9}, {REJECT: 0.95}),
                        LABELS, REJECT, 0.5)
    assert reading.text == "3"  # a shadow's or a ruled line's remains do not refuse the photo


def test_a_mark_in_the_digits_row_and_of_their_size_still_refuses() -> None:
    letter = Box(150, 105, 35, 55)
    reading = interpret(boxed_page(Box(100, 100, 40, 60), letter), probs({4: 0.99}, {REJECT: 0.9}),
                        LABELS, REJECT, 0.5)
    assert reading.not_a_digit and reading.reason == "1 of 2 marks is not a digit"
    unsure = interpret(boxed_page(Box(100, 100, 40, 60), letter), probs({4: 0.99}, {7: 0.4, 1: 0.35}),
                       LABELS, REJECT, 0.5)
    assert unsure.not_a_digit  # a doubted digit beside a sure one is not dropped


def test_without_a_sure_digit_nothing_is_set_aside() -> None:
    reading = interpret(boxed_page(Box(100, 100, 40, 60), Box(300, 400, 10, 12)),
                        probs({REJECT: 0.9}, {REJECT: 0.9}), LABELS, REJECT, 0.5)
    assert reading.not_a_digit
