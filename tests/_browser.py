"""Headless Chromium for the report pages: open a page as a reader would, offline, and check it.

Debian's ``chromium`` (``/usr/bin/chromium``, or ``$SYNTHGUARD_CHROMIUM``) is driven by the
``playwright`` package, which never downloads a browser here. Every request that is not the page
itself or a ``data:`` URI is aborted and recorded, so a page that would fetch anything (a CDN
script, a web font, an image beside it) fails the test: the pages are self-contained.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("SYNTHGUARD_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
#: The narrowest window a reviewer reads the pages in.
WIDTH = 1280


@contextmanager
def launch() -> Iterator[Any]:
    """A headless Chromium, or a skip that says why there is none."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the browser tests need playwright: pip install -e '.[dev]'")
    path = CHROMIUM if os.path.isfile(CHROMIUM) else shutil.which("chromium")
    if path is None:
        pytest.skip(
            f"the browser tests need Debian's chromium ({CHROMIUM} is missing): "
            "apt-get install chromium (.ci/run installs it)"
        )
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=path, args=ARGS)
        except Exception as exc:  # a browser that cannot start here is a skip, said plainly
            pytest.skip(f"the browser tests could not start {path}: {str(exc)[:300]}")
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Opened:
    """A page and what happened while it loaded."""

    page: Any
    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@contextmanager
def open_page(browser: Any, path: Path) -> Iterator[Opened]:
    """``path`` in a fresh 1280-px-wide page with the network cut off."""
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})
    page = context.new_page()
    opened = Opened(page)

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if url.startswith(("file://", "data:")):
            request_route.continue_()
        else:
            opened.blocked.append(url)
            request_route.abort()

    context.route("**/*", route)
    page.on("request", lambda request: opened.requests.append(request.url))
    page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: opened.errors.append(str(exc)))
    page.goto(path.resolve().as_uri(), wait_until="load")
    try:
        yield opened
    finally:
        context.close()


def assert_readable(opened: Opened, *, charts: int) -> None:
    """What the issue asks of every page: no console errors, no request beyond the file, every
    chart with axis labels and a legend, every image from the file itself, 1280 px wide."""
    page = opened.page
    assert opened.errors == [], opened.errors
    assert opened.blocked == [], opened.blocked
    others = [u for u in opened.requests if not u.startswith("data:")]
    assert others == [page.url], others  # the page itself, nothing else
    found = page.evaluate(
        """() => [...document.querySelectorAll('figure.chart > svg')].map(svg => ({
            axes: svg.querySelectorAll('g[id*="-axes_"]').length,
            xlabels: [...svg.querySelectorAll('g[id*="-xlabel-"] text')]
                .map(t => t.textContent.trim()).filter(Boolean).length,
            ylabels: [...svg.querySelectorAll('g[id*="-ylabel-"] text')]
                .map(t => t.textContent.trim()).filter(Boolean).length,
            legends: [...svg.querySelectorAll('g[id*="-legend"]')]
                .filter(g => g.querySelector('text') && g.getBBox().width > 0).length,
            width: svg.getBoundingClientRect().width,
        }))"""
    )
    assert len(found) == charts, found
    for chart in found:  # every drawn axes has both labels; every chart a legend
        assert chart["axes"] >= 1 and chart["legends"] >= 1, chart
        assert chart["xlabels"] == chart["ylabels"] == chart["axes"], chart
        assert 0 < chart["width"] <= WIDTH, chart
    images = page.evaluate(
        """() => [...document.images].map(i => ({src: i.currentSrc.slice(0, 22),
            ok: i.complete && i.naturalWidth > 0}))"""
    )
    assert all(i["src"].startswith("data:image/") and i["ok"] for i in images), images
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH


def visible_rows(page: Any) -> list[int]:
    """Indices of the sample table's rows the reader sees now."""
    return page.evaluate(
        """() => [...document.querySelectorAll('#samples tbody tr')]
            .filter(r => r.offsetParent !== null).map(r => Number(r.id.split('-')[1]))"""
    )
