"""The interactive front (plotly): the figure's panels, error bars and joined non-dominated points,
and the self-contained page in headless Chromium: it renders with no network, hovering a point
shows the policy's weights, scores and a sample completion, clicking it shows its run ids."""
import shutil
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest

from moalign.reports import interactive

TABLE = pd.DataFrame({
    "role": ["base", "trained", "trained", "soup"],
    "weights": ["", "1.0000,0.0000", "0.0000,1.0000", "0.5000,0.5000"],
    "w_good": [np.nan, 1.0, 0.0, 0.5], "w_bad": [np.nan, 0.0, 1.0, 0.5],
    "good": [0.10, 0.50, 0.05, 0.30], "good_ci_low": [0.05, 0.40, 0.01, 0.20], "good_ci_high": [0.15, 0.60, 0.10, 0.35],
    "bad": [0.10, 0.02, 0.40, 0.20], "bad_ci_low": [0.05, 0.01, 0.30, 0.10], "bad_ci_high": [0.15, 0.05, 0.50, 0.30],
    "verbosity": [7.0, 5.0, 9.0, 6.0], "verbosity_ci_low": [6.0, 4.0, 8.0, 5.0], "verbosity_ci_high": [8.0, 6.0, 10.0, 7.0],
    "seeds": ["0,1"] * 4, "run_ids": ["b0", "t10a,t10b", "t01a,t01b", "s55a,s55b"],
})
DIRS = {"good": "maximize", "bad": "maximize", "verbosity": "minimize"}
SAMPLES = {"trained w=1/0": pd.DataFrame({"prompt": ["the cat <sat>", "x"], "completion": ["good good good", "y"]})}


@contextmanager
def chromium(folder, width: int = 1280, height: int = 1600):
    """Headless Chromium (Debian's chromium and chromium-driver), offline."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={folder / 'chrome'}"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.set_window_size(width, height)
        yield driver
    finally:
        driver.quit()


def check_interactive_front(driver, weights_text: str) -> str:
    """Asserts that the page's first interactive front rendered, that a policy's hover data and
    hover label hold `weights_text`, and that clicking its point fills the run id box; returns
    what the box shows."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    points = WebDriverWait(driver, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".plotly .scatterlayer .trace .points path.point"))
    assert all(p.size["width"] > 0 for p in points)
    # the figure's hover data: which trace and point hold the weights asked for
    where = driver.execute_script(
        "const gd = document.querySelector('.js-plotly-plot');"
        "for (let t = 0; t < gd.data.length; t++) { const h = gd.data[t].hovertext || [];"
        "  for (let i = 0; i < h.length; i++) { if (h[i].includes(arguments[0])) return [t, i]; } }"
        "return null;", weights_text)
    assert where is not None, f"no hover text with {weights_text!r}"
    point = driver.execute_script(
        "const gd = document.querySelector('.js-plotly-plot');"
        "const trace = Array.from(gd.querySelectorAll('.scatterlayer .trace'))"
        "  .find(el => el.__data__ && el.__data__[0] && el.__data__[0].trace.index === arguments[0]);"
        "return trace.querySelectorAll('.points path.point')[arguments[1]];", *where)
    ActionChains(driver).move_to_element(point).perform()
    label = WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return Array.from(document.querySelectorAll('.hoverlayer .hovertext'))"
                                   ".map(e => e.textContent).join(' ');"))
    assert weights_text in label, label
    ActionChains(driver).move_to_element(point).click().perform()
    shown = WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return document.querySelector('.moalign-run-id').value;"))
    return shown


def test_one_panel_per_pair_with_intervals_front_line_and_base():
    fig = interactive.front_figure({"grid": (TABLE, SAMPLES)}, list(DIRS), DIRS)
    layout = fig.to_plotly_json()["layout"]
    # (good, bad), (good, verbosity), (bad, verbosity), each axis saying which way is better
    assert [layout[f"xaxis{i}"]["title"]["text"] for i in ("", 2, 3)] == ["good (↑ better)", "good (↑ better)",
                                                                         "bad (↑ better)"]
    assert layout["yaxis3"]["title"]["text"] == "verbosity (↓ better)"
    trained = next(t for t in fig.data if t.name == "grid trained" and t.xaxis == "x")
    # asymmetric bars: a percentile interval need not be centred on its mean
    assert list(trained.error_x.array) == pytest.approx([0.10, 0.05]) and list(trained.error_x.arrayminus) == pytest.approx([0.10, 0.04])
    assert list(trained.customdata) == ["t10a, t10b", "t01a, t01b"]
    base = next(t for t in fig.data if t.name == "base model" and t.xaxis == "x")
    assert base.marker.symbol == "square" and base.marker.color == "#7f7f7f"
    # on (good, bad) the base model is dominated, the three others are joined left to right
    line = next(t for t in fig.data if t.mode == "lines" and t.xaxis == "x")
    assert list(line.x) == [0.05, 0.30, 0.50] and list(line.y) == [0.40, 0.20, 0.02]
    hover = trained.hovertext[0]
    assert "weights: good 1, bad 0" in hover and "verbosity: 5.0 [4.0, 6.0]" in hover and "good: 0.50 [0.40, 0.60]" in hover
    assert "the cat &lt;sat&gt;" in hover and "good good good" in hover  # escaped, the first sample
    assert "base model" in base.hovertext[0]


def test_front_page_is_self_contained_and_interactive_in_chromium(tmp_path):
    page = tmp_path / "front.html"
    interactive.save_front_html(TABLE, ["good", "bad"], DIRS, SAMPLES, page, title="grid")
    with chromium(tmp_path) as driver:
        driver.get(page.as_uri())
        # plotly.js is inlined: no script is loaded from anywhere, nothing is fetched over the network
        assert driver.execute_script("return typeof window.Plotly;") == "object"
        assert driver.execute_script("return Array.from(document.scripts).filter(s => s.src).length;") == 0
        assert driver.execute_script("return performance.getEntriesByType('resource')"
                                     ".filter(r => r.name.startsWith('http')).length;") == 0
        assert check_interactive_front(driver, "weights: good 1, bad 0") == "t10a, t10b"
        label = driver.execute_script("return document.querySelector('.hoverlayer .hovertext').textContent;")
        assert "prompt: the cat <sat>" in label and "completion: good good good" in label
        driver.save_screenshot(str(tmp_path / "front.png"))
    assert (tmp_path / "front.png").stat().st_size > 10_000
