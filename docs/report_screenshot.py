"""Make docs/report-screenshot.png: scan generated pictures with the tiny model, report, screenshot.

Run: python docs/report_screenshot.py   (needs Debian's chromium). Generated images only: the ImageNet
and DTD samples may not be redistributed.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from oodfilter.report import write_report  # noqa: E402
from oodfilter.scan import ScanConfig, scan  # noqa: E402

OUT = Path(__file__).resolve().parent / "report-screenshot.png"


def picture(rng: np.random.Generator, kind: int) -> Image.Image:
    image = Image.new("RGB", (192, 160), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, 160, 2)
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        if kind % 3 == 0:
            draw.ellipse([x, y, x + 40, y + 40], fill=colour)
        elif kind % 3 == 1:
            draw.rectangle([x, 0, x + 12, 160], fill=colour)
        else:
            draw.line([0, y, 192, x], fill=colour, width=8)
    return image


def main() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pictures"
        folder.mkdir()
        for i in range(60):
            picture(rng, i).save(folder / f"picture_{i:02d}.png")
        (folder / "broken.jpg").write_text("not an image")
        manifest = Path(tmp) / "scan.jsonl"
        # clipn-clean: with the quoted reference captions the random-weight model puts every image near 1.0
        scan(ScanConfig(inputs=[str(folder)], classes=["circle", "stripes", "line drawing"], model="test-tiny",
                        templates="clipn-clean",
                        out=str(manifest), workers=0, cache_dir=tmp))
        page = write_report(manifest, Path(tmp) / "report.html")
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        f"--user-data-dir={tmp}/profile", f"--screenshot={OUT}", "--window-size=1100,1400",
                        page.as_uri()], check=True, capture_output=True)
    Image.open(OUT).convert("RGB").resize((825, 1050)).save(OUT, optimize=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
