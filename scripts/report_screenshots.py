"""Screenshots of the two HTML pages for the docs (``make report-screenshots``).

Offline, on the bundled digits: the demo's ``report.html`` (``synthguard demo``, seed 0, 10
generations) and a ``synthguard check --html`` page of fresh held-out digits with known flaws
(``synthguard._testing.flawed_digits``). Each page is opened in headless Chromium (Debian's
``chromium``, driven by playwright; nothing is downloaded) at 1280 px, its top part captured,
and the PNG reduced to a 256-colour palette so it stays small in the repository.

    python scripts/report_screenshots.py --out docs/img
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image

CHROMIUM = os.environ.get("SYNTHGUARD_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TEMPLATE = "a handwritten digit {name}"


def check_page(folder: Path) -> Path:
    """A ``synthguard check --html`` page: a reference from 270 held-out digits, a batch of 100
    fresh ones with repeats, reference copies, wrong captions and noise."""
    import synthguard as sg
    from synthguard._testing import flawed_digits
    from synthguard.cli import main
    from synthguard.datasets import DIGIT_NAMES, load_digits
    from synthguard.sources import write_pairs

    digits = load_digits("test")
    real = sg.PairBatch(digits.images[:270], digits.captions[:270], labels=digits.labels[:270],
                        ids=digits.ids[:270])  # fmt: skip
    write_pairs(real, folder / "real", "folder")
    batch, _ = flawed_digits(digits)
    write_pairs(batch, folder / "synthetic", "folder")
    code = main([
        "reference", "build", "--input", str(folder / "real"), "--encoder", "bundled:digits",
        "--out", str(folder / "real.sgref"), "--label-names", ",".join(DIGIT_NAMES),
        "--template", TEMPLATE, "--no-progress",
    ])  # fmt: skip
    if code != 0:
        raise SystemExit(f"reference build exited {code}")
    main(
        [
            "check",
            "--reference",
            str(folder / "real.sgref"),
            "--input",
            str(folder / "synthetic"),
            "--html",
            str(folder / "check.html"),
            "--no-progress",
        ]
    )  # fmt: skip  (exit 1: the flawed batch is rejected, as it should be)
    return folder / "check.html"


def demo_page(folder: Path) -> Path:
    """The demo's page, from its default run."""
    from synthguard.cli._demo._run import run_demo

    return run_demo(10, seed=0, out=folder / "demo", progress=False).out / "report.html"


def screenshot(page_path: Path, shots: dict[Path, str | None], *, height: int) -> None:
    """``height`` pixels of ``page_path`` at 1280 px per target, as palette PNGs: from the top,
    or from the element a CSS selector names."""
    from playwright.sync_api import sync_playwright

    path = CHROMIUM if os.path.isfile(CHROMIUM) else shutil.which("chromium")
    if path is None:
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            for target, selector in shots.items():
                top = 0.0
                if selector is not None:
                    top = page.locator(selector).first.bounding_box()["y"] - 10
                clip = {"x": 0, "y": max(top, 0.0), "width": 1280, "height": height}
                raw = target.with_suffix(".raw.png")
                page.screenshot(path=str(raw), full_page=True, clip=clip)
                with Image.open(raw) as image:
                    palette = image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
                    palette.save(target, optimize=True)
                raw.unlink()
                print(f"{target}: {target.stat().st_size / 1024:.0f} KiB")
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/img", help="folder for the PNGs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        check = check_page(folder)
        screenshot(check, {out / "check-report.png": None}, height=1900)
        screenshot(check, {out / "check-report-samples.png": "h2:text('Samples')"}, height=1100)
        screenshot(demo_page(folder), {out / "demo-report.png": None}, height=1900)


if __name__ == "__main__":
    main()
