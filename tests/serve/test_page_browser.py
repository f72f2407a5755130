"""The page in a real browser: headless Chromium (Debian's chromium + chromium-driver) via Selenium."""
from __future__ import annotations

import shutil
import tempfile
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.serve.images import number_strokes, written

pytestmark = pytest.mark.browser


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1100,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(server, browser):
    browser.get(f"http://{server[0]}/")
    browser.find_element(By.ID, "clear").click()
    return browser


def draw(driver, strokes: list[list[tuple[int, int]]]) -> None:
    """Each stroke: points in the canvas's own pixels (560x280), pressed from the first to the last."""
    canvas = driver.find_element(By.ID, "pad")
    size = canvas.size
    scale = size["width"] / int(canvas.get_attribute("width"))  # the canvas may be shown smaller
    for stroke in strokes:
        actions = ActionChains(driver, duration=10)
        x0, y0 = stroke[0]
        actions.move_to_element_with_offset(canvas, round(x0 * scale - size["width"] / 2),
                                            round(y0 * scale - size["height"] / 2)).click_and_hold()
        for x, y in stroke[1:]:
            actions.move_to_element_with_offset(canvas, round(x * scale - size["width"] / 2),
                                                round(y * scale - size["height"] / 2))
        actions.release().perform()


def reading(driver) -> str:
    """The text read once the page is settled (no reading scheduled or in flight)."""
    def settled(d) -> bool:
        return (d.find_element(By.ID, "reading").get_attribute("aria-busy") == "false"
                and d.find_element(By.ID, "digit").get_attribute("data-label") != "")

    WebDriverWait(driver, 20).until(settled)
    return driver.find_element(By.ID, "digit").get_attribute("data-label")


def rects(driver, selector: str) -> list[dict]:
    return [e.rect for e in driver.find_elements(By.CSS_SELECTOR, selector)]


def inside(inner: dict, outer: dict, slack: float = 2.0) -> bool:
    return (inner["x"] >= outer["x"] - slack and inner["y"] >= outer["y"] - slack
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack)


@pytest.mark.parametrize("expected, strokes", [
    ("1", [[(140, 50), (140, 100), (140, 150), (140, 200), (140, 235)]]),
    ("7", [[(85, 60), (140, 60), (195, 60), (175, 110), (155, 160), (135, 215)]]),
])
def test_drawing_a_digit_shows_its_prediction(page, model, expected: str, strokes) -> None:
    draw(page, strokes)
    assert reading(page) == expected
    bars = [page.find_element(By.ID, f"p{i}").text for i in range(len(model.labels))]
    assert all(b for b in bars) and float(bars[model.labels.index(expected)]) > 0.5
    boxes = page.find_elements(By.CSS_SELECTOR, "#pad-boxes .box")
    assert [b.text for b in boxes] == [expected]
    assert inside(boxes[0].rect, page.find_element(By.ID, "pad").rect)
    page.find_element(By.ID, "clear").click()
    assert page.find_element(By.ID, "digit").get_attribute("data-label") == ""
    assert not page.find_elements(By.CSS_SELECTOR, ".box")


def test_writing_a_number_shows_it_with_a_box_per_digit(page) -> None:
    draw(page, number_strokes("17", left=90, top=45, height=190, pitch=260))  # two groups far apart
    assert reading(page) == "17"
    assert page.find_element(By.ID, "digit").text == "17"
    boxes = page.find_elements(By.CSS_SELECTOR, "#pad-boxes .box")
    assert [b.text for b in boxes] == ["1", "7"]
    pad = page.find_element(By.ID, "pad").rect
    assert all(inside(b.rect, pad) for b in boxes)
    one, seven = (b.rect for b in boxes)
    assert one["x"] + one["width"] <= seven["x"]  # left to right, where they were written
    assert one["x"] < pad["x"] + pad["width"] / 2 < seven["x"]
    assert not page.find_element(By.ID, "bars").is_displayed()  # bars are for a single digit


REFUSAL: dict[str, Any] = {
    "image": "upload", "text": None, "not_a_digit": True, "digits": [], "label": None, "probability": None,
    "reason": "not a digit", "best_guess": {"label": "4", "probability": 0.41, "box": [140, 40, 280, 200]}}


