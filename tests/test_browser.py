"""serve.py's page in a real browser: Debian's chromium, headless, driven by selenium through its chromedriver. A
prompt typed into the page streams into a GPT run's and a BDH run's columns side by side, each the API's text.
Skipped where no browser is installed (`apt-get install chromium chromium-driver`, `pip install selenium`).

The README's screenshot, from two trained runs:

    python -m tests.test_browser out-demo,out-demo-bdh assets/serve.png
"""

import re
import shutil
import sys

import pytest

from tests.helpers import ServeProcess

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    webdriver = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = [what for what, found in (("selenium (pip install selenium)", webdriver), ("chromium", CHROMIUM),
                                    ("chromedriver (apt-get install chromium-driver)", CHROMEDRIVER)) if not found]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"no browser to test the page: needs {', '.join(MISSING)}")

# the page records the length of each run's text whenever it changes, to show that it arrives in pieces
WATCH_TEXT = """
window.lengths = {};
for (const out of document.querySelectorAll(".run .out")) {
  const model = out.parentElement.dataset.model;
  window.lengths[model] = [];
  new MutationObserver(() => window.lengths[model].push(out.textContent.length))
    .observe(out, {childList: true, characterData: true, subtree: true});
}
"""


def open_browser(width, height):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)  # no sandbox: CI runs as root in a container
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def generate_on_page(driver, port, prompt, settings, n_runs, before_click=None, timeout=120):
    """Open the page, type the prompt and settings, press Generate and wait for every run to finish. Returns each
    run's {model: (text, speed line)}."""
    driver.get(f"http://127.0.0.1:{port}/")
    WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".run")) == n_runs)
    for key, value in {"prompt": prompt, **settings}.items():
        field = driver.find_element(By.ID, key)
        field.clear()
        field.send_keys(str(value))
    if before_click:
        driver.execute_script(before_click)
    driver.find_element(By.ID, "generate").click()
    runs = driver.find_elements(By.CSS_SELECTOR, ".run")
    WebDriverWait(driver, timeout).until(lambda d: all(r.get_attribute("data-state") == "done" for r in runs))
    return {r.get_attribute("data-model"): (r.find_element(By.CSS_SELECTOR, ".out").get_property("textContent"),
                                            r.find_element(By.CSS_SELECTOR, ".speed").text) for r in runs}


def long_enough(server, model, prompt, settings, seed):
    """Whether the model's continuation with this seed runs at least 50 tokens: long enough to see it stream."""
    _, r = server.request("POST", "/v1/completions", {"model": model, "prompt": prompt, **settings, "seed": seed})
    return r["usage"]["completion_tokens"] >= 50


def test_the_page_streams_a_gpt_and_a_bdh_run_side_by_side(tiny_server, tmp_path):
    settings = {"max_tokens": 100, "temperature": 1.0, "top_k": 0, "top_p": 1}
    settings["seed"] = next(seed for seed in range(20) if all(long_enough(tiny_server, model, "Lily", settings, seed)
                                                              for model in ("gpt", "bdh")))
    driver = open_browser(1200, 800)
    try:
        shown = generate_on_page(driver, tiny_server.port, "Lily", settings, 2, before_click=WATCH_TEXT)
        assert list(shown) == ["gpt", "bdh"]
        for model, (text, speed) in shown.items():
            _, r = tiny_server.request("POST", "/v1/completions", {"model": model, "prompt": "Lily", **settings})
            assert text == "Lily" + r["choices"][0]["text"]
            n = r["usage"]["completion_tokens"]
            assert re.fullmatch(rf"{n} tokens, [\d.]+ tokens/s \((end of text|max tokens)\)", speed), speed
            lengths = driver.execute_script("return window.lengths")[model]
            assert len(set(lengths)) > 10 and lengths == sorted(lengths)  # it grew in many steps
        assert shown["gpt"][0] != shown["bdh"][0]
        driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()


if __name__ == "__main__":
    runs, png = sys.argv[1], sys.argv[2]
    server = ServeProcess(f"--out_dir={runs}")
    driver = open_browser(1280, 560)
    try:
        settings = {"max_tokens": 300, "temperature": 0.8, "top_k": 200, "seed": 1337}
        print(generate_on_page(driver, server.port, "Once upon a time", settings, len(runs.split(","))))
        driver.save_screenshot(png)
    finally:
        driver.quit()
        server.close()
