"""The explorer page as a user sees it: opened from disk in headless Chromium (Debian's
`chromium`, driven by Playwright, launched as tests/test_dashboard_browser.py does), after real
short runs (tests/explorer_runs.py). Nothing may be fetched and nothing may log an error; the
step slider, the selectors, the model view and hovering a token must change what is drawn.

`python tests/test_explorer_browser.py PAGE.html OUT.png` takes the README's screenshot of a page;
EXPLORER_SCREENSHOT=docs/explorer.png makes the run test save its screenshot there too.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explorer_runs import HEADS, PROBE_STEPS, explore, trained_run, trained_sweep  # noqa: E402

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ALLOWED = ("file://", "data:")  # every request the page may make: itself, and inline data

pytestmark = pytest.mark.slow


@contextmanager
def opened(page_path: Path, viewport=(1400, 1000)) -> Iterator[tuple[object, list[str], list[str]]]:
    """(page, console errors, requested URLs) for the page opened from file://."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (CI installs it)")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.resolve().as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=20_000)
            yield page, errors, requests
        finally:
            browser.close()


def need_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: `apt-get install chromium` (CI installs it)")


def drawn(page, selector: str) -> str:
    return page.eval_on_selector(selector, "c => c.toDataURL()")


def assert_clean(errors: list[str], requests: list[str]) -> None:
    assert errors == []
    assert requests and all(url.startswith(ALLOWED) for url in requests), requests


@pytest.fixture(scope="module")
def run_page(tmp_path_factory) -> Path:
    need_chromium()
    run = trained_run(tmp_path_factory.getbasetemp())
    proc = explore(run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run / "explorer.html"


def test_run_page_slider_selectors_and_hover(run_page, tmp_path):
    with opened(run_page) as (page, errors, requests):
        assert "8 bits" in page.inner_text("#note")
        assert page.is_hidden("#compare-panel")  # one run: nothing to compare
        last = drawn(page, "#map")
        assert page.input_value("#step") == str(len(PROBE_STEPS) - 1)  # opens at the last probe

        page.focus("#step")
        page.keyboard.press("Home")  # the slider to step 0: the untrained model's map
        assert page.inner_text("#step-label").startswith("step 0 ")
        assert drawn(page, "#map") != last
        page.keyboard.press("ArrowRight")
        assert page.inner_text("#step-label").startswith(f"step {PROBE_STEPS[1]} ")

        before = drawn(page, "#map")
        page.select_option("#type", "encoder_self")
        page.select_option("#layer", "1")
        page.select_option("#head", "2")
        assert "encoder self attention, layer 1, head 2" in page.inner_text("#head-sub")
        assert drawn(page, "#map") != before
        selected = page.locator("#model .thumb.selected")
        assert (selected.get_attribute("data-layer"), selected.get_attribute("data-head")) == ("1", "2")
        assert page.locator("#model .thumb").count() == 2 * HEADS
        assert page.locator("#model .badge").count() > 0  # heads.json: importance and pruning rank

        page.locator("#model .thumb[data-layer='0'][data-head='3']").click()  # the model view selects too
        assert page.input_value("#layer") == "0" and page.input_value("#head") == "3"
        assert page.locator("#charts svg.chart").count() == 5
        assert page.locator("#charts polyline.series.selected").count() == 5

        # Hover a query token: its line(s) shown alone, the token highlighted, its row outlined.
        lines = page.locator("#headview line").count()
        assert lines > 0
        plain = drawn(page, "#map")
        page.locator("#headview g.tokbox.q").nth(1).hover()
        assert page.locator("#headview text.hl").count() == 1
        assert page.locator("#headview text.hl").get_attribute("data-i") == "1"
        on = page.locator("#headview line.on")
        assert 0 < on.count() < lines and all(on.nth(i).get_attribute("data-q") == "1" for i in range(on.count()))
        assert page.eval_on_selector("#headview line:not(.on)", "l => getComputedStyle(l).display") == "none"
        assert drawn(page, "#map") != plain
        page.locator("#headview g.tokbox.k").nth(0).hover()  # a key token: its column
        assert page.locator("#headview line.on").count() > 0
        assert all(page.locator("#headview line.on").nth(i).get_attribute("data-k") == "0"
                   for i in range(page.locator("#headview line.on").count()))

        page.locator("#map").hover()  # back to the map: every line again
        assert page.locator("#headview text.hl").count() == 0
        contrast = drawn(page, "#map")
        page.check("#rowscale")  # each row scaled to its largest weight
        assert drawn(page, "#map") != contrast and "row's largest" in page.inner_text("#map-cap")

        page.click("#play")  # from the last step back to 0, then forward on its own
        page.wait_for_function("() => document.getElementById('step').value === '1'", timeout=5_000)
        page.click("#play")
        assert page.inner_text("#play") == "play"
        page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
        assert_clean(errors, requests)
    assert (tmp_path / "explorer.png").stat().st_size > 20_000
    target = os.environ.get("EXPLORER_SCREENSHOT")
    if target:
        screenshot(run_page, Path(target))


def test_sweep_page_shows_the_runs_side_by_side(tmp_path_factory, tmp_path):
    need_chromium()
    sweep = trained_sweep(tmp_path_factory.getbasetemp())
    proc = explore(sweep)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with opened(sweep / "explorer.html") as (page, errors, requests):
        cards = page.locator("#compare .card")
        assert cards.count() == 2
        assert [cards.nth(i).locator("h3").inner_text() for i in range(2)] == ["model.num_heads=1", "model.num_heads=2"]
        assert [cards.nth(i).locator("canvas.mini").count() for i in range(2)] == [1, 2]  # each run's heads
        first = [drawn(page, f"#compare .card:nth-child({i}) canvas.cmp-map") for i in (1, 2)]
        assert first[0] != first[1]

        page.focus("#step")
        page.keyboard.press("Home")
        assert [drawn(page, f"#compare .card:nth-child({i}) canvas.cmp-map") for i in (1, 2)] != first
        assert "step 0" in cards.nth(1).locator(".caption").inner_text()

        cards.nth(1).locator("canvas.mini").nth(1).click()  # head 1 of the two-head run
        assert page.input_value("#run") == "1" and page.input_value("#head") == "1"
        assert "model.num_heads=2" in page.inner_text("#head-sub")
        assert "head 0 (its last)" in cards.nth(0).locator(".caption").inner_text()  # the one-head run
        page.screenshot(path=str(tmp_path / "sweep.png"), full_page=True)
        assert_clean(errors, requests)


def screenshot(page_path: Path, out: Path) -> None:
    """The README's picture: a cross-attention head, its head view with a token hovered, the model
    view and the statistics; saved as a small palette PNG."""
    with opened(page_path, viewport=(1400, 1050)) as (page, _, _):
        kinds = page.eval_on_selector_all("#type option", "os => os.map(o => o.value)")
        if "cross" in kinds:
            page.select_option("#type", "cross")
        page.locator("#headview g.tokbox.q").nth(3).hover()
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
    try:
        from PIL import Image

        Image.open(out).convert("RGB").quantize(colors=128).save(out, optimize=True)
    except ImportError:
        pass


if __name__ == "__main__":  # python tests/test_explorer_browser.py PAGE.html OUT.png
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