def test_a_refusal_shows_not_a_digit_and_the_best_guess(page) -> None:
    """What the page shows for a refusal, whatever the test model makes of a scribble: /predict answers
    a fixed refusal here."""
    page.execute_script("""
        const refusal = arguments[0], real = window.fetch;
        window.fetch = (url, init) => String(url).endsWith("/predict")
            ? Promise.resolve(new Response(JSON.stringify(refusal), {headers: {"Content-Type": "application/json"}}))
            : real(url, init);""", REFUSAL)
    draw(page, [[(100, 140), (460, 140)], [(280, 30), (280, 250)]])
    assert reading(page) == "not a digit"
    assert page.find_element(By.ID, "digit").text == "not a digit"
    assert "best guess 4 (probability 0.41)" in page.find_element(By.ID, "status").text
    guess = page.find_element(By.CSS_SELECTOR, "#pad-boxes .box.guess")
    pad = page.find_element(By.ID, "pad").rect
    assert guess.text == "? 4" and inside(guess.rect, pad)
    assert guess.rect["width"] == pytest.approx(pad["width"] / 2, abs=3)  # 280 of the canvas's 560 pixels
    assert not page.find_element(By.ID, "bars").is_displayed()


def test_uploading_a_photo_shows_its_reading_and_boxes(page, tmp_path) -> None:
    path = tmp_path / "number.png"
    written(number_strokes("71", left=140, top=80, height=240, pitch=330), (900, 420), pen=22).save(path)
    page.find_element(By.ID, "photo").send_keys(str(path))
    assert reading(page) == "71"
    figure = page.find_element(By.ID, "photo-figure")
    assert figure.is_displayed() and "number.png" in figure.text
    WebDriverWait(page, 10).until(lambda d: d.execute_script(
        "const i = document.getElementById('photo-view'); return i.complete && i.naturalWidth === 900;"))
    photo = page.find_element(By.ID, "photo-view").rect
    boxes = page.find_elements(By.CSS_SELECTOR, "#photo-boxes .box")
    assert [b.text for b in boxes] == ["7", "1"]
    assert all(inside(b.rect, photo) for b in boxes)
    seven, one = (b.rect for b in boxes)
    # boxes are in the photo's pixels, drawn at its displayed size: the 7 spans 144 of 900 pixels
    assert seven["width"] == pytest.approx(photo["width"] * (0.6 * 240 + 22) / 900, rel=0.15)
    assert seven["x"] + seven["width"] <= one["x"]
    assert not page.find_elements(By.CSS_SELECTOR, "#pad-boxes .box")
    draw(page, [[(140, 50), (140, 235)]])  # writing again reads the pad, and puts the photo away
    assert reading(page) == "1"
    assert not figure.is_displayed()


def test_a_photo_too_large_for_the_server_is_sent_again_smaller(page, tmp_path) -> None:
    """The server answers 413 to the photo as chosen (here: the first upload, by a stub); the page sends
    it again re-encoded (JPEG, longer side at most 2048) and shows that reading."""
    page.execute_script("""
        const real = window.fetch; window.sent = [];
        window.fetch = (url, init) => {
            if (!String(url).endsWith("/predict")) return real(url, init);
            window.sent.push(init.body.get("file").type);
            return window.sent.length === 1
                ? Promise.resolve(new Response(JSON.stringify({error: "request body is above the limit"}),
                                               {status: 413, headers: {"Content-Type": "application/json"}}))
                : real(url, init);
        };""")
    path = tmp_path / "large.png"
    written(number_strokes("71", left=140, top=80, height=240, pitch=330), (900, 420), pen=22).save(path)
    page.find_element(By.ID, "photo").send_keys(str(path))
    assert reading(page) == "71"
    assert page.execute_script("return window.sent;") == ["image/png", "image/jpeg"]
    photo = page.find_element(By.ID, "photo-view").rect
    assert all(inside(b.rect, photo) for b in page.find_elements(By.CSS_SELECTOR, "#photo-boxes .box"))
