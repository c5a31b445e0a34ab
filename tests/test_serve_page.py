"""The web page of ``mask2former serve`` in real headless Chromium (Debian's, driven by
Playwright): upload the example image, wait for the overlay, check the legend, the class
under the pointer and the area table against ``Segmenter``; a screenshot (docs/serve-page.png when
MASK2FORMER_UPDATE_DOCS=1 is set)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from mask2former import Segmenter
from serve_server import DEMO_MODEL, ROOT, STREET, serve

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


def test_page_upload_overlay_legend_areas(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    expected = Segmenter(DEMO_MODEL, device="cpu")(STREET)
    names = expected.id2label
    present = [names[int(c)] for c in np.unique(expected.labels) if c >= 0]
    with serve(log_dir=str(tmp_path)) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 820})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"{r.url}: {r.failure}"))
            page.goto(server.url + "/")
            page.wait_for_function("document.querySelectorAll('#task option').length === 3")
            assert page.input_value("#task") == "semantic"
            page.set_input_files("#file", STREET)
            page.wait_for_selector('#overlay[data-ready="1"]', timeout=120_000)
            assert page.get_attribute("body", "data-state") == "done"

            assert page.locator("#legend li").all_inner_texts() == present
            cells = page.locator("#areas tbody tr").all()
            percents = [float(row.locator("td").nth(2).inner_text()) for row in cells]
            pixels = [int(row.locator("td").nth(1).inner_text().replace(",", "")) for row in cells]
            assert sum(pixels) == expected.labels.size
            assert abs(sum(percents) - 100.0) <= 0.005 * len(percents)
            assert page.inner_text("#total-percent") == "100.00"

            # the class under the pointer is the label of that pixel
            box = page.locator("#overlay").bounding_box()
            h, w = expected.labels.shape
            for fx, fy in ((0.5, 0.9), (0.5, 0.1), (0.3, 0.6)):
                x, y = int(fx * w), int(fy * h)
                page.mouse.move(box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h)
                assert page.get_attribute("#pointer", "data-class-id") == str(int(expected.labels[y, x]))

            page.fill("#opacity", "45")
            page.dispatch_event("#opacity", "input")
            assert page.evaluate("getComputedStyle(document.getElementById('overlay')).opacity") == "0.45"
            href = page.get_attribute("#download-labels", "href")
            assert href and href.startswith("blob:")
            assert page.get_attribute("#download-labels", "download") == "street_labels.png"
            page.mouse.move(box["x"] + 0.62 * box["width"], box["y"] + 0.55 * box["height"])
            # The docs' screenshot is refreshed on request only: a test run leaves the checkout as it was.
            shot = (os.path.join(ROOT, "docs", "serve-page.png") if os.environ.get("MASK2FORMER_UPDATE_DOCS")
                    else str(tmp_path / "serve-page.png"))
            page.screenshot(path=shot, full_page=True)
            assert os.path.getsize(shot) > 10_000

            # another task re-segments the same upload; void is a row of the table, not a legend entry
            page.select_option("#task", "panoptic")
            page.wait_for_function("document.body.dataset.state === 'done' && "
                                   "document.getElementById('overlay').dataset.ready === '1'", timeout=120_000)
            assert page.inner_text("#total-percent") == "100.00"
            assert "(void)" not in page.locator("#legend li").all_inner_texts()
            assert not errors, errors
        finally:
            browser.close()


def test_page_asks_for_the_api_key(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with serve("--api-key", "k3y", log_dir=str(tmp_path)) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_selector("#auth:not([hidden])")
            page.fill("#api-key", "k3y")
            page.click("#api-key-save")
            page.wait_for_function("document.querySelectorAll('#task option').length === 3")
            assert page.is_hidden("#auth")
            page.set_input_files("#file", STREET)
            page.wait_for_selector('#overlay[data-ready="1"]', timeout=120_000)
            assert page.inner_text("#total-percent") == "100.00"
        finally:
            browser.close()
