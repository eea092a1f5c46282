"""Score histograms as PNG images, drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]


def save_histogram_png(
    sets: Mapping[str, Sequence[float]], path: str | Path, *, title: str, bins: int = 40,
    size: tuple[int, int] = (720, 400),
) -> Path:
    """Draw one normalised histogram outline per named score set, on shared bins, and save it as PNG."""
    width, height = size
    left, right, top, bottom = 60, 20, 40, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    values = [np.asarray(v, dtype=np.float64) for v in sets.values() if len(v)]
    low = min(float(v.min()) for v in values) if values else 0.0
    high = max(float(v.max()) for v in values) if values else 1.0
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    densities = {name: np.histogram(np.asarray(v, dtype=np.float64), bins=edges)[0] / max(len(v), 1)
                 for name, v in sets.items()}
    peak = max((float(d.max()) for d in densities.values()), default=1.0) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=(120, 120, 120))
    for index, (name, density) in enumerate(densities.items()):
        colour = COLOURS[index % len(COLOURS)]
        points = []
        for b, value in enumerate(density):
            x0 = left + plot_w * b / bins
            x1 = left + plot_w * (b + 1) / bins
            y = top + plot_h * (1 - value / peak)
            points += [(x0, y), (x1, y)]
        draw.line(points, fill=colour, width=2)
        draw.text((left + plot_w - 200, top + 8 + 14 * index), f"{name} (n={len(sets[name])})", fill=colour)
    draw.text((left, 12), title, fill="black")
    draw.text((left, top + plot_h + 8), f"{low:.4g}", fill="black")
    draw.text((left + plot_w - 60, top + plot_h + 8), f"{high:.4g}", fill="black")
    draw.text((left + plot_w // 2 - 70, top + plot_h + 26), "OOD score (higher = more OOD)", fill="black")
    draw.text((8, top), "share", fill="black")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out
