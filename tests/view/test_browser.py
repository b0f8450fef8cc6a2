"""The viewer in a real browser: Debian's chromium and chromium-driver through Selenium.

Skipped, with the reason shown, where either is missing (``.ci/run`` installs them). Each test
saves a screenshot in its temp folder. The page is opened from file://, as a user would.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from trio.testing import MockClock

from batchgen.engine.runner import Batch
from batchgen.manifest import load_manifest
from batchgen.simulator import SimConfig, Simulator
from batchgen.view.sweep import load_sweep
from batchgen.view.viewer import make_viewer
from faultkit import fast_options, simulated
from vclock import run_virtual
from viewkit import LORAS, SWEEP, run_sweep

# selenium's names, set by the browser fixture (see ``_load_selenium``)
webdriver = By = Keys = Select = WebDriverWait = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
           ".ci/run installs them)")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,900")


def _load_selenium() -> None:
    """selenium is loaded when the browser starts, not when this file is collected: every
    test worker collects every file, and the import took a fifth of a second in each."""
    global webdriver, By, Keys, Select, WebDriverWait
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra has it)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    _load_selenium()
    options = webdriver.ChromeOptions()
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="batchgen-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser, tmp_path: Path, request) -> Iterator[webdriver.Chrome]:
    yield browser
    browser.save_screenshot(str(tmp_path / f"{request.node.name}.png"))


def open_viewer(driver, index: Path, query: str = "") -> None:
    driver.get_log("browser")  # what earlier pages logged
    driver.get(index.resolve().as_uri() + query)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")


def errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def cells(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#grid .cell")


def place(driver) -> list[tuple[str, str, str, str]]:
    return [(c.get_attribute("data-x"), c.get_attribute("data-y"), c.get_attribute("data-job") or "",
             c.get_attribute("data-state")) for c in cells(driver)]


@pytest.fixture
def viewer(tmp_path: Path):
    batch = run_sweep(tmp_path)
    result = make_viewer(batch.manifest)
    return batch, result


def test_the_page_loads_from_file_with_no_console_errors(page, viewer) -> None:
    batch, result = viewer
    assert result.index == batch.folder / "view" / "index.html"
    open_viewer(page, result.index)
    WebDriverWait(page, 10).until(lambda d: d.execute_script(
        "return [...document.images].filter(i => i.complete && i.naturalWidth > 0).length") >= 5)
    assert errors(page) == []
    assert page.find_element(By.ID, "title").text == "sweep"
    assert "19/29 done" in page.find_element(By.ID, "counts").text


def test_the_cells_are_the_chosen_axes_sizes(page, viewer) -> None:
    _, result = viewer
    open_viewer(page, result.index)
    # The defaults fit a sweep: LoRAs across (5), style down (2), a grid per subject (3).
    assert Select(page.find_element(By.ID, "x-axis")).first_selected_option.text == "loras"
    assert Select(page.find_element(By.ID, "y-axis")).first_selected_option.text == "style"
    assert Select(page.find_element(By.ID, "super2-axis")).first_selected_option.text == "subject"
    assert len(cells(page)) == 5 * 2 * 3
    assert [c.get_attribute("data-x") for c in cells(page)[:5]] == LORAS  # the order written
    Select(page.find_element(By.ID, "y-axis")).select_by_visible_text("(none)")
    assert len(cells(page)) == 5 * 3  # style is now one value picked, not a row each
    chip = page.find_element(By.CSS_SELECTOR, '.axis[data-axis="loras"] .chip:nth-child(2)')
    chip.click()  # hide the second value written
    assert len(cells(page)) == 4 * 3 and LORAS[1] not in {c.get_attribute("data-x") for c in cells(page)}
    assert errors(page) == []


def test_switching_axes_puts_the_right_job_in_each_cell(page, viewer) -> None:
    batch, result = viewer
    sweep = load_sweep(batch.manifest)
    names = [a.name for a in sweep.axes]
    truth = {tuple(sweep.axes[i].values[v].label for i, v in enumerate(c.coords)): c.job_id for c in sweep.cells}
    open_viewer(page, result.index)
    Select(page.find_element(By.ID, "x-axis")).select_by_visible_text("subject")  # swaps with loras
    Select(page.find_element(By.ID, "super2-axis")).select_by_visible_text("(none)")
    loras = Select(page.find_element(By.ID, "super1-axis"))
    loras.select_by_visible_text("loras")  # a grid per LoRA setting, side by side
    shown = place(page)
    assert len(shown) == 3 * 2 * 5
    blocks = [b.text for b in page.find_elements(By.CSS_SELECTOR, ".block-title")]
    assert blocks == [f"loras: {v}" for v in LORAS]
    for n, (x, y, job, _state) in enumerate(shown):
        values = {"subject": x, "style": y, "loras": LORAS[n // 6]}
        want = truth.get(tuple(values[name] for name in names), "")
        assert job == want, (x, y, values)
    assert errors(page) == []


def test_full_screen_moves_with_the_arrow_keys(page, viewer) -> None:
    _, result = viewer
    open_viewer(page, result.index)
    target = cells(page)[10]  # the second grid (subject owl), first row (oil), first column (none)
    assert (target.get_attribute("data-x"), target.get_attribute("data-y")) == ("none", "oil")
    target.click()
    full = page.find_element(By.ID, "full")
    assert "open" in full.get_attribute("class") and full.get_attribute("data-job") == target.get_attribute("data-job")
    body = page.find_element(By.TAG_NAME, "body")
    expected = cells(page)
    body.send_keys(Keys.ARROW_RIGHT)
    assert full.get_attribute("data-job") == expected[11].get_attribute("data-job")  # ghibli@1.5, oil
    body.send_keys(Keys.ARROW_DOWN)
    assert full.get_attribute("data-job") == expected[16].get_attribute("data-job")  # ghibli@1.5, ink
    assert "ghibli@1.5" in page.find_element(By.ID, "full-info").text
    body.send_keys(Keys.ARROW_DOWN)  # the last row: stays
    assert full.get_attribute("data-job") == expected[16].get_attribute("data-job")
    img = page.find_element(By.CSS_SELECTOR, "#full-stage img")
    assert img.get_attribute("src").endswith("images/owl/ink/ghibli_1p5.png")
    WebDriverWait(page, 5).until(lambda d: d.execute_script("return document.querySelector('#full-stage img').naturalWidth") == 256)
    page.save_screenshot(str(result.folder.parent.parent / "full-screen.png"))
    body.send_keys(Keys.ESCAPE)
    assert "open" not in full.get_attribute("class")
    assert errors(page) == []


def test_a_failed_job_shows_its_reason(page, viewer) -> None:
    _, result = viewer
    open_viewer(page, result.index)
    failed = [c for c in cells(page) if c.get_attribute("data-state") == "failed"]
    assert len(failed) == 10  # every cell of "forbidden fruit"
    assert all("ILLEGAL_PROMPT" in c.text and "FAILED" in c.text.upper() for c in failed)
    nojob = [c for c in cells(page) if c.get_attribute("data-state") == "no job"]
    assert len(nojob) == 1 and "no job" in nojob[0].text.lower()
    from selenium.webdriver import ActionChains

    ActionChains(page).move_to_element(failed[0]).perform()
    details = page.find_element(By.ID, "details").text
    assert "ILLEGAL_PROMPT" in details and "prompt\na forbidden fruit" in details
    done = next(c for c in cells(page) if c.get_attribute("data-state") == "done")
    ActionChains(page).move_to_element(done).perform()
    details = page.find_element(By.ID, "details").text
    assert "task id" in details and "seed" in details and "LoRAs" in details and "timings" in details
    assert errors(page) == []


def test_the_page_fills_in_while_the_batch_runs(page, tmp_path: Path) -> None:
    text = SWEEP.replace("name: sweep", f"name: sweep\noutput: {tmp_path / 'out'}")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(text)
    result = make_viewer(manifest)   # before anything ran: every cell pending
    assert result.status_written
    open_viewer(page, result.index, "?refresh=0.1")
    assert {c.get_attribute("data-state") for c in cells(page)} == {"pending", "no job"}
    sim = Simulator(SimConfig(task_seconds=2, task_jitter=0.5), clock=anyio.current_time)
    batch = Batch(load_manifest(manifest), fast_options(tmp_path / "out", **simulated(sim)))
    run_virtual(batch.run, clock=MockClock(autojump_threshold=0))
    WebDriverWait(page, 10).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .cell img")) == 19)
    states = [c.get_attribute("data-state") for c in cells(page)]
    assert states.count("failed") == 10 and states.count("done") == 19
    assert "19/29 done" in page.find_element(By.ID, "counts").text
    assert "run finished" in page.find_element(By.ID, "live").text
    time.sleep(0.2)  # one more poll: nothing changes, nothing breaks
    assert errors(page) == []


def test_a_run_shows_within_two_seconds_at_the_default_refresh(page, tmp_path: Path) -> None:
    text = SWEEP.replace("name: sweep", f"name: sweep\noutput: {tmp_path / 'out'}")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(text)
    result = make_viewer(manifest)
    open_viewer(page, result.index)  # no ?refresh: the default
    time.sleep(1.5)  # the page has polled and seen no run: it must keep polling often
    sim = Simulator(SimConfig(task_seconds=2, task_jitter=0.5), clock=anyio.current_time)
    batch = Batch(load_manifest(manifest), fast_options(tmp_path / "out", **simulated(sim)))
    run_virtual(batch.run, clock=MockClock(autojump_threshold=0))
    ended = time.monotonic()
    WebDriverWait(page, 2, poll_frequency=0.05).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .cell img")) == 19)
    assert time.monotonic() - ended <= 2.0
    assert "19/29 done" in page.find_element(By.ID, "counts").text
    assert errors(page) == []


def test_the_details_pane_takes_no_room_until_a_cell_is_hovered(page, viewer) -> None:
    from selenium.webdriver import ActionChains

    _, result = viewer
    open_viewer(page, result.index)
    ActionChains(page).move_to_element(page.find_element(By.ID, "title")).perform()
    details, scroll = page.find_element(By.ID, "details"), page.find_element(By.ID, "scroll")
    shown = lambda: page.execute_script("return document.getElementById('details').offsetHeight")  # noqa: E731
    assert shown() == 0 and details.text == ""
    height = page.execute_script("return window.innerHeight")
    bar = page.find_element(By.ID, "bar").size["height"]
    assert scroll.size["height"] >= height - bar - 2  # the grid has the whole window below the bar
    cell = cells(page)[1]
    before = cell.location
    ActionChains(page).move_to_element(cell).perform()
    assert "prompt" in details.text and 0 < shown() <= 0.3 * height + 1
    assert cell.location == before and scroll.size["height"] >= height - bar - 2  # nothing moved
    ActionChains(page).move_to_element(page.find_element(By.ID, "title")).perform()
    assert shown() == 0
    assert errors(page) == []
