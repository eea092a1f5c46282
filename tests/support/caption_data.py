"""A small generated caption table for fine-tuning tests: three colour classes of 12 images each."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red square": (220, 30, 30), "green field": (30, 200, 40), "blue sky": (40, 60, 230)}


def write_caption_table(root: Path) -> Path:
    """Write 36 noisy colour images and ``pairs.csv`` (path, caption) into ``root``; return the CSV."""
    rng = np.random.default_rng(0)
    with open(root / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "caption"])
        for name, colour in COLOURS.items():
            for i in range(12):
                pixels = np.clip(np.array(colour) + rng.normal(0, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
                file = f"{name.replace(' ', '_')}_{i}.png"
                Image.fromarray(pixels).save(root / file)
                writer.writerow([file, f"a photo of a {name}"])
    return root / "pairs.csv"
