"""The report in a real browser: headless Chromium, no console errors, verdict and plots visible.

Needs Debian's ``chromium`` (``apt-get install -y chromium``). Without it this test FAILS with the
install command, unless ``ECOMRL_SKIP_BROWSER=1`` is set. How console errors are collected is
explained in ``browser_helpers.py`` (DevTools protocol over ``--remote-debugging-pipe``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.report import render_report
from tests.evaluation.report import browser_helpers
from tests.evaluation.report.browser_helpers import INSTALL_HINT, load_page
from tests.evaluation.report.sample_inputs import EVIL, make_inputs

pytestmark = pytest.mark.browser


def require_chromium() -> str:
    """The Chromium binary; skip only on ECOMRL_SKIP_BROWSER=1, else FAIL when it is missing."""
    if os.environ.get("ECOMRL_SKIP_BROWSER") == "1":
        pytest.skip("ECOMRL_SKIP_BROWSER=1")
    binary = browser_helpers.find_chromium()
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return binary


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium()


def test_missing_chromium_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECOMRL_SKIP_BROWSER", raising=False)
    monkeypatch.setattr(browser_helpers, "find_chromium", lambda: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        require_chromium()
    monkeypatch.setenv("ECOMRL_SKIP_BROWSER", "1")
    with pytest.raises(pytest.skip.Exception):
        require_chromium()


def _pixel_std(png: bytes) -> float:
    with Image.open(io.BytesIO(png)) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    return float(pixels.std())


def test_report_renders_in_headless_chromium(chromium: str, tmp_path: Path) -> None:
    inputs = make_inputs(feature=EVIL, reason=EVIL, candidate_name=EVIL)
    paths = render_report(inputs, tmp_path)
    page = load_page(paths.html)

    assert page.console_errors == [], "\n".join(page.console_messages)
    assert page.console_messages == []  # the page runs no script and loads nothing
    assert page.title.startswith("REJECT")
    assert 'id="decision">REJECT</p>' in page.dom
    assert "does not beat the current policy's value (3.4)" in page.dom
    # escaped data stays text: no script element made it into the DOM
    assert "<script" not in page.dom.lower()
    assert page.extra["scripts"] == 0
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.dom

    plots = [image for image in page.images if image["plot"]]
    assert len(plots) == 6
    for image in plots:
        assert image["complete"], image
        assert image["naturalWidth"] > 100 and image["naturalHeight"] > 100, image
        assert image["width"] > 100 and image["height"] > 100, image

    assert _pixel_std(page.screenshot_png) > 10.0  # not blank
    with Image.open(io.BytesIO(page.screenshot_png)) as shot:
        top = np.asarray(shot.convert("RGB"), dtype=np.int64)[:300]
    reds = np.sum((top[..., 0] > 170) & (top[..., 1] < 80) & (top[..., 2] < 80))
    assert reds > 20_000  # the red REJECT banner is at the top of the page


def test_the_helper_does_catch_console_errors(chromium: str, tmp_path: Path) -> None:
    # Negative control: the check above would be worthless if errors went unnoticed.
    page_path = tmp_path / "broken.html"
    page_path.write_text(
        "<html><body><p>x</p><img src='missing.png'>"
        "<script>console.error('boom'); undefinedFunction();</script></body></html>",
        encoding="utf-8",
    )
    page = load_page(page_path)
    joined = "\n".join(page.console_errors)
    assert "console.error: boom" in joined
    assert "undefinedFunction" in joined
    assert "missing.png" in joined
