"""The drawing page in a real browser: headless Chromium (Debian's chromium + chromium-driver) via Selenium."""
from __future__ import annotations

import shutil
import tempfile

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1000,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def draw(driver, strokes: list[list[tuple[int, int]]]) -> None:
    """Each stroke: points in canvas pixels (0-280), pressed from the first to the last."""
    canvas = driver.find_element(By.ID, "pad")
    size = canvas.size
    for stroke in strokes:
        actions = ActionChains(driver, duration=10)
        x0, y0 = stroke[0]
        actions.move_to_element_with_offset(canvas, x0 - size["width"] // 2, y0 - size["height"] // 2).click_and_hold()
        for x, y in stroke[1:]:
            actions.move_to_element_with_offset(canvas, x - size["width"] // 2, y - size["height"] // 2)
        actions.release().perform()


def predicted(driver) -> str:
    WebDriverWait(driver, 15).until(lambda d: d.find_element(By.ID, "digit").get_attribute("data-label") != "")
    return driver.find_element(By.ID, "digit").get_attribute("data-label")


@pytest.mark.parametrize("expected, strokes", [
    ("1", [[(140, 50), (140, 100), (140, 150), (140, 200), (140, 235)]]),
    ("7", [[(85, 60), (140, 60), (195, 60), (175, 110), (155, 160), (135, 215)]]),
])
def test_drawing_a_digit_shows_its_prediction(server, browser, expected: str, strokes) -> None:
    browser.get(f"http://{server[0]}/")
    browser.find_element(By.ID, "clear").click()
    draw(browser, strokes)
    assert predicted(browser) == expected
    bars = [browser.find_element(By.ID, f"p{i}").text for i in range(10)]
    assert all(b for b in bars) and float(bars[int(expected)]) > 0.5
    browser.find_element(By.ID, "clear").click()
    assert browser.find_element(By.ID, "digit").get_attribute("data-label") == ""
