"""A real headless Chromium drives the page started by `python -m pagdemo.app`: upload, run the PAG explorer,
see the grid.

Screenshots go to tests/artifacts/ (git-ignored). To refresh the README's screenshots from real
checkpoints: PAGDEMO_CHECKPOINTS=checkpoints PAGDEMO_SCREENSHOTS=docs/screenshots pytest tests/test_browser.py
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        "Debian chromium and chromedriver are not installed (scripts/install-chromium.sh)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from test_app import make_tiny_checkpoints  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
EXAMPLE = ROOT / "pagdemo" / "app" / "examples" / "cat_3543.png"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1400",
    "--hide-scrollbars",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}:\n{proc.stdout.read()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the app did not answer at {url} within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m pagdemo.app` in a subprocess (`pagdemo app`, the README's command, without the console
    script)."""
    checkpoints = os.environ.get("PAGDEMO_CHECKPOINTS")
    if not checkpoints:
        checkpoints = tmp_path_factory.mktemp("ckpts")
        make_tiny_checkpoints(checkpoints)
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pagdemo.app",
            "--checkpoints",
            str(checkpoints),
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_http(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="pagdemo-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _shot(driver, name: str) -> Path:
    """Save a full-page screenshot to tests/artifacts/ (and $PAGDEMO_SCREENSHOTS when set)."""
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1400, min(max(900, height + 40), 4000))
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)  # let the resized page settle before the picture
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("PAGDEMO_SCREENSHOTS"):
        out = Path(os.environ["PAGDEMO_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / path.name)
    return path


def _tab(driver, wait, title: str) -> None:
    wait.until(
        EC.element_to_be_clickable((By.XPATH, f"//button[@role='tab' and normalize-space()='{title}']"))
    ).click()


def _upload(driver, wait, path: Path) -> None:
    """Send a file to the visible tab's image input."""
    inputs = [
        e
        for e in driver.find_elements(By.CSS_SELECTOR, "input[type=file][accept='image/*']")
        if e.find_element(By.XPATH, "./ancestor::*[contains(@class,'block')][1]").is_displayed()
    ]
    inputs[0].send_keys(str(path))


def test_pag_explorer_in_a_real_browser(server, browser):
    wait = WebDriverWait(browser, 120)
    browser.set_window_size(1400, 1400)
    browser.get(server)
    wait.until(EC.element_to_be_clickable((By.ID, "run-pag")))
    _upload(browser, wait, EXAMPLE)
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#model-input img")))
    browser.find_element(By.ID, "run-pag").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "pag-status"), "(done)"))
    grid = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#pag-grid img")))
    width = wait.until(
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", grid)
    )
    assert width > 11 * 128
    assert (
        browser.execute_script("return arguments[0].getBoundingClientRect().width", grid) >= width - 1
    )  # own size
    assert "step 20/20" in browser.find_element(By.ID, "pag-status").text
    assert "Reading the grid" in browser.find_element(By.TAG_NAME, "body").text  # the legend
    assert _shot(browser, "pag_explorer").stat().st_size > 10_000

    # a failed run: the grid stays, the error stays beside the controls, the status does not say done
    src = grid.get_attribute("src")
    for box in browser.find_elements(By.CSS_SELECTOR, "input[type=checkbox]:checked"):
        if box.is_displayed():
            box.find_element(By.XPATH, "./ancestor::label[1]").click()
    browser.find_element(By.ID, "run-pag").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "pag-error"), "choose at least one model"))
    time.sleep(1.0)  # a toast would have faded by now: the message is part of the page
    assert "choose at least one model" in browser.find_element(By.ID, "pag-error").text
    assert browser.find_element(By.CSS_SELECTOR, "#pag-grid img").get_attribute("src") == src
    assert "done" not in browser.find_element(By.ID, "pag-status").text
    assert not [
        e for e in browser.find_elements(By.XPATH, "//*[normalize-space()='Error']") if e.is_displayed()
    ]
    _shot(browser, "failed_run")


def test_a_bad_upload_shows_a_message_under_the_image(server, browser, tmp_path):
    wait = WebDriverWait(browser, 60)
    browser.get(server)
    wait.until(EC.element_to_be_clickable((By.ID, "run-pag")))
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is text, not a picture")
    _upload(browser, wait, bad)
    wait.until(EC.text_to_be_present_in_element((By.ID, "pag-notes"), "not an image file"))
    assert not [
        e for e in browser.find_elements(By.XPATH, "//*[normalize-space()='Error']") if e.is_displayed()
    ]
    _shot(browser, "bad_upload")


