"""A line plot of one value against a sweep (AUROC against ε), drawn with Pillow as the histograms are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from oodfilter.evaluate.histogram import COLOURS


def save_trend_png(
    lines: Mapping[str, Sequence[tuple[float, float]]], path: str | Path, *, title: str, x_label: str,
    y_range: tuple[float, float] = (0.0, 100.0), size: tuple[int, int] = (720, 420),
) -> Path:
    """Draw one polyline per named series of (x, y) points on shared axes, with a legend; save as PNG."""
    width, height = size
    left, right, top, bottom = 60, 150, 40, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    xs = sorted({x for points in lines.values() for x, _ in points}) or [0.0, 1.0]
    x_low, x_high = xs[0], xs[-1] if xs[-1] > xs[0] else xs[0] + 1.0
    y_low, y_high = y_range

    def at(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x_low) / (x_high - x_low) * (width - left - right)
        py = height - bottom - (min(max(y, y_low), y_high) - y_low) / (y_high - y_low) * (height - top - bottom)
        return px, py

    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    for x in xs:
        px, _ = at(x, y_low)
        draw.line([px, height - bottom, px, height - bottom + 4], fill=(0, 0, 0))
        draw.text((px - 8, height - bottom + 8), f"{x:g}", fill=(0, 0, 0))
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y_low + fraction * (y_high - y_low)
        _, py = at(x_low, y)
        draw.line([left - 4, py, left, py], fill=(0, 0, 0))
        draw.text((8, py - 6), f"{y:g}", fill=(0, 0, 0))
    for index, (name, points) in enumerate(lines.items()):
        colour = COLOURS[index % len(COLOURS)]
        ordered = sorted(points)
        draw.line([at(x, y) for x, y in ordered], fill=colour, width=2) if len(ordered) > 1 else None
        for x, y in ordered:
            px, py = at(x, y)
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        draw.text((width - right + 12, top + 16 * index), name, fill=colour)
    draw.text((left, 12), title, fill=(0, 0, 0))
    draw.text(((width - right + left) / 2 - 20, height - 22), x_label, fill=(0, 0, 0))
    image.save(path, format="PNG")
    return Path(path)
