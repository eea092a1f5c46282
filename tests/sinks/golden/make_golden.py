"""Builds the fixed scan whose manifests must stay byte-identical across refactors.

`python tests/sinks/golden/make_golden.py OUTDIR` writes the manifests of GOLDEN_SCANS for the fixed inputs; the test
`tests/sinks/test_golden_manifest.py` runs the same scan and compares bytes with the files kept here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["tench", "goldfish", "great white shark", "hen", "ostrich"]


def make_inputs(root: Path) -> None:
    """Write 9 seeded images and one corrupt file under ``root/images``."""
    folder = root / "images"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for i in range(9):
        size = (40 + 7 * i, 48 + 5 * i)
        pixels = rng.randint(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i}.png")
    (folder / "broken.jpg").write_bytes(b"not an image at all")


# Templates are pinned to "photo", the default when these files were made (the default is now "auto").
GOLDEN_SCANS = {"scan.jsonl": {"templates": "photo"}, "scan.csv": {"templates": "photo"},
                "scan-mcm.jsonl": {"method": "mcm", "threshold": 0.2, "templates": "photo"}}


def run_golden_scan(root: Path, name: str, cache_dir: Path) -> Path:
    """Scan ``root/images`` (relative paths, cwd = root) with the tiny model into ``root/name``."""
    from oodfilter.scan import ScanConfig, scan

    previous = os.getcwd()
    os.chdir(root)
    try:
        # fp32: the golden files were written in fp32, and --precision auto is bf16 on CPUs that have it
        scan(ScanConfig(inputs=["images"], classes=list(CLASSES), out=name, model="test-tiny", device="cpu",
                        precision="fp32", workers=0, batch_size=4, cache_dir=str(cache_dir), **GOLDEN_SCANS[name]))
    finally:
        os.chdir(previous)
    return root / name


if __name__ == "__main__":
    out = Path(sys.argv[1])
    work = out / "work"
    make_inputs(work)
    for name in GOLDEN_SCANS:
        manifest = run_golden_scan(work, name, out / "cache")
        (out / manifest.name).write_bytes(manifest.read_bytes())