def test_threat_model_switch_shows_linf_in_255ths(server, browser):
    wait = WebDriverWait(browser, 60)
    browser.get(server)
    wait.until(EC.element_to_be_clickable((By.ID, "run-pag")))
    number = browser.find_element(By.CSS_SELECTOR, "#pag-eps input[type=number]")
    assert float(number.get_attribute("value")) == 4.0
    browser.find_element(By.XPATH, "//label[.//input[@type='radio' and @value='linf']]").click()
    wait.until(lambda d: float(number.get_attribute("value")) == 16)
    assert float(number.get_attribute("max")) == 64 and "x 255" in browser.find_element(By.ID, "pag-eps").text


def test_a_linf_radius_in_255ths_reaches_the_attack_in_pixel_units(server, browser):
    """The page's eps slider shows linf in /255; the endpoint it calls takes pixel units (converted in the
    page)."""
    wait = WebDriverWait(browser, 120)
    browser.get(server)
    wait.until(EC.element_to_be_clickable((By.ID, "run-pag")))
    _tab(browser, wait, "Attack & compare")
    _upload(browser, wait, EXAMPLE)
    linf = [
        e
        for e in browser.find_elements(By.XPATH, "//label[.//input[@type='radio' and @value='linf']]")
        if e.is_displayed()
    ]
    linf[0].click()
    number = browser.find_element(By.CSS_SELECTOR, "#compare-eps input[type=number]")
    wait.until(lambda d: float(number.get_attribute("value")) == 8)  # the evaluation radius, 8/255
    slider = browser.find_element(By.CSS_SELECTOR, "#compare-eps input[type=range]")
    browser.execute_script(
        "arguments[0].value = 3; arguments[0].dispatchEvent(new Event('input', {bubbles: true}))", slider
    )
    wait.until(lambda d: float(number.get_attribute("value")) == 3)
    browser.find_element(By.ID, "run-compare").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "compare-table"), "Linf x 255"))
    table = browser.find_element(By.ID, "compare-table")
    headers = [h.text.strip() for h in table.find_elements(By.CSS_SELECTOR, "th") if h.text.strip()]
    cells = [c.get_attribute("textContent").strip() for c in table.find_elements(By.CSS_SELECTOR, "tbody td")]
    column = [row[headers.index("Linf x 255")] for row in zip(*[iter(cells)] * len(headers))]
    assert column and max(float(c) for c in column) == 3.0  # PGD reaches its radius: 3/255, not 8/255
    assert browser.find_element(By.ID, "compare-error").text == ""


def test_screenshot_every_tab(server, browser):
    wait = WebDriverWait(browser, 300)
    browser.set_window_size(1400, 1400)
    browser.get(server)
    wait.until(EC.element_to_be_clickable((By.ID, "run-pag")))
    _tab(browser, wait, "Attack & compare")
    examples = wait.until(
        lambda d: [
            e
            for e in d.find_elements(By.CSS_SELECTOR, "#examples-compare button.gallery-item")
            if e.is_displayed()
        ]
    )
    examples[9].click()  # sorted by name: three airplanes, automobiles, birds, then cat_3543.png
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".upload img")))
    wait.until(EC.element_to_be_clickable((By.ID, "run-compare"))).click()
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#compare-panel img")))
    _shot(browser, "attack_compare")
    _tab(browser, wait, "Robustness")
    wait.until(EC.element_to_be_clickable((By.ID, "reload-metrics"))).click()
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#recorded-plot img")))
    wait.until(EC.element_to_be_clickable((By.ID, "run-curve"))).click()
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#curve-plot img")))
    _shot(browser, "robustness")
    _tab(browser, wait, "Models")
    wait.until(EC.text_to_be_present_in_element((By.ID, "model-card"), "Evaluations"))
    _shot(browser, "models")
    _tab(browser, wait, "Toy 2-D")
    if os.environ.get("PAGDEMO_SCREENSHOTS"):  # the real toy experiment trains for about 15 s: docs runs only
        wait.until(EC.element_to_be_clickable((By.ID, "run-toy"))).click()
        WebDriverWait(browser, 1800).until(
            EC.text_to_be_present_in_element((By.ID, "toy-metrics"), "PAG lambda")
        )
    _shot(browser, "toy")
